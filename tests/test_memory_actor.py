"""The memory actor: ask/tell semantics, barriers, group commit and failure handling.

Tests that need the actor to hold still while messages pile up in its inbox "pause" it:
they tell it a read that the in-memory fake store blocks on until released. Nothing
sleeps; everything waits on events with timeouts.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.memory_actor import MemoryActor
from actors.messages import (
    MemoryBarrier,
    MemoryDelete,
    MemoryFetch,
    MemoryGet,
    MemoryKeys,
    MemoryPut,
)
from memory.store import (
    InvalidName,
    InvalidWrite,
    Store,
    StoreUnavailable,
    check_names,
    encode_value,
)
from memory.tinydb_store import TinyDBStore

TIMEOUT = 10.0
PAUSE = MemoryGet("pause", "pause", "pause")


class FakeStore:
    """An in-memory `Store` that logs every call; commits can be made to fail."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str, str], str] = {}
        self.committed: dict[tuple[str, str, str], str] = {}
        self.log: list[str] = []
        self.commit_failures: list[BaseException] = []
        self.put_failures: dict[str, BaseException] = {}
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.closed = False

    def get(self, namespace: str, owner: str, key: str, default: Any = None) -> Any:
        check_names(namespace, owner, key)
        if (namespace, owner, key) == PAUSE[:3]:
            self.paused.set()
            assert self.resume.wait(TIMEOUT)
        text = self.data.get((namespace, owner, key))
        return default if text is None else json.loads(text)

    def keys(self, namespace: str, owner: str) -> list[str]:
        check_names(namespace, owner)
        return sorted(k for (ns, o, k) in self.data if (ns, o) == (namespace, owner))

    def put(self, namespace: str, owner: str, key: str, value: Any) -> None:
        check_names(namespace, owner, key)
        text = encode_value(value)
        if key in self.put_failures:
            raise self.put_failures[key]
        self.data[namespace, owner, key] = text
        self.log.append(f"put {key}")

    def delete(self, namespace: str, owner: str, key: str) -> bool:
        check_names(namespace, owner, key)
        self.log.append(f"delete {key}")
        return self.data.pop((namespace, owner, key), None) is not None

    def commit(self) -> None:
        self.log.append("commit")
        if self.commit_failures:
            raise self.commit_failures.pop(0)
        self.committed = dict(self.data)

    def close(self) -> None:
        self.log.append("close")
        self.closed = True

    def commits(self) -> int:
        return self.log.count("commit")


class Barriers:
    """Makes barrier callbacks and waits for them; remembers what each was told."""

    def __init__(self) -> None:
        self.fired: list[tuple[str, BaseException | None]] = []
        self._changed = threading.Condition()

    def notify(
        self, name: str, then: Callable[[], None] | None = None
    ) -> Callable[[BaseException | None], None]:
        def notify(error: BaseException | None) -> None:
            if then is not None:
                then()
            with self._changed:
                self.fired.append((name, error))
                self._changed.notify_all()

        return notify

    def barrier(self, name: str, then: Callable[[], None] | None = None) -> MemoryBarrier:
        return MemoryBarrier(self.notify(name, then))

    def wait(self, count: int) -> list[tuple[str, BaseException | None]]:
        with self._changed:
            ok = self._changed.wait_for(lambda: len(self.fired) >= count, timeout=TIMEOUT)
        assert ok, f"only {len(self.fired)} of {count} barriers fired"
        return list(self.fired)


@pytest.fixture
def refs() -> Iterator[list[pykka.ActorRef[Any]]]:
    started: list[pykka.ActorRef[Any]] = []
    yield started
    for ref in started:
        ref.stop()


@pytest.fixture
def fake() -> FakeStore:
    return FakeStore()


@pytest.fixture
def actor(fake: FakeStore, refs: list[pykka.ActorRef[Any]]) -> pykka.ActorRef[Any]:
    ref = MemoryActor.start(fake)
    refs.append(ref)
    return ref


@contextmanager
def paused(ref: pykka.ActorRef[Any], fake: FakeStore) -> Iterator[None]:
    """Hold the actor inside a read, so that everything told meanwhile queues up."""
    fake.resume.clear()
    fake.paused.clear()
    ref.tell(PAUSE)
    assert fake.paused.wait(TIMEOUT)
    try:
        yield
    finally:
        fake.resume.set()


