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

Delivery goes through an outbox in the same SQLite file (table `harken_deliveries`):

1. Right after the hand-over, APScheduler removes the job (a one-off) or moves it on (a
   recurring one) through Harken's job store (`_JobStore`), which inserts the record of
   the run (job id, run times, spec) in that same transaction. After a crash, either
   the job is still due and nothing was sent, or its run is recorded: a run is recorded
   exactly once. A deferred command is recorded as handed over in that transaction
   too, so a crash never makes it run twice.
2. Once committed, the run is sent at once, still on APScheduler's thread: a reminder
   to its input, a command to the router. The outbox (`_Outbox`, a thread of its own)
   records it as delivered once the input has taken what was sent (an ask that queues
   behind it) and, for a command, once its answer has gone to the input
   (`Services.job_answered`); a burst is recorded in one commit after it has been sent.
3. At start-up, what was recorded and not delivered is sent; a command that had been
   handed over is not run again: the person is told it was interrupted.

So a run is delivered at least once, and never twice once its delivery was recorded.
A `kill -9` between an input taking a reminder and the record of its delivery (one
commit, shared by a burst) sends that reminder again at the next start; a command is
never run twice, but one handed over a moment before a `kill -9` may not have run: the
person is told so. Before any of this, `check_job_store` refuses to start on a store
that is damaged, or is not one Harken made.

The system starts this actor after the inputs (a job that fell due while Harken was
down is delivered at start-up, and needs them) and stops it first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import queue
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pykka
from apscheduler.events import EVENT_JOB_REMOVED, JobEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    delete,
    event,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool

from actors.errors import StartupError
from actors.jobs import MAX_RUN_TIMES, Delivery, when_due, when_interrupted
from actors.messages import CancelJob, Inbound, JobCount, ListJobs, Outbound, ScheduleJob
from actors.supervision import SupervisedActor
from core.event import Event
from core.jobs import CancelResult, Due, JobInfo, JobKind, JobSpec
from core.timefmt import format_time

if TYPE_CHECKING:
    from actors.services import Services
    from actors.supervision import Handle

__all__ = [
    "APPLICATION_ID",
    "DELIVERIES",
    "InputBarrier",
    "SchedulerActor",
    "check_job_store",
    "open_engine",
    "scheduled_job",
]

logger = logging.getLogger(__name__)

_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
"""Short job ids people type: lower case, without 0/o, 1/l/i look-alikes."""
_ID_LENGTH = 6

APPLICATION_ID = 0x48524B4A
"""SQLite's `application_id` of a job store Harken made ("HRKJ"): in the file's header,
so a file that lacks it (emptied, overwritten, someone else's) is not taken for one."""
_JOBS_TABLE = "apscheduler_jobs"
"""APScheduler's table (its `SQLAlchemyJobStore` default): a store made before Harken
marked its files has it, and is adopted."""

_METADATA = MetaData()
DELIVERIES = Table(
    "harken_deliveries",
    _METADATA,
    Column("id", Integer, primary_key=True),
    Column("job_id", String(191), nullable=False, index=True),
    Column("run_times", Text, nullable=False),
    Column("runs", Integer, nullable=False),
    Column("spec", Text, nullable=False),
    Column("zone", String(64), nullable=False),
    Column("next_run", Float, nullable=True),
    Column("handed", Float, nullable=True),
    Column("delivered", Float, nullable=True),
)
"""The outbox: one record per firing. `run_times` are the runs it covers (JSON, the
latest `MAX_RUN_TIMES`), `runs` how many; `handed` when a command was given to the
router; `delivered` when the delivery was recorded (NULL: still to send). Times are
Unix times."""

_RECORD = DELIVERIES.insert()

