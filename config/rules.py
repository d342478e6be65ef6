"""The rules for each configuration key: its kind, what a valid value looks like, the checks.

Every layer (file, environment, command line) reads a value through the same rule, so a
key is accepted or refused the same way wherever it was set, and the message names the
key and what it must be. `ConfigError` is the one-line error all of configuration raises.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from config.inputs import installed_inputs
from config.settings import (
    SHELL_INPUT,
    BotSettings,
    ClusterSettings,
    HealthSettings,
    IdentitySettings,
    LogSettings,
    MemorySettings,
    OpsSettings,
    SchedulerSettings,
)

SECTIONS: Final[Mapping[str, type[Any]]] = {
    "bot": BotSettings,
    "memory": MemorySettings,
    "log": LogSettings,
    "scheduler": SchedulerSettings,
    "ops": OpsSettings,
    "health": HealthSettings,
    "cluster": ClusterSettings,
    "identity": IdentitySettings,
}
# Tables of named entries ([services.<name>], [runbooks.<name>]) and [access]: see ops_config.
TABLES: Final = ("services", "runbooks", "access", "streams")
_INPUT_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
# Section names would make `HARKEN_BOT_<KEY>` ambiguous, and `config` is HARKEN_CONFIG.
_RESERVED_INPUT_NAMES: Final = frozenset({*SECTIONS, *TABLES, "inputs", "config"})
_LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS: Final = ("text", "json")
_MEMORY_BACKENDS: Final = ("tinydb", "postgresql")
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


class Invalid(Exception):
    """Raised by a rule's check; becomes a `ConfigError` once the key is known.

    An empty problem means "the standard message": must be <want> (got <value>).
    """

    def __init__(self, problem: str = "") -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class Rule:
    """How to read and check one key: its kind, and what a valid value looks like."""

    kind: type[Any]
    want: str
    check: Callable[[Any], Any] | None = None


def show(value: object, limit: int = 60) -> str:
    """A value as the user wrote it (TOML-ish), shortened so messages stay one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(item, limit) for item in value) + "]"
    elif isinstance(value, Mapping):
        text = "a table"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _at_least_one(value: int) -> int:
    if value < 1:
        raise Invalid()
    return value


def _positive_finite(value: float) -> float:
    if not (value > 0 and math.isfinite(value)):
        raise Invalid()
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise Invalid()
    return value


def _timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise Invalid(
            f'unknown time zone {show(value)} (use an IANA name such as "Europe/Berlin")'
        ) from err
    return value


