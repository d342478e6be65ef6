"""The bot's `Context`: what a command sees while it runs, over the memory and scheduler actors.

It implements core/context.py's `Context` protocol, which the commands are typed
against. A `Context` lives for one invocation, on the worker thread that runs it. Reads
from memory ask the memory actor; writes are told to it and the replies are held back
until the memory actor has made those writes durable (group commit), so a reply such
as "I'll remember that" is never sent for a write that a crash could still lose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pykka

from actors.identity import ConfirmLink, OfferLink, Unlink, WhoIs, WithdrawLink
from actors.messages import (
    CancelJob,
    ListJobs,
    MemoryDelete,
    MemoryGet,
    MemoryKeys,
    MemoryPut,
    ScheduleJob,
)
from core.context import (
    MAX_KEY_CHARS,
    MAX_VALUE_BYTES,
    PROFILE_NS,
    TEAM_OWNER,
    USER_NS,
    LinkOutcome,
    MemoryRefused,
    SchedulingRefused,
    SendRefused,
    SendResult,
    TooManyLinkCodes,
    key_problem,
    owner_of,
)
from core.event import Event, EventType
from core.jobs import CancelResult, JobInfo, JobKind, JobSpec, When
from core.timefmt import format_time
from memory.store import InvalidWrite, check_names, encode_value

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from commands.base import Registry
    from config.settings import Settings
    from core.status import StatusReport

__all__ = ["Context", "MemoryView"]

_ASK_TIMEOUT = 10.0
_SEND_WAIT = 10.0
"""How long `send` waits for the input's first try before saying it keeps trying."""


class MemoryView:
    """One person's key/value memory in one namespace, kept by the memory actor.

    A key no value can be kept under (empty, or longer than `MAX_KEY_CHARS`) never
    reaches the memory actor: `get` returns the default and `delete` False, since
    nothing can be stored there, and `set` raises `MemoryRefused`. So an impossible key
    costs no round trip and is never reported as a write that failed.
    """

    def __init__(
        self, memory: Handle, namespace: str, owner: str, on_write: Callable[[], None]
    ) -> None:
        self._memory = memory
        self._namespace = namespace
        self._owner = owner
        self._on_write = on_write

    def get(self, key: str, default: Any = None) -> Any:
        if isinstance(key, str) and key_problem(key):
            return default
        return self._memory.ask(
            MemoryGet(self._namespace, self._owner, key, default), timeout=_ASK_TIMEOUT
        )

    def keys(self) -> list[str]:
        result: list[str] = self._memory.ask(
            MemoryKeys(self._namespace, self._owner), timeout=_ASK_TIMEOUT
        )
        return result

    def set(self, key: str, value: Any) -> None:
        # Refuse here what the memory actor would have to drop: a tell cannot be refused.
        if isinstance(key, str) and key_problem(key):
            raise MemoryRefused(f"a key must be 1 to {MAX_KEY_CHARS} characters long")
        try:
            check_names(self._namespace, self._owner, key)
            encode_value(value, MAX_VALUE_BYTES)
        except InvalidWrite as exc:
            raise MemoryRefused(str(exc)) from exc
        self._on_write()
        self._memory.tell(MemoryPut(self._namespace, self._owner, key, value))

    def delete(self, key: str) -> bool:
        if isinstance(key, str) and key_problem(key):
            return False
        self._on_write()
        existed: bool = self._memory.ask(
            MemoryDelete(self._namespace, self._owner, key), timeout=_ASK_TIMEOUT
        )
        return existed


