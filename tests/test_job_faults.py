"""Faults: jobs. Crashes during delivery, and a job store that is damaged.

Through the real `harken shell` as a subprocess (tests/support/shell_process.py), on a job store
in a temporary directory. The cases covered:

* `kill -9` during a burst of 100 due jobs (50 reminders, 50 deferred commands), at six
  points (after the 1st, 20th and 140th of 150 lines printed; after the 1st, 30th
  and 90th job fired), then a restart: every job is
  delivered at least once; a job whose delivery was recorded when the process died is
  not delivered again; a deferred command never runs twice (one that was handed over
  and had not answered is reported as interrupted, not run again); and afterwards
  nothing is left pending.
* Stopping and starting short-lived shells while jobs fall due, a reminder delivered
  exactly once per job (tests/test_scheduler_e2e.py).
* A watch restarted after a long stop catches up silently (tests/test_watch_jobs.py).
* A job store that is empty (0 bytes), garbage, all zeros, truncated, someone else's
  SQLite database, or missing while its write-ahead log is there: start-up refuses with
  exit 2 and one line naming the file and how to move it aside; following that line
  starts Harken with no jobs and keeps the damaged file. A missing store is new and is
  made marked; a store made before the mark is adopted with its jobs.

The one window left: a reminder the input has taken (printed, or queued to post) just
before a `kill -9`, and whose delivery was not yet recorded (a commit, about a
millisecond), is sent again at the next start.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from support.past_jobs import spec, store_job
from support.shell_process import Shell, run

from actors.job_deliveries import DELIVERIES
from actors.job_store import APPLICATION_ID, check_job_store, open_engine
from core.jobs import JobKind

pytestmark = pytest.mark.e2e

REMINDERS = [f"r{i:02}" for i in range(50)]
COMMANDS = [f"c{i:02}" for i in range(50)]


def token(job_id: str) -> str:
    return f"job-{job_id}"


def store_burst(store: Path) -> None:
    """100 jobs that fell due a second ago: they all fire as Harken starts."""
    check_job_store(str(store))  # a new store, made as Harken makes it
    due = datetime.now(UTC) - timedelta(seconds=1)
    for job_id in REMINDERS:
        job = spec(JobKind.REMIND, token(job_id), user="ann", input="shell")
        store_job(store, job, DateTrigger(due), due, job_id)
    for job_id in COMMANDS:
        job = spec(JobKind.RUN, f"echo {token(job_id)}", user="ann", input="shell")
        store_job(store, job, DateTrigger(due), due, job_id)


def recorded(store: Path) -> dict[str, str]:
    """Job id -> `delivered` or `handed`, as the store says (read after a kill)."""
    engine = open_engine(str(store))
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(DELIVERIES)).all()
    except OperationalError:  # no such table: nothing was recorded
        return {}
    finally:
        engine.dispose()
    found: dict[str, str] = {}
    for row in rows:
        if row.delivered is not None:
            found[row.job_id] = "delivered"
        elif row.handed is not None:
            found.setdefault(row.job_id, "handed")
    return found


def left_in(store: Path) -> tuple[list[str], int]:
    """(ids of the jobs still stored, deliveries recorded and not delivered)."""
    engine = open_engine(str(store))
    job_store = SQLAlchemyJobStore(engine=engine)
    job_store.start(BackgroundScheduler(timezone=UTC), "default")
    try:
        jobs = [job.id for job in job_store.get_all_jobs()]
        with engine.connect() as connection:
            rows = connection.execute(select(DELIVERIES).where(DELIVERIES.c.delivered.is_(None)))
            unsent = len(rows.all())
    finally:
        job_store.shutdown()
    return jobs, unsent


def listening(shell: Shell) -> None:
    """Wait until the shell has answered its `ping`: it is up, and SIGTERM stops it
    cleanly (it can come before the shell has finished starting)."""
    if "pong" not in shell.seen:
        shell.expect(r"^pong$")


def mentions(lines: list[str], job_id: str) -> list[str]:
    return [line for line in lines if re.search(rf"\b{token(job_id)}\b", line)]


@pytest.mark.parametrize(
    ("after", "count"),
    [("printed", 1), ("printed", 20), ("printed", 140), *(("fired", n) for n in (1, 30, 90))],
)
def test_kill_9_during_a_burst_of_due_jobs_loses_none_and_repeats_none_recorded(
    tmp_path: Path, shells: list[Shell], after: str, count: int
) -> None:
    """Killed after `count` lines about jobs were printed, or after Harken logged that
    `count` jobs fired (a moment when deliveries are on their way)."""
    store = tmp_path / "var" / "jobs.sqlite"
    store_burst(store)
    first = Shell(tmp_path, "", "--linger", "60")
    shells.append(first)
    for _ in range(count):
        if after == "printed":
            first.expect(r"\bjob-[rc]\d\d\b")
        else:
            first.expect_log(r"job [rc]\d\d \(\w+ for shell:ann\) fired")
    first.kill9()
    before = first.printed()
    at_kill = recorded(store)

    # Everything not seen before the kill must come now.
    second = Shell(tmp_path, "ping\n", "--linger", "60")
    shells.append(second)
    waiting = {j for j in REMINDERS + COMMANDS if not mentions(before, j)}
    while waiting:
        line = second.expect(r"\bjob-[rc]\d\d\b")
        waiting -= {j for j in list(waiting) if mentions([line], j)}
    listening(second)
    assert second.stop() == 0, second.log
    after = second.printed()

    for job_id in REMINDERS + COMMANDS:
        assert mentions(before + after, job_id), f"{job_id} was never delivered"
        again = mentions(after, job_id)
        if at_kill.get(job_id) == "delivered":
            assert not again, f"{job_id} was delivered again after its delivery was recorded"
        elif at_kill.get(job_id) == "handed":
            assert all("I did not run it again" in line for line in again), again
    for job_id in COMMANDS:
        runs = [line for line in before + after if line == token(job_id)]
        assert len(runs) <= 1, f"`echo {token(job_id)}` ran {len(runs)} times"
    assert left_in(store) == ([], 0)
    assert not [line for line in first.log + second.log if "Traceback" in line]


# --- a damaged job store -----------------------------------------------------------------


def harken(cwd: Path, script: str = "ping\n") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harken", "shell", "--user", "ann"],
        input=script,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)},
        timeout=60,
        check=False,
    )


def a_store_with_jobs(cwd: Path) -> Path:
    text = "x" * 900  # long, so the store spans several pages
    script = "".join(f"remind me in {n + 2} hours to {text} {n}\n" for n in range(20))
    assert run(cwd, script).count("OK, I'll remind you") == 20
    return cwd / "var" / "jobs.sqlite"


def empty(store: Path) -> None:
    store.write_bytes(b"")


def garbage(store: Path) -> None:
    store.write_bytes(bytes(range(256)) * 40)


def zeros(store: Path) -> None:
    store.write_bytes(bytes(8192))


def truncated(store: Path) -> None:
    data = store.read_bytes()
    assert len(data) > 5 * 4096
    store.write_bytes(data[: 2 * 4096])


def someone_elses(store: Path) -> None:
    store.unlink()
    with sqlite3.connect(store) as other:
        other.execute("CREATE TABLE notes (body TEXT)")
        other.execute("INSERT INTO notes VALUES ('not jobs')")
    other.close()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (empty, "the file is empty"),
        (garbage, "file is not a database"),
        (zeros, ""),
        (truncated, ""),
        (someone_elses, "it is not a job store Harken made"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_a_damaged_job_store_stops_start_up_with_one_line_and_a_way_out(
    tmp_path: Path, damage: object, why: str
) -> None:
    store = a_store_with_jobs(tmp_path)
    assert callable(damage)
    damage(store)
    damaged_bytes = store.read_bytes()

    done = harken(tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    var = tmp_path / "var"
    assert line.startswith(f"harken: the job store {var}/jobs.sqlite is damaged ("), line
    assert why in line
    way_out = f"mkdir -p {var}/damaged && mv {var}/jobs.sqlite* {var}/damaged/"
    assert way_out in line
    assert store.read_bytes() == damaged_bytes  # refusing changed nothing

    # The way out, as printed: Harken starts with no jobs, the damaged file kept aside.
    subprocess.run(way_out, shell=True, cwd=tmp_path, check=True)
    done = harken(tmp_path, "jobs\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("You have no pending")
    assert (tmp_path / "var" / "damaged" / "jobs.sqlite").read_bytes() == damaged_bytes


def test_a_job_store_missing_beside_its_write_ahead_log_is_refused(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "jobs.sqlite-wal").write_bytes(b"left behind")
    done = harken(tmp_path)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    expected = f"harken: the job store {tmp_path}/var/jobs.sqlite is damaged (it is missing, "
    assert line.startswith(expected)


def test_a_new_job_store_is_made_marked_and_an_unmarked_one_is_adopted(tmp_path: Path) -> None:
    made = tmp_path / "made.sqlite"
    check_job_store(str(made))
    with sqlite3.connect(made) as connection:
        assert connection.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    connection.close()
    assert not (tmp_path / "made.sqlite.new").exists()

    # A store as Harken made it before stores were marked: APScheduler's table, no mark.
    (tmp_path / "var").mkdir()
    old = tmp_path / "var" / "jobs.sqlite"
    later = datetime.now(UTC) + timedelta(days=1)
    job = spec(JobKind.REMIND, "renew the certificate", user="ann", input="shell")
    store_job(old, job, DateTrigger(later), later, "old001")
    with sqlite3.connect(old) as connection:
        assert connection.execute("PRAGMA application_id").fetchone() == (0,)
    connection.close()
    out = run(tmp_path, "jobs\n")
    assert "old001" in out
    assert "renew the certificate" in out
    with sqlite3.connect(old) as connection:
        assert connection.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    connection.close()


def test_a_delivered_one_off_job_leaves_no_record_behind(
    tmp_path: Path, shells: list[Shell]
) -> None:
    store = tmp_path / "var" / "jobs.sqlite"
    check_job_store(str(store))
    due = datetime.now(UTC) - timedelta(seconds=1)
    job = spec(JobKind.REMIND, "stretch", user="ann", input="shell")
    store_job(store, job, DateTrigger(due), due, "one001")
    shell = Shell(tmp_path, "ping\n", "--linger", "60")
    shells.append(shell)
    shell.expect(r"^Reminder for ann: stretch")
    listening(shell)
    assert shell.stop() == 0
    engine = open_engine(str(store))
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(DELIVERIES)).all()
    finally:
        engine.dispose()
    assert rows == []  # delivered, and the job is gone: the outbox does not grow


def test_a_store_left_with_a_transaction_to_roll_back_is_recovered_not_refused(
    tmp_path: Path,
) -> None:
    """A kill -9 in the middle of a write leaves a hot rollback journal; start-up must let
    SQLite roll it back, not refuse the store as if it could not be opened."""
    live = tmp_path / "live"
    live.mkdir()
    check_job_store(str(live / "jobs.sqlite"))
    writer = sqlite3.connect(live / "jobs.sqlite", isolation_level=None)
    try:
        writer.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
        writer.execute("PRAGMA cache_size=1")  # spill to the file: the journal is hot
        writer.execute("BEGIN IMMEDIATE")
        for _ in range(500):
            writer.execute("INSERT INTO scratch VALUES (?)", ("x" * 200,))
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for file in live.iterdir():  # what a kill -9 at this moment leaves on disk
            (crashed / file.name).write_bytes(file.read_bytes())
    finally:
        writer.close()
    assert (crashed / "jobs.sqlite-journal").stat().st_size > 0

    check_job_store(str(crashed / "jobs.sqlite"))

    with sqlite3.connect(crashed / "jobs.sqlite") as reader:
        assert reader.execute("SELECT count(*) FROM scratch").fetchone() == (0,)
    reader.close()
