"""The settings schema: what Harken can be configured with, and the defaults.

These dataclasses are plain, frozen values. They do not validate themselves: the loader
(`config.loader`) checks every value before building them, so a bad file, environment
variable or flag is reported as one clear `ConfigError` instead of failing somewhere deep
inside an actor. The defaults here are the single source of truth; the shipped
`config/harken.toml` repeats them for readers, and a test keeps the two equal. An input's
options are not listed here: each input declares its own (`config.inputs`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from config.inputs import InputSpec, installed_specs

SHIPPED_DEFAULT: Final = "<shipped default>"
"""`Settings.source` when the settings came from the shipped `config/harken.toml`."""

SHELL_INPUT: Final = "shell"
"""The terminal input: wired by the command line rather than an entry point, and without
options of its own. `Settings.inputs` always has an entry for it."""


class Secret:
    """A secret string that does not show itself.

    `repr`, `str` and formatting all print `***`, so a `Settings` object can be logged,
    printed or put in an error message without leaking a token. Not even the length is
    shown: it would help a guesser and never helps a reader. Call `reveal()` at the one
    place that hands the value to a client library.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        # object.__setattr__ because __setattr__ below refuses changes (frozen like the
        # dataclasses that hold it).
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The secret value itself; keep it out of logs and messages."""
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling must work (actors may copy messages), and pickles are not printed.
        return (Secret, (self._value,))


def _read_only(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    # Copy before wrapping: a proxy over the caller's dict would still change with it.
    return MappingProxyType(dict(mapping))


def _no_options() -> Mapping[str, Any]:
    return MappingProxyType({})


def _no_secrets() -> Mapping[str, Secret]:
    return MappingProxyType({})


@dataclass(frozen=True)
class BotSettings:
    """`[bot]`: the bot as a whole."""

    name: str = "harken"
    """Name the bot answers to and signs with."""
    inputs: tuple[str, ...] = ("shell",)
    """Inputs to start, by name: `shell`, or any input installed under `harken.inputs`."""
    timezone: str = "UTC"
    """Default IANA time zone for users who have not set their own."""
    command_dirs: tuple[str, ...] = ()
    """Directories of plain `.py` command files (absolute once loaded: see `data_dir`)."""
    data_dir: str = "./var"
    """Where Harken keeps its state: the memory store, the job store and the shell's log,
    unless `memory.path`, `scheduler.path` or `log.file` say otherwise.

    The loader makes this and every other path absolute once, at start: a relative path
    written in a user config file is relative to that file's directory (so a config and
    its state and commands can move together); one from the shipped default, the
    environment or the command line is relative to the current directory (so `make run`
    keeps its state in the checkout's `./var/`).
    """
    conversation_idle_seconds: float = 300.0
    """A conversation idle this long stops its actor; its state stays in memory."""
    dialog_timeout_seconds: float = 1800.0
    """A dialog left this long without an answer expires; the next message starts afresh."""
    workers: int = 16
    """Threads that run commands, so one slow command does not delay other people."""
    max_message_bytes: int = 65536
    """Inbound messages longer than this (in UTF-8 bytes) are refused with a reply."""


@dataclass(frozen=True)
class MemorySettings:
    """`[memory]`: where per-user state is kept."""

    backend: str = "tinydb"
    """Store implementation: `tinydb` (embedded, files under `path`) or `postgresql`
    (shared by several processes, in the database `url` names)."""
    path: str = ""
    """Store location; empty means `memory` in `bot.data_dir`. The loader always fills
    in the absolute path, so code reading loaded settings never sees it empty."""
    url: Secret | None = None
    """The PostgreSQL database of the `postgresql` backend, from `HARKEN_MEMORY_URL`
    only: a secret, since it may hold a password (`config.rules.SECTION_SECRETS`)."""


@dataclass(frozen=True)
class SchedulerSettings:
    """`[scheduler]`: reminders and deferred commands."""

    path: str = ""
    """SQLite file of the job store; empty means `jobs.sqlite` beside the memory store
    (`<bot.data_dir>/jobs.sqlite` with the default `memory.path`), so the two move
    together."""
    grace_seconds: float = 3600.0
    """A job that fell due while Harken was down is still delivered (marked late) if it is
    at most this late; later than that, the person is told what was missed instead."""
    max_jobs_per_user: int = 100
    """Pending jobs one person may have; more are refused with a reply."""
    min_interval_seconds: float = 60.0
    """The shortest interval of a recurring job (`every 2 hours`), so none floods a channel."""
    url: Secret | None = None
    """PostgreSQL database of a job store shared by several Harken processes, from
    `HARKEN_SCHEDULER_URL` only (a secret: `config.rules.SECTION_SECRETS`). Unset: the
    memory store's `url` when `[memory] backend = "postgresql"`, else the SQLite file."""

    def job_store(self, memory_path: str) -> str:
        """The job store's path, given the memory store's."""
        return self.path or os.path.join(
            os.path.dirname(os.path.normpath(memory_path)), "jobs.sqlite"
        )


@dataclass(frozen=True)
class IdentitySettings:
    """`[identity]`: what a person's linked accounts share (`link`)."""

    share_groups: bool = False
    """A linked account is in the groups of every account of the person (the groups of
    `[inputs.<name>] groups`); off: groups stay per account."""
    share_admin: bool = False
    """A linked account is an admin wherever one of the person's accounts is; off: an
    account is an admin only where `[inputs.<name>] admins` says so."""
    reload_seconds: float = 5.0
    """With a memory store several processes share, how often the map of linked
    accounts is checked for another process's change (one read when it is used)."""
    link_codes_per_person: int = 3
    """Link codes one person (all their linked accounts) may have sent within
    `link_codes_window_seconds`; then `link` says when they may ask again."""
    link_codes_per_account: int = 3
    """Link codes one account may be sent within `link_codes_window_seconds`, whoever
    asks, so nobody can make Harken flood someone else with codes."""
    link_codes_window_seconds: float = 3600.0
    """The window both limits on link codes count in."""


@dataclass(frozen=True)
class LogSettings:
    """`[log]`: logging."""

    level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR (the loader accepts any case and stores upper case)."""
    file: str = ""
    """Log file path; empty logs to stderr (an interactive shell: `<bot.data_dir>/harken.log`)."""
    format: str = "text"
    """`text` (one line per record) or `json` (one JSON object per line, for log shippers)."""
    levels: tuple[str, ...] = ()
    """Levels of single loggers as `logger=LEVEL` (in a file, a `[log.levels]` table)."""


@dataclass(frozen=True)
class OpsSettings:
    """`[ops]`: how the operations commands (`health`, `call`, `run`, watches) behave."""

    check_timeout_seconds: float = 5.0
    """A health check (HTTP or TCP) that takes longer than this counts as down."""
    slow_seconds: float = 2.0
    """A healthy answer slower than this is reported as slow."""
    max_parallel_checks: int = 8
    """Checks one `health` runs at once, so checking 200 services holds 8 threads, not 200."""
    call_timeout_seconds: float = 10.0
    """`call` gives up on a service that has not answered after this long."""
    reply_max_chars: int = 1500
    """`call` responses and runbook output are cut to this many characters in chat."""
    runbook_tail_lines: int = 20
    """A runbook's reply shows the last this many lines of its output."""
    runbook_progress_seconds: float = 2.0
    """A runbook still running after this long gets a first reply ("running...")."""
    audit_keep: int = 1000
    """Audit entries kept (the oldest are overwritten)."""


@dataclass(frozen=True)
class HealthSettings:
    """`[health]`: the bot's own HTTP endpoint (`/healthz`, `/metrics`)."""

    enabled: bool = False
    """Serve the endpoint; off by default so two bots on one machine never collide."""
    host: str = "127.0.0.1"
    """Address to listen on; loopback unless a probe elsewhere must reach it."""
    port: int = 9464
    """TCP port (0 picks a free one, which the log line names)."""


@dataclass(frozen=True)
class ClusterSettings:
    """`[cluster]`: several Harken processes on one PostgreSQL job store."""

    enabled: bool = False
    """Share the job store with other processes; one of them, the leader, runs due jobs."""
    name: str = ""
    """This process's name in the cluster; empty: `<hostname>-<pid>`."""
    lease_seconds: float = 8.0
    """How long the leader's lease lasts unless renewed: a leader that died is replaced
    within about this long."""
    renew_seconds: float = 2.0
    """How often the leader renews its lease (and the others try to take it); at most
    half of `lease_seconds`. A leader that could not renew for `lease_seconds -
    renew_seconds` stops running jobs, before others may take the lease."""

    def process_name(self) -> str:
        """The name this process goes by in the cluster."""
        return self.name or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ServiceSettings:
    """`[services.<name>]`: a service the team runs, for `health`, `call` and watches."""

    name: str
    url: str = ""
    """Base URL, e.g. `http://billing.internal:8080`; empty for a TCP-only service (one
    with `tcp` only), which `call` cannot reach."""
    health: str = ""
    """Path checked with GET (`/healthz`); 2xx and 3xx are healthy."""
    tcp: str = ""
    """`host:port` checked by opening a connection, for services without HTTP health."""
    tags: tuple[str, ...] = ()
    description: str = ""
    call: tuple[str, ...] = ()
    """Paths `call` may request (`/status`, `/v1/*`); empty: `call` is refused."""


@dataclass(frozen=True)
class RunbookSettings:
    """`[runbooks.<name>]`: a command `run <name> [args]` may start, never through a shell."""

    name: str
    argv: tuple[str, ...]
    """The program and its arguments; `{arg}` in an element is replaced by that argument."""
    args: Mapping[str, str] = field(default_factory=_no_options)
    """Argument name -> regular expression the whole value must match, in the order the
    person gives them."""
    timeout_seconds: float = 60.0
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "args", _read_only(self.args))


