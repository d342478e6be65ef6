"""What a command sees while it runs (`ctx`), as a protocol, and the rules of memory.

Commands type their `ctx` with `Context` and their memory with `MemoryView`; the bot's
implementation (actors/context.py) talks to the memory and scheduler actors, and
`harken.testing.call` runs a command with it over an in-memory store. Keeping the
protocol here lets a command be read, typed and tested without the actor system.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    # Only the settings' type: config/ imports nothing of Harken's other packages.
    from config.settings import Settings
    from core.event import Event
    from core.jobs import CancelResult, JobInfo, When
    from core.status import StatusReport

__all__ = [
    "MAX_KEY_CHARS",
    "MAX_VALUE_BYTES",
    "PROFILE_NS",
    "TEAM_OWNER",
    "USER_NS",
    "CommandInfo",
    "Commands",
    "Context",
    "MemoryRefused",
    "MemoryView",
    "SchedulingRefused",
    "SendRefused",
    "SendResult",
    "key_problem",
    "owner_of",
]

# Namespaces in memory (see ARCHITECTURE.md).
USER_NS = "user"
"""What a person asked Harken to remember (`remember`, `recall`)."""
PROFILE_NS = "profile"
"""Facts about a person Harken uses itself: display name, time zone."""
TEAM_OWNER = "team"
"""The owner of what belongs to everyone rather than one person (`ctx.team_memory`)."""

MAX_KEY_CHARS = 200
MAX_VALUE_BYTES = 32 * 1024


class MemoryRefused(ValueError):
    """A write Harken will not store; the message says why, for the person."""


class SchedulingRefused(ValueError):
    """A job Harken will not schedule (limit reached, scheduler down); says why, for the person."""


class SendRefused(ValueError):
    """A message `ctx.send` could not send (no such input running, a recipient the input
    refuses, a permanent failure); the message says why, for the person."""


@dataclass(frozen=True)
class SendResult:
    """What `ctx.send` did with a message it took."""

    delivered: bool
    """True: handed over (to the mail server, the chat service). False: kept in the
    input's outbox and retried; the person who asked hears later if it fails for good."""
    note: str = ""
    """Why it is not delivered yet, for the person."""


def owner_of(event: Event) -> str:
    """The memory owner for the person in an event: the same name on two inputs is two people."""
    return f"{event.input}:{event.user}"


def key_problem(key: str) -> str | None:
    """Why no value can be kept under `key` (for the person), or None if one can."""
    if not key:
        return "A key must not be empty"
    if len(key) > MAX_KEY_CHARS:
        return (
            f"That key is {len(key):,} characters long; a key is at most {MAX_KEY_CHARS} characters"
        )
    return None


class MemoryView(Protocol):
    """One person's (or the team's) key/value memory in one namespace.

    A key no value can be kept under (see `key_problem`) is answered at once: `get`
    returns the default, `delete` False, and `set` raises `MemoryRefused`, as does a
    value that is not JSON or is over `MAX_VALUE_BYTES`.
    """

    def get(self, key: str, default: Any = None) -> Any: ...

    def keys(self) -> list[str]: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> bool: ...


class CommandInfo(Protocol):
    """A command as another command sees it (`help`): commands.base.Command is one."""

    @property
    def name(self) -> str: ...

    @property
    def usage(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def admin_only(self) -> bool: ...

    @property
    def hidden(self) -> bool: ...


class Commands(Protocol):
    """The commands the bot knows, as `ctx.registry`: commands.base.Registry is one."""

    def by_name(self, name: str) -> CommandInfo | None: ...

    def commands(self) -> Sequence[CommandInfo]: ...

    def find(self, text: str, *, hidden: bool = False) -> tuple[CommandInfo, re.Match[str]] | None:
        """The first command matching `text`, with its match."""
        ...


class Context(Protocol):
    """Everything a command may use, injected as `ctx`."""

    @property
    def event(self) -> Event:
        """The message being answered."""
        ...

    @property
    def settings(self) -> Settings: ...

    @property
    def registry(self) -> Commands:
        """The commands the bot knows (`help`)."""
        ...

    @property
    def is_admin(self) -> bool:
        """The person is an admin on the input the message came through."""
        ...

    @property
    def owner(self) -> str:
        """The person's memory owner, `<input>:<user>` (`owner_of`)."""
        ...

    @property
    def memory(self) -> MemoryView:
        """What the person asked Harken to remember (namespace `user`)."""
        ...

    @property
    def profile(self) -> MemoryView:
        """Facts about the person Harken uses itself (namespace `profile`)."""
        ...

    @property
    def user(self) -> str:
        """The person's id on the input."""
        ...

    def memory_for(self, namespace: str) -> MemoryView:
        """This person's memory in another namespace (`plugin:<name>` for a plugin's own)."""
        ...

    def team_memory(self, namespace: str) -> MemoryView:
        """Memory the whole team shares, whatever the input (owner `team`): incidents."""
        ...

    def say(self, text: str) -> None:
        """Send a reply now, before the command returns (progress for slow commands)."""
        ...

    def send(self, *, input: str, to: str, text: str, subject: str = "") -> SendResult:
        """Send `text` to `to` through another input, e.g. `input="email"`.

        Waits (a few seconds at most) for the input's first try. Raises `SendRefused`
        (the message is for the person) for an input that is not running, a recipient it
        refuses, or a failure that retrying cannot mend.
        """
        ...

    def timezone(self) -> ZoneInfo:
        """The person's stored time zone, else the configured default."""
        ...

    def schedule_reminder(self, when: When, text: str) -> JobInfo:
        """Remind this person of `text` at `when`, here (same input, channel and thread).

        `when` comes from `commands.when.parse_when`. The job is on disk when this
        returns. Raises `SchedulingRefused` (the message is for the person).
        """
        ...

    def schedule_command(self, when: When, command: str) -> JobInfo:
        """Run `command` as this person at `when`; its answer is sent here."""
        ...

    def jobs(self) -> list[JobInfo]:
        """This person's pending jobs, soonest first."""
        ...

    def cancel_job(self, job_id: str) -> CancelResult:
        """Cancel a job of this person's (any job on this input, for an admin)."""
        ...

    def status(self) -> StatusReport | None:
        """The running bot's health and counters (`status`); None where a command runs
        outside the bot (`harken.testing.call`). Blocks up to a few seconds."""
        ...
