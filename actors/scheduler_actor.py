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
APScheduler's own executors, runs nothing: it passes the job and every scheduled run
time that is due (APScheduler's executors drop those) to `_on_due`. Jobs are stored with
`coalesce=False` so that it sees every missed run time, and fires once for all of them:
that is where "3 runs were due" comes from. `misfire_grace_time` is None for the same
reason: the grace time is applied by `actors.jobs.when_due`, where the person can be told.

Delivery goes through an outbox in the same SQLite file (table `harken_deliveries`,
`actors.job_deliveries`):

1. Right after the hand-over, APScheduler removes the job (a one-off) or moves it on (a
   recurring one) through Harken's job store (`actors.job_store.JobStore`), which
   inserts the record of the run (job id, run times, spec) in that same transaction.
   After a crash, either the job is still due and nothing was sent, or its run is
   recorded: a run is recorded exactly once. A deferred command is recorded as handed
   over in that transaction too, so a crash never makes it run twice.
2. Once committed, the run is sent at once, still on APScheduler's thread: a reminder
   to its input, a command to the router. The outbox (`actors.job_outbox.Outbox`, a
   thread of its own) records it as delivered once the input has taken what was sent
   (an ask that queues behind it) and, for a command, once its answer has gone to the
   input (`Runtime.job_answered`); a burst is recorded in one commit after it has been
   sent.
3. At start-up, what was recorded and not delivered is sent; a command that had been
   handed over is not run again: the person is told it was interrupted.

So a run is delivered at least once, and never twice once its delivery was recorded.
A `kill -9` between an input taking a reminder and the record of its delivery (one
commit, shared by a burst) sends that reminder again at the next start; a command is
never run twice, but one handed over a moment before a `kill -9` may not have run: the
person is told so. Before any of this, `actors.job_store.check_job_store` refuses to
start on a store that is damaged, or is not one Harken made.

On PostgreSQL (`actors.job_store.job_store_url`) the store may be shared by several
processes (`[cluster] enabled`): each runs this actor, but only the holder of the
leader lease (`actors.cluster.Lease`) takes due jobs and sends what was left
undelivered; the others keep their APScheduler paused and still add, list and cancel
jobs in the shared store (their index is read from it when asked). A job added anywhere
notifies the leader, whose scheduler wakes for it.

The system starts this actor after the inputs (a job that fell due while Harken was
down is delivered at start-up, and needs them) and stops it first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka
from apscheduler.events import EVENT_JOB_REMOVED, JobEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from actors.job_deliveries import DELIVERIES, METADATA, delete_delivered, undelivered
from actors.job_outbox import Outbox
from actors.job_store import JOBS_CHANNEL, JobStore, job_store_url, open_engine, open_pg_engine
from actors.jobs import MAX_RUN_TIMES, Delivery
from actors.messages import (
    BringJobsForward,
    CancelJob,
    ClusterStatus,
    JobCount,
    ListJobs,
    ScheduleJob,
)
from actors.supervision import SupervisedActor
from core.jobs import CancelResult, JobInfo, JobSpec
from core.status import ClusterView

if TYPE_CHECKING:
    from actors.cluster import Lease
    from actors.runtime import Runtime
    from actors.supervision import Handle

__all__ = ["SchedulerActor", "scheduled_job"]

logger = logging.getLogger(__name__)

_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
"""Short job ids people type: lower case, without 0/o, 1/l/i look-alikes."""
_ID_LENGTH = 6

STOP_WAIT = 5.0
"""Seconds a stop waits for deferred commands already handed over to answer."""


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


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or "UTC")


# --- the actor -----------------------------------------------------------------------------


