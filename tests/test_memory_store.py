"""Unit tests of the memory store: the interface's rules and the TinyDB backend's files.

An unclean stop is simulated by copying the store's directory while the store is still
open: the copy is exactly what a process killed at that moment leaves on disk (SIGKILL
loses nothing the process had already written to the kernel). The real thing, with
SIGKILL, is in test_memory_durability.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB

from memory import tinydb_store as tinydb_store_module
from memory.checkpoint import WRITER_THREAD_NAME, CheckpointWriter
from memory.journal import Journal
from memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    InvalidName,
    InvalidWrite,
    Store,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    open_store,
)
from memory.tinydb_store import TinyDBStore

WAIT = 30.0
"""Longest a test waits for something that should happen at once."""


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "memory"


@pytest.fixture
def store(store_dir: Path) -> Iterator[TinyDBStore]:
    opened = TinyDBStore(store_dir)
    yield opened
    opened.close()


class WriterGate:
    """Holds every background checkpoint at its start until `release` is set.

    Only the store's writer thread is held: checkpoints that run on the caller's
    thread (opening, `checkpoint()`, closing) go straight through.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.held = 0
        write_owner_files = CheckpointWriter.write_owner_files

        def gated(writer: CheckpointWriter, owners: Any) -> None:
            if threading.current_thread().name == WRITER_THREAD_NAME:
                self.held += 1
                self.entered.set()
                if not self.release.wait(WAIT):
                    raise TimeoutError("the test never released the checkpoint writer")
            write_owner_files(writer, owners)

        monkeypatch.setattr(CheckpointWriter, "write_owner_files", gated)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[WriterGate]:
    held = WriterGate(monkeypatch)
    yield held
    held.release.set()  # never leave a writer thread waiting after a failed test


def crash_copy(store_dir: Path, dest: Path) -> Path:
    """What a kill -9 of the process holding `store_dir` open would leave right now."""
    shutil.copytree(store_dir, dest)
    return dest


def owner_files(directory: Path) -> list[Path]:
    return sorted((directory / "owners").glob("*/*.json"))


def segments(directory: Path) -> list[Path]:
    """The journal's segments, oldest first (zero-padded numbers sort as text)."""
    return sorted(directory.glob("journal-*.log"))


def journal(directory: Path) -> Path:
    """The segment with the latest writes: the newest with any (after it: a spare)."""
    found = segments(directory)
    return next((path for path in reversed(found) if path.stat().st_size), found[-1])


def journal_bytes_on_disk(directory: Path) -> int:
    return sum(path.stat().st_size for path in segments(directory))


# --- the interface -------------------------------------------------------------------


def test_open_store_gives_a_store(store_dir: Path) -> None:
    opened = open_store("tinydb", str(store_dir))
    try:
        assert isinstance(opened, Store)
        opened.put("user", "alice", "colour", "blue")
        assert opened.get("user", "alice", "colour") == "blue"
    finally:
        opened.close()


def test_unknown_backend_names_the_known_ones(store_dir: Path) -> None:
    with pytest.raises(ValueError, match="tinydb"):
        open_store("redis", str(store_dir))


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "ünïcødé ✓ \U0001f600",
        "\ud800 a lone surrogate",
        0,
        -17,
        2**70,
        3.25,
        True,
        None,
        [],
        {},
        [1, "two", [3.0, None], {"four": False}],
        {"nested": {"deeper": {"list": [1, 2, 3]}}, "empty": ""},
    ],
)
def test_round_trip(store: TinyDBStore, store_dir: Path, value: Any) -> None:
    store.put("user", "alice", "k", value)
    assert store.get("user", "alice", "k") == value
    store.close()
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "alice", "k") == value


def test_values_read_back_as_json_would(store: TinyDBStore) -> None:
    # The same before and after a restart: tuples are lists, dict keys are strings.
    store.put("user", "alice", "k", {"t": (1, 2), 3: "three"})
    assert store.get("user", "alice", "k") == {"t": [1, 2], "3": "three"}


