"""The bot's `Context`: what a command sees while it runs, over the memory and scheduler actors.

It implements core/context.py's `Context` protocol, which the commands are typed
against. A `Context` lives for one invocation, on the worker thread that runs it. Reads
from memory ask the memory actor; writes are told to it and the replies are held back
until the memory actor has made those writes durable (group commit), so a reply such
as "I'll remember that" is never sent for a write that a crash could still lose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pykka

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
    MemoryRefused,
    SchedulingRefused,
    SendRefused,
    SendResult,
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
        self.owner = owner_of(event)
        self.wrote = False
        self._memory = memory
        self._say = say
        self.memory = self.memory_for(USER_NS)
        self.profile = self.memory_for(PROFILE_NS)

    @property
    def user(self) -> str:
        return self.event.user

    def memory_for(self, namespace: str) -> MemoryView:
        """This person's memory in another namespace (`plugin:<name>` for a plugin's own)."""
        return MemoryView(self._memory, namespace, self.owner, self._mark_written)

    def team_memory(self, namespace: str) -> MemoryView:
        """Memory the whole team shares, whatever the input (owner `team`): incidents."""
        return MemoryView(self._memory, namespace, TEAM_OWNER, self._mark_written)

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
        """This person's pending jobs, soonest first."""
        found: list[JobInfo] = self._ask_scheduler(ListJobs(self.owner))
        return found

    def cancel_job(self, job_id: str) -> CancelResult:
        """Cancel a job of this person's (any job on this input, for an admin)."""
        message = CancelJob(job_id, self.owner, self.event.input, self.is_admin)
        result: CancelResult = self._ask_scheduler(message)
        return result

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

    def _mark_written(self) -> None:
        self.wrote = True


if TYPE_CHECKING:
    from core import context as protocols

    def _conforms(
        ctx: Context, view: MemoryView, registry: Registry
    ) -> tuple[protocols.Context, protocols.MemoryView, protocols.Commands]:
        """Never called: mypy checks here that these implement core/context.py's protocols."""
        return ctx, view, registry
