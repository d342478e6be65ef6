"""Streams: events per second through 10 streams, and what they cost the replies.

The `bench_bot` echo workload (100 users, one message each in flight, 10,000 messages
a run) through the real actor system, once with no stream and once with 10 streams
subscribed to every input, each counting the events it is handed (its mailbox holds a
whole run, so none is dropped: the figure is what the streams get through, not what
they may skip). Reported: the replies' rate, p50 and p99 in each case, and the events
per second the 10 streams handled together (from the first message sent to the last
event handled by the slowest stream).

    python -m bench.bench_streams [--messages 10000] [--streams 10] [--rate 5000]
                                  [--rounds 1] [--switch-interval SECONDS]

The steady part sends at a fixed rate (open loop), so both cases carry the same load:
its p99 is the reply latency a busy bot's people see, where the closed loop's is set by
how much the machine can do. With `--rounds N` the steady runs alternate N times and
the medians are shown: p99s under a millisecond vary by tens of percent from run to
run on a shared machine. `--switch-interval` sets `sys.setswitchinterval` for the whole
run (Python's default: 0.005 s).
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from actors.inputs.testing import Done, Reply
from actors.system import freeze_startup_objects
from bench.bench_bot import RunResult, run_once
from commands.streams import Stream, StreamContext, stream
from core.event import Event
from harken.testbot import TestBot


class Counted:
    """Events handled by each stream: each count is written by its stream's thread only."""

    def __init__(self, streams: int) -> None:
        self.counts = [0] * streams

    @property
    def count(self) -> int:
        return sum(self.counts)

    def wait_for(self, total: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while self.count < total:
            if time.monotonic() > deadline:
                raise AssertionError(f"streams handled {self.count} of {total} events")
            pause.wait(0.005)


def counting_streams(count: int, counted: Counted) -> list[Stream]:
    """`count` streams subscribed to every input, each counting what it handles."""

    def make(index: int) -> Stream:
        counts = counted.counts

        def counter(ctx: StreamContext, event: Event) -> None:
            counts[index] += 1

        return stream(counter, name=f"count-{index}")

    return [make(i) for i in range(count)]


def run(streams: int, total: int) -> tuple[RunResult, float, float]:
    """(reply figures, stream events/s, events dropped) for one run after a warm-up."""
    counted = Counted(streams)
    made = counting_streams(streams, counted)
    mailbox = str(total + 5_000)
    settings: dict[str, Any] = {f"streams.{s.name}.mailbox": mailbox for s in made}
    replies: queue.Queue[Reply | Done] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        bot = TestBot(Path(tmp) / "memory", sink=replies.put, streams=made, settings=settings)
        with bot:
            freeze_startup_objects()
            warm = min(total, 2000)
            run_once(bot, replies, "echo", warm)
            counted.wait_for(warm * streams)
            before = counted.count
            start = time.perf_counter()
            result = run_once(bot, replies, "echo", total)
            counted.wait_for(before + total * streams)
            elapsed = time.perf_counter() - start
            assert bot.system is not None
            assert bot.system.runtime is not None
            registry = bot.system.runtime.metrics.registry
            dropped = sum(
                registry.get_sample_value("harken_stream_dropped_total", {"stream": s.name}) or 0
                for s in made
            )
    rate = total * streams / elapsed if streams else 0.0
    return result, rate, dropped


class Steady:
    """Messages at a fixed rate (open loop): each reply's latency from its send."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.expected = 0
        self.finished = threading.Event()

    def __call__(self, item: Reply | Done) -> None:  # the testing input's thread
        if isinstance(item, Done):
            self.latencies.append(time.perf_counter() - self.sent.pop(item.event_id))
            if len(self.latencies) >= self.expected:
                self.finished.set()

    def run(self, bot: TestBot, rate: float, total: int) -> RunResult:
        self.latencies, self.expected = [], total
        self.finished.clear()
        start = time.perf_counter()
        pause = threading.Event()
        for i in range(total):
            due = start + i / rate
            while (ahead := due - time.perf_counter()) > 0:
                pause.wait(ahead)
            user = f"u{i % 100:03d}"
            event = bot.event(f"echo m{i:06d} hello from {user}", user=user)
            self.sent[event.id] = time.perf_counter()
            bot.send_event(event)
        if not self.finished.wait(60):
            raise AssertionError(f"{len(self.latencies)} of {total} answered")
        elapsed = time.perf_counter() - start
        ordered = sorted(self.latencies)
        return RunResult(
            rate=total / elapsed,
            p50_ms=ordered[len(ordered) // 2] * 1000,
            p99_ms=ordered[int(len(ordered) * 0.99)] * 1000,
        )


def steady(streams: int, rate: float, total: int) -> tuple[RunResult, float]:
    """(reply figures, events dropped) at `rate` messages/s with `streams` streams."""
    counted = Counted(streams)
    made = counting_streams(streams, counted)
    settings: dict[str, Any] = {f"streams.{s.name}.mailbox": str(total + 5_000) for s in made}
    sink = Steady()
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        bot = TestBot(Path(tmp) / "memory", sink=sink, streams=made, settings=settings)
        with bot:
            freeze_startup_objects()
            sink.run(bot, rate, min(total, 2000))  # warm-up
            result = sink.run(bot, rate, total)
            counted.wait_for((min(total, 2000) + total) * streams)
            assert bot.system is not None
            assert bot.system.runtime is not None
            registry = bot.system.runtime.metrics.registry
            dropped = sum(
                registry.get_sample_value("harken_stream_dropped_total", {"stream": s.name}) or 0
                for s in made
            )
    return result, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5_000, help="steady load, messages/s")
    parser.add_argument(
        "--rounds", type=int, default=1, help="steady runs of each, alternating; medians shown"
    )
    parser.add_argument(
        "--switch-interval", type=float, default=None, help="sys.setswitchinterval, seconds"
    )
    args = parser.parse_args(argv)
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"Python switch interval: {sys.getswitchinterval() * 1000:g} ms")
    print()
    print(f"## Streams: echo, 100 users, {args.messages:,} messages, one run each")
    print()
    print("| streams | messages/s | p50 ms | p99 ms | stream events/s | dropped |")
    print("|---|---|---|---|---|---|")
    base, _, _ = run(0, args.messages)
    print(f"| 0 | {base.rate:,.0f} | {base.p50_ms:.2f} | {base.p99_ms:.2f} | - | - |")
    sys.stdout.flush()
    with_streams, rate, dropped = run(args.streams, args.messages)
    print(
        f"| {args.streams} | {with_streams.rate:,.0f} | {with_streams.p50_ms:.2f} "
        f"| {with_streams.p99_ms:.2f} | {rate:,.0f} | {dropped:.0f} |"
    )
    change = (with_streams.p99_ms / base.p99_ms - 1) * 100
    print()
    print(f"Reply p99 with {args.streams} streams: {change:+.1f}% against none.")
    print()
    print(f"## Steady load: {args.rate:,.0f} echo messages/s (open loop), {args.messages:,}")
    print()
    print("| streams | stream events/s | reply p50 ms | reply p99 ms (each run) | dropped |")
    print("|---|---|---|---|---|")
    quiet_runs: list[RunResult] = []
    busy_runs: list[RunResult] = []
    dropped = 0.0
    for _ in range(args.rounds):  # alternating, so that a noisy neighbour hits both
        quiet_runs.append(steady(0, args.rate, args.messages)[0])
        busy, lost = steady(args.streams, args.rate, args.messages)
        busy_runs.append(busy)
        dropped += lost
    quiet_p99 = statistics.median(r.p99_ms for r in quiet_runs)
    busy_p99 = statistics.median(r.p99_ms for r in busy_runs)
    each = ", ".join(f"{r.p99_ms:.2f}" for r in quiet_runs)
    print(
        f"| 0 | - | {statistics.median(r.p50_ms for r in quiet_runs):.2f} "
        f"| {quiet_p99:.2f} ({each}) | - |"
    )
    each = ", ".join(f"{r.p99_ms:.2f}" for r in busy_runs)
    print(
        f"| {args.streams} | {statistics.median(r.rate for r in busy_runs) * args.streams:,.0f} "
        f"| {statistics.median(r.p50_ms for r in busy_runs):.2f} | {busy_p99:.2f} ({each}) "
        f"| {dropped:.0f} |"
    )
    print()
    print(
        f"Reply p99 at {args.rate:,.0f} messages/s with {args.streams} streams: "
        f"{(busy_p99 / quiet_p99 - 1) * 100:+.1f}% against none"
        f"{f' (medians of {args.rounds} rounds)' if args.rounds > 1 else ''}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