def test_reads_hand_out_copies(store: TinyDBStore) -> None:
    original = {"items": [1, 2]}
    store.put("user", "alice", "k", original)
    original["items"].append(3)
    got = store.get("user", "alice", "k")
    got["items"].append(4)
    assert store.get("user", "alice", "k") == {"items": [1, 2]}


def test_missing_keys_give_the_default(store: TinyDBStore) -> None:
    assert store.get("user", "nobody", "k") is None
    assert store.get("user", "nobody", "k", default={"d": 1}) == {"d": 1}
    assert store.keys("user", "nobody") == []


def test_owners_and_namespaces_are_isolated(store: TinyDBStore) -> None:
    store.put("user", "alice", "k", "alice's")
    store.put("user", "bob", "k", "bob's")
    store.put("plugin:weather", "alice", "k", "plugin's")
    assert store.get("user", "alice", "k") == "alice's"
    assert store.get("user", "bob", "k") == "bob's"
    assert store.get("plugin:weather", "alice", "k") == "plugin's"
    assert store.get("plugin:weather", "bob", "k") is None
    assert store.delete("user", "alice", "k")
    assert store.get("user", "bob", "k") == "bob's"
    assert store.get("plugin:weather", "alice", "k") == "plugin's"


def test_keys_are_sorted_and_delete_reports_existence(store: TinyDBStore) -> None:
    for key in ["pear", "apple", "fig", "Zebra"]:
        store.put("user", "alice", key, key.upper())
    assert store.keys("user", "alice") == ["Zebra", "apple", "fig", "pear"]
    assert store.delete("user", "alice", "fig") is True
    assert store.delete("user", "alice", "fig") is False
    assert store.delete("user", "nobody", "fig") is False
    assert store.keys("user", "alice") == ["Zebra", "apple", "pear"]
    assert store.get("user", "alice", "fig") is None


def test_overwrite_keeps_the_last_value(store: TinyDBStore, store_dir: Path) -> None:
    for n in range(5):
        store.put("user", "alice", "k", n)
    assert store.get("user", "alice", "k") == 4
    store.close()
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "alice", "k") == 4


def _circular() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


@pytest.mark.parametrize(
    "case",
    [
        ("", "alice", "k", 1, InvalidName),
        ("user", "", "k", 1, InvalidName),
        ("user", "alice", "", 1, InvalidName),
        (None, "alice", "k", 1, InvalidName),
        ("user", 42, "k", 1, InvalidName),
        ("user", "alice", b"k", 1, InvalidName),
        ("user", "alice", "k" * 201, 1, InvalidName),
        ("user", "alice", "k", {1, 2}, InvalidWrite),
        ("user", "alice", "k", object(), InvalidWrite),
        ("user", "alice", "k", float("nan"), InvalidWrite),
        ("user", "alice", "k", float("inf"), InvalidWrite),
        ("user", "alice", "k", _circular(), InvalidWrite),
        ("user", "alice", "k", "x" * DEFAULT_MAX_VALUE_BYTES, InvalidWrite),
    ],
)
def test_invalid_writes_are_rejected_and_change_nothing(
    store: TinyDBStore, store_dir: Path, case: tuple[Any, Any, Any, Any, type[Exception]]
) -> None:
    namespace, owner, key, value, error = case
    store.put("user", "alice", "k", "kept")
    store.put("user", "alice", "other", "also kept")
    store.commit()
    journal_bytes = store.journal_bytes
    with pytest.raises(error) as raised:
        store.put(namespace, owner, key, value)
    assert isinstance(raised.value, ValueError)
    assert store.journal_bytes == journal_bytes
    assert store.get("user", "alice", "k") == "kept"
    assert store.keys("user", "alice") == ["k", "other"]
    store.close()
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "alice", "k") == "kept"
        assert reopened.keys("user", "alice") == ["k", "other"]