STOP_WAIT = 5.0
"""Seconds a stop waits for deferred commands already handed over to answer."""
_FLUSH_TIMEOUT = 2.0
"""Seconds to wait for an input to take what was sent to it, before trying again."""
_RETRY = 1.0
_RECORD_WITHIN = 0.2
"""Seconds a delivery may wait to be recorded while more keep coming (a burst)."""
_QUIET = 0.01
"""Seconds without new work after which what was sent is recorded."""
_CHUNK = 500
"""Ids per SQL statement (SQLite limits the parameters of one)."""


def scheduled_job(spec_json: str) -> None:
    """The function every stored job names; APScheduler stores a job by its import path.

    Harken's executor never calls it (it delivers the job itself, knowing how late it
    is). Something else that opens the job store and runs the job gets this error rather
    than a job that silently does nothing.
    """
    raise RuntimeError(
        "Harken's jobs are delivered by its scheduler actor; run Harken to deliver them"
    )


class InputBarrier(NamedTuple):
    """Asked of an input: its answer means it has handled everything told to it before.

    Inputs answer messages they do not know with None, after the ones queued ahead."""


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


# --- the SQLite file ---------------------------------------------------------------------


def open_engine(path: str) -> Engine:
    """A SQLAlchemy engine on the SQLite job store at `path` (created if missing).

    WAL, one connection per thread, and two levels of durability. APScheduler's thread
    commits with synchronous=NORMAL (a record per job that fires, and APScheduler's own
    removal of a one-off or move of a recurring job): syncing each of those made a burst
    of 1,000 due jobs late by up to a second, and NORMAL is safe from `kill -9` at once,
    and from a machine crash at the next sync. Every other thread (adds and cancels,
    which a person is told about; deliveries recorded by the outbox) commits with
    synchronous=FULL: on disk when the commit returns. WAL keeps commits in order, so a
    machine crash can lose the last firings (they fire again), never a delivery record
    while keeping what came after it.
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
    """Make a new job store, or check the one at `path`; refuse to start on a bad one.

    A missing file is a new store: it is made under a temporary name, marked with
    `APPLICATION_ID`, and renamed into place, so that a crash while making it leaves no
    half-made store behind. An existing file must carry the mark (or be a store made
    before the mark, which is adopted) and pass SQLite's `quick_check`; an empty file,
    garbage, a truncated or someone else's database stops start-up with one line that
    names the file and says how to move it aside. Raises `StartupError`.
    """
    file = Path(path).expanduser()
    try:
        if not file.exists():
            wal = file.with_name(file.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                # Its last writes, which SQLite would apply to whatever file comes next.
                raise _damaged(path, f"it is missing, but its write-ahead log {wal} is not")
            _create_store(file)
            return
        if not file.is_file():
            raise StartupError(f"cannot open the job store at {path}: it is not a file")
        if file.stat().st_size == 0:
            raise _damaged(path, "the file is empty")
        _verify_store(path, file)
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        if _is_damage(exc):
            raise _damaged(path, str(reason)) from exc
        raise StartupError(f"cannot open the job store at {path}: {reason}") from exc
    except OSError as exc:
        raise StartupError(f"cannot open the job store at {path}: {exc}") from exc


def _is_damage(exc: SQLAlchemyError) -> bool:
    name = getattr(getattr(exc, "orig", None), "sqlite_errorname", "")
    return name in ("SQLITE_NOTADB", "SQLITE_CORRUPT")


def _damaged(path: str, why: str) -> StartupError:
    aside = shlex.quote(os.path.join(os.path.dirname(path) or ".", "damaged"))
    files = shlex.quote(path) + "*"
    return StartupError(
        f"the job store {path} is damaged ({why}); starting on it would lose its jobs "
        f"without a word. To start with no jobs, move it aside with its -wal and -shm "
        f"files: mkdir -p {aside} && mv {files} {aside}/ (or restore it from a backup)"
    )


def _create_store(file: Path) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    new = file.with_name(file.name + ".new")
    for leftover in (new, new.with_name(new.name + "-journal")):
        leftover.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{new.resolve()}")
    try:
        with engine.begin() as connection:
            _METADATA.create_all(connection)
            connection.exec_driver_sql(f"PRAGMA application_id={APPLICATION_ID}")
    finally:
        engine.dispose()
    with new.open("rb") as made:
        os.fsync(made.fileno())
    os.replace(new, file)
    directory = os.open(file.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    logger.info("created the job store %s", file)


def _verify_store(path: str, file: Path) -> None:
    # Read-only until it passes, so that a file refused is left exactly as it was.
    reader = create_engine(f"sqlite:///file:{quote(str(file.resolve()))}?mode=ro&uri=true")
    try:
        with reader.connect() as connection:
            mark = connection.exec_driver_sql("PRAGMA application_id").scalar()
            problems = [str(row[0]) for row in connection.exec_driver_sql("PRAGMA quick_check")]
            tables = set(inspect(connection).get_table_names())
    finally:
        reader.dispose()
    if problems != ["ok"]:
        raise _damaged(path, f"SQLite's check says: {'; '.join(problems[:3])}")
    if mark != APPLICATION_ID and (mark != 0 or _JOBS_TABLE not in tables):
        raise _damaged(path, "it is not a job store Harken made")
    engine = open_engine(str(file))
    try:
        if mark != APPLICATION_ID:  # made before stores were marked: adopt it
            with engine.begin() as connection:
                connection.exec_driver_sql(f"PRAGMA application_id={APPLICATION_ID}")
            logger.info("marked the job store %s as Harken's", file)
        _METADATA.create_all(engine)
    finally:
        engine.dispose()


# --- the job store ---------------------------------------------------------------------------


class _JobStore(SQLAlchemyJobStore):
    """APScheduler's job store on the SQLite file, recording each firing's delivery in
    the transaction that removes the job or moves it on (a custom job store is
    APScheduler's way to change how jobs are kept).

    Right after handing a due job over, APScheduler's thread removes it (a one-off) or
    updates it (a recurring job moves on) through this store. For the job just handed
    over (`fired`), `remove_job` and `update_job` do what the parent's do and insert
    the delivery record in the same transaction: after a crash, either the job is still
    due (and fires again, nothing having been sent) or its run is recorded, never both
    nor neither. Once committed, the run is sent (`_Outbox.dispatch`).
    """

    def __init__(self, engine: Engine, outbox: _Outbox) -> None:
        super().__init__(engine=engine)  # type: ignore[no-untyped-call]  # untyped
        self._outbox = outbox
        jobs = self.jobs_t
        self._remove = jobs.delete().where(jobs.c.id == bindparam("job_id"))
        self._move = (
            jobs.update()
            .values(next_run_time=bindparam("next_run_time"), job_state=bindparam("job_state"))
            .where(jobs.c.id == bindparam("job_id"))
        )
        self._forget_delivered = delete(DELIVERIES).where(
            DELIVERIES.c.job_id == bindparam("job_id"), DELIVERIES.c.delivered.is_not(None)
        )
        self._fired: Delivery | None = None
        """The job APScheduler's thread has just handed over, until it moves it on."""
        self.stopping = False
        """Set when the scheduler stops: no job is due any more, so none is handed over
        between APScheduler's decision to stop and a last round of due jobs (in which it
        could no longer remove them)."""

    def get_due_jobs(self, now: datetime) -> list[Job]:
        if self.stopping:
            return []
        due: list[Job] = super().get_due_jobs(now)  # type: ignore[no-untyped-call]
        return due

    def fired(self, delivery: Delivery) -> None:
        """On APScheduler's thread: record `delivery` with the job's removal or move."""
        self._fired = delivery

    def update_job(self, job: Job) -> None:
        fired = self._take(job.id)
        if fired is None:
            super().update_job(job)  # type: ignore[no-untyped-call]
            return
        moved = {
            "job_id": job.id,
            "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
            "job_state": pickle.dumps(job.__getstate__(), self.pickle_protocol),
        }
        self._with_record(fired, self._move, moved, final=False)

    def remove_job(self, job_id: str) -> None:
        fired = self._take(job_id)
        if fired is None:
            super().remove_job(job_id)  # type: ignore[no-untyped-call]
            return
        self._with_record(fired, self._remove, {"job_id": job_id}, final=True)

    def _take(self, job_id: str) -> Delivery | None:
        if threading.current_thread().name != "APScheduler":
            return None  # an add, a cancel: nothing fired
        fired, self._fired = self._fired, None
        return fired if fired is not None and fired.job_id == job_id else None

    def _with_record(
        self, fired: Delivery, statement: Any, values: dict[str, Any], *, final: bool
    ) -> None:
        times = fired.run_times
        outbox = self._outbox
        try:
            messages = outbox.plan(fired, datetime.now(UTC))
        except Exception:
            # Recorded and not sent: the next start tries again.
            logger.exception("job %s fell due but its message could not be made", fired.job_id)
            messages = None
        # A command to run is recorded as handed over before it is: it never runs twice.
        handed = time.time() if messages and outbox.hands_over(fired, messages) else None
        record = {
            "job_id": fired.job_id,
            "run_times": json.dumps([t.isoformat() for t in times]),
            "runs": fired.runs,
            "spec": fired.spec_json or fired.spec.to_json(),
            "zone": fired.zone,
            "next_run": _stamp(fired.next_run),
            "handed": handed,
            "delivered": None,
        }
        # Statements built once, with parameters: a burst fires a thousand of them.
        with self.engine.begin() as connection:
            if connection.execute(statement, values).rowcount == 0:
                raise JobLookupError(fired.job_id)  # rolls the record back too
            if not final:
                # A recurring job's earlier runs, delivered: their records are not needed.
                connection.execute(self._forget_delivered, {"job_id": fired.job_id})
            key = connection.execute(_RECORD, record).inserted_primary_key
        if key is None:
            raise RuntimeError("SQLite gave the delivery record no id")
        if messages is not None:
            outbox.dispatch(dataclasses.replace(fired, ids=(int(key[0]),), final=final), messages)


# --- the outbox ----------------------------------------------------------------------------


def _zone_name(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or "UTC")


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _stamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _moment(stamp: float | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


class _Answered(NamedTuple):
    event_id: str


class _Removed(NamedTuple):
    job_id: str


class _Stop(NamedTuple):
    wait: float


@dataclass
class _Sending:
    """A delivery on its way: sent, and waiting for the answers of its commands."""

    delivery: Delivery
    waiting: set[str] = field(default_factory=set)
    """Ids of the commands handed over whose answers have not come yet."""


class _Sent(NamedTuple):
    sending: _Sending | None
    """None: look at what was kept aside (`_Outbox._sent`)."""


class _Outbox:
    """Sends deliveries and records them delivered.

    A due job is sent by APScheduler's thread as soon as its record is committed
    (`plan`, then `dispatch`), as it was sent before there was an outbox: the work
    stays on one thread. Everything else happens on the outbox's own thread, fed by one
    queue, so its state needs no lock: what was sent, the answers of deferred commands
    (`answered`), jobs cancelled, what was left undelivered before a start (`put`), and
    the records of deliveries. A burst is recorded in one commit once it has been sent:
    the inputs are asked to confirm (`InputBarrier`), and the records marked delivered.
    """

    def __init__(
        self,
        engine: Engine,
        services: Services,
        router: Handle,
        started_at: datetime,
    ) -> None:
        self.engine = engine
        self.services = services
        self.router = router
        self.started_at = started_at
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._in_flight: dict[str, _Sending] = {}
        self._unrecorded: list[_Sending] = []
        """Sent (and, for a command, answered), not yet recorded as delivered."""
        self._unrecorded_since = 0.0
        self._last_work = 0.0
        self._open: dict[str, int] = {}
        """Job id -> deliveries of it not yet recorded delivered (in this process)."""
        self._removed: set[str] = set()
        """Jobs cancelled since the last sweep of their delivered records (a removed job
        cannot fire again, so nothing needs them)."""
        self._gone: set[str] = set()
        """Cancelled jobs with deliveries still open: those records are deleted, not
        kept, once delivered."""
        self._absent: set[str] = set()
        self._sent: list[_Sending] = []
        """Sent with no command to wait for, not yet taken by the outbox's thread."""
        self._sent_lock = threading.Lock()
        self._woken = False
        self._thread = threading.Thread(target=self._run, name="job-outbox", daemon=True)

    # --- from any thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def put(self, delivery: Delivery) -> None:
        """Send a delivery recorded earlier and not delivered (at start-up)."""
        self._work.put(delivery)

    def answered(self, event: Event) -> None:
        self._work.put(_Answered(event.id))

    def removed(self, job_id: str) -> None:
        self._work.put(_Removed(job_id))

    def stop(self, wait: float) -> None:
        """Give commands handed over up to `wait` seconds to answer, then end."""
        self._work.put(_Stop(wait))
        self._thread.join(timeout=wait + 2 * _FLUSH_TIMEOUT + 5)
        if self._thread.is_alive():
            logger.warning("the job outbox did not stop in time")

    def plan(self, delivery: Delivery, now: datetime) -> list[Inbound | Outbound] | None:
        """What to send for `delivery`; None if its input is not running here."""
        name = delivery.spec.event.input
        if name not in self.services.inputs:
            # Kept unsent for a Harken that runs this input; said once per input.
            if name not in self._absent:
                self._absent.add(name)
                logger.warning(
                    "jobs for input %r fell due, but it is not running: they are kept "
                    "and delivered when Harken runs with it",
                    name,
                )
            return None
        return self._messages(delivery, now)

    def hands_over(self, delivery: Delivery, messages: list[Inbound | Outbound]) -> bool:
        """Whether sending runs a command that must never run twice."""
        return any(isinstance(m, Inbound) for m in messages) and not self._quiet(delivery.spec)

    def dispatch(self, delivery: Delivery, messages: list[Inbound | Outbound]) -> None:
        """Send a recorded delivery now (on the caller's thread)."""
        sending = _Sending(delivery)
        sending.waiting.update(m.event.id for m in messages if isinstance(m, Inbound))
        if sending.waiting:
            # Told before the command is handed over, so that its answer comes after.
            self._work.put(_Sent(sending))
        else:
            # Kept aside, waking the outbox's thread once for a burst, not once a job.
            with self._sent_lock:
                self._sent.append(sending)
                wake, self._woken = not self._woken, True
            if wake:
                self._work.put(_Sent(None))
        for message in messages:
            if isinstance(message, Outbound):
                self.services.deliver(message.event)
                continue
            try:
                self.router.tell(message)
            except pykka.ActorDeadError:
                # Left recorded as handed over: the next start tells the person.
                logger.error("the router is down; job %s was not run", delivery.job_id)
                return

    # --- on the outbox thread ----------------------------------------------------------

    def _run(self) -> None:
        stop_at: float | None = None
        while True:
            timeout: float | None = None
            if self._unrecorded:
                record_at = min(self._unrecorded_since + _RECORD_WITHIN, self._last_work + _QUIET)
                timeout = max(0.0, record_at - time.monotonic())
            if stop_at is not None:
                timeout = max(0.0, min(timeout or _RETRY, stop_at - time.monotonic()))
            if timeout is None:
                # About to wait for as long as it takes: the next job sent must wake it
                # (meanwhile it wakes itself, and takes what was kept aside in passing).
                with self._sent_lock:
                    if self._sent:
                        timeout = 0.0
                    else:
                        self._woken = False
            try:
                batch = [self._work.get(timeout=timeout)]
            except queue.Empty:
                batch = []
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._work.get_nowait())
            with self._sent_lock:
                sent, self._sent = self._sent, []
            batch.extend(_Sent(sending) for sending in sent)
            now = time.monotonic()
            if batch:
                self._last_work = now
            try:
                stop_at = self._handle(batch, stop_at)
                # While due jobs keep coming (a burst), record later, in one commit:
                # APScheduler's thread is not kept waiting for the file meanwhile.
                if self._unrecorded and (
                    now - self._last_work >= _QUIET
                    or now - self._unrecorded_since >= _RECORD_WITHIN
                    or stop_at is not None
                ):
                    self._record()
                if self._removed and not batch:
                    self._forget_removed()
            except Exception:
                logger.exception("the job outbox failed; what it had not recorded is sent again")
            settled = not self._in_flight and not self._unrecorded
            if stop_at is not None and (settled or time.monotonic() >= stop_at):
                break
        for sending in {id(s): s for s in self._in_flight.values()}.values():
            logger.warning(
                "job %s: `%s` for %s had not answered when the scheduler stopped; the "
                "next start tells them it may not have run",
                sending.delivery.job_id,
                sending.delivery.spec.text,
                sending.delivery.spec.owner,
            )

    def _handle(self, batch: list[Any], stop_at: float | None) -> float | None:
        deliveries: list[Delivery] = []
        done: list[_Sending] = []
        for item in batch:
            if isinstance(item, _Sent):
                sending = item.sending
                if sending is None:
                    continue  # a wake-up: what was kept aside is in this batch
                job_id = sending.delivery.job_id
                self._open[job_id] = self._open.get(job_id, 0) + 1
                for event_id in sending.waiting:
                    self._in_flight[event_id] = sending
                if not sending.waiting:
                    done.append(sending)
            elif isinstance(item, _Answered):
                answered = self._in_flight.pop(item.event_id, None)
                if answered is not None:
                    answered.waiting.discard(item.event_id)
                    if not answered.waiting:
                        done.append(answered)
            elif isinstance(item, Delivery):
                deliveries.append(item)
            elif isinstance(item, _Removed):
                self._removed.add(item.job_id)
                if item.job_id in self._open:
                    self._gone.add(item.job_id)
            elif isinstance(item, _Stop) and stop_at is None:
                stop_at = time.monotonic() + item.wait
        if deliveries:
            self._resend(deliveries)
        if done:
            if not self._unrecorded:
                self._unrecorded_since = time.monotonic()
            self._unrecorded.extend(done)
        return stop_at

    def _quiet(self, spec: JobSpec) -> bool:
        """A command of Harken's own (a watch's check): it catches up silently."""
        if spec.kind is not JobKind.RUN:
            return False
        found = self.services.registry.find(spec.text, hidden=True)
        return found is not None and found[0].hidden

    def _messages(self, delivery: Delivery, now: datetime) -> list[Inbound | Outbound]:
        spec = delivery.spec
        zone = _zone(delivery.zone)
        name = self.services.settings.bot.name
        quiet = self._quiet(spec)
        if delivery.handed and not quiet:
            logger.warning(
                "job %s: `%s` for %s was handed over before a stop and did not answer; "
                "not run again, they are told",
                delivery.job_id,
                spec.text,
                spec.owner,
            )
            return [
                when_interrupted(
                    spec,
                    delivery.run_times[-1],
                    bot_name=name,
                    show=lambda moment: format_time(moment, zone),
                )
            ]
        due = Due(
            run_times=delivery.run_times,
            now=now,
            started_at=self.started_at,
            grace=timedelta(seconds=self.services.settings.scheduler.grace_seconds),
            next_run=delivery.next_run,
            runs=delivery.runs,
        )
        messages = when_due(
            spec,
            due,
            bot_name=name,
            show=lambda moment: format_time(moment, zone),
            quiet=quiet,
        )
        state = "missed" if due.missed and not quiet else "late" if due.is_late else "on time"
        logger.info(
            "job %s (%s for %s) fired %s (%.3f s after %s, %d run(s) due)",
            delivery.job_id,
            spec.kind.value,
            spec.owner,
            state,
            due.late_by.total_seconds(),
            due.scheduled.isoformat(),
            delivery.runs,
        )
        return messages

    def _resend(self, deliveries: list[Delivery]) -> None:
        """Send what was recorded and not delivered before this start."""
        now = datetime.now(UTC)
        plans: list[tuple[Delivery, list[Inbound | Outbound]]] = []
        for delivery in deliveries:
            messages = self.plan(delivery, now)
            if messages is not None:
                plans.append((delivery, messages))
        # Commands are recorded as handed over before any is: a crash after this point
        # never runs them again (the person is told instead).
        handing = [d for d, messages in plans if self.hands_over(d, messages)]
        if handing:
            try:
                with self.engine.begin() as connection:
                    ids = [one for delivery in handing for one in delivery.ids]
                    for chunk in _chunks(ids):
                        connection.execute(
                            update(DELIVERIES)
                            .where(DELIVERIES.c.id.in_(chunk))
                            .values(handed=time.time())
                        )
            except SQLAlchemyError as exc:
                logger.error(
                    "could not record %d deferred command(s) as handed over (%s); they are "
                    "not run now, and are sent at the next start",
                    len(handing),
                    exc,
                )
                plans = [(d, m) for d, m in plans if d not in handing]
        for delivery, messages in plans:
            self.dispatch(delivery, messages)

    def _record(self) -> None:
        """Record as delivered what the inputs have taken; keep the rest for a retry."""
        confirmed, self._unrecorded = self._unrecorded, []
        taken: list[_Sending] = []
        for name in sorted({s.delivery.spec.event.input for s in confirmed}):
            mine = [s for s in confirmed if s.delivery.spec.event.input == name]
            handle = self.services.inputs.get(name)
            try:
                if handle is None:
                    raise pykka.ActorDeadError(name)
                handle.ask(InputBarrier(), timeout=_FLUSH_TIMEOUT)
            except pykka.Timeout:
                logger.warning("input %r is slow to take job deliveries; waiting", name)
                if not self._unrecorded:
                    self._unrecorded_since = time.monotonic()
                self._unrecorded.extend(mine)
                continue
            except pykka.ActorDeadError:
                logger.warning(
                    "input %r went down while delivering jobs: %d delivery(ies) stay "
                    "unrecorded and are sent again at the next start",
                    name,
                    len(mine),
                )
                continue
            taken.extend(mine)
        if not taken:
            return
        keep: list[int] = []
        drop: list[int] = []
        for sending in taken:
            job_id = sending.delivery.job_id
            gone = sending.delivery.final or job_id in self._gone
            (drop if gone else keep).extend(sending.delivery.ids)
            left = self._open.get(job_id, 1) - 1
            if left > 0:
                self._open[job_id] = left
            else:
                self._open.pop(job_id, None)
                self._gone.discard(job_id)
        now = time.time()
        with self.engine.begin() as connection:
            for chunk in _chunks(keep):
                connection.execute(
                    update(DELIVERIES).where(DELIVERIES.c.id.in_(chunk)).values(delivered=now)
                )
            for chunk in _chunks(drop):
                connection.execute(delete(DELIVERIES).where(DELIVERIES.c.id.in_(chunk)))

    def _forget_removed(self) -> None:
        """Delete the delivered records of cancelled jobs, which nothing needs any more."""
        removed, self._removed = sorted(self._removed), set()
        with self.engine.begin() as connection:
            _delete_delivered(connection, removed)


def _delete_delivered(connection: Connection, job_ids: list[str]) -> None:
    for start in range(0, len(job_ids), _CHUNK):
        connection.execute(
            delete(DELIVERIES).where(
                DELIVERIES.c.job_id.in_(job_ids[start : start + _CHUNK]),
                DELIVERIES.c.delivered.is_not(None),
            )
        )


def _undelivered(connection: Connection) -> list[Delivery]:
    """What was recorded and not delivered, one delivery per job (and per whether a
    command was handed over), in the order it fell due."""
    rows = connection.execute(
        select(DELIVERIES).where(DELIVERIES.c.delivered.is_(None)).order_by(DELIVERIES.c.id)
    ).all()
    grouped: dict[tuple[str, bool], list[Any]] = {}
    for row in rows:
        grouped.setdefault((row.job_id, row.handed is not None), []).append(row)
    found: list[Delivery] = []
    for (job_id, handed), same in grouped.items():
        try:
            spec = JobSpec.from_json(same[-1].spec)
            times = sorted(
                {datetime.fromisoformat(t) for row in same for t in json.loads(row.run_times)}
            )[-MAX_RUN_TIMES:]
        except (TypeError, ValueError) as exc:
            logger.error("undelivered record of job %s cannot be read (%s)", job_id, exc)
            continue
        found.append(
            Delivery(
                ids=tuple(row.id for row in same),
                job_id=job_id,
                spec=spec,
                run_times=tuple(times),
                runs=sum(int(row.runs) for row in same),
                zone=same[-1].zone,
                next_run=_moment(same[-1].next_run),
                handed=handed,
            )
        )
    return found


# --- the actor -----------------------------------------------------------------------------


class SchedulerActor(SupervisedActor):
    def __init__(self, services: Services, router: Handle) -> None:
        super().__init__()
        self.services = services
        self.router = router
        self.settings = services.settings.scheduler
        self.path = self.settings.job_store(services.settings.memory.path)
        self._scheduler: BackgroundScheduler | None = None
        self._outbox: _Outbox | None = None
        self._store: _JobStore | None = None
        self._owner_of: dict[str, str] = {}
        self._jobs_of: dict[str, set[str]] = {}
        self._started_at = datetime.now(UTC)

    # --- lifecycle -----------------------------------------------------------------

    def on_start(self) -> None:
        self._started_at = datetime.now(UTC)
        engine = open_engine(self.path)
        _METADATA.create_all(engine)
        outbox = _Outbox(engine, self.services, self.router, self._started_at)
        self._outbox = outbox
        self.services.job_answered = outbox.answered
        store = _JobStore(engine, outbox)
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
            unsent = _undelivered(connection)
        outbox.start()
        for delivery in unsent:
            outbox.put(delivery)
        scheduler.resume()
        logger.info(
            "scheduler started: %d pending jobs, %d undelivered, in %s",
            len(self._owner_of),
            len(unsent),
            self.path,
        )

    @staticmethod
    def _forget_removed(connection: Connection, stored: set[str]) -> None:
        """Delete delivered records of jobs no longer stored (removed before a crash)."""
        recorded = connection.execute(
            select(DELIVERIES.c.job_id).where(DELIVERIES.c.delivered.is_not(None)).distinct()
        ).scalars()
        _delete_delivered(connection, sorted(set(recorded) - stored))

    def release(self) -> None:
        # On a crash too: the replacement opens the store again, and this scheduler must
        # not fire meanwhile.
        scheduler, outbox, store = self._scheduler, self._outbox, self._store
        try:
            if store is not None:
                store.stopping = True  # no more due jobs
            if scheduler is not None:
                # `get_job` takes the job stores' lock, so it returns once a round already
                # under way has recorded its jobs and removed them or moved them on.
                scheduler.pause()
                scheduler.get_job("")
            if outbox is not None:
                outbox.stop(STOP_WAIT)
                if self.services.job_answered == outbox.answered:
                    self.services.job_answered = None
            if scheduler is not None:
                scheduler.shutdown(wait=True)  # also closes the store
        except Exception:
            logger.exception("stopping the scheduler failed")
        finally:
            self._scheduler = self._outbox = self._store = None

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
