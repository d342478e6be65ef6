"""Acknowledged memory writes survive a real SIGKILL, and no file is ever left half-written.

A child process (tests/support/memory_writer.py) writes through a MemoryActor and
prints `acked <n>` each time a barrier fires; the test kills it with SIGKILL at some
point, reopens the store and checks every acknowledged write.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support import memory_writer as writer
from tinydb import TinyDB

from memory.tinydb_store import TinyDBStore

HELPER = Path(writer.__file__)
ACK_TIMEOUT = 30.0


class Expected:
    """What the acknowledged writes promise, accumulated over several kills."""

    def __init__(self) -> None:
        self.present: dict[tuple[str, str], Any] = {}
        self.absent: set[tuple[str, str]] = set()
        self.latest: dict[str, int] = {}

    def acked(self, n: int) -> None:
        owner = writer.owner(n)
        self.present[owner, f"k{n}"] = writer.value(n)
        if n % 5 == 0:
            self.latest[owner] = n
        if n % 7 == 0:
            gone = (owner, f"k{n - 7}")
            self.present.pop(gone, None)
            self.absent.add(gone)

    def check(self, store: TinyDBStore) -> None:
        for (owner, key), value in self.present.items():
            assert store.get("user", owner, key) == value, (owner, key)
        for owner, key in self.absent:
            assert store.get("user", owner, key) is None, (owner, key)
        for owner, n in self.latest.items():
            # Later, unacknowledged overwrites may have landed too, but never older ones.
            stored = store.get("user", owner, "latest")
            assert isinstance(stored, int)
            assert stored >= n
            assert writer.owner(stored) == owner


def run_and_kill(
    directory: Path,
    first: int,
    checkpoint_bytes: int,
    acks_before_kill: int,
    extra: float,
    *,
    pause_at: str | None = None,
) -> list[int]:
    """Run the writer until it has acknowledged enough, SIGKILL it; return the acks.

    With `pause_at`, the child's first background checkpoint stops there for good, and
    `acks_before_kill` counts only the acks after it said so.
    """
    command = [sys.executable, str(HELPER), str(directory), str(first), str(checkpoint_bytes)]
    child = subprocess.Popen(
        command + ([pause_at] if pause_at else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    acked: list[int] = []
    paused_after: int | None = None if pause_at else 0
    try:
        while paused_after is None or len(acked) - paused_after < acks_before_kill:
            try:
                line = lines.get(timeout=ACK_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no ack (or pause) from the writer within {ACK_TIMEOUT}s")
            if line is None:
                assert child.stderr is not None
                pytest.fail(f"the writer exited early: {child.stderr.read()}")
            if paused_after is None and line == f"paused {pause_at}\n":
                paused_after = len(acked)
                continue
            assert line.startswith("acked "), line
            acked.append(int(line.split()[1]))
        # Where the kill lands is random; nothing waits on the sleep.
        time.sleep(extra)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=ACK_TIMEOUT)
        reader.join(timeout=ACK_TIMEOUT)
        assert child.stderr is not None
        child.stderr.close()
    # Acks already printed before the kill are promises too.
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            break
        if line is not None and line.startswith("acked "):
            acked.append(int(line.split()[1]))
    assert child.returncode == -signal.SIGKILL
    return acked


def owner_files(directory: Path) -> list[Path]:
    return sorted((directory / "owners").glob("*/*.json"))


def assert_every_owner_file_loads_with_plain_tinydb(directory: Path) -> None:
    for path in owner_files(directory):
        db = TinyDB(path)
        try:
            for name in db.tables():
                db.table(name).all()
        finally:
            db.close()


def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    expected = Expected()
    acked = run_and_kill(tmp_path, 0, 4 * 1024 * 1024, 200, 0.0)
    assert acked == sorted(acked)
    assert len(acked) >= 200
    for n in acked:
        expected.acked(n)
    with TinyDBStore(tmp_path) as store:
        expected.check(store)


def test_kills_during_checkpoints_never_leave_a_broken_file(tmp_path: Path) -> None:
    rng = random.Random(1234)
    expected = Expected()
    saw_checkpoints = False
    for round_ in range(5):
        # A tiny journal threshold: a checkpoint rewrites owner files every few dozen
        # writes, so kills land before, during and after the atomic renames.
        acked = run_and_kill(
            tmp_path,
            first=round_ * 100_000,
            checkpoint_bytes=4096,
            acks_before_kill=rng.randrange(60, 400),
            extra=rng.uniform(0.0, 0.01),
        )
        for n in acked:
            expected.acked(n)
        if round_ == 0:
            # The directory started empty and the child's first segment was number 1;
            # each checkpoint it started opened the next one. (Whether one finished
            # before the kill is a race: see the test with paused checkpoints.)
            newest = max(tmp_path.glob("journal-*.log")).name
            saw_checkpoints = int(newest.removeprefix("journal-").removesuffix(".log")) > 1
        for leftover in (tmp_path / "owners").glob("*/*"):
            assert leftover.name.endswith((".json", ".tmp")), leftover
        assert_every_owner_file_loads_with_plain_tinydb(tmp_path)
        with TinyDBStore(tmp_path) as store:
            expected.check(store)
        assert not list((tmp_path / "owners").glob("*/*.tmp"))
    assert saw_checkpoints
    assert len(expected.present) > 300
    # Closing checkpointed: one journal segment is left, and it is empty.
    [segment] = tmp_path.glob("journal-*.log")
    assert os.path.getsize(segment) == 0


@pytest.mark.parametrize("pause_at", writer.PAUSE_POINTS)
def test_a_kill_during_a_background_checkpoint_loses_no_acknowledged_write(
    tmp_path: Path, pause_at: str
) -> None:
    expected = Expected()
    # Owner files from a first run, so that the paused checkpoint replaces real files.
    for n in run_and_kill(tmp_path, 0, 4096, 100, 0.0):
        expected.acked(n)
    with TinyDBStore(tmp_path) as store:
        expected.check(store)
    before = {path: path.read_bytes() for path in owner_files(tmp_path)}
    assert before
    # The child's first background checkpoint stops at `pause_at` for good; the memory
    # actor goes on acknowledging writes (into the new segment, to the same owners the
    # checkpoint is writing), and the kill lands while the checkpoint is stuck.
    acked = run_and_kill(tmp_path, 100_000, 4096, 150, 0.0, pause_at=pause_at)
    assert len(acked) >= 150
    for n in acked:
        expected.acked(n)
    for leftover in (tmp_path / "owners").glob("*/*"):
        assert leftover.name.endswith((".json", ".tmp")), leftover
    assert_every_owner_file_loads_with_plain_tinydb(tmp_path)
    after = {path: path.read_bytes() for path in owner_files(tmp_path)}
    renamed = sum(after.get(path) != data for path, data in before.items())
    if pause_at in ("before-files", "first-rename"):
        assert renamed == 0
    elif pause_at == "mid-rename":
        assert 0 < renamed < len(before)
    else:
        assert renamed > 0
    # The active segment holds the writes acknowledged since the pause, and the one the
    # checkpoint sealed is still there unless the checkpoint got as far as deleting it.
    sealed_left = pause_at != "after-segments"
    holding = [path for path in tmp_path.glob("journal-*.log") if path.stat().st_size]
    assert len(holding) == 1 + sealed_left
    with TinyDBStore(tmp_path) as store:
        expected.check(store)
        # The pinned owners' newest values came from the journal, not the old files.
        assert store.get("user", writer.owner(acked[-1]), f"k{acked[-1]}") == writer.value(
            acked[-1]
        )
    assert not list((tmp_path / "owners").glob("*/*.tmp"))
