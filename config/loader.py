"""Load Harken's settings from a TOML file, the environment and command-line flags.

Precedence, lowest first: the dataclass defaults, the config file (the shipped
`config/harken.toml`, or the one given as `path` / `--config`, or `$HARKEN_CONFIG`),
environment variables, then command-line overrides. Secrets come only from the
environment: a file or a flag holding one is refused, since files get committed and
command lines show up in `ps`.

Every problem is raised as one `ConfigError` whose message is a single line naming the
key (and the variable or file it came from) and what is wrong, because the CLI prints it
and exits 2 instead of showing a traceback.

Environment variables:

* `HARKEN_BOT_<KEY>`, `HARKEN_MEMORY_<KEY>`, `HARKEN_LOG_<KEY>`, `HARKEN_SCHEDULER_<KEY>`,
  `HARKEN_OPS_<KEY>`, `HARKEN_HEALTH_<KEY>`, `HARKEN_CLUSTER_<KEY>`,
  `HARKEN_IDENTITY_<KEY>` set the keys of those sections (`HARKEN_SCHEDULER_URL`, a
  secret, is read from the environment only), e.g.
  `HARKEN_BOT_WORKERS=32`; `HARKEN_DATA_DIR` is short for `HARKEN_BOT_DATA_DIR`.
* `HARKEN_<INPUT>_ADMINS` and `HARKEN_<INPUT>_<OPTION>` set an input's admins or an option
  it already has (one the input declares, or a key in the file), e.g.
  `HARKEN_CHAT_SERVER` for an option `server` of an input `chat`.
* `HARKEN_<INPUT>_<SECRET>` sets a secret: one the input declares, and for any input a
  key named `token`, `password`, `secret` or ending in `_token`, `_password`, `_secret`.
* `HARKEN_MEMORY_URL` is the secret `memory.url`: the PostgreSQL database of the
  `postgresql` memory backend.
* `HARKEN_CONFIG` names the config file when no path is given.

Values are parsed from text: lists are comma-separated, numbers are numbers, booleans
are true/false/yes/no/on/off/1/0. Other `HARKEN_*` variables are ignored and listed in
`Settings.unknown_env` so `harken check` can warn about typos. Command-line overrides
reach every key, the tables' too (`services.web.url`, `access.commands.watch`,
`inputs.shell.groups.ops`).

What an input accepts comes from its own declaration (`config.inputs`): the types of
its options, which are paths, which are secrets, which it needs. An input that registers
its declaration in a light module (as the built-in ones do) is not itself imported, so
reading the settings loads no chat library.

Paths come out absolute, resolved once while loading: relative ones from a user config file
against the file's directory, the others (shipped default, environment, command line)
against the current directory. An empty `memory.path` becomes `memory` in
`bot.data_dir`.

The rules for each key are in `config.rules`, the layers are collected into `Settings`
by `config.builder`, and `config.render` shows the result for `harken check`.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from typing import Any, Final

from config.builder import CLI, Builder
from config.inputs import input_env_var, is_secret_key
from config.rules import (
    RULES,
    SECTION_SECRETS,
    TABLES,
    ConfigError,
    Invalid,
    check_input_name,
    from_text,
    known_keys,
    suggest,
)
from config.settings import SHIPPED_DEFAULT, BotSettings, Secret, Settings

log = logging.getLogger(__name__)

CONFIG_ENV_VAR: Final = "HARKEN_CONFIG"
"""Environment variable naming the config file when `load_settings` gets no path."""
DATA_DIR_ENV_VAR: Final = "HARKEN_DATA_DIR"
"""Environment variable for `bot.data_dir` (as is `HARKEN_BOT_DATA_DIR`)."""

# --- reading the file ----------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*\Z")
_TOML_AT_END = re.compile(r"\s*\(at end of document\)\s*\Z")


def _read_file(path: str | os.PathLike[str] | None) -> tuple[dict[str, Any], str, str]:
    """Parse the config file: (data, source for Settings.source, directory of the file).

    The directory is "" for the shipped default, whose relative paths mean the current
    directory.
    """
    if path is None:
        # Package data, so it is found the same way from a checkout, a wheel or a zip.
        resource = importlib.resources.files(__package__ or "config").joinpath("harken.toml")
        return _parse(resource.read_bytes(), SHIPPED_DEFAULT), SHIPPED_DEFAULT, ""
    name = os.path.abspath(os.fspath(path))
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise ConfigError(name, f"cannot read file: {err.strerror or err}") from None
    return _parse(raw, name), name, os.path.dirname(name)


def _parse(raw: bytes, name: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(name, f"line {line}: not valid UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        # Python 3.11's error has no line attribute: the position is only in the message.
        message = str(err)
        if found := _TOML_POSITION.search(message):
            where = f"line {found.group(1)}"
            message = f"{message[: found.start()]} (column {found.group(2)})"
        elif found := _TOML_AT_END.search(message):
            where = f"line {len(text.splitlines()) or 1} (end of file)"
            message = message[: found.start()]
        else:
            where = "somewhere"
        raise ConfigError(name, f"{where}: TOML syntax: {message}") from None


def _read_env(builder: Builder, env: Mapping[str, str]) -> list[str]:
    """Apply section variables (`HARKEN_BOT_*`, ...); return the rest (maybe input ones)."""
    rest = []
    for var in sorted(env):
        if not var.startswith("HARKEN_") or var in (CONFIG_ENV_VAR, DATA_DIR_ENV_VAR):
            continue
        section, _, leaf = var[len("HARKEN_") :].partition("_")
        key = f"{section.lower()}.{leaf.lower()}"
        if SECTION_SECRETS.get(key) == var:
            if env[var]:  # empty is "not set", as for input secrets
                builder.section_secrets[key] = Secret(env[var])
                builder.origins[key] = f"env {var}"
            continue
        if key in RULES:
            builder.read_section_text(key, env[var], var)
        else:
            rest.append(var)
    if DATA_DIR_ENV_VAR in env:
        long_name = "HARKEN_BOT_DATA_DIR"
        if long_name in env and env[long_name] != env[DATA_DIR_ENV_VAR]:
            raise ConfigError(
                "bot.data_dir",
                f"{DATA_DIR_ENV_VAR} and {long_name} say different things; set only one",
                f"from {DATA_DIR_ENV_VAR}",
            )
        builder.read_section_text("bot.data_dir", env[DATA_DIR_ENV_VAR], DATA_DIR_ENV_VAR)
    return rest


def _read_input_env(builder: Builder, env: Mapping[str, str], names: list[str]) -> list[str]:
    """Apply input variables (`HARKEN_<INPUT>_<KEY>`); return the variables that matched none."""
    unknown = []
    # Longest name first, so an input `ops_chat` wins over an input `ops` for HARKEN_OPS_CHAT_X.
    by_length = sorted(names, key=len, reverse=True)
    for var in sorted(env):
        for name in by_length:
            prefix = f"HARKEN_{name.upper()}_"
            if not var.startswith(prefix):
                continue
            leaf = var[len(prefix) :].lower()
            if is_secret_key(leaf):
                # An empty value is "not set": compose files often pass `VAR=${VAR}` through.
                if env[var]:
                    builder.secrets.setdefault(name, {})[leaf] = Secret(env[var])
                    builder.origins[f"inputs.{name}.{leaf}"] = f"env {var}"
                break
            if leaf == "admins" or leaf in builder.input(name):
                builder.read_input_text(name, leaf, env[var], var)
                break
        else:
            unknown.append(var)
    return unknown


def _read_overrides(builder: Builder, overrides: Mapping[str, str]) -> None:
    for key, text in overrides.items():
        if key in SECTION_SECRETS:
            raise ConfigError(
                key,
                "secrets are not accepted on the command line (other users can see it "
                f"in ps); set {SECTION_SECRETS[key]} in the environment instead",
                f"from {CLI}",
            )
        if key in RULES:
            builder.read_section_text(key, text, CLI)
            continue
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "inputs":
            _, name, leaf = parts
            try:
                check_input_name(name)
            except Invalid as bad:
                raise ConfigError(key, bad.problem, f"from {CLI}") from None
            if is_secret_key(leaf):
                raise ConfigError(
                    key,
                    "secrets are not accepted on the command line (other users can see it "
                    f"in ps); set {input_env_var(name, leaf)} in the environment instead",
                    f"from {CLI}",
                )
            # Input options are open-ended (each input checks its own), so any key goes.
            builder.read_input_text(name, leaf, text, CLI)
            continue
        if parts[0] == "inputs":
            raise ConfigError(key, "name an input key, e.g. inputs.xmpp.jid", f"from {CLI}")
        raise ConfigError(key, suggest(key, known_keys()), f"from {CLI}")


# What `--set` may say inside a table, and the kind of each leaf: lists are
# comma-separated, like list values in the environment.
_TABLE_LEAF_KINDS: Final[Mapping[str, Mapping[str, type[Any]]]] = {
    "services": {"tags": tuple, "call": tuple},
    "runbooks": {"argv": tuple, "timeout_seconds": float},
}
_TABLE_SHAPES: Final[Mapping[str, str]] = {
    "services": "name a service key, e.g. services.web.url",
    "runbooks": "name a runbook key, e.g. runbooks.restart-web.argv or "
    "runbooks.restart-web.args.<name>",
    "access": "name a command, e.g. access.commands.watch",
    "streams": "name a stream's option, e.g. streams.relay.from",
}


def _is_table_override(key: str) -> bool:
    parts = key.split(".")
    groups = len(parts) == 4 and parts[0] == "inputs" and parts[2] == "groups"
    return parts[0] in TABLES or groups


def _table_override_kind(key: str) -> type[Any]:
    """The kind of a table key set on the command line; `ConfigError` if it names none."""
    parts = key.split(".")
    top = parts[0]
    if top == "inputs" or (top == "access" and len(parts) == 3 and parts[1] == "commands"):
        return tuple
    if top == "services" and len(parts) == 3:
        return _TABLE_LEAF_KINDS["services"].get(parts[2], str)
    if top == "runbooks" and len(parts) == 3 and parts[2] != "args":
        return _TABLE_LEAF_KINDS["runbooks"].get(parts[2], str)
    if top == "runbooks" and len(parts) == 4 and parts[2] == "args":
        return str
    if top == "streams" and len(parts) == 3:
        return str  # the stream's declaration says what it must be (commands/streams.py)
    raise ConfigError(key, _TABLE_SHAPES[top], f"from {CLI}")


def _merge_table_overrides(data: dict[str, Any], overrides: Mapping[str, str]) -> None:
    """Put `--set` values for table keys into the file's tables, to be read with them.

    A table key set on the command line changes that one key of the file's entry (or
    starts a new entry); the table readers then check the whole entry as usual.
    """
    for key, text in overrides.items():
        kind = _table_override_kind(key)
        try:
            value = from_text(kind, text)
        except Invalid:
            value = text  # the table's reader says what it must be
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1], start=1):
            inner = node.setdefault(part, {})
            if not isinstance(inner, dict):
                where = ".".join(parts[:depth])
                raise ConfigError(key, f"{where} is not a table in the config file", f"from {CLI}")
            node = inner
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Load and check the settings; raise `ConfigError` on any problem.

    `path` is the config file (`--config`); without it, `$HARKEN_CONFIG` if set, else the
    shipped `config/harken.toml`. `env` defaults to `os.environ`. `overrides` maps dotted
    keys to values as typed on the command line, e.g. `{"bot.inputs": "shell"}` or
    `{"services.web.url": "http://web:8080"}`; they are parsed like environment values.
    Relative paths are resolved against the current directory as it is now.
    """
    env = os.environ if env is None else env
    overrides = overrides or {}
    if path is None and env.get(CONFIG_ENV_VAR):
        path = env[CONFIG_ENV_VAR]
    data, source, file_dir = _read_file(path)
    table_overrides = {k: v for k, v in overrides.items() if _is_table_override(k)}
    _merge_table_overrides(data, table_overrides)
    builder = Builder(source, file_dir, table_overrides)
    builder.read_file(data)

    # Sections first: HARKEN_BOT_INPUTS (or --inputs) may enable an input whose own
    # variables must then be recognised, e.g. HARKEN_MATRIX_TOKEN.
    rest = _read_env(builder, env)
    section_overrides = {k: v for k, v in overrides.items() if k in RULES or k in SECTION_SECRETS}
    _read_overrides(builder, section_overrides)
    enabled = builder.values.get("bot.inputs", BotSettings().inputs)
    names = list(dict.fromkeys([*builder.options, *enabled]))
    unknown = _read_input_env(builder, {var: env[var] for var in rest}, names)
    _read_overrides(
        builder,
        {
            k: v
            for k, v in overrides.items()
            if k not in section_overrides and k not in table_overrides
        },
    )

    settings = builder.build(unknown)
    log.debug("settings loaded from %s", settings.source)
    if settings.unknown_env:
        log.info(
            "ignoring environment variables that match no setting: %s",
            ", ".join(settings.unknown_env),
        )
    return settings


def secret_env_vars(env: Mapping[str, str]) -> list[str]:
    """The `HARKEN_*` variables in `env` that hold secrets, by `is_secret_key`'s naming rule
    (any input, started or not) and the section secrets (`HARKEN_MEMORY_URL`), so the CLI
    can remove them once the settings are read."""
    named = {var for var in env if var.startswith("HARKEN_") and is_secret_key(var[7:])}
    return sorted(named | {var for var in SECTION_SECRETS.values() if var in env})
