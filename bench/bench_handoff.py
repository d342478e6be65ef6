"""How fast this machine hands messages between threads: a plain pykka fan-out.

Not Harken's code: three hops of pykka's own `ThreadingActor` (one actor fanning out
to 100, which all forward to one), 100 messages in flight, 10,000 messages a run. The
bot's figures depend on how quickly a thread wakes another on these two cores, and
that drifts during a day; this run puts a number on it next to the other benchmarks.

    python -m bench.bench_handoff [--runs 3]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import time
from typing import Any

import pykka

MIDDLE = 100
IN_FLIGHT = 100
MESSAGES = 10_000


class _Hop(pykka.ThreadingActor):
    def __init__(self, forward: Any) -> None:
        super().__init__()
        self.forward = forward

    def on_receive(self, message: Any) -> Any:
        self.forward(message)


def run_once() -> float:
    done: queue.SimpleQueue[int] = queue.SimpleQueue()
    last = _Hop.start(done.put)
    middle = [_Hop.start(last.tell) for _ in range(MIDDLE)]
    first = _Hop.start(lambda m: middle[m % MIDDLE].tell(m))
    try:
        start = time.perf_counter()
        sent = 0
        for _ in range(IN_FLIGHT):
            first.tell(sent)
            sent += 1
        for _ in range(MESSAGES):
            done.get(timeout=30)
            if sent < MESSAGES:
                first.tell(sent)
                sent += 1
        return MESSAGES / (time.perf_counter() - start)
    finally:
        for ref in [first, *middle, last]:
            ref.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    rates = [run_once() for _ in range(args.runs)]
    print("## Machine check: pykka fan-out, 3 hops, 100 in flight")
    print()
    print(
        f"{statistics.median(rates):,.0f} messages/s (median of {args.runs}: "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + ")"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
