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
    "REMINDERS_TO",
    "TEAM_OWNER",
    "USER_NS",
    "CommandInfo",
    "Commands",
    "Context",
    "Identity",
    "LinkOutcome",
    "MemoryRefused",
    "MemoryView",
    "SchedulingRefused",
    "SendRefused",
    "SendResult",
    "TooManyLinkCodes",
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
REMINDERS_TO = "reminders_to"
"""Profile key: where a person's reminders go: `here` (where each was set, the
default), `last active`, or an input's name (`reminders go to`)."""

MAX_KEY_CHARS = 200
MAX_VALUE_BYTES = 32 * 1024


class MemoryRefused(ValueError):
    """A write Harken will not store; the message says why, for the person."""


class SchedulingRefused(ValueError):
    """A job Harken will not schedule (limit reached, scheduler down); says why, for the person."""


class SendRefused(ValueError):
    """A message `ctx.send` could not send (no such input running, a recipient the input
    refuses, a permanent failure); the message says why, for the person."""


class TooManyLinkCodes(Exception):
    """`Identity.offer_link` refused: `most` link codes were sent within `window_seconds`
    already, asked by this person, or (`to_account`) to that account by anyone.
    `wait_seconds`: how long until one more may be sent."""

    def __init__(
        self, wait_seconds: float, *, most: int, window_seconds: float, to_account: bool
    ) -> None:
        super().__init__(f"{most} link codes in {window_seconds:g} s; wait {wait_seconds:.0f} s")
        self.wait_seconds = wait_seconds
        self.most = most
        self.window_seconds = window_seconds
        self.to_account = to_account


@dataclass(frozen=True)
class SendResult:
    """What `ctx.send` did with a message it took."""

    delivered: bool
    """True: handed over (to the mail server, the chat service). False: kept in the
    input's outbox and retried; the person who asked hears later if it fails for good."""
    note: str = ""
    """Why it is not delivered yet, for the person."""


def owner_of(event: Event) -> str:
    """The account of the person in an event, `<input>:<user>`: the same name on two
    inputs is two accounts, one person only once they are linked (`Identity`)."""
    return f"{event.input}:{event.user}"


@dataclass(frozen=True)
class LinkOutcome:
    """What saying a link code did (`Identity.confirm_link`)."""

    outcome: str
    """`linked`; `wrong` (tries left); `expired`, `spent` (too many tries) or `none`
    (no code pending): the link is not made and the code is gone."""
    account: str = ""
    """The account the code was for (`<input>:<user>`)."""
    tries_left: int = 0
    conflicts: tuple[str, ...] = ()
    """`<namespace>/<key>` both accounts had: the asking account's value was kept."""


class Identity(Protocol):
    """The person's linked accounts (`ctx.identity`): the memory actor keeps the map."""

    @property
    def owner(self) -> str:
        """The person's memory owner: `person:<id>` once linked, else their account."""
        ...

    def accounts(self) -> list[str]:
        """Every account of this person (`<input>:<user>`), theirs alone if unlinked."""
        ...

    def offer_link(self, account: str, code: str, expires_at: float, tries: int) -> None:
        """Keep `code` (in memory only, never stored or logged) as the proof that this
        person controls `account`, until `expires_at` (time.time()) or `tries` wrong
        answers; it replaces any code they had pending. Raises `TooManyLinkCodes`
        (nothing kept) when this person, or anyone for `account`, had too many codes
        sent lately (`[identity]` limits)."""
        ...

    def withdraw_link(self) -> None:
        """Forget the pending code: it could not be sent, so it does not count against
        the limits."""
        ...

    def confirm_link(self, code: str) -> LinkOutcome:
        """Link the pending account if `code` is its code (compared in constant time)."""
        ...

    def unlink(self, account: str) -> bool:
        """Split `account` off this person (it keeps a copy of their memory); False if
        it is not one of their linked accounts."""
        ...


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
        """The person's account, `<input>:<user>` (`owner_of`): who did it, for audits.
        Their memory is their person's once linked (`identity.owner`)."""
        ...

    @property
    def identity(self) -> Identity:
        """The person's linked accounts (`link`, `unlink`, `whoami`)."""
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
