"""Closed-loop message throughput and latency through the real actor system.

The workload, fixed so that it compares with other bots: 100 users `u000`..`u099`;
message i comes from user `u{i%100:03d}`; each user keeps exactly one message in flight
and sends the next as soon as the reply to the previous one arrives; 10,000 messages a
run. `echo` runs send `echo m000123 hello from u023` and expect exactly
`m000123 hello from u023`; `remember` runs write one value per message durably through
the memory actor before the reply.

A third workload, `sequential`, sends `echo` from one user with one message in flight
(2,000 a run) and reports the round trip in microseconds: what a quiet bot costs per
message in thread hand-offs.

    python -m bench.bench_bot [--runs 5] [--messages 10000]
                              [--workload echo|remember|sequential|all]
"""

from __future__ import annotations

import argparse
import queue
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from actors.inputs.testing import Done, Reply
from actors.system import freeze_startup_objects
from harken.testbot import TestBot

USERS = 100


@dataclass
class RunResult:
    rate: float
    p50_ms: float
    p99_ms: float


def _message(workload: str, i: int) -> tuple[str, str, str]:
    """(user, text, expected reply) of message i."""
    user = f"u{i % USERS:03d}"
    if workload == "echo":
        return user, f"echo m{i:06d} hello from {user}", f"m{i:06d} hello from {user}"
    value = f"m{i:06d} from {user}"
    return user, f"remember slot is {value}", f"OK, I'll remember that slot is {value}."


def run_once(
    bot: TestBot, stream: queue.Queue[Reply | Done], workload: str, total: int
) -> RunResult:
    expected: dict[str, tuple[int, str, float]] = {}
    latencies: list[float] = []

    def send(i: int) -> None:
        user, text, reply = _message(workload, i)
        event = bot.event(text, user=user)
        expected[event.id] = (i, reply, time.perf_counter())
        bot.send_event(event)

    start = time.perf_counter()
    for i in range(min(USERS, total)):
        send(i)
    answered = 0
    while answered < total:
        item = stream.get(timeout=30)
        if not isinstance(item, Done):
            continue
        now = time.perf_counter()
        i, reply, sent_at = expected.pop(item.event_id)
        got = [e.data for e in item.replies]
        if got != [reply]:
            raise AssertionError(f"message {i}: expected {reply!r}, got {got!r}")
        latencies.append(now - sent_at)
        answered += 1
        if i + USERS < total:
            send(i + USERS)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return RunResult(
        rate=total / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
    )


SEQUENTIAL = 2_000


def run_sequential(bot: TestBot, stream: queue.Queue[Reply | Done], total: int) -> RunResult:
    """`total` echo round trips from one user, one at a time."""
    latencies: list[float] = []
    start = time.perf_counter()
    for i in range(total):
        event = bot.event(f"echo s{i:06d}", user="u000")
        sent_at = time.perf_counter()
        bot.send_event(event)
        while True:
            item = stream.get(timeout=30)
            if isinstance(item, Done) and item.event_id == event.id:
                break
        latencies.append(time.perf_counter() - sent_at)
        if [e.data for e in item.replies] != [f"s{i:06d}"]:
            raise AssertionError(f"round trip {i}: got {item.replies!r}")
    elapsed = time.perf_counter() - start
    latencies.sort()
    return RunResult(
        rate=total / elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
    )


def bench(workload: str, runs: int, total: int) -> list[RunResult]:
    stream: queue.Queue[Reply | Done] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        bot = TestBot(Path(tmp) / "memory", sink=stream.put)
        with bot:
            freeze_startup_objects()  # as `harken run` does once the bot is up
            if workload == "sequential":
                run_sequential(bot, stream, 500)  # warm-up
                return [run_sequential(bot, stream, SEQUENTIAL) for _ in range(runs)]
            run_once(bot, stream, workload, min(total, 2000))  # warm-up
            return [run_once(bot, stream, workload, total) for _ in range(runs)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument(
        "--workload", choices=["echo", "remember", "sequential", "all"], default="all"
    )
    args = parser.parse_args(argv)
    every = ["echo", "remember", "sequential"]
    workloads = every if args.workload == "all" else [args.workload]
    print(f"## Bot: closed loop, {USERS} users, {args.messages:,} messages a run, {args.runs} runs")
    print()
    print("| workload | messages/s (median) | p50 ms (median) | p99 ms (median) | runs (msg/s) |")
    print("|---|---|---|---|---|")
    for workload in workloads:
        results = bench(workload, args.runs, args.messages)
        if workload == "sequential":
            sequential = results
            continue
        rates = ", ".join(f"{r.rate:,.0f}" for r in results)
        print(
            f"| {workload} | {statistics.median(r.rate for r in results):,.0f} "
            f"| {statistics.median(r.p50_ms for r in results):.2f} "
            f"| {statistics.median(r.p99_ms for r in results):.2f} | {rates} |"
        )
        sys.stdout.flush()
    if "sequential" in workloads:
        p50s = ", ".join(f"{r.p50_ms * 1000:.0f}" for r in sequential)
        print()
        print(
            f"Sequential echo, one user, one message in flight ({SEQUENTIAL:,} a run): "
            f"round trip p50 {statistics.median(r.p50_ms for r in sequential) * 1000:.0f} µs, "
            f"p99 {statistics.median(r.p99_ms for r in sequential) * 1000:.0f} µs "
            f"(p50 per run: {p50s} µs)."
        )
    print()
    print(f"Peak RSS of the benchmark process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
