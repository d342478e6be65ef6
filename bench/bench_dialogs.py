"""Dialogs at scale: many open at once, and memory once many people have had one.

Part 1, concurrent dialogs: `--users` people (5,000) each start the built-in `profile`
dialog, so that all of them are open at the same time, then each answers the name
question, then the time zone question. Every step's state is written durably before
its reply (journal fsynced), as in production. Messages are sent with `--window` (100)
in flight at a time, as by 100 busy chat clients; latency is from the send to the
complete answer at the input. Every reply is checked.

Part 2, idle eviction: `--many` people (50,000) each go through one whole `profile`
dialog with `bot.conversation_idle_seconds` at `--idle` (2 s), and the resident memory
of the process is sampled as they go and once the idle conversations are retired.

    python -m bench.bench_dialogs [--users 5000] [--many 50000] [--window 100] [--idle 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from actors.inputs.testing import Done, Reply
from actors.runner import CANCEL_HINT
from actors.system import freeze_startup_objects
from config.settings import BotSettings, Settings
from harken.testbot import TestBot

NAME_Q = f"What should I call you?\n{CANCEL_HINT}"
ZONE_Q = "What is your time zone? An IANA name such as Europe/Paris or America/New_York."
ZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC")

Message = tuple[str, str, str]
"""(user, text, the one reply expected)."""


def rss_mb() -> float:
    """Resident memory of this process now (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def steps_for(user: str, n: int) -> tuple[Message, ...]:
    """A person's three messages. Tuples of strings: the garbage collector stops
    tracking them, so the benchmark's own 5,000 plans do not lengthen its full passes
    (which every message in flight waits for) as the bot's objects do."""
    name, zone = f"Person {n}", ZONES[n % len(ZONES)]
    thanks = f"Thanks, {name}. I'll give you times in {zone}. Say `whoami` to check."
    return ((user, "profile", NAME_Q), (user, name, ZONE_Q), (user, zone, thanks))


def drive(
    bot: TestBot,
    stream: queue.Queue[Reply | Done],
    messages: list[Message],
    window: int,
    latencies: list[float],
) -> None:
    """Send `messages` (at most one per user at a time) keeping `window` in flight."""
    pending: dict[str, tuple[Message, float]] = {}
    sent = answered = 0

    def send_next() -> None:
        nonlocal sent
        message = messages[sent]
        sent += 1
        event = bot.event(message[1], user=message[0])
        pending[event.id] = (message, time.perf_counter())
        bot.send_event(event)

    while sent < min(window, len(messages)):
        send_next()
    while answered < len(messages):
        item = stream.get(timeout=60)
        if not isinstance(item, Done):
            continue
        now = time.perf_counter()
        (user, text, expected), sent_at = pending.pop(item.event_id)
        got = [e.data for e in item.replies]
        if got != [expected]:
            raise AssertionError(f"{user} said {text!r}: expected {expected!r}, got {got!r}")
        latencies.append(now - sent_at)
        answered += 1
        if sent < len(messages):
            send_next()


class SlowSyncs:
    """Counts the disk syncs slower than `limit` seconds while it is installed.

    Every step's reply waits for the journal's sync, so one sync the disk stalls (this
    machine's virtual disk does that now and then, 50-500 ms) delays every reply in
    flight; the report names them so that a p99 outlier can be told apart from the bot.
    """

    def __init__(self, limit: float = 0.02) -> None:
        self.limit = limit
        self.slow: list[float] = []
        self._saved = (os.fsync, os.fdatasync)

    def _timed(self, sync: Any) -> Any:
        def timed(fd: int) -> None:
            began = time.perf_counter()
            try:
                sync(fd)
            finally:
                took = time.perf_counter() - began
                if took > self.limit:
                    self.slow.append(took)

        return timed

    def __enter__(self) -> SlowSyncs:
        os.fsync, os.fdatasync = (self._timed(sync) for sync in self._saved)
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync, os.fdatasync = self._saved

    def report(self) -> str:
        if not self.slow:
            return f"no disk sync took over {self.limit * 1000:.0f} ms"
        return (
            f"{len(self.slow)} disk sync(s) took over {self.limit * 1000:.0f} ms "
            f"(the longest {max(self.slow) * 1000:.0f} ms)"
        )


class FullCollections:
    """Times the garbage collector's full (oldest generation) passes while installed:
    each one pauses every reply in flight."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def _note(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._note)

    def report(self) -> str:
        if not self.pauses:
            return "no full garbage collection"
        shown = ", ".join(f"{p * 1000:.0f}" for p in self.pauses)
        return f"{len(self.pauses)} full garbage collection(s) ({shown} ms)"


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def concurrent_dialogs(users: int, window: int) -> None:
    stream: queue.Queue[Reply | Done] = queue.Queue()
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        bot = TestBot(Path(tmp) / "memory", sink=stream.put)
        with bot:
            freeze_startup_objects()  # as `harken run` does once the bot is up
            rss_before = rss_mb()
            plans = [steps_for(f"c{n:05d}", n) for n in range(users)]
            rows = []
            all_latencies: list[float] = []
            open_now = 0
            gc.collect()
            tracked_before = len(gc.get_objects())
            tracked_per_dialog = 0.0
            counting = 0.0  # time spent counting objects, left out of the throughput
            start = time.perf_counter()
            with SlowSyncs() as syncs, FullCollections() as collections:
                for phase, label in enumerate(
                    ["start (`profile`)", "answer: name", "answer: zone"]
                ):
                    latencies: list[float] = []
                    began = time.perf_counter()
                    drive(bot, stream, [plan[phase] for plan in plans], window, latencies)
                    took = time.perf_counter() - began
                    if phase == 0 and bot.system is not None:
                        open_now = bot.system.router_stats()["active_conversations"]
                    if phase == 1:  # every dialog open, waiting for its second answer
                        began = time.perf_counter()
                        gc.collect()
                        collections.pauses.pop()  # ours, not the bot's
                        tracked = len(gc.get_objects()) - tracked_before
                        tracked_per_dialog = tracked / users
                        counting += time.perf_counter() - began
                    rows.append((label, len(latencies) / took, latencies))
                    all_latencies += latencies
            elapsed = time.perf_counter() - start - counting
            rss_after = rss_mb()
    print(f"### {users:,} concurrent dialogs ({window} messages in flight)")
    print()
    print("| step | replies/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for label, rate, latencies in rows:
        print(
            f"| {label} | {rate:,.0f} | {quantile(latencies, 0.5):.2f} "
            f"| {quantile(latencies, 0.99):.2f} |"
        )
    print(
        f"| **all {len(all_latencies):,} replies** | {len(all_latencies) / elapsed:,.0f} "
        f"| **{quantile(all_latencies, 0.5):.2f}** | **{quantile(all_latencies, 0.99):.2f}** |"
    )
    print()
    print(
        f"Dialogs open at once after the first step: {open_now:,} conversations; "
        f"after the second, {tracked_per_dialog:.1f} objects tracked by the garbage "
        "collector per open dialog (full collections walk them all). "
        f"RSS {rss_before:.0f} MB at start, {rss_after:.0f} MB at the end; "
        f"peak RSS so far {peak_rss_mb():.0f} MB. While replies were in flight, "
        f"{syncs.report()}, and {collections.report()}."
    )
    print()


def many_people(many: int, window: int, idle: float) -> None:
    stream: queue.Queue[Reply | Done] = queue.Queue()
    settings = Settings(bot=dataclasses.replace(BotSettings(), conversation_idle_seconds=idle))
    samples: list[tuple[int, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
        bot = TestBot(Path(tmp) / "memory", settings=settings, sink=stream.put)
        with bot:
            freeze_startup_objects()  # as `harken run` does once the bot is up
            system = bot.system
            assert system is not None
            gc.collect()
            rss_before = rss_mb()
            step = max(1, many // 5)
            latencies: list[float] = []
            start = time.perf_counter()
            for first in range(0, many, step):
                chunk = range(first, min(many, first + step))
                # Each person goes through their whole dialog; people overlap `window`-wide.
                plans = [steps_for(f"m{n:06d}", n) for n in chunk]
                for phase in range(3):
                    drive(bot, stream, [plan[phase] for plan in plans], window, latencies)
                gc.collect()
                active = system.router_stats()["active_conversations"]
                samples.append((chunk.stop, rss_mb(), active))
            elapsed = time.perf_counter() - start
            deadline = time.monotonic() + 10 * idle + 10
            pause = threading.Event()
            while system.router_stats()["active_conversations"] and time.monotonic() < deadline:
                pause.wait(0.05)
            gc.collect()
            stats = system.router_stats()
            rss_idle = rss_mb()
    print(
        f"### Idle eviction: {many:,} people, one whole dialog each "
        f"(`conversation_idle_seconds` = {idle:g})"
    )
    print()
    print("| people so far | RSS MB | live conversations |")
    print("|---:|---:|---:|")
    print(f"| 0 | {rss_before:.0f} | 0 |")
    for people, rss, active in samples:
        print(f"| {people:,} | {rss:.0f} | {active:,} |")
    print(
        f"| {many:,}, idle ones retired | {rss_idle:.0f} | "
        f"{stats['active_conversations']:,} ({stats['retired']:,} retired) |"
    )
    print()
    print(
        f"{3 * many:,} replies in {elapsed:.1f} s ({3 * many / elapsed:,.0f}/s), "
        f"p50 {quantile(latencies, 0.5):.2f} ms, p99 {quantile(latencies, 0.99):.2f} ms."
    )
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--many", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--idle", type=float, default=2.0)
    args = parser.parse_args(argv)
    print("## Dialogs (issue #3)")
    print()
    concurrent_dialogs(args.users, args.window)
    sys.stdout.flush()
    if args.many > 0:
        many_people(args.many, args.window, args.idle)
    print(f"Peak RSS of the benchmark process: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
