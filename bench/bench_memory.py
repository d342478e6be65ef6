"""Latency of one durable memory write as the number of stored owners grows.

For each size (100, 10,000 and 100,000 owners already stored) it populates a fresh
store in a temporary directory, then times writes to random existing owners (80%) and
to new owners (20%), each made durable on its own:

* store: `put` + `commit` on a `TinyDBStore`;
* actor: tell `MemoryPut` + `MemoryBarrier` to a `MemoryActor`, wait for the notify.

The design target is that the cost of a write does not grow with the number of owners:
the 100,000-owner median within 2x of the 100-owner median. Owner files are written
at checkpoints, not per write; the means spread the checkpoints' cost over the writes.

It then times put + commit for writes to distinct new owners across several
checkpoints (one every 1,000 dirty owners): the worst single write is the one a
checkpoint can hold up.

    python -m bench.bench_memory [--quick] [--writes N] [--sizes 100,10000,100000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from tinydb import Query, TinyDB

from actors.memory_actor import MemoryActor
from actors.messages import MemoryBarrier, MemoryPut
from memory.tinydb_store import DEFAULT_CHECKPOINT_OWNERS, TinyDBStore

SIZES = (100, 10_000, 100_000)
QUICK_SIZES = (100, 1_000, 10_000)
WRITES = 2_000
QUICK_WRITES = 300
NEW_OWNER_SHARE = 0.2
WAIT = 30.0


@dataclass
class Latencies:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    """Including every checkpoint the writes caused, the final one too: the amortised cost."""


@dataclass
class SizeResult:
    owners: int
    populate_s: float
    store: Latencies
    actor: Latencies


def _latencies(seconds: list[float], checkpoint: float) -> Latencies:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    mean = (sum(ordered) + checkpoint) / len(ordered)
    return Latencies(statistics.median(ordered) * 1000, p99 * 1000, mean * 1000)


def _owner(n: int) -> str:
    return f"slack:U{n:08d}"


def _value(n: int) -> dict[str, object]:
    return {"name": f"User {n}", "timezone": "Europe/Oslo", "seen": n, "tags": ["a", "b"]}


def populate(directory: str, owners: int) -> float:
    """Store one profile for each of `owners` owners, fast; return the seconds taken.

    Syncing is off while loading (one `os.sync()` at the end instead of one per file):
    the data is throwaway and only the measured writes need to be durable.
    """
    started = time.perf_counter()
    with TinyDBStore(directory, fsync=False, checkpoint_bytes=1 << 40) as store:
        for n in range(owners):
            store.put("user", _owner(n), "profile", _value(n))
    os.sync()
    return time.perf_counter() - started


def _targets(rng: random.Random, owners: int, writes: int, tag: str) -> list[str]:
    return [
        f"new-{tag}-{i}" if rng.random() < NEW_OWNER_SHARE else _owner(rng.randrange(owners))
        for i in range(writes)
    ]


def time_store(directory: str, targets: list[str]) -> Latencies:
    """Time put + commit per write, and the checkpoint that closing the store makes."""
    samples: list[float] = []
    store = TinyDBStore(directory)
    try:
        for i, owner in enumerate(targets):
            value = _value(i)
            started = time.perf_counter()
            store.put("user", owner, f"store-{i}", value)
            store.commit()
            samples.append(time.perf_counter() - started)
    finally:
        started = time.perf_counter()
        store.close()
        closing = time.perf_counter() - started
    return _latencies(samples, closing)


def time_actor(directory: str, targets: list[str]) -> Latencies:
    """Time tell MemoryPut + MemoryBarrier until the barrier's notify, per write."""
    samples: list[float] = []
    ref = MemoryActor.start(TinyDBStore(directory))
    try:
        done = threading.Event()
        errors: list[BaseException] = []

        def notify(error: BaseException | None) -> None:
            if error is not None:
                errors.append(error)
            done.set()

        for i, owner in enumerate(targets):
            done.clear()
            started = time.perf_counter()
            ref.tell(MemoryPut("user", owner, f"actor-{i}", _value(i)))
            ref.tell(MemoryBarrier(notify))
            if not done.wait(WAIT):
                raise RuntimeError("the memory actor did not acknowledge a write")
            samples.append(time.perf_counter() - started)
        if errors:
            raise RuntimeError(f"the memory actor failed writes: {errors[0]!r}")
    finally:
        started = time.perf_counter()
        ref.stop()  # the actor closes the store: the final checkpoint
        stopping = time.perf_counter() - started
    return _latencies(samples, stopping)


def run_size(owners: int, writes: int, parent: str | None, seed: int) -> SizeResult:
    directory = tempfile.mkdtemp(prefix=f"harken-bench-memory-{owners}-", dir=parent)
    try:
        populate_s = populate(directory, owners)
        rng = random.Random(seed)
        store = time_store(directory, _targets(rng, owners, writes, "store"))
        actor = time_actor(directory, _targets(rng, owners, writes, "actor"))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return SizeResult(owners, populate_s, store, actor)


