"""The scheduler at scale: 10,000 pending jobs for 1,000 users, and a burst of 1,000.

* setup: 10,000 reminders (10 per user `u000`..`u999`) due 1 to 30 days ahead are
  written into the job store in one transaction (APScheduler's own table and job
  format; only the setup is batched);
* start-up: `BotSystem.start()` with those jobs stored, until the scheduler actor has
  indexed them and answers (an ask that lists one user's jobs);
* add / cancel: one reminder added through the scheduler actor (`ScheduleJob`, which
  commits the job to SQLite before answering), then cancelled (`CancelJob`), repeated;
  plus the whole `remind me in 1 hour to ...` command round trip;
* burst: 1,000 more reminders (one per user), added through the actor, all due at the
  same second while the bot runs; lateness is the time from that second to each
  reminder's arrival at the input.

    python -m bench.bench_scheduler [--pending 10000] [--users 1000] [--burst 1000] [--ops 200]
"""

from __future__ import annotations

import argparse
import pickle
import queue
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from actors.inputs.testing import Done, Reply
from actors.job_store import open_engine
from actors.messages import CancelJob, ListJobs, ScheduleJob
from actors.scheduler_actor import scheduled_job
from actors.supervision import Handle
from core.event import Event, EventType
from core.jobs import JobKind, JobSpec
from harken.testbot import INPUT_NAME, TestBot

BURST_LEAD = 1.0
"""Seconds of slack between adding the burst and its due second."""


def _spec(user: str, text: str) -> JobSpec:
    asked = Event(
        type=EventType.TEXT,
        sender=user,
        to="harken",
        data=f"remind me to {text}",
        input=INPUT_NAME,
    )
    return JobSpec(JobKind.REMIND, text, asked, "bench (UTC)")


def _write_jobs(path: Path, jobs: list[tuple[str, JobSpec, datetime]]) -> None:
    """Insert jobs in one transaction, in the rows APScheduler's store itself writes."""
    store = SQLAlchemyJobStore(engine=open_engine(str(path)))
    scheduler = BackgroundScheduler(timezone=UTC)  # never started: only for the jobs
    store.start(scheduler, "default")
    rows = []
    for job_id, spec, due in jobs:
        job = Job(
            scheduler,
            id=job_id,
            func=scheduled_job,
            trigger=DateTrigger(due),
            executor="default",
            args=(spec.to_json(),),
            kwargs={},
            name=f"remind for {spec.owner}",
            misfire_grace_time=None,
            coalesce=False,
            max_instances=1,
            next_run_time=due,
        )
        state = pickle.dumps(job.__getstate__(), store.pickle_protocol)
        rows.append({"id": job_id, "next_run_time": due.timestamp(), "job_state": state})
    with store.engine.begin() as connection:
        connection.execute(store.jobs_t.insert(), rows)
    store.shutdown()


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _ops(
    bot: TestBot, scheduler: Handle, stream: queue.Queue[Reply | Done], ops: int, users: int
) -> dict[str, list[float]]:
    """Add then cancel one job, `ops` times, through the actor; and the command's round trip."""
    adds, cancels, commands = [], [], []
    trigger = DateTrigger(datetime.now(UTC) + timedelta(hours=1))
    for i in range(ops):
        spec = _spec(f"u{i % users:03d}", f"added {i}")
        began = time.perf_counter()
        info = scheduler.ask(ScheduleJob(spec, trigger), timeout=30)
        adds.append(time.perf_counter() - began)
        began = time.perf_counter()
        result = scheduler.ask(
            CancelJob(info.id, spec.owner, INPUT_NAME, is_admin=False), timeout=30
        )
        cancels.append(time.perf_counter() - began)
        assert result.outcome == "cancelled", result
    for i in range(min(ops, 50)):
        event = bot.event("remind me in 1 hour to stretch", user=f"u{i:03d}")
        began = time.perf_counter()
        bot.send_event(event)
        while True:
            item = stream.get(timeout=30)
            if isinstance(item, Done) and item.event_id == event.id:
                break
        commands.append(time.perf_counter() - began)
    return {"add": adds, "cancel": cancels, "command": commands}


def _burst(
    scheduler: Handle, stream: queue.Queue[Reply | Done], size: int, users: int, add_cost: float
) -> list[float]:
    """Add `size` reminders due in the same whole second; each one's lateness at the input."""
    # Far enough ahead for every add to be committed before the second comes.
    due = datetime.fromtimestamp(int(time.time() + BURST_LEAD + 2 * size * add_cost) + 1, UTC)
    for i in range(size):
        spec = _spec(f"u{i % users:03d}", f"burst {i}")
        scheduler.ask(ScheduleJob(spec, DateTrigger(due)), timeout=30)
    assert time.time() < due.timestamp(), "the burst was not all added before it fell due"
    lateness: list[float] = []
    deadline = time.monotonic() + 120
    while len(lateness) < size and time.monotonic() < deadline:
        item = stream.get(timeout=120)
        if isinstance(item, Reply) and item.event.data.startswith("Reminder for "):
            lateness.append(time.time() - due.timestamp())
    return lateness


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_scheduler")
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--burst", type=int, default=1_000)
    parser.add_argument("--ops", type=int, default=200)
    args = parser.parse_args(argv)

    stream: queue.Queue[Reply | Done] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        bot = TestBot(Path(tmp) / "memory", sink=stream.put)
        store = Path(bot.settings.scheduler.job_store(bot.settings.memory.path))
        now = datetime.now(UTC)
        pending = [
            (
                f"p{i:06d}",
                _spec(f"u{i % args.users:03d}", f"pending {i}"),
                now + timedelta(days=1 + i % 30, seconds=i),
            )
            for i in range(args.pending)
        ]
        began = time.perf_counter()
        _write_jobs(store, pending)
        setup = time.perf_counter() - began

        began = time.perf_counter()
        bot.start()
        runtime = bot.system.runtime if bot.system else None
        scheduler = runtime.scheduler if runtime else None
        assert scheduler is not None
        listed = scheduler.ask(ListJobs(f"{INPUT_NAME}:u000"), timeout=60)
        startup = time.perf_counter() - began
        assert len(listed) == args.pending // args.users, len(listed)

        timings = _ops(bot, scheduler, stream, args.ops, args.users)
        lateness = _burst(
            scheduler, stream, args.burst, args.users, statistics.median(timings["add"])
        )
        bot.stop()

    adds, cancels = timings["add"], timings["cancel"]
    print("## Scheduler (issue #4)\n")
    print(
        f"{args.pending:,} pending jobs for {args.users:,} users (setup insert "
        f"{setup:.2f} s); burst of {args.burst:,} reminders due in the same second.\n"
    )
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| start-up with {args.pending:,} jobs stored | {startup:.2f} s | < 5 s |")
    print(
        f"| add one job (committed) p50 / p99 | {_ms(adds, 0.5):.2f} / {_ms(adds, 0.99):.2f} ms | |"
    )
    print(f"| cancel one job p50 / p99 | {_ms(cancels, 0.5):.2f} / {_ms(cancels, 0.99):.2f} ms | |")
    print(
        f"| `remind me in 1 hour to ...` round trip p50 | {_ms(timings['command'], 0.5):.2f} ms | |"
    )
    if len(lateness) < args.burst:
        print(f"| burst delivered | {len(lateness)} of {args.burst} | all |")
        return 1
    print(
        f"| burst lateness p50 / p99 / max | {_ms(lateness, 0.5):.0f} / "
        f"{_ms(lateness, 0.99):.0f} / {max(lateness) * 1000:.0f} ms | p99 < 1,000 ms |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