def _input_names(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise Invalid('must name at least one input, e.g. ["shell"]')
    for name in value:
        check_input_name(name)
    duplicates = sorted({name for name in value if value.count(name) > 1})
    if duplicates:
        raise Invalid(f"lists {', '.join(duplicates)} more than once")
    return value


def check_input_name(name: str) -> None:
    if not _INPUT_NAME.match(name):
        raise Invalid(
            f"{show(name)} is not a valid input name "
            "(lower-case letters, digits and _, starting with a letter)"
        )
    if name in _RESERVED_INPUT_NAMES:
        raise Invalid(f"{show(name)} is reserved and cannot name an input")


def _one_of(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def check(value: str) -> str:
        normal = value.upper() if upper else value
        if normal not in choices:
            raise Invalid()
        return normal

    return check


def _paths(value: tuple[str, ...]) -> tuple[str, ...]:
    if any(not path.strip() for path in value):
        raise Invalid("must not contain an empty path")
    # TOML and env values get no shell expansion, yet people write ~/harken-commands.
    return tuple(os.path.expanduser(path) for path in value)


def _path(value: str) -> str:
    return os.path.expanduser(value)


def _logger_levels(value: tuple[str, ...]) -> tuple[str, ...]:
    levels = []
    for item in value:
        name, _, level = (part.strip() for part in item.partition("="))
        if not name or level.upper() not in _LOG_LEVELS:
            raise Invalid(
                f"{show(item)} is not logger=LEVEL with LEVEL one of " + ", ".join(_LOG_LEVELS)
            )
        levels.append(f"{name}={level.upper()}")
    return tuple(levels)


def _process_name(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,63}", value):
        raise Invalid(f"{show(value)} is not a process name (up to 63 letters, digits and _.:@-)")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise Invalid()
    return value


# The kind of each key comes from its dataclass default (see _rules_follow_dataclasses
# in the tests); what is valid beyond the type is stated here, next to the message.
RULES: Final[Mapping[str, Rule]] = {
    "bot.name": Rule(str, "a non-empty string", _non_empty),
    "bot.inputs": Rule(tuple, 'a list of input names, e.g. ["shell"]', _input_names),
    "bot.timezone": Rule(str, 'an IANA time zone name such as "Europe/Berlin"', _timezone),
    "bot.command_dirs": Rule(tuple, "a list of directory paths", _paths),
    "bot.data_dir": Rule(str, "a non-empty directory path", lambda v: _path(_non_empty(v))),
    "bot.conversation_idle_seconds": Rule(float, "a number > 0", _positive_finite),
    "bot.dialog_timeout_seconds": Rule(float, "a number > 0", _positive_finite),
    "bot.workers": Rule(int, "an integer >= 1", _at_least_one),
    "bot.max_message_bytes": Rule(int, "an integer >= 1", _at_least_one),
    "memory.backend": Rule(
        str, "one of: " + ", ".join(_MEMORY_BACKENDS), _one_of(_MEMORY_BACKENDS)
    ),
    "memory.path": Rule(str, "a path (empty: memory in bot.data_dir)", _path),
    "log.level": Rule(
        str, "one of " + ", ".join(_LOG_LEVELS) + " (any case)", _one_of(_LOG_LEVELS, upper=True)
    ),
    "log.file": Rule(str, "a file path (empty for stderr)", _path),
    "log.format": Rule(str, "one of: " + ", ".join(_LOG_FORMATS), _one_of(_LOG_FORMATS)),
    "log.levels": Rule(
        tuple, 'a table of logger = level, e.g. { apscheduler = "INFO" }', _logger_levels
    ),
    "scheduler.path": Rule(str, "a file path (empty: beside the memory store)", _path),
    "scheduler.grace_seconds": Rule(float, "a number > 0", _positive_finite),
    "scheduler.max_jobs_per_user": Rule(int, "an integer >= 1", _at_least_one),
    "scheduler.min_interval_seconds": Rule(float, "a number > 0", _positive_finite),
    "ops.check_timeout_seconds": Rule(float, "a number > 0", _positive_finite),
    "ops.slow_seconds": Rule(float, "a number > 0", _positive_finite),
    "ops.max_parallel_checks": Rule(int, "an integer >= 1", _at_least_one),
    "ops.call_timeout_seconds": Rule(float, "a number > 0", _positive_finite),
    "ops.reply_max_chars": Rule(int, "an integer >= 1", _at_least_one),
    "ops.runbook_tail_lines": Rule(int, "an integer >= 1", _at_least_one),
    "ops.runbook_progress_seconds": Rule(float, "a number > 0", _positive_finite),
    "ops.audit_keep": Rule(int, "an integer >= 1", _at_least_one),
    "health.enabled": Rule(bool, "true or false"),
    "health.host": Rule(str, "an address such as 127.0.0.1", _non_empty),
    "health.port": Rule(int, "a TCP port, 0 to 65535", _port),
    "cluster.enabled": Rule(bool, "true or false"),
    "cluster.name": Rule(str, "a name without spaces (empty: hostname-pid)", _process_name),
    "cluster.lease_seconds": Rule(float, "a number > 0", _positive_finite),
    "cluster.renew_seconds": Rule(float, "a number > 0", _positive_finite),
    "identity.share_groups": Rule(bool, "true or false"),
    "identity.share_admin": Rule(bool, "true or false"),
    "identity.reload_seconds": Rule(float, "a number > 0", _positive_finite),
    "identity.link_codes_per_person": Rule(int, "an integer >= 1", _at_least_one),
    "identity.link_codes_per_account": Rule(int, "an integer >= 1", _at_least_one),
    "identity.link_codes_window_seconds": Rule(float, "a number > 0", _positive_finite),
}
# Section keys that are secrets: read from their environment variable only, refused in a
# file or on the command line, shown masked. Not in RULES: they have no rule of text.
SECTION_SECRETS: Final[Mapping[str, str]] = {
    "memory.url": "HARKEN_MEMORY_URL",
    "scheduler.url": "HARKEN_SCHEDULER_URL",
}
# Keys holding paths: made absolute by the loader (see config.loader's docstring).
PATH_KEYS: Final = frozenset(
    {"bot.command_dirs", "bot.data_dir", "memory.path", "scheduler.path", "log.file"}
)
ADMINS_RULE: Final = Rule(tuple, "a list of user ids")
TEXT_KINDS: Final[Mapping[type[Any], str]] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    tuple: "a list of strings",
}


def _from_toml(kind: type[Any], value: Any) -> Any:
    """Check a value parsed by tomllib against a kind; raise `Invalid` if it is another."""
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
    raise Invalid()


def from_text(kind: type[Any], text: str) -> Any:
    """Parse an environment or command-line string as a kind; raise `Invalid` if it isn't."""
    text = text.strip()
    try:
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise Invalid() from None
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise Invalid()
    if kind is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    return text


def apply(rule: Rule, key: str, value: Any, origin: str | None, *, text: bool) -> Any:
    """Read one value with its rule, turning any failure into a `ConfigError` on `key`."""
    try:
        result = from_text(rule.kind, value) if text else _from_toml(rule.kind, value)
        return rule.check(result) if rule.check else result
    except Invalid as bad:
        raise ConfigError(
            key, bad.problem or f"must be {rule.want} (got {show(value)})", origin
        ) from None


def suggest(key: str, known: Iterable[str]) -> str:
    """`unknown key`, with the closest known key (by whole name, then by last part)."""
    known = list(known)
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if not match:
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in known}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.8)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f"unknown key (did you mean {match[0]}?)" if match else "unknown key"


def known_keys() -> list[str]:
    inputs = [SHELL_INPUT, *installed_inputs()]
    return [*RULES, *TABLES, *(f"inputs.{name}" for name in inputs)]