def render(results: list[SizeResult]) -> str:
    lines = [
        "| owners stored | store p50 ms | store p99 ms | store mean ms "
        "| actor p50 ms | actor p99 ms | actor mean ms | populate s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.owners:,} | {r.store.p50_ms:.3f} | {r.store.p99_ms:.3f} "
            f"| {r.store.mean_ms:.3f} | {r.actor.p50_ms:.3f} | {r.actor.p99_ms:.3f} "
            f"| {r.actor.mean_ms:.3f} | {r.populate_s:.1f} |"
        )
    first, last = results[0], results[-1]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b > 0 else "n/a"

    met = (
        last.store.p50_ms <= 2 * first.store.p50_ms and last.actor.p50_ms <= 2 * first.actor.p50_ms
    )
    lines += [
        "",
        "Means include the checkpoints the writes caused (every "
        f"{DEFAULT_CHECKPOINT_OWNERS:,} dirty owners, and on close): the amortised cost.",
        "",
        f"Ratio {last.owners:,} / {first.owners:,} owners: "
        f"store p50 {ratio(last.store.p50_ms, first.store.p50_ms)}, "
        f"p99 {ratio(last.store.p99_ms, first.store.p99_ms)}, "
        f"mean {ratio(last.store.mean_ms, first.store.mean_ms)}; "
        f"actor p50 {ratio(last.actor.p50_ms, first.actor.p50_ms)}, "
        f"p99 {ratio(last.actor.p99_ms, first.actor.p99_ms)}, "
        f"mean {ratio(last.actor.mean_ms, first.actor.mean_ms)}.",
        f"Target (p50 at {last.owners:,} owners within 2x of {first.owners:,}): "
        + ("met." if met else "MISSED."),
    ]
    return "\n".join(lines)


@dataclass
class CheckpointCrossing:
    writes: int
    checkpoints: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    elapsed_s: float


def time_checkpoint_crossing(parent: str | None, checkpoints: int) -> CheckpointCrossing:
    """Time put + commit, each to a new owner, over `checkpoints` owner-count checkpoints.

    Every write dirties a new owner, so a checkpoint falls due every
    `DEFAULT_CHECKPOINT_OWNERS` writes; the worst write is the one a checkpoint holds up.
    """
    directory = tempfile.mkdtemp(prefix="harken-bench-checkpoints-", dir=parent)
    writes = checkpoints * DEFAULT_CHECKPOINT_OWNERS + DEFAULT_CHECKPOINT_OWNERS // 2
    samples: list[float] = []
    try:
        store = TinyDBStore(directory)
        try:
            began = time.perf_counter()
            for i in range(writes):
                started = time.perf_counter()
                store.put("user", f"crossing-{i}", "profile", _value(i))
                store.commit()
                samples.append(time.perf_counter() - started)
            elapsed = time.perf_counter() - began
        finally:
            store.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return CheckpointCrossing(
        writes, checkpoints, at(0.5), at(0.99), at(0.999), ordered[-1] * 1000, elapsed
    )


def render_crossing(result: CheckpointCrossing) -> str:
    return "\n".join(
        [
            f"## put + commit across checkpoints ({result.writes:,} writes, each to a new "
            f"owner: {result.checkpoints} checkpoints of {DEFAULT_CHECKPOINT_OWNERS:,} owners)",
            "",
            "| p50 ms | p99 ms | p99.9 ms | max ms | total s |",
            "|---:|---:|---:|---:|---:|",
            f"| {result.p50_ms:.3f} | {result.p99_ms:.3f} | {result.p999_ms:.3f} "
            f"| {result.max_ms:.3f} | {result.elapsed_s:.1f} |",
        ]
    )


def plain_tinydb_ms(owners: int, directory: str | None, writes: int = 50) -> float:
    """Median latency of one update in a single plain TinyDB file holding `owners` users.

    The baseline the store is organised to beat: TinyDB's own JSON storage rewrites the
    whole file on every write (and does not even fsync it).
    """
    path = tempfile.mkdtemp(prefix="harken-plain-", dir=directory)
    try:
        db = TinyDB(os.path.join(path, "db.json"))
        db.insert_multiple({"owner": f"u{i}", "key": "k", "value": "v"} for i in range(owners))
        owner = Query().owner
        times = []
        for i in range(writes):
            start = time.perf_counter()
            db.update({"value": f"v{i}"}, owner == f"u{i * 7919 % owners}")
            times.append(time.perf_counter() - start)
        db.close()
        return statistics.median(times) * 1000
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_memory", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller stores and fewer writes")
    parser.add_argument("--writes", type=int, help=f"writes timed per size (default {WRITES})")
    parser.add_argument("--sizes", help="comma-separated owner counts (default 100,10000,100000)")
    parser.add_argument("--dir", help="where to create the temporary stores (default: TMPDIR)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    sizes: tuple[int, ...] = QUICK_SIZES if args.quick else SIZES
    if args.sizes:
        sizes = tuple(int(size) for size in args.sizes.split(","))
    writes = args.writes or (QUICK_WRITES if args.quick else WRITES)

    print(
        f"## Durable memory write latency ({writes:,} writes per size, "
        f"{NEW_OWNER_SHARE:.0%} to new owners)"
    )
    print()
    results = []
    for owners in sizes:
        print(f"... {owners:,} owners", file=sys.stderr, flush=True)
        results.append(run_size(owners, writes, args.dir, args.seed))
    print(render(results))
    print()
    print("... checkpoint crossing", file=sys.stderr, flush=True)
    print(render_crossing(time_checkpoint_crossing(args.dir, 3)))
    baseline = [(n, plain_tinydb_ms(n, args.dir)) for n in sizes if n <= 10_000]
    print()
    print(
        "Baseline, plain TinyDB (one JSON file, no fsync), median update: "
        + ", ".join(f"{ms:.2f} ms at {n:,} users" for n, ms in baseline)
        + "."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