def test_a_fake_store_is_a_store(fake: FakeStore) -> None:
    assert isinstance(fake, Store)


# --- asks and tells ------------------------------------------------------------------


def test_reads_see_earlier_writes(tmp_path: Path, refs: list[pykka.ActorRef[Any]]) -> None:
    ref = MemoryActor.start(TinyDBStore(tmp_path))
    refs.append(ref)
    ref.tell(MemoryPut("user", "alice", "colour", {"fav": "blue"}))
    ref.tell(MemoryPut("user", "alice", "animal", "cat"))
    assert ref.ask(MemoryGet("user", "alice", "colour"), timeout=TIMEOUT) == {"fav": "blue"}
    assert ref.ask(MemoryKeys("user", "alice"), timeout=TIMEOUT) == ["animal", "colour"]
    assert ref.ask(MemoryGet("user", "bob", "colour"), timeout=TIMEOUT) is None
    assert ref.ask(MemoryGet("user", "bob", "colour", default="none"), timeout=TIMEOUT) == "none"
    assert ref.ask(MemoryDelete("user", "alice", "animal"), timeout=TIMEOUT) is True
    assert ref.ask(MemoryDelete("user", "alice", "animal"), timeout=TIMEOUT) is False
    ref.tell(MemoryDelete("user", "alice", "colour"))
    assert ref.ask(MemoryKeys("user", "alice"), timeout=TIMEOUT) == []


def test_a_bad_read_raises_to_the_asker_and_the_actor_lives_on(
    actor: pykka.ActorRef[Any],
) -> None:
    with pytest.raises(InvalidName):
        actor.ask(MemoryGet("user", "", "k"), timeout=TIMEOUT)
    with pytest.raises(InvalidName):
        actor.ask(MemoryKeys("", "alice"), timeout=TIMEOUT)
    actor.tell(MemoryPut("user", "alice", "k", 1))
    assert actor.ask(MemoryGet("user", "alice", "k"), timeout=TIMEOUT) == 1


def test_fetches_are_answered_by_callback_in_order_with_writes(
    actor: pykka.ActorRef[Any], fake: FakeStore
) -> None:
    """A store without `get_many` (this fake, TinyDB) answers fetches one by one."""
    got: list[tuple[str, Any, type[BaseException] | None]] = []
    done = threading.Event()

    def fetch(name: str, owner: str, key: str = "k") -> MemoryFetch:
        def notify(value: Any, error: BaseException | None) -> None:
            got.append((name, value, None if error is None else type(error)))
            if len(got) == 4:
                done.set()

        return MemoryFetch("user", owner, key, notify)

    actor.tell(MemoryPut("user", "alice", "k", 1))
    with paused(actor, fake):
        actor.tell(fetch("before", "alice"))
        actor.tell(MemoryPut("user", "alice", "k", 2))
        actor.tell(fetch("after", "alice"))
        actor.tell(fetch("missing", "bob"))
        actor.tell(fetch("bad", ""))
    assert done.wait(TIMEOUT)
    assert got == [
        ("before", 1, None),
        ("after", 2, None),
        ("missing", None, None),
        ("bad", None, InvalidName),
    ]


def test_a_bad_delete_is_refused_without_killing_the_actor(actor: pykka.ActorRef[Any]) -> None:
    actor.tell(MemoryDelete("user", "alice", ""))
    assert actor.ask(MemoryDelete("user", "alice", "x" * 500), timeout=TIMEOUT) is False
    assert actor.ask(MemoryKeys("user", "alice"), timeout=TIMEOUT) == []


