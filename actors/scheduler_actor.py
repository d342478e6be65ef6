"""The scheduler actor: the one owner of APScheduler and its job store.

Reminders and deferred commands are APScheduler jobs in a `SQLAlchemyJobStore` on a
SQLite file (`scheduler.path`, by default `jobs.sqlite` beside the memory store), so
they survive a restart, clean or `kill -9`: a job is committed before `ScheduleJob`
answers, hence before the person is told "OK".

Commands reach this actor through `Context` (`ctx.schedule_reminder`, `ctx.jobs`,
`ctx.cancel_job`), which asks it `ScheduleJob`, `ListJobs` and `CancelJob`. The actor
keeps an index owner -> job ids in memory (rebuilt from the store at start), so listing
one person's jobs does not read everyone's.

When a job falls due, APScheduler's thread hands it to `_DueExecutor`, which, unlike
APScheduler's own executors, does not run a function: it passes the job and every
scheduled run time that is due (APScheduler's executors drop those) to `_on_due`, which
applies `actors.jobs.when_due` and sends the result: an `Outbound` reminder to the input,
or an `Inbound` command to the router. Jobs are stored with `coalesce=False` so that the
executor sees every missed run time, and fires once for all of them: that is where the
coalescing happens, and where "3 runs were due" comes from. `misfire_grace_time` is None
for the same reason: the grace time is applied here, where the person can be told.

Delivery happens on APScheduler's thread, so firing never waits behind this actor's
inbox. APScheduler removes (or moves on) a job right after the hand-over: a `kill -9`
in the milliseconds between that commit and the input sending the message loses that
one delivery; one just before the commit delivers it again at the next start.

The system starts this actor after the inputs (a job that fell due while Harken was
down is delivered at start-up, and needs them) and stops it first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka
from apscheduler.events import EVENT_JOB_REMOVED, JobEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool

from actors.errors import StartupError
from actors.jobs import CancelResult, Due, JobInfo, JobSpec, when_due
from actors.messages import CancelJob, Inbound, JobCount, ListJobs, ScheduleJob
from actors.supervision import SupervisedActor
from commands.when import format_time

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.services import Services
    from actors.supervision import Handle

__all__ = ["SchedulerActor", "check_job_store", "open_engine", "scheduled_job"]

logger = logging.getLogger(__name__)

_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
"""Short job ids people type: lower case, without 0/o, 1/l/i look-alikes."""
_ID_LENGTH = 6


def scheduled_job(spec_json: str) -> None:
    """The function every stored job names; APScheduler stores a job by its import path.

    Harken's executor never calls it (it delivers the job itself, knowing how late it
    is). Something else that opens the job store and runs the job gets this error rather
    than a job that silently does nothing.
    """
    raise RuntimeError(
        "Harken's jobs are delivered by its scheduler actor; run Harken to deliver them"
    )


class _DueExecutor(BaseExecutor):
    """Hands due jobs to a callback, with all their due run times; runs nothing itself."""

    def __init__(self, on_due: Callable[[Job, list[datetime]], None]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # APScheduler is untyped
        self._on_due = on_due

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # No instance counting: the hand-over is finished when this returns.
        self._on_due(job, list(run_times))

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        self._on_due(job, list(run_times))


class _Forget(NamedTuple):
    """APScheduler removed a job (it ran for the last time, or was cancelled)."""

    job_id: str


def open_engine(path: str) -> Engine:
    """A SQLAlchemy engine on the SQLite job store at `path` (created if missing).

    WAL, one connection per thread, and two levels of durability. The actor's thread
    (adds and cancels, which a person is told about) commits with synchronous=FULL: on
    disk when the commit returns. APScheduler's thread commits once per job that fires
    (removing a one-off, moving a recurring job on); syncing each of those made a burst
    of 1,000 due jobs late by up to a second, so it uses synchronous=NORMAL: safe from
    `kill -9` at once, and from a machine crash at the next sync. A machine crash can
    therefore deliver a job twice, never lose one.
    """
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{file}",
        # One connection per thread (see above); closed by whichever thread disposes.
        connect_args={"timeout": 30, "check_same_thread": False},
        poolclass=SingletonThreadPool,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, record: Any) -> None:
        # BackgroundScheduler names its thread "APScheduler".
        firing = threading.current_thread().name == "APScheduler"
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={'NORMAL' if firing else 'FULL'}")
        cursor.close()

    return engine


def check_job_store(path: str) -> None:
    """Fail start-up with one clear line if the job store cannot be opened."""
    try:
        engine = open_engine(path)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("PRAGMA user_version")
        finally:
            engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise StartupError(f"cannot open the job store at {path}: {reason}") from exc


class SchedulerActor(SupervisedActor):
    def __init__(self, services: Services, router: Handle) -> None:
        super().__init__()
        self.services = services
        self.router = router
        self.settings = services.settings.scheduler
        self.path = self.settings.job_store(services.settings.memory.path)
        self._scheduler: BackgroundScheduler | None = None
        self._owner_of: dict[str, str] = {}
        self._jobs_of: dict[str, set[str]] = {}
        self._started_at = datetime.now(UTC)

    # --- lifecycle -----------------------------------------------------------------

    def on_start(self) -> None:
        self._started_at = datetime.now(UTC)
        store = SQLAlchemyJobStore(engine=open_engine(self.path))
        scheduler = BackgroundScheduler(
            jobstores={"default": store},
            executors={"default": _DueExecutor(self._on_due)},
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1},
            timezone=UTC,
        )
        scheduler.add_listener(self._on_removed, EVENT_JOB_REMOVED)
        # Paused until the index is built, so no job fires (and is removed) meanwhile.
        scheduler.start(paused=True)
        self._scheduler = scheduler
        for job in scheduler.get_jobs():
            try:
                owner = JobSpec.from_json(job.args[0]).owner
            except (IndexError, TypeError, ValueError) as exc:
                logger.error("stored job %s cannot be read (%s); it will be skipped", job.id, exc)
                continue
            self._index(job.id, owner)
        scheduler.resume()
        logger.info("scheduler started: %d pending jobs in %s", len(self._owner_of), self.path)

    def release(self) -> None:
        # On a crash too: the replacement opens the store again, and this scheduler must
        # not fire meanwhile.
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is None:
            return
        try:
            # Waits for a round of due jobs being delivered, then closes the store.
            scheduler.shutdown(wait=True)
        except Exception:
            logger.exception("stopping the scheduler failed")

    @property
    def scheduler(self) -> BackgroundScheduler:
        if self._scheduler is None:
            raise RuntimeError("the scheduler is not running")
        return self._scheduler

    # --- messages ------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ScheduleJob):
            return self._schedule(message)
        if isinstance(message, ListJobs):
            return self._list(message.owner)
        if isinstance(message, JobCount):
            return len(self._owner_of)
        if isinstance(message, CancelJob):
            return self._cancel(message)
        if isinstance(message, _Forget):
            self._unindex(message.job_id)
            return None
        logger.warning("scheduler actor ignored an unexpected %s", type(message).__name__)
        return None

    def _schedule(self, message: ScheduleJob) -> JobInfo | str:
        spec = message.spec
        owner = spec.owner
        limit = self.settings.max_jobs_per_user
        if len(self._jobs_of.get(owner, ())) >= limit:
            return (
                f"You have {limit} pending jobs, the most I keep for one person. "
                "Cancel some first (`reminders` lists them)."
            )
        job_id = self._new_id()
        try:
            job = self.scheduler.add_job(
                scheduled_job,
                trigger=message.trigger,
                args=(spec.to_json(),),
                id=job_id,
                name=f"{spec.kind.value} for {owner}",
            )
        except (SQLAlchemyError, OSError) as exc:
            logger.error("could not store a job for %s: %s", owner, exc)
            return "Sorry, I could not save that job, so it is not scheduled. Please try again."
        self._index(job_id, owner)
        logger.info("scheduled job %s (%s) for %s", job_id, spec.kind.value, owner)
        return JobInfo(job_id, spec, job.next_run_time)

    def _list(self, owner: str) -> list[JobInfo]:
        found = []
        for job_id in sorted(self._jobs_of.get(owner, ())):
            job = self.scheduler.get_job(job_id)
            if job is None:
                self._unindex(job_id)
                continue
            found.append(JobInfo(job_id, JobSpec.from_json(job.args[0]), job.next_run_time))
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(found, key=lambda info: info.next_run or far)

    def _cancel(self, message: CancelJob) -> CancelResult:
        job_id = message.job_id.strip().lower()
        owner = self._owner_of.get(job_id)
        if owner is None:
            return CancelResult("missing")
        job_input = owner.partition(":")[0]
        if owner != message.owner and not (message.is_admin and job_input == message.input):
            logger.warning("refused to cancel job %s of %s for %s", job_id, owner, message.owner)
            return CancelResult("refused")
        job = self.scheduler.get_job(job_id)
        try:
            self.scheduler.remove_job(job_id)
        except JobLookupError:
            job = None
        self._unindex(job_id)
        if job is None:
            return CancelResult("missing")
        logger.info("cancelled job %s of %s (asked by %s)", job_id, owner, message.owner)
        return CancelResult("cancelled", JobInfo(job_id, JobSpec.from_json(job.args[0]), None))

    # --- the index -------------------------------------------------------------------

    def _index(self, job_id: str, owner: str) -> None:
        self._owner_of[job_id] = owner
        self._jobs_of.setdefault(owner, set()).add(job_id)

    def _unindex(self, job_id: str) -> None:
        owner = self._owner_of.pop(job_id, None)
        if owner is None:
            return
        ids = self._jobs_of.get(owner)
        if ids is not None:
            ids.discard(job_id)
            if not ids:
                del self._jobs_of[owner]

    def _new_id(self) -> str:
        while True:
            raw = os.urandom(_ID_LENGTH)
            job_id = "".join(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in raw)
            if job_id not in self._owner_of:
                return job_id

    def _on_removed(self, removed: JobEvent) -> None:
        # APScheduler's thread (a job ran for the last time) or ours (cancel): either way,
        # the index is ours to change, so it is told, not touched.
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Forget(removed.job_id))

    # --- firing (on APScheduler's thread) ----------------------------------------------

    def _on_due(self, job: Job, run_times: list[datetime]) -> None:
        try:
            self._fire(job, run_times)
        except Exception:
            # APScheduler moves on to the next run whatever happens here; say so loudly.
            logger.exception("job %s fell due but could not be delivered", job.id)

    def _fire(self, job: Job, run_times: list[datetime]) -> None:
        now = datetime.now(UTC)
        try:
            spec = JobSpec.from_json(job.args[0])
        except (IndexError, TypeError, ValueError) as exc:
            logger.error("job %s cannot be read and was skipped: %s", job.id, exc)
            return
        # Show times in the zone the job was scheduled in: the cron and interval triggers
        # carry it, a one-off carries it in its date.
        run_date = getattr(job.trigger, "run_date", None)
        zone: tzinfo = getattr(job.trigger, "timezone", None) or (
            run_date.tzinfo if run_date is not None and run_date.tzinfo else UTC
        )
        due = Due(
            run_times=tuple(run_times),
            now=now,
            started_at=self._started_at,
            grace=timedelta(seconds=self.settings.grace_seconds),
            next_run=job.trigger.get_next_fire_time(run_times[-1], now),
        )
        messages = when_due(
            spec,
            due,
            bot_name=self.services.settings.bot.name,
            show=lambda moment: format_time(moment, zone),
        )
        for message in messages:
            if isinstance(message, Inbound):
                self.router.tell(message)
            else:
                self.services.deliver(message.event)
        state = "missed" if due.missed else "late" if due.is_late else "on time"
        logger.info(
            "job %s (%s for %s) fired %s (%.3f s after %s, %d run(s) due)",
            job.id,
            spec.kind.value,
            spec.owner,
            state,
            due.late_by.total_seconds(),
            due.scheduled.isoformat(),
            len(run_times),
        )
