"""Durable `remember` through the memory store on PostgreSQL: closed loop, one process.

The workload is bench_bot's `remember`: 100 users `u000`..`u099`, each with exactly one
message in flight, sending the next as soon as the reply to the previous one arrives;
each message writes one value, committed to PostgreSQL (one transaction per group
commit of the memory actor, `synchronous_commit = on`) before the reply. The server is
a private cluster of its own (tests/support/postgres.py: `initdb` in a temporary
directory, 127.0.0.1 only, `fsync = on`), made and removed by this benchmark.

    python -m bench.bench_pg_memory [--runs 5] [--messages 10000]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
from pathlib import Path

from actors.inputs.testing import Done, Reply
from actors.system import freeze_startup_objects
from bench.bench_bot import USERS, RunResult, run_once
from config.settings import MemorySettings, Secret, Settings
from harken.testbot import TestBot
from tests.support.postgres import PrivatePostgres, postgres_missing


def bench(url: str, runs: int, total: int) -> list[RunResult]:
    stream: queue.Queue[Reply | Done] = queue.Queue()
    settings = Settings(memory=MemorySettings(backend="postgresql", url=Secret(url)))
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        bot = TestBot(Path(tmp) / "memory", settings=settings, sink=stream.put)
        with bot:
            freeze_startup_objects()  # as `harken run` does once the bot is up
            run_once(bot, stream, "remember", min(total, 2000))  # warm-up
            return [run_once(bot, stream, "remember", total) for _ in range(runs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args(argv)
    print(
        f"## Memory on PostgreSQL: durable `remember`, closed loop, {USERS} users, "
        f"{args.messages:,} messages a run, {args.runs} runs, 1 process"
    )
    print()
    missing = postgres_missing()
    if missing is not None:
        print(f"Skipped: {missing}.")
        return 0
    with PrivatePostgres() as server:
        results = bench(server.create_database("bench"), args.runs, args.messages)
    rates = ", ".join(f"{r.rate:,.0f}" for r in results)
    print("| workload | messages/s (median) | p50 ms (median) | p99 ms (median) | runs (msg/s) |")
    print("|---|---|---|---|---|")
    print(
        f"| remember (postgresql) | {statistics.median(r.rate for r in results):,.0f} "
        f"| {statistics.median(r.p50_ms for r in results):.2f} "
        f"| {statistics.median(r.p99_ms for r in results):.2f} | {rates} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
