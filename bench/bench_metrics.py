"""What counting a message costs: the hand-written counters against prometheus_client.

Each message the bot answers updates its metrics three times on the message path: one
message in (the router), one command done with its latency (the worker: a call, a
histogram observation, an error when it failed) and one message out (`Runtime.answer`).
This times exactly those updates, nothing else, for two implementations of `Metrics`:
the hand-written counters Harken had before (`HandWritten` below, a copy: a dict update
under one lock, a bisect for the histogram) and `actors.metrics.Metrics` (prometheus_client
counters and histogram on a registry of their own).

Per update: 200,000 calls of one method, in ns per call. Per message: the three updates
of one message, over 100,000 messages that cycle through 4 inputs and 20 commands (one
call in 50 fails), on one thread, and on 4 threads at once (the bot updates from its
dispatcher and worker threads; the figure is wall time over all messages). Median of 5.

    python -m bench.bench_metrics [--runs 5]
"""

from __future__ import annotations

import argparse
import bisect
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Protocol

from actors.metrics import Metrics
from core.status import LATENCY_BUCKETS

UPDATES = 200_000
MESSAGES = 100_000
THREADS = 4
INPUTS = [f"input{i}" for i in range(4)]
COMMANDS = [f"command{i:02d}" for i in range(20)]


class Counting(Protocol):
    def message_in(self, input_name: str) -> None: ...
    def messages_out(self, input_name: str, count: int) -> None: ...
    def command_done(self, name: str, seconds: float, *, failed: bool) -> None: ...
    def refused(self, name: str) -> None: ...


class HandWritten:
    """The counters `actors/metrics.py` had before prometheus_client (their update path)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in: defaultdict[str, int] = defaultdict(int)
        self._out: defaultdict[str, int] = defaultdict(int)
        self._calls: defaultdict[str, int] = defaultdict(int)
        self._errors: defaultdict[str, int] = defaultdict(int)
        self._refusals: defaultdict[str, int] = defaultdict(int)
        self._latency: defaultdict[str, list[int]] = defaultdict(
            lambda: [0] * (len(LATENCY_BUCKETS) + 1)
        )
        self._total: defaultdict[str, float] = defaultdict(float)

    def message_in(self, input_name: str) -> None:
        with self._lock:
            self._in[input_name] += 1

    def messages_out(self, input_name: str, count: int) -> None:
        if count:
            with self._lock:
                self._out[input_name] += count

    def command_done(self, name: str, seconds: float, *, failed: bool) -> None:
        with self._lock:
            self._calls[name] += 1
            self._latency[name][bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._total[name] += seconds
            if failed:
                self._errors[name] += 1

    def refused(self, name: str) -> None:
        with self._lock:
            self._refusals[name] += 1


IMPLEMENTATIONS: dict[str, Callable[[], Counting]] = {
    "hand-written": HandWritten,
    "prometheus_client": Metrics,
}


def _per_update(make: Callable[[], Counting]) -> dict[str, float]:
    """ns per call of each update method, one thread."""
    metrics = make()
    names = [COMMANDS[i % len(COMMANDS)] for i in range(UPDATES)]
    inputs = [INPUTS[i % len(INPUTS)] for i in range(UPDATES)]
    seconds = [0.0004 * (i % 100) for i in range(UPDATES)]
    result: dict[str, float] = {}

    start = time.perf_counter_ns()
    for name in inputs:
        metrics.message_in(name)
    result["message_in"] = (time.perf_counter_ns() - start) / UPDATES

    start = time.perf_counter_ns()
    for name in inputs:
        metrics.messages_out(name, 1)
    result["messages_out"] = (time.perf_counter_ns() - start) / UPDATES

    start = time.perf_counter_ns()
    for name, took in zip(names, seconds, strict=True):
        metrics.command_done(name, took, failed=False)
    result["command_done"] = (time.perf_counter_ns() - start) / UPDATES

    start = time.perf_counter_ns()
    for name in names:
        metrics.refused(name)
    result["refused"] = (time.perf_counter_ns() - start) / UPDATES
    return result


def _messages(metrics: Counting, first: int, count: int) -> None:
    for i in range(first, first + count):
        source = INPUTS[i % len(INPUTS)]
        metrics.message_in(source)
        metrics.command_done(COMMANDS[i % len(COMMANDS)], 0.0004 * (i % 100), failed=i % 50 == 0)
        metrics.messages_out(source, 1)


def _per_message(make: Callable[[], Counting], threads: int) -> float:
    """ns of wall time per message (its three updates), over `threads` threads."""
    metrics = make()
    share = MESSAGES // threads
    workers = [
        threading.Thread(target=_messages, args=(metrics, n * share, share)) for n in range(threads)
    ]
    start = time.perf_counter_ns()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter_ns() - start) / (share * threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    updates: dict[str, list[dict[str, float]]] = {name: [] for name in IMPLEMENTATIONS}
    messages: dict[tuple[str, int], list[float]] = {}
    # The implementations take turns within each run, so drift hits both alike.
    for _ in range(args.runs):
        for name, make in IMPLEMENTATIONS.items():
            updates[name].append(_per_update(make))
            for threads in (1, THREADS):
                messages.setdefault((name, threads), []).append(_per_message(make, threads))

    print(f"## Metrics updates: hand-written counters vs prometheus_client (median of {args.runs})")
    print()
    methods = list(updates["hand-written"][0])
    print("| implementation | " + " | ".join(f"{m} ns" for m in methods) + " |")
    print("|---|" + "---|" * len(methods))
    for name, runs in updates.items():
        cells = [f"{statistics.median(run[m] for run in runs):,.0f}" for m in methods]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    print("| implementation | per message, 1 thread ns | per message, 4 threads ns |")
    print("|---|---|---|")
    for name in IMPLEMENTATIONS:
        one = statistics.median(messages[(name, 1)])
        many = statistics.median(messages[(name, THREADS)])
        print(f"| {name} | {one:,.0f} | {many:,.0f} |")
    print()
    old = statistics.median(messages[("hand-written", 1)])
    new = statistics.median(messages[("prometheus_client", 1)])
    print(
        f"prometheus_client costs {new - old:+,.0f} ns per message on one thread ({new / old:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
