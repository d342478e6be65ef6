"""bench_bot on several checkouts, taking turns, with the ratios to the first.

Each checkout runs `python -m bench.bench_bot --runs 3 --workload all` in its own
process, in rounds whose order alternates (A B C, then C B A, ...), so that a slow
minute of the machine weighs on every checkout alike. Printed: each checkout's median
messages/s per workload, the ratio of medians to the first checkout, and the median of
the per-round ratios (which cancels drift between rounds).

    python -m bench.compare [--rounds 10] [--cpu 0] DIR[=PYTHON] DIR[=PYTHON] ...

A checkout's Python defaults to its own `.venv/bin/python`, else this one's; `--cpu N`
pins every run to that CPU (`taskset`), which steadies the figures on a shared machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = ("echo", "remember")


def _python(spec: str) -> tuple[str, str]:
    directory, _, python = spec.partition("=")
    if not python:
        own = Path(directory) / ".venv" / "bin" / "python"
        python = str(own) if own.exists() else sys.executable
    return directory, python


def _once(directory: str, python: str, cpu: int | None) -> dict[str, int]:
    command = [python, "-m", "bench.bench_bot", "--runs", "3", "--workload", "all"]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    out = subprocess.run(command, cwd=directory, capture_output=True, text=True, check=True)
    rates = {}
    for workload in WORKLOADS:
        found = re.search(rf"^\| {workload} \| ([\d,]+)", out.stdout, re.M)
        if found is None:
            raise SystemExit(f"{directory}: no {workload} figure in bench_bot's output")
        rates[workload] = int(found.group(1).replace(",", ""))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("checkouts", nargs="+")
    args = parser.parse_args(argv)
    trees = [_python(spec) for spec in args.checkouts]
    rates: dict[tuple[str, str], list[int]] = {(d, w): [] for d, _ in trees for w in WORKLOADS}
    started = time.strftime("%H:%M:%S", time.gmtime())
    for round_ in range(args.rounds):
        for directory, python in trees if round_ % 2 == 0 else trees[::-1]:
            for workload, rate in _once(directory, python, args.cpu).items():
                rates[(directory, workload)].append(rate)
    print(f"{args.rounds} rounds, {started} to {time.strftime('%H:%M:%S', time.gmtime())} UTC")
    base = trees[0][0]
    for workload in WORKLOADS:
        print(f"\n| {workload} | messages/s (median) | / first | median of round ratios | runs |")
        print("|---|---:|---:|---:|---|")
        first = rates[(base, workload)]
        for directory, _ in trees:
            runs = rates[(directory, workload)]
            ratio = statistics.median(runs) / statistics.median(first)
            each = statistics.median(r / f for r, f in zip(runs, first, strict=True))
            shown = ", ".join(f"{r:,}" for r in runs)
            print(
                f"| {directory} | {statistics.median(runs):,.0f} | {ratio:.3f} | {each:.3f} "
                f"| {shown} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
