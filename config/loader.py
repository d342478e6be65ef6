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
  `HARKEN_OPS_<KEY>`, `HARKEN_HEALTH_<KEY>` set the keys of those sections, e.g.
  `HARKEN_BOT_WORKERS=32`; `HARKEN_DATA_DIR` is short for `HARKEN_BOT_DATA_DIR`.
* `HARKEN_<INPUT>_ADMINS` and `HARKEN_<INPUT>_<OPTION>` set an input's admins or an option
  it already has (one the input declares, or a key in the file), e.g.
  `HARKEN_CHAT_SERVER` for an option `server` of an input `chat`.
* `HARKEN_<INPUT>_<SECRET>` sets a secret: one the input declares, and for any input a
  key named `token`, `password`, `secret` or ending in `_token`, `_password`, `_secret`.
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

Paths come out absolute, resolved once here: relative ones from a user config file
against the file's directory, the others (shipped default, environment, command line)
against the current directory. An empty `memory.path` becomes `memory` in
`bot.data_dir`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import json
import logging
import math
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from config.inputs import (
    DeclarationError,
    InputSpec,
    input_env_var,
    input_spec,
    installed_inputs,
    installed_specs,
    is_secret_key,
)
from config.ops_config import (
    TableError,
    read_access,
    read_groups,
    read_runbooks,
    read_services,
    render_ops_tables,
)
from config.settings import (
    SHELL_INPUT,
    SHIPPED_DEFAULT,
    AccessSettings,
    BotSettings,
    HealthSettings,
    InputSettings,
    LogSettings,
    MemorySettings,
    OpsSettings,
    SchedulerSettings,
    Secret,
    Settings,
)

log = logging.getLogger(__name__)

CONFIG_ENV_VAR: Final = "HARKEN_CONFIG"
"""Environment variable naming the config file when `load_settings` gets no path."""
DATA_DIR_ENV_VAR: Final = "HARKEN_DATA_DIR"
"""Environment variable for `bot.data_dir` (as is `HARKEN_BOT_DATA_DIR`)."""
DERIVED: Final = "derived from bot.data_dir"
"""The origin of `memory.path` when it was left empty and follows the data directory."""

_SECTIONS: Final[Mapping[str, type[Any]]] = {
    "bot": BotSettings,
    "memory": MemorySettings,
    "log": LogSettings,
    "scheduler": SchedulerSettings,
    "ops": OpsSettings,
    "health": HealthSettings,
}
# Tables of named entries ([services.<name>], [runbooks.<name>]) and [access]: see ops_config.
_TABLES: Final = ("services", "runbooks", "access")
_INPUT_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
# Section names would make `HARKEN_BOT_<KEY>` ambiguous, and `config` is HARKEN_CONFIG.
_RESERVED_INPUT_NAMES: Final = frozenset({*_SECTIONS, *_TABLES, "inputs", "config"})
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS: Final = ("text", "json")
_MEMORY_BACKENDS: Final = ("tinydb",)
_CLI: Final = "the command line"
_TRUE: Final = frozenset({"true", "yes", "on", "1"})
_FALSE: Final = frozenset({"false", "no", "off", "0"})


class ConfigError(Exception):
    """A bad configuration: `str()` is one line naming the key and the problem.

    `key` is the dotted setting (`bot.workers`) or, for a file that cannot be read or
    parsed, the file's path; `origin` says where a bad value came from when that is not
    the file (`from HARKEN_BOT_WORKERS`, `from the command line`).
    """

    def __init__(self, key: str, problem: str, origin: str | None = None) -> None:
        super().__init__(key, problem, origin)
        self.key = key
        # One line, whatever the underlying error said: the CLI prints exactly this.
        self.problem = " ".join(problem.split())
        self.origin = origin

    def __str__(self) -> str:
        where = f"{self.key} ({self.origin})" if self.origin else self.key
        return f"config error: {where}: {self.problem}"


class _Invalid(Exception):
    """Raised by a rule's check; becomes a `ConfigError` once the key is known.

    An empty problem means "the standard message": must be <want> (got <value>).
    """

    def __init__(self, problem: str = "") -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class _Rule:
    """How to read and check one key: its kind, and what a valid value looks like."""

    kind: type[Any]
    want: str
    check: Callable[[Any], Any] | None = None