def test_an_unexpected_message_is_ignored(
    actor: pykka.ActorRef[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="actors.memory_actor"):
        actor.tell({"password": "hunter2"})
        assert actor.ask(MemoryKeys("user", "alice"), timeout=TIMEOUT) == []
    assert "unexpected dict" in caplog.text
    assert "hunter2" not in caplog.text


# --- barriers and group commit -------------------------------------------------------


def test_a_barrier_fires_after_the_writes_before_it_are_committed(
    actor: pykka.ActorRef[Any], fake: FakeStore
) -> None:
    barriers = Barriers()
    seen: list[list[str]] = []
    actor.tell(MemoryPut("user", "alice", "a", 1))
    actor.tell(MemoryPut("user", "alice", "b", 2))
    actor.tell(barriers.barrier("b1", then=lambda: seen.append(list(fake.log))))
    assert barriers.wait(1) == [("b1", None)]
    log = seen[0]
    assert log[-1] == "commit"
    assert log.index("put a") < log.index("put b") < len(log) - 1
    assert fake.committed.keys() >= {("user", "alice", "a"), ("user", "alice", "b")}


def test_a_barrier_means_durable_on_disk(tmp_path: Path, refs: list[pykka.ActorRef[Any]]) -> None:
    store_dir = tmp_path / "memory"
    ref = MemoryActor.start(TinyDBStore(store_dir))
    refs.append(ref)
    barriers = Barriers()

    def crash_copy() -> None:
        # On the actor's thread, at the moment of notification: this copy is what a
        # kill -9 right now would leave behind.
        shutil.copytree(store_dir, tmp_path / "crashed")

    for n in range(20):
        ref.tell(MemoryPut("user", f"owner-{n % 3}", f"k{n}", {"n": n}))
    ref.tell(barriers.barrier("done", then=crash_copy))
    assert barriers.wait(1) == [("done", None)]
    with TinyDBStore(tmp_path / "crashed") as recovered:
        for n in range(20):
            assert recovered.get("user", f"owner-{n % 3}", f"k{n}") == {"n": n}


def test_barriers_fire_in_the_order_they_were_sent(actor: pykka.ActorRef[Any]) -> None:
    barriers = Barriers()
    names = [f"b{n}" for n in range(50)]
    for n, name in enumerate(names):
        if n % 3:
            actor.tell(MemoryPut("user", "alice", f"k{n}", n))
        actor.tell(barriers.barrier(name))
    assert barriers.wait(50) == [(name, None) for name in names]


def test_writes_queued_during_a_commit_are_committed_together(
    actor: pykka.ActorRef[Any], fake: FakeStore
) -> None:
    barriers = Barriers()
    with paused(actor, fake):
        for n in range(100):
            actor.tell(MemoryPut("user", f"owner-{n}", "k", n))
            actor.tell(barriers.barrier(f"b{n}"))
    assert [error for _, error in barriers.wait(100)] == [None] * 100
    assert fake.commits() == 1
    assert len(fake.committed) == 100


def test_a_never_empty_inbox_still_commits_every_max_batch(
    fake: FakeStore, refs: list[pykka.ActorRef[Any]]
) -> None:
    ref = MemoryActor.start(fake, max_batch=10)
    refs.append(ref)
    barriers = Barriers()
    with paused(ref, fake):
        for n in range(40):
            ref.tell(MemoryPut("user", "alice", f"k{n}", n))
        ref.tell(barriers.barrier("end"))
    assert barriers.wait(1) == [("end", None)]
    assert fake.commits() >= 4


def test_a_failed_commit_is_reported_and_retried(
    actor: pykka.ActorRef[Any], fake: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    failure = OSError(28, "No space left on device")
    fake.commit_failures.append(failure)
    barriers = Barriers()
    with caplog.at_level(logging.ERROR, logger="actors.memory_actor"), paused(actor, fake):
        actor.tell(MemoryPut("user", "alice", "k", "v"))
        actor.tell(barriers.barrier("first"))
    assert barriers.wait(1) == [("first", failure)]
    assert "commit failed" in caplog.text
    # The actor lives on, the write is still there, and the next barrier retries it.
    assert actor.ask(MemoryGet("user", "alice", "k"), timeout=TIMEOUT) == "v"
    actor.tell(barriers.barrier("second"))
    assert barriers.wait(2)[1] == ("second", None)
    # Retried at the first chance (after the ask), so it is durable now.
    assert fake.commits() >= 2
    assert fake.committed == {("user", "alice", "k"): '"v"'}


def test_an_invalid_put_is_dropped_logged_without_secrets_and_reported_to_the_barrier(
    actor: pykka.ActorRef[Any], caplog: pytest.LogCaptureFixture
) -> None:
    barriers = Barriers()
    with caplog.at_level(logging.DEBUG):
        actor.tell(MemoryPut("user", "alice", "fine", "ok"))
        actor.tell(MemoryPut("user", "alice", "secret-key", {"password": "hunter2", "bad": {1}}))
        actor.tell(barriers.barrier("after invalid"))
        actor.tell(MemoryPut("user", "alice", "later", "ok"))
        actor.tell(barriers.barrier("clean"))
        fired = barriers.wait(2)
    assert fired[0][0] == "after invalid"
    assert isinstance(fired[0][1], InvalidWrite)
    assert fired[1] == ("clean", None)
    assert actor.ask(MemoryKeys("user", "alice"), timeout=TIMEOUT) == ["fine", "later"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("dropped an invalid MemoryPut" in r.getMessage() for r in warnings)
    assert all("secret-key" not in r.getMessage() for r in warnings)
    assert "hunter2" not in caplog.text


def test_a_put_that_fails_on_io_is_reported_to_the_barrier(
    actor: pykka.ActorRef[Any], fake: FakeStore
) -> None:
    failure = OSError(5, "Input/output error")
    fake.put_failures["broken"] = failure
    barriers = Barriers()
    actor.tell(MemoryPut("user", "alice", "broken", 1))
    actor.tell(barriers.barrier("b"))
    assert barriers.wait(1) == [("b", failure)]
    assert actor.ask(MemoryKeys("user", "alice"), timeout=TIMEOUT) == []


def test_a_store_deleted_under_the_actor_fails_every_later_barrier(
    tmp_path: Path, refs: list[pykka.ActorRef[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    store_dir = tmp_path / "memory"
    ref = MemoryActor.start(TinyDBStore(store_dir))
    refs.append(ref)
    barriers = Barriers()
    ref.tell(MemoryPut("user", "alice", "before", 1))
    ref.tell(barriers.barrier("before"))
    assert barriers.wait(1) == [("before", None)]
    shutil.rmtree(store_dir)
    with caplog.at_level(logging.ERROR):
        for name in ("first", "second"):
            ref.tell(MemoryPut("user", "alice", name, 2))
            ref.tell(barriers.barrier(name))
        fired = barriers.wait(3)
        assert [name for name, _ in fired] == ["before", "first", "second"]
        assert all(isinstance(error, StoreUnavailable) for _, error in fired[1:])
        # What it holds is still answered; a delete is refused, not reported as done.
        assert ref.ask(MemoryGet("user", "alice", "before"), timeout=TIMEOUT) == 1
        assert ref.ask(MemoryDelete("user", "alice", "before"), timeout=TIMEOUT) is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors
    assert all("deleted" in r.getMessage() for r in errors)


def test_a_failing_notify_callback_does_not_hurt_the_others(actor: pykka.ActorRef[Any]) -> None:
    barriers = Barriers()

    def boom(error: BaseException | None) -> None:
        raise RuntimeError("callback bug")

    actor.tell(MemoryPut("user", "alice", "k", 1))
    actor.tell(MemoryBarrier(boom))
    actor.tell(barriers.barrier("after"))
    assert barriers.wait(1) == [("after", None)]
    assert actor.ask(MemoryGet("user", "alice", "k"), timeout=TIMEOUT) == 1


# --- lifecycle -----------------------------------------------------------------------


def test_stopping_commits_then_closes(fake: FakeStore) -> None:
    ref = MemoryActor.start(fake)
    ref.tell(MemoryPut("user", "alice", "k", 1))
    ref.stop()
    assert fake.log[-2:] == ["commit", "close"]
    assert fake.committed == {("user", "alice", "k"): "1"}


def test_a_factory_opens_the_store_on_the_actors_thread(tmp_path: Path) -> None:
    opened_on: list[threading.Thread] = []
    stores: list[TinyDBStore] = []

    def factory() -> Store:
        opened_on.append(threading.current_thread())
        stores.append(TinyDBStore(tmp_path))
        return stores[0]

    ref = MemoryActor.start(factory)
    ref.tell(MemoryPut("user", "alice", "k", "v"))
    assert ref.ask(MemoryGet("user", "alice", "k"), timeout=TIMEOUT) == "v"
    ref.stop()
    assert opened_on
    assert opened_on[0] is not threading.current_thread()
    # Stopping closed the store (releasing its lock) with the write in it.
    with TinyDBStore(tmp_path) as reopened:
        assert reopened.get("user", "alice", "k") == "v"


def test_the_constructor_checks_its_arguments(fake: FakeStore) -> None:
    with pytest.raises(TypeError):
        MemoryActor(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batch"):
        MemoryActor(fake, max_batch=0)
