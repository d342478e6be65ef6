"""What a scheduled job is, and what happens when one falls due.

A job is stored by APScheduler with one argument, the JSON of a `JobSpec`: what to do
(remind, or run a command) and the `Event` that asked for it, which says who asked and
where (input, channel, thread). Plain JSON, so a job written by one version of Harken
is read by the next.

`when_due` is the policy for a job whose time has come, as a pure function of the
spec and a `Due` (the scheduled run times, now, the grace time): on time, late with a
note saying how late, or, beyond the grace time, a message telling the person what
was missed. It returns the actor messages to send; the scheduler actor sends them.
A quiet job (one running a hidden command, such as a watch's check) says nothing
about being late or missed: it just runs, once for all the runs that were due.

A `Delivery` is a due run as the job store's outbox records it before anything is
sent (see actors/scheduler_actor.py); `when_interrupted` is what the person is told
when Harken stopped after handing a deferred command over and before its answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from actors.event import Event, EventType
from actors.messages import Inbound, Outbound

__all__ = [
    "LATE_NOTE_AFTER",
    "MAX_RUN_TIMES",
    "CancelResult",
    "Delivery",
    "Due",
    "JobInfo",
    "JobKind",
    "JobSpec",
    "say_delay",
    "when_due",
    "when_interrupted",
]

MAX_RUN_TIMES = 1000
"""Run times a delivery keeps: a job missed for a year every minute is one message
saying how many runs were due, not half a million timestamps."""

LATE_NOTE_AFTER = timedelta(seconds=60)
"""A run later than this is marked late even if Harken was up (a suspended machine)."""


class JobKind(StrEnum):
    REMIND = "remind"
    """Send `text` to the person."""
    RUN = "run"
    """Run `text` as a command, as the person, in the same conversation."""


@dataclass(frozen=True)
class JobSpec:
    """What a job does, and for whom: the JSON argument of every stored job."""

    kind: JobKind
    text: str
    """The reminder's text, or the command to run."""
    event: Event
    """The message that scheduled the job: its person, input, channel and thread."""
    schedule: str
    """The schedule as understood, e.g. `every weekday at 09:00 (Europe/Paris)`."""

    @property
    def owner(self) -> str:
        """The memory owner of the person (`<input>:<user>`), who alone may cancel it."""
        return f"{self.event.input}:{self.event.user}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "kind": self.kind.value,
                "text": self.text,
                "event": self.event.to_dict(),
                "schedule": self.schedule,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        try:
            raw: Any = json.loads(text)
            return cls(
                kind=JobKind(raw["kind"]),
                text=str(raw["text"]),
                event=Event.from_dict(raw["event"]),
                schedule=str(raw.get("schedule", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a job spec: {exc!r}") from exc


@dataclass(frozen=True)
class JobInfo:
    """A pending job as `reminders` lists it."""

    id: str
    spec: JobSpec
    next_run: datetime | None
    """When it runs next (aware, UTC); None for a job that will not run again."""


@dataclass(frozen=True)
class CancelResult:
    """What `cancel <id>` did: `cancelled`, `missing` (no such job) or `refused`."""

    outcome: str
    job: JobInfo | None = None


@dataclass(frozen=True)
class Due:
    """A job's time has come: when it was meant to run, and when it does."""

    run_times: tuple[datetime, ...]
    """Every scheduled run not yet done, oldest first (several if the bot was down)."""
    now: datetime
    started_at: datetime
    """When this scheduler started: runs due before it fell due while Harken was down."""
    grace: timedelta
    next_run: datetime | None = None
    """The next run of a recurring job, None for a one-off."""
    runs: int = 0
    """How many runs were due, when `run_times` holds only the latest (0: all of them)."""

    @property
    def count(self) -> int:
        return max(self.runs, len(self.run_times))

    @property
    def scheduled(self) -> datetime:
        return self.run_times[-1]

    @property
    def late_by(self) -> timedelta:
        return max(timedelta(0), self.now - self.scheduled)

    @property
    def fell_due_while_down(self) -> bool:
        return self.scheduled < self.started_at

    @property
    def is_late(self) -> bool:
        return self.fell_due_while_down or self.late_by > LATE_NOTE_AFTER

    @property
    def missed(self) -> bool:
        """Too late to do: beyond the grace time."""
        return self.late_by > self.grace


@dataclass(frozen=True)
class Delivery:
    """Due runs of one job, recorded in the job store's outbox before they are sent.

    Usually one record (`ids`) for one firing; records of the same job left unsent
    while Harken was down are sent as one, like the runs of a coalesced job.
    """

    ids: tuple[int, ...]
    """The outbox records this delivery stands for."""
    job_id: str
    spec: JobSpec
    run_times: tuple[datetime, ...]
    """The runs this delivery is for, oldest first (the latest `MAX_RUN_TIMES` of them)."""
    runs: int
    """How many runs it is for."""
    zone: str
    """The time zone to show times in (IANA name)."""
    next_run: datetime | None
    """The next run of a recurring job when it fell due; None for a one-off."""
    handed: bool = False
    """A deferred command was handed over to run, and no answer was recorded."""
    final: bool = False
    """The job was removed as this firing was recorded (a one-off's only run)."""
    spec_json: str = ""
    """`spec` as the job stores it, when at hand (saves encoding it again)."""


def say_delay(delta: timedelta) -> str:
    """`3 h 2 min`, `45 s`, `1.2 s`: short and exact enough for a person."""
    seconds = delta.total_seconds()
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, whole = divmod(whole, 86400)
    hours, whole = divmod(whole, 3600)
    minutes, secs = divmod(whole, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min")]
    shown = [f"{n} {unit}" for n, unit in parts if n]
    if not days and not hours:
        shown.append(f"{secs} s")
    return " ".join(shown[:2])


def when_due(
    spec: JobSpec,
    due: Due,
    *,
    bot_name: str,
    show: Callable[[datetime], str] | None = None,
    quiet: bool = False,
) -> list[Inbound | Outbound]:
    """The messages to send for a job that fell due.

    `show(datetime) -> str` formats a time for the person (their zone); ISO UTC if None.
    A reminder becomes an `Outbound` to the person; a command becomes an `Inbound` as the
    person, whose answer the conversation sends to the same place. A late run gets a
    note saying by how much; a run beyond the grace time is not done, and the person is
    told what was missed (and, for a recurring job, when it runs next). A `quiet`
    command (Harken's own, such as a watch's check) runs however late, without a note:
    missed runs are caught up silently, and only what the command says is heard.
    """
    fmt = show or (lambda moment: moment.isoformat(timespec="seconds"))
    event = spec.event
    person = event.display_name or event.user
    count = due.count
    runs = f" ({count} runs were due; this is one for all of them)" if count > 1 else ""
    why = " while I was not running" if due.fell_due_while_down else ""
    nxt = f" Next run: {fmt(due.next_run)}." if due.next_run is not None else ""
    meta = {
        "scheduled_for": due.scheduled.isoformat(),
        "late_seconds": round(due.late_by.total_seconds(), 3),
    }

    if quiet and spec.kind is JobKind.RUN:
        return [_as_person(spec, meta)]

    if due.missed:
        late = (
            f"{say_delay(due.late_by)} ago{why}, which is more than the "
            f"{say_delay(due.grace)} I may be late"
        )
        if spec.kind is JobKind.REMIND:
            text = (
                f"Missed reminder for {person}, due {fmt(due.scheduled)} ({late}){runs}: "
                f"{spec.text}{nxt}"
            )
        else:
            text = (
                f"{person}, I did not run `{spec.text}`: it was due {fmt(due.scheduled)} "
                f"({late}){runs}. Say it again if you still want it.{nxt}"
            )
        return [Outbound(_to_person(event, text, bot_name, meta, EventType.ERROR))]

    note = f" (late by {say_delay(due.late_by)}{why}; due {fmt(due.scheduled)}{runs})"
    if not due.is_late:
        note = ""
    if spec.kind is JobKind.REMIND:
        return [
            Outbound(_to_person(event, f"Reminder for {person}: {spec.text}{note}", bot_name, meta))
        ]
    messages: list[Inbound | Outbound] = []
    if note:
        text = f"Running `{spec.text}` for {person}{note}."
        messages.append(Outbound(_to_person(event, text, bot_name, meta)))
    messages.append(_as_person(spec, meta))
    return messages


def when_interrupted(
    spec: JobSpec,
    scheduled: datetime,
    *,
    bot_name: str,
    show: Callable[[datetime], str] | None = None,
) -> Outbound:
    """What the person is told about a deferred command that Harken handed over to run
    but stopped before its answer: it may have run, so it is not run again."""
    fmt = show or (lambda moment: moment.isoformat(timespec="seconds"))
    event = spec.event
    person = event.display_name or event.user
    text = (
        f"{person}, I stopped while `{spec.text}` (due {fmt(scheduled)}) was running or "
        "about to run, so I cannot tell whether it did; I did not run it again. "
        "Say it again if you still want it."
    )
    meta = {"scheduled_for": scheduled.isoformat(), "interrupted": True}
    return Outbound(_to_person(event, text, bot_name, meta, EventType.ERROR))


def _as_person(spec: JobSpec, meta: dict[str, Any]) -> Inbound:
    """The deferred command, said as the person, where they scheduled it."""
    event = spec.event
    return Inbound(
        Event(
            type=EventType.TEXT,
            sender=event.user,
            to=event.to,
            data=spec.text,
            input=event.input,
            channel=event.channel,
            thread=event.thread,
            display_name=event.display_name,
            meta={"scheduled": True, **meta},
        )
    )


def _to_person(
    event: Event,
    text: str,
    bot_name: str,
    meta: dict[str, Any],
    type: EventType = EventType.REPLY,
) -> Event:
    """The bot's message to the person of the stored `event`, under its name today."""
    return replace(event.reply(text, type=type, **meta), sender=bot_name)