def _show(value: object, limit: int = 60) -> str:
    """A value as the user wrote it (TOML-ish), shortened so messages stay one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(_show(item, limit) for item in value) + "]"
    elif isinstance(value, Mapping):
        text = "a table"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _at_least_one(value: int) -> int:
    if value < 1:
        raise _Invalid()
    return value


def _positive_finite(value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise _Invalid()
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise _Invalid()
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise _Invalid(
            f'unknown time zone {_show(value)} (use an IANA name such as "Europe/Berlin")'
        ) from err
    return value


def _input_names(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise _Invalid('must name at least one input, e.g. ["shell"]')
    for name in value:
        _check_input_name(name)
    duplicates = sorted({name for name in value if value.count(name) > 1})
    if duplicates:
        raise _Invalid(f"lists {', '.join(duplicates)} more than once")
    return value


def _check_input_name(name: str) -> None:
    if not _INPUT_NAME.match(name):
        raise _Invalid(
            f"{_show(name)} is not a valid input name "
            "(lower-case letters, digits and _, starting with a letter)"
        )
    if name in _RESERVED_INPUT_NAMES:
        raise _Invalid(f"{_show(name)} is reserved and cannot name an input")


def _one_of(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        normal = value.upper() if upper else value
        if normal not in choices:
            raise _Invalid()
        return normal

    return check


def _paths(value: tuple[str, ...]) -> tuple[str, ...]:
    if any(not path.strip() for path in value):
        raise _Invalid("must not contain an empty path")
    # TOML and env values get no shell expansion, yet people write ~/harken-commands.
    return tuple(os.path.expanduser(path) for path in value)


def _path(value: str) -> str:
    return os.path.expanduser(value)


def _logger_levels(value: tuple[str, ...]) -> tuple[str, ...]:
    levels = []
    for item in value:
        name, _, level = (part.strip() for part in item.partition("="))
        if not name or level.upper() not in _LOG_LEVELS:
            raise _Invalid(
                f"{_show(item)} is not logger=LEVEL with LEVEL one of " + ", ".join(_LOG_LEVELS)
            )
        levels.append(f"{name}={level.upper()}")
    return tuple(levels)


def _absolute(value: Any, base: str) -> Any:
    """A path, or a tuple of paths, made absolute against `base`; empty stays empty."""
    if isinstance(value, tuple):
        return tuple(_absolute(item, base) for item in value)
    if not isinstance(value, str) or not value:
        return value
    return os.path.normpath(os.path.join(base, value))


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise _Invalid()
    return value


# The kind of each key comes from its dataclass default (see _rules_follow_dataclasses
# in the tests); what is valid beyond the type is stated here, next to the message.
_RULES: Final[Mapping[str, _Rule]] = {
    "bot.name": _Rule(str, "a non-empty string", _non_empty),
    "bot.inputs": _Rule(tuple, 'a list of input names, e.g. ["shell"]', _input_names),
    "bot.timezone": _Rule(str, 'an IANA time zone name such as "Europe/Berlin"', _timezone),
    "bot.command_dirs": _Rule(tuple, "a list of directory paths", _paths),
    "bot.data_dir": _Rule(str, "a non-empty directory path", lambda v: _path(_non_empty(v))),
    "bot.conversation_idle_seconds": _Rule(float, "a number > 0", _positive_finite),
    "bot.dialog_timeout_seconds": _Rule(float, "a number > 0", _positive_finite),
    "bot.workers": _Rule(int, "an integer >= 1", _at_least_one),
    "bot.max_message_bytes": _Rule(int, "an integer >= 1", _at_least_one),
    "memory.backend": _Rule(
        str, "one of: " + ", ".join(_MEMORY_BACKENDS), _one_of(_MEMORY_BACKENDS)
    ),
    "memory.path": _Rule(str, "a path (empty: memory in bot.data_dir)", _path),
    "log.level": _Rule(
        str, "one of " + ", ".join(_LOG_LEVELS) + " (any case)", _one_of(_LOG_LEVELS, upper=True)
    ),
    "log.file": _Rule(str, "a file path (empty for stderr)", _path),
    "log.format": _Rule(str, "one of: " + ", ".join(_LOG_FORMATS), _one_of(_LOG_FORMATS)),
    "log.levels": _Rule(
        tuple, 'a table of logger = level, e.g. { apscheduler = "INFO" }', _logger_levels
    ),
    "scheduler.path": _Rule(str, "a file path (empty: beside the memory store)", _path),
    "scheduler.grace_seconds": _Rule(float, "a number > 0", _positive_finite),
    "scheduler.max_jobs_per_user": _Rule(int, "an integer >= 1", _at_least_one),
    "scheduler.min_interval_seconds": _Rule(float, "a number > 0", _positive_finite),
    "ops.check_timeout_seconds": _Rule(float, "a number > 0", _positive_finite),
    "ops.slow_seconds": _Rule(float, "a number > 0", _positive_finite),
    "ops.max_parallel_checks": _Rule(int, "an integer >= 1", _at_least_one),
    "ops.call_timeout_seconds": _Rule(float, "a number > 0", _positive_finite),
    "ops.reply_max_chars": _Rule(int, "an integer >= 1", _at_least_one),
    "ops.runbook_tail_lines": _Rule(int, "an integer >= 1", _at_least_one),
    "ops.runbook_progress_seconds": _Rule(float, "a number > 0", _positive_finite),
    "ops.audit_keep": _Rule(int, "an integer >= 1", _at_least_one),
    "health.enabled": _Rule(bool, "true or false"),
    "health.host": _Rule(str, "an address such as 127.0.0.1", _non_empty),
    "health.port": _Rule(int, "a TCP port, 0 to 65535", _port),
}
# Keys holding paths: made absolute by the loader (see the module docstring).
_PATH_KEYS: Final = frozenset(
    {"bot.command_dirs", "bot.data_dir", "memory.path", "scheduler.path", "log.file"}
)
_ADMINS_RULE: Final = _Rule(tuple, "a list of user ids")
_TEXT_KINDS: Final[Mapping[type[Any], str]] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    tuple: "a list of strings",
}


def _from_toml(kind: type[Any], value: Any) -> Any:
    """Check a value parsed by tomllib against a kind; raise `_Invalid` if it is another."""
    # bool is an int subclass in Python but never a number in a config file.
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, str):
        return value
    if kind is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _Invalid()


def _from_text(kind: type[Any], text: str) -> Any:
    """Parse an environment or command-line string as a kind; raise `_Invalid` if it isn't."""
    text = text.strip()
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise _Invalid() from None
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _Invalid()
    if kind is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    return text