class SchedulerActor(SupervisedActor):
    def __init__(self, runtime: Runtime, router: Handle) -> None:
        super().__init__()
        self.runtime = runtime
        self.router = router
        self.settings = runtime.settings.scheduler
        self.path = self.settings.job_store(runtime.settings.memory.path)
        self.url = job_store_url(runtime.settings)
        self.cluster = runtime.settings.cluster
        self._lease: Lease | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._outbox: Outbox | None = None
        self._store: JobStore | None = None
        self._owner_of: dict[str, str] = {}
        self._jobs_of: dict[str, set[str]] = {}
        self._started_at = datetime.now(UTC)

    # --- lifecycle -----------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """Whether other processes may use the same store (PostgreSQL)."""
        return self.url is not None

    def on_start(self) -> None:
        self._started_at = datetime.now(UTC)
        name = self.cluster.process_name()
        if self.url is not None:
            engine = open_pg_engine(self.url, name)
        else:
            engine = open_engine(self.path)
            METADATA.create_all(engine)
        outbox = Outbox(engine, self.runtime, self.router, self._started_at)
        self._outbox = outbox
        self.runtime.job_answered = outbox.answered
        lease: Lease | None = None
        if self.url is not None and self.cluster.enabled:
            from actors.cluster import Lease  # psycopg, an extra: only for a cluster

            lease = Lease(
                self.url,
                name,
                lease_seconds=self.cluster.lease_seconds,
                renew_seconds=self.cluster.renew_seconds,
                on_gain=self._lead,
                on_loss=self._follow,
                on_notify=self._wake,
            )
        self._lease = lease
        store = JobStore(
            engine,
            outbox,
            leading=lease.is_leader if lease else None,
            fence=lease.fence if lease else None,
            notify=JOBS_CHANNEL if self.url is not None else None,
        )
        self._store = store
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
        stored = scheduler.get_jobs()
        for job in stored:
            try:
                owner = JobSpec.from_json(job.args[0]).owner
            except (IndexError, TypeError, ValueError) as exc:
                logger.error("stored job %s cannot be read (%s); it will be skipped", job.id, exc)
                continue
            self._index(job.id, owner)
        with engine.begin() as connection:
            self._forget_removed(connection, {job.id for job in stored})
            unsent = [] if lease else undelivered(connection)
        outbox.start()
        for delivery in unsent:
            outbox.put(delivery)
        if lease is not None:
            lease.start()  # resumes the scheduler once this process leads
        else:
            scheduler.resume()
        logger.info(
            "scheduler started: %d pending jobs, %d undelivered, in %s",
            len(self._owner_of),
            len(unsent),
            "the PostgreSQL job store" if self.url else self.path,
        )

    # --- leading (on the lease's thread) ---------------------------------------------

    def _lead(self) -> None:
        """This process took the lease: send what was left undelivered, run due jobs."""
        scheduler, outbox, store = self._scheduler, self._outbox, self._store
        if scheduler is None or outbox is None or store is None:
            return
        try:
            with store.engine.begin() as connection:
                unsent = undelivered(connection)
        except SQLAlchemyError as exc:
            logger.error("could not read the undelivered jobs (%s); sent at the next lead", exc)
            unsent = []
        for delivery in unsent:
            outbox.put(delivery)
        if unsent:
            logger.info("leading: %d delivery(ies) left undelivered are sent", len(unsent))
        scheduler.resume()
        scheduler.wakeup()

    def _follow(self, why: str) -> None:
        """This process no longer leads: its scheduler takes no due jobs."""
        scheduler = self._scheduler
        if scheduler is not None:
            with contextlib.suppress(SchedulerNotRunningError):
                scheduler.pause()

    def _wake(self) -> None:
        """A job was added somewhere: look at the store again, if leading."""
        scheduler, lease = self._scheduler, self._lease
        if scheduler is not None and lease is not None and lease.is_leader():
            scheduler.wakeup()

    @staticmethod
    def _forget_removed(connection: Connection, stored: set[str]) -> None:
        """Delete delivered records of jobs no longer stored (removed before a crash)."""
        recorded = connection.execute(
            select(DELIVERIES.c.job_id).where(DELIVERIES.c.delivered.is_not(None)).distinct()
        ).scalars()
        delete_delivered(connection, sorted(set(recorded) - stored))

    def release(self) -> None:
        # On a crash too: the replacement opens the store again, and this scheduler must
        # not fire meanwhile.
        scheduler, outbox, store, lease = self._scheduler, self._outbox, self._store, self._lease
        try:
            if store is not None:
                store.stopping = True  # no more due jobs
            if lease is not None:
                lease.stop()  # gives the lease back, once no firing can be recorded
            if scheduler is not None:
                # `get_job` takes the job stores' lock, so it returns once a round already
                # under way has recorded its jobs and removed them or moved them on.
                scheduler.pause()
                scheduler.get_job("")
            if outbox is not None:
                outbox.stop(STOP_WAIT)
                if self.runtime.job_answered == outbox.answered:
                    self.runtime.job_answered = None
            if scheduler is not None:
                scheduler.shutdown(wait=True)  # also closes the store
        except Exception:
            logger.exception("stopping the scheduler failed")
        finally:
            self._scheduler = self._outbox = self._store = None
            self._lease = None

    @property
    def scheduler(self) -> BackgroundScheduler:
        if self._scheduler is None:
            raise RuntimeError("the scheduler is not running")
        return self._scheduler

    # --- messages ------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ScheduleJob | ListJobs | CancelJob) and self.shared:
            try:
                self._reindex()  # other processes add and remove jobs too
            except SQLAlchemyError as exc:
                logger.error("could not read the shared job store: %s", exc)
                if not isinstance(message, ScheduleJob):
                    raise
        if isinstance(message, ScheduleJob):
            return self._schedule(message)
        if isinstance(message, ListJobs):
            return self._list(message.owner)
        if isinstance(message, JobCount):
            return self._count() if self.shared else len(self._owner_of)
        if isinstance(message, CancelJob):
            return self._cancel(message)
        if isinstance(message, BringJobsForward):
            return self._bring_forward(message.seconds)
        if isinstance(message, ClusterStatus):
            return self._view()
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

    def _bring_forward(self, seconds: float) -> int:
        # APScheduler runs on the wall clock; a test's clock that jumps ahead moves the
        # jobs instead, through the public API, and the store keeps them as usual.
        now = datetime.now(UTC)
        moved = 0
        for job in self.scheduler.get_jobs():
            due: datetime | None = job.next_run_time
            if due is None or due <= now:
                continue
            self.scheduler.modify_job(
                job.id, next_run_time=max(due - timedelta(seconds=seconds), now)
            )
            moved += 1
        return moved

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

    def _view(self) -> ClusterView | None:
        """The cluster as the database has it; None if it cannot be read."""
        if self._lease is None:
            return None
        import psycopg  # there is a lease, so psycopg is installed

        from actors.cluster import describe_error

        try:
            return self._lease.view()
        except psycopg.Error as exc:
            logger.warning("could not read the cluster's state: %s", describe_error(exc, ""))
            return None

    def _reindex(self) -> None:
        """Read the index from the shared store (each job's owner is in its spec)."""
        self._owner_of.clear()
        self._jobs_of.clear()
        for job in self.scheduler.get_jobs():
            with contextlib.suppress(IndexError, TypeError, ValueError):
                self._index(job.id, JobSpec.from_json(job.args[0]).owner)

    def _count(self) -> int:
        store = self._store
        if store is None:
            raise RuntimeError("the scheduler is not running")
        with store.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(store.jobs_t)).scalar_one()
            )

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
        outbox = self._outbox
        if outbox is not None and threading.current_thread().name != "APScheduler":
            outbox.removed(removed.job_id)  # cancelled: its delivered records can go
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Forget(removed.job_id))

    # --- firing (on APScheduler's thread) ----------------------------------------------

    def _on_due(self, job: Job, run_times: list[datetime]) -> None:
        try:
            self._record_due(job, run_times)
        except Exception:
            # APScheduler removes or moves the job on whatever happens here: say so loudly.
            logger.exception("job %s fell due but could not be recorded, so it is lost", job.id)

    def _record_due(self, job: Job, run_times: list[datetime]) -> None:
        """Have the store record the due runs with the removal or move that follows."""
        store = self._store
        if store is None:
            raise RuntimeError("the scheduler is not running")
        try:
            spec = JobSpec.from_json(str(job.args[0]))
        except (IndexError, TypeError, ValueError) as exc:
            logger.error("job %s cannot be read and was skipped: %s", job.id, exc)
            return
        # Show times in the zone the job was scheduled in: the cron and interval triggers
        # carry it, a one-off carries it in its date.
        run_date = getattr(job.trigger, "run_date", None)
        zone: tzinfo = getattr(job.trigger, "timezone", None) or (
            run_date.tzinfo if run_date is not None and run_date.tzinfo else UTC
        )
        store.fired(
            Delivery(
                ids=(),
                job_id=job.id,
                spec=spec,
                spec_json=str(job.args[0]),
                run_times=tuple(run_times[-MAX_RUN_TIMES:]),
                runs=len(run_times),
                zone=_zone_name(zone),
                next_run=job.trigger.get_next_fire_time(run_times[-1], datetime.now(UTC)),
            )
        )
