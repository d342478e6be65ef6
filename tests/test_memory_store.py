"""Unit tests of the memory store: the interface's rules and the TinyDB backend's files.

An unclean stop is simulated by copying the store's directory while the store is still
open: the copy is exactly what a process killed at that moment leaves on disk (SIGKILL
loses nothing the process had already written to the kernel). The real thing, with
SIGKILL, is in test_memory_durability.py.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tinydb import TinyDB

from memory import journal as journal_module
from memory import tinydb_store as tinydb_store_module
from memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    InvalidName,
    InvalidWrite,
    Store,
    StoreClosed,
    StoreError,
    StoreLocked,
    open_store,
)
from memory.tinydb_store import TinyDBStore


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "memory"


@pytest.fixture
def store(store_dir: Path) -> Iterator[TinyDBStore]:
    opened = TinyDBStore(store_dir)
    yield opened
    opened.close()


def crash_copy(store_dir: Path, dest: Path) -> Path:
    """What a kill -9 of the process holding `store_dir` open would leave right now."""
    shutil.copytree(store_dir, dest)
    return dest


def owner_files(directory: Path) -> list[Path]:
    return sorted((directory / "owners").glob("*/*.json"))


def journal(directory: Path) -> Path:
    return directory / "journal.log"


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

    monkeypatch.setattr(journal_module.os, "fdatasync", counting_fdatasync)
    for n in range(50):
        store.put("user", f"owner-{n}", "k", n)
    assert syncs == []
    store.commit()
    assert len(syncs) == 1
    store.commit()  # nothing new: nothing to sync
    assert len(syncs) == 1


def _damage_truncate(data: bytes) -> bytes:
    return data[:-7]


def _damage_flip(data: bytes) -> bytes:
    return data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:]


def _damage_garbage(data: bytes) -> bytes:
    return data + b'0badf00d ["put","user","alice","torn",'


def _damage_no_newline(data: bytes) -> bytes:
    return data[:-1]


@pytest.mark.parametrize(
    ("damage", "last_record_survives"),
    [
        (_damage_truncate, False),
        (_damage_flip, False),
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
    path.write_bytes(damage(path.read_bytes()))
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

    monkeypatch.setattr(journal_module.os, "fdatasync", failing_fdatasync)
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
            assert store.journal_bytes < 2048 + 200
        assert len(owner_files(store_dir)) == 10
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

        monkeypatch.setattr(tinydb_store_module.os, "replace", failing_replace)
        store.put("user", "bob", "k", 2)  # the checkpoint it triggers fails
        assert "checkpoint failed" in caplog.text
        assert store.dirty_owners == 2
        assert not list((store_dir / "owners").glob("*/*.tmp"))
        assert store.get("user", "bob", "k") == 2
        # The checkpoint committed the journal first, so both writes are durable.
        with TinyDBStore(crash_copy(store_dir, tmp_path / "crashed")) as recovered:
            assert recovered.get("user", "alice", "k") == 1
            assert recovered.get("user", "bob", "k") == 2
        store.checkpoint()
        assert store.dirty_owners == 0
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
        assert db.table("_meta").all() == [{"owner": "slack:U123", "version": 1}]
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
    [path] = owner_files(store_dir)
    path.write_text("{not json")
    with TinyDBStore(store_dir) as reopened:
        with pytest.raises(StoreError, match="not valid"):
            reopened.get("user", "alice", "k")
        with pytest.raises(StoreError):
            reopened.put("user", "alice", "k", "new")
        reopened.put("user", "bob", "k", "fine")
    assert path.read_text() == "{not json"


def test_an_owner_file_that_is_json_but_not_tinydb_is_reported(store_dir: Path) -> None:
    with TinyDBStore(store_dir) as store:
        store.put("user", "alice", "k", "v")
    [path] = owner_files(store_dir)
    for content in ("[1, 2, 3]", '{"_meta": {"1": {"owner": "alice"}}, "ns:user": [1]}'):
        path.write_text(content)
        with TinyDBStore(store_dir) as reopened, pytest.raises(StoreError):
            reopened.get("user", "alice", "k")


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