def test_the_value_size_limit_is_inclusive(store_dir: Path) -> None:
    with TinyDBStore(store_dir, max_value_bytes=10) as small:
        small.put("user", "alice", "k", "12345678")  # 10 bytes with its quotes
        with pytest.raises(InvalidWrite, match="11 bytes"):
            small.put("user", "alice", "k", "123456789")
        assert small.get("user", "alice", "k") == "12345678"


def test_rejections_do_not_echo_names_or_values(store: TinyDBStore) -> None:
    # The actor logs these messages at WARNING, where secrets must not appear.
    with pytest.raises(InvalidWrite) as too_big:
        store.put("user", "alice", "secret-key", "hunter2" * 50_000)
    with pytest.raises(InvalidWrite) as too_long:
        store.put("user", "alice", "hunter2" * 40, 1)
    for message in (str(too_big.value), str(too_long.value)):
        assert "hunter2" not in message
        assert "secret-key" not in message
        assert "alice" not in message


@pytest.mark.parametrize(
    ("call", "args"),
    [("get", ("user", "alice", "")), ("keys", ("", "alice")), ("delete", ("user", "", "k"))],
)
def test_reads_and_deletes_check_names_too(
    store: TinyDBStore, call: str, args: tuple[str, ...]
) -> None:
    with pytest.raises(InvalidName):
        getattr(store, call)(*args)


# --- reopening, the journal and checkpoints ----------------------------------------


def test_reopen_after_close(store: TinyDBStore, store_dir: Path) -> None:
    store.put("user", "alice", "a", 1)
    store.put("user", "bob", "b", 2)
    store.delete("user", "alice", "a")
    store.put("profile", "alice", "tz", "Europe/Paris")
    store.close()
    assert journal(store_dir).stat().st_size == 0  # close checkpoints
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "alice", "a") is None
        assert reopened.get("user", "bob", "b") == 2
        assert reopened.get("profile", "alice", "tz") == "Europe/Paris"
        assert reopened.keys("user", "alice") == []


def test_close_is_idempotent_and_a_closed_store_refuses_use(store: TinyDBStore) -> None:
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        store.get("user", "alice", "k")
    with pytest.raises(StoreClosed):
        store.put("user", "alice", "k", 1)
    with pytest.raises(StoreClosed):
        store.commit()


def test_a_directory_is_opened_by_one_store_at_a_time(store: TinyDBStore, store_dir: Path) -> None:
    with pytest.raises(StoreLocked):
        TinyDBStore(store_dir)
    store.close()
    TinyDBStore(store_dir).close()


def test_committed_writes_are_replayed_after_an_unclean_stop(
    store: TinyDBStore, store_dir: Path, tmp_path: Path
) -> None:
    store.put("user", "alice", "a", {"x": 1})
    store.put("user", "bob", "b", [1, 2])
    store.put("user", "carol", "c", "gone soon")
    store.delete("user", "carol", "c")
    store.commit()
    crashed = crash_copy(store_dir, tmp_path / "crashed")
    assert owner_files(crashed) == []  # only the journal has them
    with TinyDBStore(crashed) as recovered:
        assert recovered.get("user", "alice", "a") == {"x": 1}
        assert recovered.get("user", "bob", "b") == [1, 2]
        assert recovered.keys("user", "carol") == []
    # Opening checkpointed the replayed writes and emptied the journal.
    assert journal(crashed).stat().st_size == 0
    assert len(owner_files(crashed)) == 2


