"""The job store: a SQLite file, or PostgreSQL shared by several processes.

Reminders and deferred commands are APScheduler jobs kept in a SQLite file beside the
memory store, with the records of their deliveries (`actors.job_deliveries`). This module
opens that file (`open_engine`), checks it before any thread starts (`check_job_store`:
a new store is made whole or not at all; a damaged or foreign file stops start-up with
one line naming it), and holds `JobStore`, APScheduler's job store on it, which records
a due job's delivery in the same transaction that removes the job or moves it on, so a
run is recorded exactly once whatever the crash.

On PostgreSQL (`[scheduler] url`, or the memory store's), `open_pg_engine` and
`check_pg_job_store` do the same: the tables are the `jobs` component's migrations
(memory/pg_schema.py), applied at start under its lock. There, with a cluster, a firing
is recorded only by the holder of the leader lease (`actors.cluster.Lease.fence`, in
the same transaction), and adding a job notifies the leader (`actors.cluster`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import shlex
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import bindparam, create_engine, delete, event, inspect, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool

from actors.errors import StartupError
from actors.job_deliveries import DELIVERIES, METADATA
from actors.job_outbox import Outbox
from actors.jobs import Delivery

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "APPLICATION_ID",
    "JOBS_CHANNEL",
    "JOBS_MIGRATIONS",
    "JobStore",
    "check_job_store",
    "check_pg_job_store",
    "check_store",
    "job_store_url",
    "migrate_jobs",
    "open_engine",
    "open_pg_engine",
]

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x48524B4A
"""SQLite's `application_id` of a job store Harken made ("HRKJ"): in the file's header,
so a file that lacks it (emptied, overwritten, someone else's) is not taken for one."""
_JOBS_TABLE = "apscheduler_jobs"
"""APScheduler's table (its `SQLAlchemyJobStore` default): a store made before Harken
marked its files has it, and is adopted."""


_RECORD = DELIVERIES.insert()
JOBS_CHANNEL: Final = "harken_jobs"
"""The channel a process notifies when it adds a job, in the transaction that adds it."""
_RETRY_SECONDS = 5.0
"""After a failed read of the next run time, the scheduler looks again this much later."""

JOBS_MIGRATIONS: Final = (
    """
    CREATE TABLE apscheduler_jobs (
        id varchar(191) PRIMARY KEY,
        next_run_time double precision,
        job_state bytea NOT NULL
    );
    CREATE INDEX ix_apscheduler_jobs_next_run_time ON apscheduler_jobs (next_run_time);
    CREATE TABLE harken_deliveries (
        id bigserial PRIMARY KEY,
        job_id varchar(191) NOT NULL,
        run_times text NOT NULL,
        runs integer NOT NULL,
        spec text NOT NULL,
        zone varchar(64) NOT NULL,
        next_run double precision,
        handed double precision,
        delivered double precision
    );
    CREATE INDEX ix_harken_deliveries_job_id ON harken_deliveries (job_id);
    """,
)
"""The `jobs` component's schema on PostgreSQL: APScheduler's table as its
`SQLAlchemyJobStore` makes it, and the deliveries (`actors.job_deliveries`)."""


def job_store_url(settings: Settings) -> str | None:
    """The PostgreSQL URL of the job store, or None for the SQLite file.

    `[scheduler] url` if set, else the memory store's URL when memory is on PostgreSQL.
    """
    if settings.scheduler.url is not None:
        return settings.scheduler.url.reveal()
    if settings.memory.backend == "postgresql" and settings.memory.url is not None:
        return settings.memory.url.reveal()
    return None


def check_store(settings: Settings) -> None:
    """Before any thread starts: the job store the settings name can be used (the
    SQLite file, or PostgreSQL brought up to date). Raises `StartupError`."""
    url = job_store_url(settings)
    if url is None:
        if settings.cluster.enabled:
            raise StartupError(
                "cluster.enabled: several processes share jobs only on PostgreSQL; set "
                "HARKEN_SCHEDULER_URL (or use the PostgreSQL memory store)"
            )
        check_job_store(settings.scheduler.job_store(settings.memory.path))
        return
    check_pg_job_store(url, settings.cluster.process_name())


def open_pg_engine(url: str, name: str) -> Engine:
    """A SQLAlchemy engine on the PostgreSQL job store; its sessions carry `name`."""
    return create_engine(
        make_url(url).set(drivername="postgresql+psycopg"),
        pool_pre_ping=True,
        pool_size=4,
        connect_args={"application_name": name, "connect_timeout": 5},
    )


def migrate_jobs(settings: Settings) -> tuple[list[str], list[str]]:
    """`harken migrate`'s part for jobs: what was done, and the problems (none to do
    for the SQLite file)."""
    url = job_store_url(settings)
    if url is None:
        return [], []
    try:
        done = check_pg_job_store(url, settings.cluster.process_name())
    except StartupError as exc:
        return [], [str(exc)]
    return done, []


def check_pg_job_store(url: str, name: str) -> list[str]:
    """Bring the job store's and the cluster's tables up to date (what was done); refuse
    to start on a database that cannot be reached or has a newer schema. Raises
    `StartupError`."""
    try:
        import psycopg

        from actors.claims import MIGRATIONS as CLAIMS_MIGRATIONS
        from actors.cluster import CLUSTER_MIGRATIONS, connect, describe_error, safe_url
        from memory import pg_schema
    except ImportError as exc:
        raise StartupError(
            f"a PostgreSQL job store needs psycopg ({exc}): pip install 'harken[postgresql]'"
        ) from exc
    try:
        done = []
        with connect(url, name, 5.0) as connection:
            for component, migrations in (
                ("jobs", JOBS_MIGRATIONS),
                ("cluster", CLUSTER_MIGRATIONS),
                ("claims", CLAIMS_MIGRATIONS),
            ):
                before, after = pg_schema.migrate(connection, component, migrations)
                done.append(
                    f"{component}: schema migrated from version {before} to {after} in "
                    f"{safe_url(url)}"
                )
        return done
    except pg_schema.SchemaError as exc:
        raise StartupError(f"the job store at {safe_url(url)}: {exc}") from exc
    except psycopg.Error as exc:
        raise StartupError(
            f"cannot open the job store at {safe_url(url)}: {describe_error(exc, url)}"
        ) from exc


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
            METADATA.create_all(connection)
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


def _inspect_store(url: str) -> tuple[Any, list[str], set[str]]:
    """(application id, quick_check's findings, table names) of the store at `url`."""
    reader = create_engine(url)
    try:
        with reader.connect() as connection:
            mark = connection.exec_driver_sql("PRAGMA application_id").scalar()
            problems = [str(row[0]) for row in connection.exec_driver_sql("PRAGMA quick_check")]
            tables = set(inspect(connection).get_table_names())
    finally:
        reader.dispose()
    return mark, problems, tables


def _verify_store(path: str, file: Path) -> None:
    # Read-only until it passes, so that a file refused is left exactly as it was.
    try:
        mark, problems, tables = _inspect_store(
            f"sqlite:///file:{quote(str(file.resolve()))}?mode=ro&uri=true"
        )
    except OperationalError as exc:
        if "readonly" not in str(exc.orig):
            raise
        # A crash left a transaction to roll back (a hot journal) or a log to recover,
        # which SQLite does only on a connection that may write: its own crash recovery,
        # which changes nothing that was committed.
        logger.info("recovering the job store %s after a crash", file)
        mark, problems, tables = _inspect_store(f"sqlite:///{file.resolve()}")
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
        METADATA.create_all(engine)
    finally:
        engine.dispose()


# --- the job store ---------------------------------------------------------------------------


class JobStore(SQLAlchemyJobStore):
    """APScheduler's job store on the SQLite file, recording each firing's delivery in
    the transaction that removes the job or moves it on (a custom job store is
    APScheduler's way to change how jobs are kept).

    Right after handing a due job over, APScheduler's thread removes it (a one-off) or
    updates it (a recurring job moves on) through this store. For the job just handed
    over (`fired`), `remove_job` and `update_job` do what the parent's do and insert
    the delivery record in the same transaction: after a crash, either the job is still
    due (and fires again, nothing having been sent) or its run is recorded, never both
    nor neither. Once committed, the run is sent (`Outbox.dispatch`).
    """

    def __init__(
        self,
        engine: Engine,
        outbox: Outbox,
        *,
        leading: Callable[[], bool] | None = None,
        fence: Callable[[Connection], None] | None = None,
        notify: str | None = None,
    ) -> None:
        super().__init__(engine=engine)  # type: ignore[no-untyped-call]  # untyped
        self._outbox = outbox
        self._leading = leading
        """Whether this process may take due jobs (None: it is the only one)."""
        self._fence = fence
        """Raises, in the transaction that records a firing, unless this process leads."""
        self._notify = notify
        """The channel to notify, with each job added (PostgreSQL)."""
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
        if self.stopping or (self._leading is not None and not self._leading()):
            return []
        due: list[Job] = super().get_due_jobs(now)  # type: ignore[no-untyped-call]
        return due

    def get_next_run_time(self) -> datetime | None:
        # A process that does not lead waits to be woken (when it takes the lease); a
        # failed read is tried again shortly rather than ending APScheduler's thread.
        if self._leading is not None and not self._leading():
            return None
        try:
            found: datetime | None = super().get_next_run_time()  # type: ignore[no-untyped-call]
        except SQLAlchemyError as exc:
            logger.warning("could not read the next job's time (%s); trying again", exc)
            return datetime.now(UTC) + timedelta(seconds=_RETRY_SECONDS)
        return found

    def add_job(self, job: Job) -> None:
        if self._notify is None:
            super().add_job(job)  # type: ignore[no-untyped-call]
            return
        # As the parent does, plus a notification the leader receives once committed.
        insert = self.jobs_t.insert().values(
            id=job.id,
            next_run_time=datetime_to_utc_timestamp(job.next_run_time),
            job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
        )
        with self.engine.begin() as connection:
            try:
                connection.execute(insert)
            except IntegrityError as exc:
                raise ConflictingIdError(job.id) from exc
            connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self._notify})

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
        self._fenced(fired, self._move, moved, final=False)

    def remove_job(self, job_id: str) -> None:
        fired = self._take(job_id)
        if fired is None:
            super().remove_job(job_id)  # type: ignore[no-untyped-call]
            return
        self._fenced(fired, self._remove, {"job_id": job_id}, final=True)

    def _fenced(
        self, fired: Delivery, statement: Any, values: dict[str, Any], *, final: bool
    ) -> None:
        if self._fence is None:
            self._with_record(fired, statement, values, final=final)
            return
        from actors.cluster import NotLeader  # a fence means PostgreSQL, hence psycopg

        try:
            self._with_record(fired, statement, values, final=final)
        except NotLeader:
            # Nothing was recorded or sent: the job stays due for the leader.
            logger.warning(
                "job %s fell due as this process stopped leading; left due", fired.job_id
            )
        except SQLAlchemyError as exc:
            logger.error(
                "job %s fell due but could not be recorded (%s); left due", fired.job_id, exc
            )

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
            if self._fence is not None:
                self._fence(connection)
            if connection.execute(statement, values).rowcount == 0:
                raise JobLookupError(fired.job_id)  # rolls the record back too
            if not final:
                # A recurring job's earlier runs, delivered: their records are not needed.
                connection.execute(self._forget_delivered, {"job_id": fired.job_id})
            key = connection.execute(_RECORD, record).inserted_primary_key
        if key is None:
            raise RuntimeError("the job store gave the delivery record no id")
        if messages is not None:
            outbox.dispatch(dataclasses.replace(fired, ids=(int(key[0]),), final=final), messages)


def _stamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
