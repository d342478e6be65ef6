"""CPU per message of each of the bot's threads, and what the garbage collector did.

bench_bot's workload (100 users, closed loop) through the real actor system, once:
2,000 messages to warm up, then `--messages`; the CPU time of every thread (Linux
/proc, user + system) over the measured part, summed by thread name and divided by the
messages. Unlike a profiler this adds no cost to the code it measures, so a change of a
microsecond on the dispatcher shows. Also counted: garbage collections by generation,
and the objects a run leaves to the collector (reference cycles: these should be none).

    python -m bench.bench_cpu [--workload echo|remember] [--messages 30000] [--streams N]

`--streams N` adds N streams subscribed to every input, each counting the events it
handles (bench_streams'), run on the bot's own threads.
"""

from __future__ import annotations

import argparse
import gc
import os
import queue
import re
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from actors.inputs.testing import Done, Reply
from bench.bench_bot import run_once
from bench.bench_streams import Counted, counting_streams
from harken.testbot import TestBot

_TICKS = os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Each live thread's name (without its number) and CPU seconds so far."""
    found = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"[-_]?\d+$", "", thread.name)
        found[thread.native_id or 0] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=("echo", "remember"), default="remember")
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--streams", type=int, default=0, help="counting streams")
    args = parser.parse_args(argv)
    collections: Counter[int] = Counter()

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections[info["generation"]] += 1

    replies: queue.Queue[Reply | Done] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        streams = counting_streams(args.streams, Counted(args.streams))
        settings = {f"streams.{s.name}.mailbox": str(args.messages + 10_000) for s in streams}
        bot = TestBot(Path(tmp) / "memory", sink=replies.put, streams=streams, settings=settings)
        with bot:
            run_once(bot, replies, args.workload, 2000)
            before = _thread_cpu()
            gc.callbacks.append(counted)
            result = run_once(bot, replies, args.workload, args.messages)
            gc.callbacks.remove(counted)
            after = _thread_cpu()
            gc.collect()
            gc.disable()
            gc.set_debug(gc.DEBUG_SAVEALL)
            run_once(bot, replies, args.workload, 2000)
            cyclic = gc.collect()
            gc.garbage.clear()
            gc.set_debug(0)
            gc.enable()
    spent: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        spent[name] = spent.get(name, 0.0) + cpu - before.get(tid, (name, 0.0))[1]
    ranked = sorted(spent.items(), key=lambda item: -item[1])
    per = {name: cpu * 1e6 / args.messages for name, cpu in ranked if cpu > 0}
    with_streams = f", {args.streams} streams" if args.streams else ""
    print(f"## CPU per message: {args.workload}, {args.messages:,} messages{with_streams}\n")
    print(f"{result.rate:,.0f} messages/s\n")
    print("| thread | CPU µs per message |\n|---|---:|")
    for name, micros in per.items():
        print(f"| {name} | {micros:.1f} |")
    print(f"| all | {sum(per.values()):.1f} |\n")
    shown = ", ".join(f"generation {g}: {collections[g]}" for g in sorted(collections))
    print(f"Garbage collections: {shown or 'none'}.")
    print(f"Objects left to the collector per message: {cyclic / 2000:.2f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