def test_one_commit_syncs_once_for_many_writes(
    store: TinyDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        syncs.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", counting_fdatasync)
    for n in range(50):
        store.put("user", f"owner-{n}", "k", n)
    assert syncs == []
    store.commit()
    assert len(syncs) == 1
    store.commit()  # nothing new: nothing to sync
    assert len(syncs) == 1


def _damage_truncate(data: bytes) -> bytes:
    return data[:-7]


def _damage_zeros(data: bytes) -> bytes:
    # A power cut after the file grew but before its last block was written.
    last = data.rindex(b"\n", 0, len(data) - 1) + 1
    return data[: last + 4] + bytes(len(data) - last - 4)


def _damage_garbage(data: bytes) -> bytes:
    return data + b'0badf00d ["put","user","alice","torn",'


def _damage_no_newline(data: bytes) -> bytes:
    return data[:-1]


@pytest.mark.parametrize(
    ("damage", "last_record_survives"),
    [
        (_damage_truncate, False),
        (_damage_zeros, False),
        (_damage_no_newline, False),
        (_damage_garbage, True),  # the damage is a half-appended record after it
    ],
)
def test_a_torn_journal_tail_is_ignored(
    store: TinyDBStore,
    store_dir: Path,
    tmp_path: Path,
    damage: Any,
    last_record_survives: bool,
) -> None:
    store.put("user", "alice", "first", 1)
    store.put("user", "alice", "second", 2)
    store.commit()
    store.put("user", "alice", "torn", 3)
    store.commit()
    crashed = crash_copy(store_dir, tmp_path / "crashed")
    path = journal(crashed)
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)
    with TinyDBStore(crashed) as recovered:
        assert recovered.get("user", "alice", "first") == 1
        assert recovered.get("user", "alice", "second") == 2
        assert recovered.get("user", "alice", "torn") == (3 if last_record_survives else None)
        recovered.put("user", "alice", "after", 4)
        recovered.commit()
        # The tail was cut off, so a write committed since is not stranded behind it.
        again = crash_copy(crashed, tmp_path / "again")
    with TinyDBStore(again) as reopened:
        expected = ["after", "first", "second"] + (["torn"] if last_record_survives else [])
        assert reopened.keys("user", "alice") == expected
    # What could not be read was kept aside, not deleted with the segment.
    [kept] = (crashed / "damaged").glob("*/journal-*.log")
    assert kept.read_bytes() == damaged


