"""What another busy process on the machine does to Harken's reply latency.

The steady part of `bench_streams` (echo messages sent at a fixed rate, open loop, no
stream), run alone and beside a neighbour: a separate process that keeps one CPU busy
for `--duty` of each 5 ms (spinning, then sleeping), once at normal priority and once
at idle priority (`SCHED_IDLE`: it runs only when nothing else wants the CPU). The
rounds alternate, and the medians of the p99s are compared.

    python -m bench.bench_neighbour [--rate 5000] [--messages 6000] [--rounds 5]
                                    [--duty 0.2]

It says how much of a reply p99 change a benchmark on this machine can pin on its own
code: any CPU work beside the bot (the streams' included, wherever they run) competes
for the same cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from actors.system import freeze_startup_objects
from bench.bench_streams import Steady
from harken.testbot import TestBot

PERIOD_SECONDS = 0.005

_NEIGHBOUR = """
import os, sys, time
if sys.argv[1] == "idle":
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
busy = float(sys.argv[2]) * {period}
rest = {period} - busy
while True:
    end = time.perf_counter() + busy
    while time.perf_counter() < end:
        pass
    time.sleep(rest)
"""


def p99(rate: float, total: int, neighbour: str | None, duty: float) -> float:
    """Steady reply p99 (ms) with no stream, beside `neighbour` (None, normal, idle)."""
    process = None
    if neighbour is not None:
        code = _NEIGHBOUR.format(period=PERIOD_SECONDS)
        process = subprocess.Popen([sys.executable, "-c", code, neighbour, str(duty)])
    try:
        sink = Steady()
        with (
            tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp,
            TestBot(Path(tmp) / "memory", sink=sink) as bot,
        ):
            freeze_startup_objects()
            sink.run(bot, rate, min(total, 2000))  # warm-up
            return sink.run(bot, rate, total).p99_ms
    finally:
        if process is not None:
            process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5_000, help="messages/s")
    parser.add_argument("--messages", type=int, default=6_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duty", type=float, default=0.2, help="neighbour's busy share")
    args = parser.parse_args(argv)
    if not 0 < args.duty < 1:
        parser.error("--duty: between 0 and 1")
    if not hasattr(os, "SCHED_IDLE"):
        parser.error("needs Linux (SCHED_IDLE)")
    cases: dict[str | None, list[float]] = {None: [], "normal": [], "idle": []}
    for _ in range(args.rounds):  # alternating, so that the machine's mood hits all
        for neighbour, runs in cases.items():
            runs.append(p99(args.rate, args.messages, neighbour, args.duty))
    alone = statistics.median(cases[None])
    print(
        f"## Reply p99 at {args.rate:,.0f} echo messages/s, beside a neighbour busy "
        f"{args.duty:.0%} of one CPU ({os.cpu_count()} CPUs, {args.rounds} rounds)"
    )
    print()
    print("| neighbour | reply p99 ms, median (each run) | against alone |")
    print("|---|---|---|")
    for neighbour, runs in cases.items():
        median = statistics.median(runs)
        each = ", ".join(f"{r:.2f}" for r in runs)
        name = neighbour or "none"
        change = "-" if neighbour is None else f"{(median / alone - 1) * 100:+.1f}%"
        print(f"| {name} | {median:.2f} ({each}) | {change} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