class IdentityView:
    """The person's linked accounts (core.context.Identity), kept by the memory actor."""

    def __init__(
        self,
        memory: Handle,
        account: str,
        owner: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._memory = memory
        self._account = account
        self.owner = owner
        self._clock = clock
        """The bot's clock (`Runtime.clock`), which the limits on link codes count by."""

    def accounts(self) -> list[str]:
        _, found = self._memory.ask(WhoIs(self._account), timeout=_ASK_TIMEOUT)
        return list(found)

    def offer_link(self, account: str, code: str, expires_at: float, tries: int) -> None:
        message = OfferLink(self._account, account, code, expires_at, tries, self._clock())
        refused = self._memory.ask(message, timeout=_ASK_TIMEOUT)
        if isinstance(refused, TooManyLinkCodes):
            raise refused

    def withdraw_link(self) -> None:
        self._memory.ask(WithdrawLink(self._account), timeout=_ASK_TIMEOUT)

    def confirm_link(self, code: str) -> LinkOutcome:
        outcome: LinkOutcome = self._memory.ask(
            ConfirmLink(self._account, code, time.time()), timeout=_ASK_TIMEOUT
        )
        if outcome.outcome == "linked":
            self.owner = self._memory.ask(WhoIs(self._account), timeout=_ASK_TIMEOUT)[0]
        return outcome

    def unlink(self, account: str) -> bool:
        done: bool = self._memory.ask(Unlink(self._account, account), timeout=_ASK_TIMEOUT)
        return done


class _Writes:
    """Whether a context's memory views wrote: theirs to mark, not the context's own
    method, so that a context and its views hold no cycle and are freed as soon as the
    turn is done (not by a garbage collection, which every message in flight waits for)."""

    __slots__ = ("happened",)

    def __init__(self) -> None:
        self.happened = False

    def mark(self) -> None:
        self.happened = True


class Context:
    """Everything a command may use, injected as `ctx` (core.context.Context)."""

    def __init__(
        self,
        event: Event,
        *,
        memory: Handle,
        settings: Settings,
        registry: Registry,
        is_admin: bool,
        say: Callable[[str], None],
        scheduler: Handle | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.event = event
        self._scheduler = scheduler
        self.runtime = runtime
        """The running bot's shared parts (for `status`); None where a command runs
        outside the bot."""
        self.settings = settings
        self.registry = registry
        self.is_admin = is_admin
        self.owner = self.account = owner_of(event)
        """`<input>:<user>`: the memory actor turns it into the person's owner."""
        self._identity: IdentityView | None = None
        self._writes = _Writes()
        self._memory = memory
        self._say = say
        self.memory = self.memory_for(USER_NS)
        self.profile = self.memory_for(PROFILE_NS)

    @property
    def user(self) -> str:
        return self.event.user

    @property
    def wrote(self) -> bool:
        """Whether a write was told to memory through this context."""
        return self._writes.happened

    @property
    def identity(self) -> IdentityView:
        """The person's linked accounts (`link`, `unlink`, `whoami`)."""
        if self._identity is None:
            index = self.runtime.identities if self.runtime is not None else None
            owner = index.owner(self.account) if index is not None else self.account
            clock = self.runtime.clock if self.runtime is not None else time.time
            self._identity = IdentityView(self._memory, self.account, owner, clock)
        return self._identity

    def memory_for(self, namespace: str) -> MemoryView:
        """This person's memory in another namespace (`plugin:<name>` for a plugin's own)."""
        # The account, not the owner: the memory actor's map is the one that is never stale.
        return MemoryView(self._memory, namespace, self.account, self._writes.mark)

    def team_memory(self, namespace: str) -> MemoryView:
        """Memory the whole team shares, whatever the input (owner `team`): incidents."""
        return MemoryView(self._memory, namespace, TEAM_OWNER, self._writes.mark)

    def say(self, text: str) -> None:
        """Send a reply now, before the command returns (progress for slow commands)."""
        self._say(text)

    def send(self, *, input: str, to: str, text: str, subject: str = "") -> SendResult:
        """Send `text` to `to` through another input (`input="email"`), as an `Outbound`
        event; the request (`origin`) goes with it, so that the input can tell the
        person of an outcome that comes later (Runtime.send)."""
        if self.runtime is None:
            raise SendRefused("sending through another input needs the running bot")
        event = Event(
            type=EventType.REPLY,
            sender=self.settings.bot.name,
            to=to,
            data=text,
            input=input,
            channel=to,
            meta={"subject": subject, "origin": self.event.to_dict()},
        )
        return self.runtime.send(event, wait=_SEND_WAIT)

    def timezone(self) -> ZoneInfo:
        """The person's stored time zone, else the configured default."""
        stored = self.profile.get("timezone")
        if isinstance(stored, str):
            try:
                return ZoneInfo(stored)
            except (ZoneInfoNotFoundError, ValueError):
                pass
        return ZoneInfo(self.settings.bot.timezone)

    def status(self) -> StatusReport | None:
        """The running bot's health and counters; None outside the bot (no `services`)."""
        if self.runtime is None:
            return None
        # Imported here: actors/health.py reads the dialog state's layout, whose module
        # builds Contexts.
        from actors.health import collect

        return collect(self.runtime)

    # --- scheduling: reminders and deferred commands (actors/scheduler_actor.py) -------

    def schedule_reminder(self, when: When, text: str) -> JobInfo:
        """Remind this person of `text` at `when`, here (same input, channel and thread).

        `when` comes from `commands.when.parse_when`. The job is on disk when this
        returns. Raises `SchedulingRefused` (the message is for the person).
        """
        return self._schedule(JobKind.REMIND, when, text)

    def schedule_command(self, when: When, command: str) -> JobInfo:
        """Run `command` as this person at `when`; its answer is sent here."""
        return self._schedule(JobKind.RUN, when, command)

    def jobs(self) -> list[JobInfo]:
        """This person's pending jobs, of all their linked accounts, soonest first."""
        accounts = self._accounts()
        found: list[JobInfo] = []
        for account in accounts:
            found.extend(self._ask_scheduler(ListJobs(account)))
        if len(accounts) > 1:
            far = datetime.max.replace(tzinfo=UTC)
            found.sort(key=lambda job: job.next_run or far)
        return found

    def cancel_job(self, job_id: str) -> CancelResult:
        """Cancel a job of this person's, set from any of their linked accounts (any
        job on this input, for an admin)."""
        account = self.account
        accounts = self._accounts()
        if len(accounts) > 1:
            mine = [job for job in self.jobs() if job.id == job_id]
            if mine:
                account = mine[0].spec.owner
        message = CancelJob(job_id, account, self.event.input, self.is_admin)
        result: CancelResult = self._ask_scheduler(message)
        return result

    def _accounts(self) -> tuple[str, ...]:
        index = self.runtime.identities if self.runtime is not None else None
        return index.accounts(self.account) if index is not None else (self.account,)

    def _schedule(self, kind: JobKind, when: When, text: str) -> JobInfo:
        zone = when.first.tzinfo or self.timezone()
        key = str(getattr(zone, "key", zone))
        if when.recurring:
            said = f"{when.description} ({key})"
        else:
            said = format_time(when.first, zone)
            said += "" if said.endswith(f" {key}") else f" ({key})"
        spec = JobSpec(kind, text, self.event, said)
        answer: JobInfo | str = self._ask_scheduler(ScheduleJob(spec, when.trigger))
        if isinstance(answer, str):
            raise SchedulingRefused(answer)
        return answer

    def _ask_scheduler(self, message: Any) -> Any:
        if self._scheduler is None:
            raise SchedulingRefused("The scheduler is not running yet; try again in a moment.")
        try:
            return self._scheduler.ask(message, timeout=_ASK_TIMEOUT)
        except (pykka.ActorDeadError, pykka.Timeout) as exc:
            raise SchedulingRefused(
                "The scheduler is not answering right now; nothing was changed. "
                "Please try again in a moment."
            ) from exc


if TYPE_CHECKING:
    from core import context as protocols

    def _conforms(
        ctx: Context, view: MemoryView, registry: Registry
    ) -> tuple[protocols.Context, protocols.MemoryView, protocols.Commands]:
        """Never called: mypy checks here that these implement core/context.py's protocols."""
        return ctx, view, registry
