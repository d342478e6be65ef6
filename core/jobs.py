"""What a scheduled job is, as both layers see it.

A job is stored by APScheduler with one argument, the JSON of a `JobSpec`: what to do
(remind, or run a command) and the `Event` that asked for it, which says who asked and
where (input, channel, thread). Plain JSON, so a job written by one version of Harken
is read by the next. `When` is a time a person gave, understood (commands/when.py reads
it); `JobInfo` and `CancelResult` are what a command gets back from the scheduler; `Due`
is a job whose time has come, which actors/jobs.py turns into messages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from core.event import Event

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

__all__ = [
    "LATE_NOTE_AFTER",
    "CancelResult",
    "Due",
    "JobInfo",
    "JobKind",
    "JobSpec",
    "When",
]

LATE_NOTE_AFTER = timedelta(seconds=60)
"""A run later than this is marked late even if Harken was up (a suspended machine)."""


@dataclass(frozen=True)
class When:
    """A time understood: how to fire, when first, and how to say it back."""

    trigger: BaseTrigger
    first: datetime
    """The first run, in the person's zone."""
    recurring: bool
    description: str
    """What was understood, e.g. `every weekday at 09:00`; shown back with `first`."""


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