def _apply(rule: _Rule, key: str, value: Any, origin: str | None, *, text: bool) -> Any:
    """Read one value with its rule, turning any failure into a `ConfigError` on `key`."""
    try:
        result = _from_text(rule.kind, value) if text else _from_toml(rule.kind, value)
        return rule.check(result) if rule.check else result
    except _Invalid as bad:
        raise ConfigError(
            key, bad.problem or f"must be {rule.want} (got {_show(value)})", origin
        ) from None


def _freeze(value: Any) -> Any:
    # Options reach actors on other threads; immutable values cannot be changed under them.
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _suggest(key: str, known: Iterable[str]) -> str:
    """`unknown key`, with the closest known key (by whole name, then by last part)."""
    known = list(known)
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if not match:
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in known}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f"unknown key (did you mean {match[0]}?)" if match else "unknown key"


def _known_keys() -> list[str]:
    inputs = [SHELL_INPUT, *installed_inputs()]
    return [*_RULES, *_TABLES, *(f"inputs.{name}" for name in inputs)]


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


# --- building the settings -----------------------------------------------------------


class _Builder:
    """Collects values layer by layer (file, env, cli), remembering where each came from."""

    def __init__(self, source: str, file_dir: str, cli_keys: Iterable[str] = ()) -> None:
        self.source = source
        # Relative paths resolve once, here: a user file's against its directory, the
        # rest (shipped default, environment, command line) against the current one.
        self.cwd = os.getcwd()
        self.file_dir = file_dir or self.cwd
        # Table keys the command line set (merged into the file's tables), for messages.
        self.cli_keys = frozenset(cli_keys)
        # The shipped file only restates the defaults, so its values are labelled as such.
        self.file_label = "default" if source == SHIPPED_DEFAULT else "file"
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        # Input name -> option name -> value, in the order inputs were first mentioned:
        # the shell and the installed inputs first, each with the defaults it declares.
        self.options: dict[str, dict[str, Any]] = {SHELL_INPUT: {}}
        # Input name -> its declaration (None: it declares nothing, or is not installed).
        self.specs: dict[str, InputSpec | None] = {SHELL_INPUT: None}
        # Inputs whose declaration cannot be loaded -> why; an error once one is started.
        self.broken: dict[str, str] = {}
        for name, found in installed_specs().items():
            self._declare(name, found)
        self.admins: dict[str, tuple[str, ...]] = {}
        self.groups: dict[str, dict[str, tuple[str, ...]]] = {}
        self.tables: dict[str, Any] = {}
        self.secrets: dict[str, dict[str, Secret]] = {}

    def set(self, key: str, value: Any, origin: str) -> None:
        self.values[key] = value
        self.origins[key] = origin

    def _declare(self, name: str, found: InputSpec | DeclarationError | None) -> None:
        spec = found if isinstance(found, InputSpec) else None
        if isinstance(found, DeclarationError):
            self.broken[name] = str(found)
        self.specs[name] = spec
        self.options[name] = dict(spec.defaults) if spec else {}

    def input(self, name: str) -> dict[str, Any]:
        """The options of input `name` so far; its declared defaults when first named."""
        if name not in self.options:
            try:
                found: InputSpec | DeclarationError | None = input_spec(name)
            except DeclarationError as exc:
                found = exc
            self._declare(name, found)
        return self.options[name]

    def is_path(self, name: str, leaf: str) -> bool:
        spec = self.specs.get(name)
        return spec is not None and leaf in spec.paths

    # -- file --

    def read_file(self, data: Mapping[str, Any]) -> None:
        for top, table in data.items():
            if top == "inputs":
                self._read_inputs(table)
            elif top in _TABLES:
                self.tables[top] = _read_table(top, table, self.cli_keys)
            elif top in _SECTIONS:
                self._read_section(top, table)
            else:
                raise ConfigError(top, _suggest(top, [*_SECTIONS, *_TABLES, "inputs", *_RULES]))

    def _read_section(self, section: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(section, f"must be a table ([{section}]), got {_show(table)}")
        for leaf, value in table.items():
            key = f"{section}.{leaf}"
            rule = _RULES.get(key)
            if rule is None:
                raise ConfigError(key, _suggest(key, _known_keys()))
            if key == "log.levels" and isinstance(value, dict):
                # A `[log.levels]` table; env and flags give the same as "logger=LEVEL,...".
                pairs = [f"{name}={level}" for name, level in value.items()]
                checked = _apply(rule, key, pairs, None, text=False)
            else:
                checked = _apply(rule, key, value, None, text=False)
            if key in _PATH_KEYS:
                checked = _absolute(checked, self.file_dir)
            self.set(key, checked, self.file_label)

    def _read_inputs(self, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError("inputs", f"must be a table ([inputs.<name>]), got {_show(table)}")
        for name, section in table.items():
            try:
                _check_input_name(name)
            except _Invalid as bad:
                raise ConfigError(f"inputs.{name}", bad.problem) from None
            if not isinstance(section, dict):
                raise ConfigError(
                    f"inputs.{name}", f"must be a table ([inputs.{name}]), got {_show(section)}"
                )
            options = self.input(name)
            for leaf, value in section.items():
                key = f"inputs.{name}.{leaf}"
                if is_secret_key(leaf):
                    raise ConfigError(
                        key,
                        "secrets must not be in a config file; set "
                        f"{input_env_var(name, leaf)} in the environment instead",
                    )
                _refuse_nested_secrets(key, value)
                if leaf == "admins":
                    self.admins[name] = _apply(_ADMINS_RULE, key, value, None, text=False)
                elif leaf == "groups":
                    self.groups[name] = _read_table(key, value, self.cli_keys)
                    if any(k.startswith(f"{key}.") for k in self.cli_keys):
                        self.origins[key] = "cli"
                        continue
                elif leaf in options:
                    # A declared option: the default's type says what is valid.
                    options[leaf] = self._typed_option(key, options[leaf], value)
                    if self.is_path(name, leaf):
                        options[leaf] = _absolute(options[leaf], self.file_dir)
                else:
                    options[leaf] = _freeze(value)
                self.origins[key] = self.file_label

    @staticmethod
    def _typed_option(key: str, default: Any, value: Any) -> Any:
        kind = type(default)
        if kind not in _TEXT_KINDS:
            return _freeze(value)
        return _apply(_Rule(kind, _TEXT_KINDS[kind]), key, value, None, text=False)

    # -- environment and command line --

    def read_section_text(self, key: str, text: str, origin: str) -> None:
        value = _apply(_RULES[key], key, text, f"from {origin}", text=True)
        if key in _PATH_KEYS:
            value = _absolute(value, self.cwd)
        self.set(key, value, "cli" if origin == _CLI else f"env {origin}")

    def read_input_text(self, name: str, leaf: str, text: str, origin: str) -> None:
        key = f"inputs.{name}.{leaf}"
        where = f"from {origin}"
        if leaf == "groups":
            raise ConfigError(
                key,
                "groups are a table: set them in the config file, or one group with "
                f"--set {key}.<group>=<user>,<user>",
                where,
            )
        if leaf == "admins":
            self.admins[name] = _apply(_ADMINS_RULE, key, text, where, text=True)
        else:
            options = self.input(name)
            current = options.get(leaf, "")
            kind = type(current) if type(current) in _TEXT_KINDS else str
            options[leaf] = _apply(_Rule(kind, _TEXT_KINDS[kind]), key, text, where, text=True)
            if self.is_path(name, leaf):
                options[leaf] = _absolute(options[leaf], self.cwd)
        self.origins[key] = "cli" if origin == _CLI else f"env {origin}"

    # -- result --

    def build(self, unknown_env: Iterable[str]) -> Settings:
        # The data directory is absolute from here on, and the memory store follows it
        # unless a layer named a path of its own.
        data_dir = self.values.get("bot.data_dir") or _absolute(BotSettings().data_dir, self.cwd)
        self.values["bot.data_dir"] = data_dir
        if not self.values.get("memory.path"):
            self.set("memory.path", os.path.join(data_dir, "memory"), DERIVED)
        sections: dict[str, Any] = {}
        for section, cls in _SECTIONS.items():
            fields = {
                f.name: self.values[f"{section}.{f.name}"]
                for f in dataclasses.fields(cls)
                if f"{section}.{f.name}" in self.values
            }
            sections[section] = cls(**fields)
            for f in dataclasses.fields(cls):
                self.origins.setdefault(f"{section}.{f.name}", "default")
        bot: BotSettings = sections["bot"]
        for name in bot.inputs:
            self.input(name)
            if name in self.broken:
                raise ConfigError(
                    "bot.inputs",
                    f"input {name!r} is installed but what it accepts cannot be read: "
                    f"{self.broken[name]}",
                )
        inputs = {
            name: InputSettings(
                name=name,
                admins=self.admins.get(name, ()),
                groups=self.groups.get(name, {}),
                options=options,
                secrets=self.secrets.get(name, {}),
                spec=self.specs.get(name),
            )
            for name, options in self.options.items()
        }
        for name, settings in inputs.items():
            for leaf in ["admins", *settings.options]:
                self.origins.setdefault(f"inputs.{name}.{leaf}", "default")
        return Settings(
            bot=bot,
            memory=sections["memory"],
            log=sections["log"],
            scheduler=sections["scheduler"],
            ops=sections["ops"],
            health=sections["health"],
            services=self.tables.get("services", {}),
            runbooks=self.tables.get("runbooks", {}),
            access=self.tables.get("access", AccessSettings()),
            inputs=inputs,
            source=self.source,
            origins=self.origins,
            unknown_env=tuple(sorted(unknown_env)),
        )


def _read_table(key: str, value: Any, cli_keys: frozenset[str] = frozenset()) -> Any:
    """A services, runbooks or access table, or an input's groups (config/ops_config.py)."""
    readers: dict[str, Callable[[Any], Any]] = {
        "services": read_services,
        "runbooks": read_runbooks,
        "access": lambda table: read_access(table, AccessSettings()),
    }
    reader = readers.get(key) or (lambda table: read_groups(key, table))
    try:
        return reader(value)
    except TableError as bad:
        origin = f"from {_CLI}" if bad.key in cli_keys else None
        raise ConfigError(bad.key, bad.problem, origin) from None


def _refuse_nested_secrets(key: str, value: Any) -> None:
    # A token hidden one table down (`[inputs.x.auth] token = ...`) is still in the file.
    if isinstance(value, list):
        for inner in value:
            _refuse_nested_secrets(key, inner)
    elif isinstance(value, dict):
        for leaf, inner in value.items():
            if is_secret_key(leaf):
                raise ConfigError(
                    f"{key}.{leaf}",
                    "secrets must not be in a config file; pass it in the environment instead",
                )
            _refuse_nested_secrets(f"{key}.{leaf}", inner)


def _read_env(builder: _Builder, env: Mapping[str, str]) -> list[str]:
    """Apply section variables (`HARKEN_BOT_*`, ...); return the rest (maybe input ones)."""
    rest = []
    for var in sorted(env):
        if not var.startswith("HARKEN_") or var in (CONFIG_ENV_VAR, DATA_DIR_ENV_VAR):
            continue
        section, _, leaf = var[len("HARKEN_") :].partition("_")
        key = f"{section.lower()}.{leaf.lower()}"
        if key in _RULES:
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


def _read_input_env(builder: _Builder, env: Mapping[str, str], names: list[str]) -> list[str]:
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


def _read_overrides(builder: _Builder, overrides: Mapping[str, str]) -> None:
    for key, text in overrides.items():
        if key in _RULES:
            builder.read_section_text(key, text, _CLI)
            continue
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "inputs":
            _, name, leaf = parts
            try:
                _check_input_name(name)
            except _Invalid as bad:
                raise ConfigError(key, bad.problem, f"from {_CLI}") from None
            if is_secret_key(leaf):
                raise ConfigError(
                    key,
                    "secrets are not accepted on the command line (other users can see it "
                    f"in ps); set {input_env_var(name, leaf)} in the environment instead",
                    f"from {_CLI}",
                )
            # Input options are open-ended (each input checks its own), so any key goes.
            builder.read_input_text(name, leaf, text, _CLI)
            continue
        if parts[0] == "inputs":
            raise ConfigError(key, "name an input key, e.g. inputs.xmpp.jid", f"from {_CLI}")
        raise ConfigError(key, _suggest(key, _known_keys()), f"from {_CLI}")


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
}


def _is_table_override(key: str) -> bool:
    parts = key.split(".")
    groups = len(parts) == 4 and parts[0] == "inputs" and parts[2] == "groups"
    return parts[0] in _TABLES or groups


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
    raise ConfigError(key, _TABLE_SHAPES[top], f"from {_CLI}")


def _merge_table_overrides(data: dict[str, Any], overrides: Mapping[str, str]) -> None:
    """Put `--set` values for table keys into the file's tables, to be read with them.

    A table key set on the command line changes that one key of the file's entry (or
    starts a new entry); the table readers then check the whole entry as usual.
    """
    for key, text in overrides.items():
        kind = _table_override_kind(key)
        try:
            value = _from_text(kind, text)
        except _Invalid:
            value = text  # the table's reader says what it must be
        parts = key.split(".")
        node = data
        for depth, part in enumerate(parts[:-1], start=1):
            inner = node.setdefault(part, {})
            if not isinstance(inner, dict):
                where = ".".join(parts[:depth])
                raise ConfigError(key, f"{where} is not a table in the config file", f"from {_CLI}")
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
    builder = _Builder(source, file_dir, table_overrides)
    builder.read_file(data)

    # Sections first: HARKEN_BOT_INPUTS (or --inputs) may enable an input whose own
    # variables must then be recognised, e.g. HARKEN_MATRIX_TOKEN.
    rest = _read_env(builder, env)
    section_overrides = {k: v for k, v in overrides.items() if k in _RULES}
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
    (any input, started or not), so the CLI can remove them once the settings are read."""
    return sorted(v for v in env if v.startswith("HARKEN_") and is_secret_key(v[len("HARKEN_") :]))


# --- rendering -----------------------------------------------------------------------


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a TOML basic string, except that TOML wants DEL escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, Secret):
        return '"***"'
    # Dates and times from TOML render as TOML dates in isoformat.
    return str(getattr(value, "isoformat", lambda: value)())


def _table(header: str, rows: list[tuple[str, str, str | None]]) -> list[str]:
    width = max((len(k) + 3 + len(v) for k, v, _ in rows), default=0)
    lines = [header]
    for key, value, origin in rows:
        assignment = f"{key} = {value}"
        lines.append(f"{assignment:<{width}}  # {origin}" if origin else assignment)
    return lines


def render_settings(settings: Settings) -> str:
    """The effective settings as a TOML config file, each value's origin noted.

    This is what `harken check` prints: saved and given to `--config`, it gives the same
    settings (every path in it is absolute). Secrets come only from the environment, so
    they appear as comments: `# bot_token = "***"` when set, `(unset)` when not.
    Comments say where each value came from (`default`, `file`, `env VAR`, `cli`).
    """
    origins = settings.origins
    out = [
        "# Harken effective settings",
        f"# source: {settings.source}",
        f"# data directory: {settings.bot.data_dir}",
        "# Comments say where each value came from: default, file, env <VAR> or cli.",
        "# Saved to a file, this is a config for --config; secrets stay in the environment.",
    ]
    sections: Mapping[str, Any] = {
        "bot": settings.bot,
        "memory": settings.memory,
        "log": settings.log,
        "scheduler": settings.scheduler,
        "ops": settings.ops,
        "health": settings.health,
    }
    # Paths left empty follow another setting: say where they lead.
    derived = {
        "memory.path": f"{settings.memory.path} (memory in bot.data_dir)",
        "scheduler.path": (
            f"{settings.scheduler.job_store(settings.memory.path)} (beside the memory store)"
        ),
        "log.file": f"stderr (an interactive shell: {settings.bot.data_dir}/harken.log)",
    }
    for section, values in sections.items():
        rows = []
        for f in dataclasses.fields(values):
            key = f"{section}.{f.name}"
            value, origin = getattr(values, f.name), origins.get(key)
            if origin == DERIVED:
                value, origin = "", "default"
            if key in derived and not value:
                origin = f"{origin}: {derived[key]}"
            rows.append((f.name, _toml_value(value), origin))
        out += ["", *_table(f"[{section}]", rows)]
    out += render_ops_tables(settings, _toml_value)
    for name, settings_for in settings.inputs.items():
        prefix = f"inputs.{name}"
        rows = [("admins", _toml_value(settings_for.admins), origins.get(f"{prefix}.admins"))]
        if settings_for.groups:
            rows.append(
                ("groups", _toml_value(settings_for.groups), origins.get(f"{prefix}.groups"))
            )
        rows += [
            (_toml_key(k), _toml_value(v), origins.get(f"{prefix}.{k}"))
            for k, v in settings_for.options.items()
        ]
        started = "started" if name in settings.bot.inputs else "not started (not in bot.inputs)"
        out += ["", *_table(f"[{_toml_key_path(prefix)}]  # {started}", rows)]
        declared = settings_for.spec.secrets if settings_for.spec else ()
        secret_names = dict.fromkeys([*declared, *settings_for.secrets])
        for leaf in secret_names:
            var = input_env_var(name, leaf)
            shown = '"***"' if leaf in settings_for.secrets else "(unset)"
            out.append(f"# {_toml_key(leaf)} = {shown}  (secret: env {var} only)")
    if settings.unknown_env:
        out += [
            "",
            "# Ignored environment variables (they match no setting):",
            *(f"#   {var}{_env_hint(var, settings)}" for var in settings.unknown_env),
        ]
    return "\n".join(out) + "\n"


def _toml_key_path(dotted: str) -> str:
    return ".".join(_toml_key(part) for part in dotted.split("."))


def _env_hint(var: str, settings: Settings) -> str:
    """` (did you mean HARKEN_X?)` for an ignored variable close to a real one, else ''."""
    known = [DATA_DIR_ENV_VAR, *(f"HARKEN_{key.replace('.', '_')}".upper() for key in _RULES)]
    for name, settings_for in settings.inputs.items():
        declared = settings_for.spec.secrets if settings_for.spec else ()
        leaves = ["admins", *settings_for.options, *declared]
        known += [input_env_var(name, leaf) for leaf in leaves]
    match = difflib.get_close_matches(var, known, n=1, cutoff=0.8)
    return f" (did you mean {match[0]}?)" if match else ""
