"""Collect the settings layer by layer and build the frozen `Settings` from them.

`load_settings` (`config.loader`) feeds the builder the file, then the environment, then
the command line; the builder checks each value with its rule (`config.rules`), makes
paths absolute, remembers where each value came from, and builds the settings at the end.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from config.inputs import (
    DeclarationError,
    InputSpec,
    input_env_var,
    input_spec,
    installed_specs,
    is_secret_key,
)
from config.ops_config import TableError, read_access, read_groups, read_runbooks, read_services
from config.rules import (
    ADMINS_RULE,
    PATH_KEYS,
    RULES,
    SECTION_SECRETS,
    SECTIONS,
    TABLES,
    TEXT_KINDS,
    ConfigError,
    Invalid,
    Rule,
    apply,
    check_input_name,
    known_keys,
    show,
    suggest,
)
from config.settings import (
    SHELL_INPUT,
    SHIPPED_DEFAULT,
    AccessSettings,
    BotSettings,
    ClusterSettings,
    InputSettings,
    Secret,
    Settings,
)
from config.streams_config import read_streams

DERIVED: Final = "derived from bot.data_dir"
"""The origin of `memory.path` when it was left empty and follows the data directory."""
CLI: Final = "the command line"
"""How the command line is named in messages (`from the command line`)."""


def _absolute(value: Any, base: str) -> Any:
    """A path, or a tuple of paths, made absolute against `base`; empty stays empty."""
    if isinstance(value, tuple):
        return tuple(_absolute(item, base) for item in value)
    if not isinstance(value, str) or not value:
        return value
    return os.path.normpath(os.path.join(base, value))


def _freeze(value: Any) -> Any:
    # Options reach actors on other threads; immutable values cannot be changed under them.
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


class Builder:
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
        # Section secrets (`memory.url`) by dotted key, from the environment only.
        self.section_secrets: dict[str, Secret] = {}

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
            elif top in TABLES:
                self.tables[top] = _read_table(top, table, self.cli_keys)
            elif top in SECTIONS:
                self._read_section(top, table)
            else:
                raise ConfigError(top, suggest(top, [*SECTIONS, *TABLES, "inputs", *RULES]))

    def _read_section(self, section: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(section, f"must be a table ([{section}]), got {show(table)}")
        for leaf, value in table.items():
            key = f"{section}.{leaf}"
            rule = RULES.get(key)
            if key in SECTION_SECRETS:
                raise ConfigError(
                    key,
                    "secrets must not be in a config file; set "
                    f"{SECTION_SECRETS[key]} in the environment instead",
                )
            if rule is None:
                raise ConfigError(key, suggest(key, known_keys()))
            if key == "log.levels" and isinstance(value, dict):
                # A `[log.levels]` table; env and flags give the same as "logger=LEVEL,...".
                pairs = [f"{name}={level}" for name, level in value.items()]
                checked = apply(rule, key, pairs, None, text=False)
            else:
                checked = apply(rule, key, value, None, text=False)
            if key in PATH_KEYS:
                checked = _absolute(checked, self.file_dir)
            self.set(key, checked, self.file_label)

    def _read_inputs(self, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError("inputs", f"must be a table ([inputs.<name>]), got {show(table)}")
        for name, section in table.items():
            try:
                check_input_name(name)
            except Invalid as bad:
                raise ConfigError(f"inputs.{name}", bad.problem) from None
            if not isinstance(section, dict):
                raise ConfigError(
                    f"inputs.{name}", f"must be a table ([inputs.{name}]), got {show(section)}"
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
                    self.admins[name] = apply(ADMINS_RULE, key, value, None, text=False)
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
        if kind not in TEXT_KINDS:
            return _freeze(value)
        return apply(Rule(kind, TEXT_KINDS[kind]), key, value, None, text=False)

    # -- environment and command line --

    def read_section_text(self, key: str, text: str, origin: str) -> None:
        value = apply(RULES[key], key, text, f"from {origin}", text=True)
        if key in PATH_KEYS:
            value = _absolute(value, self.cwd)
        self.set(key, value, "cli" if origin == CLI else f"env {origin}")

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
            self.admins[name] = apply(ADMINS_RULE, key, text, where, text=True)
        else:
            options = self.input(name)
            current = options.get(leaf, "")
            kind = type(current) if type(current) in TEXT_KINDS else str
            options[leaf] = apply(Rule(kind, TEXT_KINDS[kind]), key, text, where, text=True)
            if self.is_path(name, leaf):
                options[leaf] = _absolute(options[leaf], self.cwd)
        self.origins[key] = "cli" if origin == CLI else f"env {origin}"

    # -- result --

    def build(self, unknown_env: Iterable[str]) -> Settings:
        # The data directory is absolute from here on, and the memory store follows it
        # unless a layer named a path of its own.
        data_dir = self.values.get("bot.data_dir") or _absolute(BotSettings().data_dir, self.cwd)
        self.values["bot.data_dir"] = data_dir
        if not self.values.get("memory.path"):
            self.set("memory.path", os.path.join(data_dir, "memory"), DERIVED)
        sections: dict[str, Any] = {}
        for section, cls in SECTIONS.items():
            fields = {
                f.name: self.values[f"{section}.{f.name}"]
                for f in dataclasses.fields(cls)
                if f"{section}.{f.name}" in self.values
            }
            fields.update(
                (key.partition(".")[2], secret)
                for key, secret in self.section_secrets.items()
                if key.partition(".")[0] == section
            )
            sections[section] = cls(**fields)
            for f in dataclasses.fields(cls):
                self.origins.setdefault(f"{section}.{f.name}", "default")
        bot: BotSettings = sections["bot"]
        if sections["memory"].backend == "postgresql" and sections["memory"].url is None:
            raise ConfigError(
                "memory.url",
                "is not set: the postgresql memory backend needs HARKEN_MEMORY_URL in the "
                "environment (postgresql://user:password@host:5432/database)",
            )
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
            cluster=_cluster(sections["cluster"]),
            identity=sections["identity"],
            services=self.tables.get("services", {}),
            runbooks=self.tables.get("runbooks", {}),
            access=self.tables.get("access", AccessSettings()),
            streams=self.tables.get("streams", {}),
            inputs=inputs,
            source=self.source,
            origins=self.origins,
            unknown_env=tuple(sorted(unknown_env)),
        )


def _cluster(cluster: ClusterSettings) -> ClusterSettings:
    # Renewing at least twice per lease leaves the leader time to stop before it ends.
    if cluster.renew_seconds * 2 > cluster.lease_seconds:
        raise ConfigError(
            "cluster.renew_seconds",
            f"must be at most half of cluster.lease_seconds ({cluster.lease_seconds:g}), "
            f"got {cluster.renew_seconds:g}",
        )
    return cluster


def _read_table(key: str, value: Any, cli_keys: frozenset[str] = frozenset()) -> Any:
    """A services, runbooks or access table, or an input's groups (config/ops_config.py)."""
    readers: dict[str, Callable[[Any], Any]] = {
        "services": read_services,
        "runbooks": read_runbooks,
        "access": lambda table: read_access(table, AccessSettings()),
        "streams": read_streams,
    }
    reader = readers.get(key) or (lambda table: read_groups(key, table))
    try:
        return reader(value)
    except TableError as bad:
        origin = f"from {CLI}" if bad.key in cli_keys else None
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