def test_a_failed_commit_is_retried_by_the_next(
    store: TinyDBStore, store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("user", "alice", "before", 0)
    store.commit()
    size = journal(store_dir).stat().st_size
    failures = [OSError(28, "No space left on device")]
    real_fdatasync = os.fdatasync

    def failing_fdatasync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", failing_fdatasync)
    store.put("user", "alice", "k", "v")
    with pytest.raises(OSError, match="No space"):
        store.commit()
    # Whatever reached the file was cut off again; the write is still readable.
    assert journal(store_dir).stat().st_size == size
    assert store.get("user", "alice", "k") == "v"
    store.commit()
    with TinyDBStore(crash_copy(store_dir, tmp_path / "crashed")) as recovered:
        assert recovered.get("user", "alice", "k") == "v"
        assert recovered.get("user", "alice", "before") == 0


def test_checkpoints_write_owner_files_and_empty_the_journal(
    store_dir: Path, tmp_path: Path
) -> None:
    store = TinyDBStore(store_dir, checkpoint_bytes=2048)
    try:
        for n in range(200):
            store.put("user", f"owner-{n % 10}", f"k{n}", {"n": n})
            store.commit()
            # A checkpoint starts as soon as the active segment passes the threshold,
            # unless one is still running: waiting for it here makes that never so.
            assert store.journal_bytes < 2048 + 200
            assert store.wait_for_checkpoint(timeout=30)
        assert len(owner_files(store_dir)) == 10
        # Checkpoints deleted the sealed segments: only the active one holds anything.
        assert journal_bytes_on_disk(store_dir) == store.journal_bytes
        store.put("user", "owner-0", "k0", "overwritten")
        store.delete("user", "owner-1", "k1")
        store.commit()
        crashed = crash_copy(store_dir, tmp_path / "crashed")
    finally:
        store.close()
    for directory in (crashed, store_dir):
        with TinyDBStore(directory) as reopened:
            assert reopened.get("user", "owner-0", "k0") == "overwritten"
            assert reopened.get("user", "owner-1", "k1") is None
            for n in range(2, 200):
                assert reopened.get("user", f"owner-{n % 10}", f"k{n}") == {"n": n}


def test_enough_dirty_owners_trigger_a_checkpoint(store_dir: Path) -> None:
    with TinyDBStore(store_dir, checkpoint_owners=10) as store:
        for n in range(25):
            store.put("user", f"owner-{n}", "k", n)
            assert store.dirty_owners < 10
            assert store.wait_for_checkpoint(timeout=30)  # else the next may not start
        assert len(owner_files(store_dir)) >= 20


def test_a_failed_checkpoint_does_not_fail_the_write(
    store_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = TinyDBStore(store_dir, checkpoint_owners=2)
    try:
        store.put("user", "alice", "k", 1)
        failures = [OSError(28, "No space left on device")]
        real_replace = os.replace

        def failing_replace(src: str, dst: str) -> None:
            if failures:
                raise failures.pop()
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", failing_replace)
        store.put("user", "bob", "k", 2)  # the checkpoint it triggers fails
        assert store.wait_for_checkpoint(timeout=30)  # it fails in the background
        assert "checkpoint failed" in caplog.text
        assert store.dirty_owners == 2
        assert store.flushing_owners == 0
        assert not list((store_dir / "owners").glob("*/*.tmp"))
        # The segment it sealed stays until a checkpoint has written its owners.
        assert len(segments(store_dir)) == 2
        assert store.get("user", "bob", "k") == 2
        # The checkpoint committed the journal first, so both writes are durable.
        with TinyDBStore(crash_copy(store_dir, tmp_path / "crashed")) as recovered:
            assert recovered.get("user", "alice", "k") == 1
            assert recovered.get("user", "bob", "k") == 2
        store.checkpoint()
        assert store.dirty_owners == 0
        assert len(segments(store_dir)) == 1
    finally:
        store.close()
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "bob", "k") == 2


def test_a_checkpoint_rewrites_only_the_owners_that_changed(store: TinyDBStore) -> None:
    for n in range(20):
        store.put("user", f"owner-{n}", "k", n)
    store.checkpoint()
    before = {path: path.stat().st_ino for path in owner_files(Path(store.root))}
    store.put("user", "owner-3", "k", "changed")
    store.checkpoint()
    after = {path: path.stat().st_ino for path in owner_files(Path(store.root))}
    changed = [path for path in before if before[path] != after[path]]
    assert len(changed) == 1


def test_owner_files_are_plain_tinydb(store: TinyDBStore) -> None:
    store.put("user", "slack:U123", "colour", {"fav": "blue"})
    store.put("plugin:weather", "slack:U123", "city", "Oslo")
    store.close()
    [path] = owner_files(Path(store.root))
    assert path.parent.name == path.name[:2]
    db = TinyDB(path)
    try:
        [meta] = db.table("_meta").all()
        assert meta["owner"] == "slack:U123"
        assert meta["version"] == 2
        assert re.fullmatch("[0-9a-f]{8}", meta["crc32"])
        assert db.table("ns:user").all() == [{"key": "colour", "value": {"fav": "blue"}}]
        assert db.table("ns:plugin:weather").all() == [{"key": "city", "value": "Oslo"}]
    finally:
        db.close()


def test_any_owner_string_is_a_safe_file_name(store: TinyDBStore, store_dir: Path) -> None:
    owners = ["../../etc/passwd", "a/b\\c", ".", "nul\x00byte", "é" * 5000, "\udcff", "LOCK"]
    for n, owner in enumerate(owners):
        store.put("user", owner, "k", n)
    store.close()
    files = owner_files(store_dir)
    assert len(files) == len(owners)
    assert {path.parent.parent for path in files} == {store_dir / "owners"}
    with TinyDBStore(store_dir) as reopened:
        for n, owner in enumerate(owners):
            assert reopened.get("user", owner, "k") == n


def test_an_owner_with_nothing_left_has_no_file(store: TinyDBStore) -> None:
    store.put("user", "alice", "k", 1)
    store.checkpoint()
    assert len(owner_files(Path(store.root))) == 1
    store.delete("user", "alice", "k")
    store.checkpoint()
    assert owner_files(Path(store.root)) == []


def test_leftover_temporary_files_are_removed_on_open(store_dir: Path) -> None:
    with TinyDBStore(store_dir) as store:
        store.put("user", "alice", "k", "v")
    [path] = owner_files(store_dir)
    torn = path.with_name(path.name + ".tmp")
    torn.write_text('{"_meta": {"1": {"own')
    (store_dir / "journal.log.tmp").write_text("junk")
    with TinyDBStore(store_dir) as reopened:
        assert not torn.exists()
        assert not (store_dir / "journal.log.tmp").exists()
        assert reopened.get("user", "alice", "k") == "v"


def test_a_damaged_owner_file_is_reported_not_overwritten(store_dir: Path) -> None:
    with TinyDBStore(store_dir) as store:
        store.put("user", "alice", "k", "v")
        store.put("user", "bob", "k", "w")
    [path] = [p for p in owner_files(store_dir) if b'"alice"' in p.read_bytes()]
    with TinyDBStore(store_dir) as reopened:
        path.write_text("{not json")  # damaged while the store is open, before a read
        with pytest.raises(StoreCorrupt, match="not valid JSON") as raised:
            reopened.get("user", "alice", "k")
        assert raised.value.path == str(path)
        with pytest.raises(StoreCorrupt):
            reopened.put("user", "alice", "k", "new")
        reopened.put("user", "bob", "k", "fine")
    assert path.read_text() == "{not json"


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2, 3]",
        '{"_meta": {"1": {"owner": "alice"}}, "ns:user": [1]}',
        '{"_meta": {"1": {"owner": "alice", "version": 1}}, "other": {}}',
        '{"_meta": {"1": {"owner": "alice", "version": 1}}, "ns:user": {"1": {"key": "k"}}}',
        "{}",
        "",
    ],
)
def test_an_owner_file_that_is_not_as_harken_writes_it_is_refused(
    store_dir: Path, content: str
) -> None:
    with TinyDBStore(store_dir) as store:
        store.put("user", "alice", "k", "v")
    [path] = owner_files(store_dir)
    path.write_text(content)
    with pytest.raises(StoreCorrupt) as raised:
        TinyDBStore(store_dir)
    assert raised.value.path == str(path)


