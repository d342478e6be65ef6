"""The job store's SQLite file: opening it, and refusing to start on a damaged one.

Reminders and deferred commands are APScheduler jobs kept in a SQLite file beside the
memory store, with the records of their deliveries (`actors.job_deliveries`). This module
opens that file (`open_engine`), checks it before any thread starts (`check_job_store`:
a new store is made whole or not at all; a damaged or foreign file stops start-up with
one line naming it), and holds `JobStore`, APScheduler's job store on it, which records
a due job's delivery in the same transaction that removes the job or moves it on, so a
run is recorded exactly once whatever the crash.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import bindparam, create_engine, delete, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.pool import SingletonThreadPool

from actors.errors import StartupError
from actors.job_deliveries import DELIVERIES, METADATA
from actors.job_outbox import Outbox
from actors.jobs import Delivery

__all__ = ["APPLICATION_ID", "JobStore", "check_job_store", "open_engine"]

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x48524B4A
"""SQLite's `application_id` of a job store Harken made ("HRKJ"): in the file's header,
so a file that lacks it (emptied, overwritten, someone else's) is not taken for one."""
_JOBS_TABLE = "apscheduler_jobs"
"""APScheduler's table (its `SQLAlchemyJobStore` default): a store made before Harken
marked its files has it, and is adopted."""


_RECORD = DELIVERIES.insert()

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

    def __init__(self, engine: Engine, outbox: Outbox) -> None:
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


def _stamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