@dataclass(frozen=True)
class StreamSettings:
    """`[streams.<name>]`: a stream to run, with its options as written (strings, numbers,
    booleans, lists of strings). The stream declares what it accepts; they are checked
    against that declaration at start-up and by `harken check` (commands/streams.py)."""

    name: str
    options: Mapping[str, Any] = field(default_factory=_no_options)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _read_only(self.options))


def _default_access() -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({"call": ("ops",), "run": ("ops",)})


@dataclass(frozen=True)
class AccessSettings:
    """`[access]`: which groups (`[inputs.<name>] groups`) may use which commands."""

    commands: Mapping[str, tuple[str, ...]] = field(default_factory=_default_access)
    """Command name -> groups allowed; admins always are. Commands not listed are open."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "commands", _read_only({k: tuple(v) for k, v in self.commands.items()})
        )


@dataclass(frozen=True)
class InputSettings:
    """`[inputs.<name>]`: one chat input."""

    name: str
    admins: tuple[str, ...] = ()
    """User ids (as the input names them) allowed to run admin-only commands."""
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=_no_options)
    """Named groups of user ids on this input (`ops = ["alice"]`), for `[access.commands]`."""
    options: Mapping[str, Any] = field(default_factory=_no_options)
    """Every other key of the section, read-only: the declared options (each with its
    default unless set) and any key the input does not declare; the input checks them."""
    secrets: Mapping[str, Secret] = field(default_factory=_no_secrets)
    """Secrets from `HARKEN_<INPUT>_<NAME>` environment variables; only those set."""
    spec: InputSpec | None = field(default=None, compare=False, repr=False)
    """What the input declares (`config.inputs`), or None for an input that declares
    nothing or is not installed here. How the options were read, not configuration."""

    def __post_init__(self) -> None:
        # Callers (tests, other code) may pass plain dicts; keep the object read-only.
        object.__setattr__(self, "options", _read_only(self.options))
        object.__setattr__(self, "secrets", _read_only(self.secrets))
        object.__setattr__(
            self, "groups", _read_only({k: tuple(v) for k, v in self.groups.items()})
        )


def default_inputs() -> Mapping[str, InputSettings]:
    """The `inputs` of default settings: the shell, and each installed input with the
    defaults it declares (an input whose declaration cannot be loaded gets none)."""
    inputs = {SHELL_INPUT: InputSettings(name=SHELL_INPUT)}
    for name, found in installed_specs().items():
        spec = found if isinstance(found, InputSpec) else None
        options = spec.defaults if spec else {}
        inputs[name] = InputSettings(name=name, options=options, spec=spec)
    return MappingProxyType(inputs)


@dataclass(frozen=True)
class Settings:
    """Everything Harken is configured with."""

    bot: BotSettings = field(default_factory=BotSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    log: LogSettings = field(default_factory=LogSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    ops: OpsSettings = field(default_factory=OpsSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    services: Mapping[str, ServiceSettings] = field(default_factory=_no_options)
    runbooks: Mapping[str, RunbookSettings] = field(default_factory=_no_options)
    access: AccessSettings = field(default_factory=AccessSettings)
    streams: Mapping[str, StreamSettings] = field(default_factory=_no_options)
    """The streams to run: only those with a `[streams.<name>]` section run."""
    inputs: Mapping[str, InputSettings] = field(default_factory=default_inputs)
    """Always has `shell` and every installed input, plus every input named in the file or
    in `bot.inputs`."""
    source: str = SHIPPED_DEFAULT
    """Path of the config file used, or `<shipped default>`."""
    origins: Mapping[str, str] = field(default_factory=_no_options, compare=False, repr=False)
    """Where each dotted key's value came from: `default`, `file`, `env NAME` or `cli`.

    Diagnostics for `render_settings`, not configuration, so it is left out of equality.
    """
    unknown_env: tuple[str, ...] = field(default=(), compare=False)
    """`HARKEN_*` environment variables that matched no setting and were ignored.

    Not an error (environments carry unrelated variables), but `harken check` warns,
    because a typo such as `HARKEN_BOT_WOKRERS` would otherwise go unnoticed.
    """

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        object.__setattr__(self, "runbooks", MappingProxyType(dict(self.runbooks)))
        object.__setattr__(self, "streams", MappingProxyType(dict(self.streams)))
        object.__setattr__(self, "origins", _read_only(self.origins))