def test_an_owner_file_written_by_the_previous_format_is_read(store_dir: Path) -> None:
    with TinyDBStore(store_dir) as store:
        store.put("user", "alice", "k", "v")
    [path] = owner_files(store_dir)
    # Version 1 files have no checksum; they are checked for their shape only.
    path.write_text(
        '{"_meta": {"1": {"owner": "alice", "version": 1}}, '
        '"ns:user": {"1": {"key": "k", "value": "old"}}}'
    )
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "alice", "k") == "old"
        reopened.put("user", "alice", "k2", "new")
    assert json.loads(path.read_text())["_meta"]["1"]["version"] == 2


def test_an_owner_file_in_the_wrong_place_is_refused(store_dir: Path) -> None:
    with TinyDBStore(store_dir) as store:
        store.put("user", "alice", "k", "v")
        store.put("user", "bob", "k", "w")
    files = {
        json.loads(path.read_text())["_meta"]["1"]["owner"]: path for path in owner_files(store_dir)
    }
    files["bob"].write_text(files["alice"].read_text())  # bob's file now holds alice's data
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "alice", "k") == "v"
        with pytest.raises(StoreError, match="not this owner"):
            reopened.get("user", "bob", "k")


# --- the cache -----------------------------------------------------------------------


def test_the_owner_cache_is_bounded(store_dir: Path) -> None:
    with TinyDBStore(store_dir, cache_owners=5) as store:
        for n in range(40):
            store.put("user", f"owner-{n}", "k", n)
        # Dirty owners stay until a checkpoint has written them...
        assert store.dirty_owners == 40
        assert store.loaded_owners == 40
        store.checkpoint()
        # ...then the cache shrinks back to its bound.
        assert store.dirty_owners == 0
        assert store.loaded_owners == 5
        for n in range(40):
            assert store.get("user", f"owner-{n}", "k") == n
            assert store.loaded_owners <= 5


