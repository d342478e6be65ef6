"""What happens when a scheduled job falls due: the messages the scheduler sends.

`when_due` is the policy, a pure function of a job's spec and its `Due` (run times,
now, grace time): on time, late with a note, or missed beyond the grace time; a quiet
job (a hidden command, such as a watch's check) just runs, once for all its runs.
`Delivery` is a due run as the outbox records it before anything is sent, and
`when_interrupted` what the person hears of a deferred command a stop cut short.
What a job is (`JobSpec`, `Due`) lives in core/jobs.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from actors.messages import Inbound, Outbound
from core.event import Event, EventType
from core.jobs import Due, JobKind, JobSpec
from core.timefmt import say_delay

__all__ = ["MAX_RUN_TIMES", "Delivery", "when_due", "when_interrupted"]

MAX_RUN_TIMES = 1000
"""Run times a delivery keeps: a job missed for a year every minute is one message
saying how many runs were due, not half a million timestamps."""


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