# --- background checkpoints ----------------------------------------------------------


def test_reads_and_commits_go_on_during_a_background_checkpoint(
    store_dir: Path, tmp_path: Path, gate: WriterGate
) -> None:
    # No clean owner may stay cached: whatever is read comes from a pinned owner or a file.
    store = TinyDBStore(store_dir, checkpoint_owners=3, cache_owners=0)
    try:
        for owner in ("a", "b", "c"):
            store.put("user", owner, "k", 1)  # the third starts a checkpoint
        assert gate.entered.wait(WAIT)
        assert store.checkpoint_running
        assert (store.flushing_owners, store.dirty_owners) == (3, 0)
        assert owner_files(store_dir) == []
        # The owners it is writing have no file yet, and are still read from memory.
        assert store.get("user", "a", "k") == 1
        # Writes to them (and to others) are committed without waiting for it...
        store.put("user", "a", "k", 2)
        assert store.delete("user", "b", "k")
        for n in range(10):
            store.put("user", f"other-{n}", "k", n)
        store.commit()
        assert store.checkpoint_running
        # ...and another checkpoint, although due, does not start beside it.
        assert (store.flushing_owners, store.dirty_owners) == (1, 12)
        assert gate.held == 1
        assert (store.get("user", "a", "k"), store.get("user", "b", "k")) == (2, None)
        assert store.get("user", "c", "k") == 1
        during = crash_copy(store_dir, tmp_path / "during")
        gate.release.set()
        assert store.wait_for_checkpoint(WAIT)
        assert not store.checkpoint_running
        # a's and b's files hold the snapshot (a = 1, b = 1); the new segment, the rest.
        after = crash_copy(store_dir, tmp_path / "after")
        assert journal_bytes_on_disk(after) == store.journal_bytes  # the sealed one is gone
        assert len(owner_files(after)) == 3
        assert store.get("user", "c", "k") == 1  # from its file now: nothing is cached
        assert store.loaded_owners == 12
    finally:
        store.close()
    for directory in (during, after, store_dir):
        with TinyDBStore(directory) as reopened:
            assert reopened.get("user", "a", "k") == 2
            assert reopened.get("user", "b", "k") is None
            assert reopened.get("user", "c", "k") == 1
            for n in range(10):
                assert reopened.get("user", f"other-{n}", "k") == n


class _Heard(logging.Handler):
    """Sets `event` when a record whose message contains `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_past_the_hard_cap_a_write_waits_for_the_running_checkpoint(
    store_dir: Path, gate: WriterGate
) -> None:
    store = TinyDBStore(
        store_dir, checkpoint_owners=2, checkpoint_bytes=1024, journal_max_bytes=2048
    )
    heard = _Heard("waiting for it")
    tinydb_store_module.logger.addHandler(heard)
    try:
        store.put("user", "a", "k", 1)
        store.put("user", "b", "k", 1)
        assert gate.entered.wait(WAIT)
        written = threading.Event()

        def write() -> None:
            for n in range(40):  # about 4 KiB of journal
                store.put("user", "c", f"k{n}", "x" * 64)
            written.set()

        writer = threading.Thread(target=write)
        writer.start()
        # The write that passes the cap says it waits; the checkpoint it waits for is
        # held by the gate, so it cannot have finished.
        assert heard.event.wait(WAIT)
        assert not written.is_set()
        gate.release.set()
        assert written.wait(WAIT)
        writer.join(WAIT)
        assert store.journal_bytes < 2048 + 200
        assert store.get("user", "c", "k39") == "x" * 64
    finally:
        tinydb_store_module.logger.removeHandler(heard)
        store.close()


def test_close_waits_for_the_background_checkpoint_and_makes_a_last_one(
    store_dir: Path, gate: WriterGate
) -> None:
    store = TinyDBStore(store_dir, checkpoint_owners=2)
    store.put("user", "a", "k", 1)
    store.put("user", "b", "k", 1)
    assert gate.entered.wait(WAIT)
    store.put("user", "c", "k", 1)  # after the snapshot: only the last checkpoint has it
    store.commit()
    closer = threading.Thread(target=store.close)
    closer.start()
    # Bounded negative check: close must not return while the writer is held.
    closer.join(0.2)
    assert closer.is_alive()
    gate.release.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert len(owner_files(store_dir)) == 3
    [segment] = segments(store_dir)
    assert segment.stat().st_size == 0
    with TinyDBStore(store_dir) as reopened:
        assert [reopened.get("user", owner, "k") for owner in "abc"] == [1, 1, 1]


def test_a_journal_left_by_an_older_version_is_replayed(store_dir: Path) -> None:
    store_dir.mkdir()
    legacy = Journal(str(store_dir / "journal.log"))
    legacy.append_put("user", "alice", "k", '"from the old journal"')
    legacy.append_put("user", "bob", "k", "1")
    legacy.append_delete("user", "bob", "k")
    legacy.commit()
    legacy.close()
    with TinyDBStore(store_dir) as store:
        assert store.get("user", "alice", "k") == "from the old journal"
        assert store.get("user", "bob", "k") is None
    assert not (store_dir / "journal.log").exists()
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "alice", "k") == "from the old journal"


def test_owner_files_hold_any_names_as_plain_tinydb_reads_them(store: TinyDBStore) -> None:
    # Checkpoints splice the stored JSON text into the file instead of re-serialising.
    names = ['quo"te', "back\\slash", "ünïcødé ✓", "\ud800", "new\nline", "{}", "1"]
    for n, name in enumerate(names):
        store.put(f"plugin:{name}", "alice", name, {name: [n, None, "\u2028"]})
    store.close()
    [path] = owner_files(Path(store.root))
    db = TinyDB(path)
    try:
        for n, name in enumerate(names):
            expected = {"key": name, "value": {name: [n, None, "\u2028"]}}
            assert db.table(f"ns:plugin:{name}").all() == [expected]
    finally:
        db.close()
    with TinyDBStore(store.root) as reopened:
        for n, name in enumerate(names):
            assert reopened.get(f"plugin:{name}", "alice", name) == {name: [n, None, "\u2028"]}


def test_starting_a_checkpoint_costs_the_caller_one_journal_sync(
    store_dir: Path, gate: WriterGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    caller = threading.current_thread()
    syncs: list[str] = []  # the syncs the caller's thread made

    def counting(kind: str, real: Any) -> Any:
        def counted(fd: int) -> None:
            if threading.current_thread() is caller:
                syncs.append(kind)
            real(fd)

        return counted

    store = TinyDBStore(store_dir, checkpoint_owners=3)
    try:
        for checkpoint in range(3):
            syncs.clear()
            with monkeypatch.context() as patch:
                patch.setattr(os, "fsync", counting("fsync", os.fsync))
                patch.setattr(os, "fdatasync", counting("fdatasync", os.fdatasync))
                for n in range(3):  # the third starts the checkpoint
                    store.put("user", f"owner-{checkpoint}-{n}", "k", n)
            # The commit that seals the active segment; the next segment is the spare
            # that opening (then each checkpoint) made and synced in advance.
            assert syncs == ["fdatasync"]
            assert gate.entered.wait(WAIT)
            gate.entered.clear()
            gate.release.set()
            assert store.wait_for_checkpoint(WAIT)
            gate.release.clear()
    finally:
        gate.release.set()
        store.close()
    with TinyDBStore(store_dir) as reopened:
        assert reopened.get("user", "owner-2-2", "k") == 2
