"""Batched reads on PostgreSQL: `PgStore.get_many` and the memory actor's `MemoryFetch`.

In a cluster every conversation that finds itself idle reads its dialog state again
before the next message; those reads wait in the memory actor and are answered by one
query (`get_many`) before the group commit. These tests use a real private PostgreSQL.
To let fetches pile up, the memory actor is held still by a barrier whose callback
waits for the test (it runs on the actor's thread); nothing sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pykka
import pytest

from actors.memory_actor import MemoryActor
from actors.messages import MemoryBarrier, MemoryDelete, MemoryFetch, MemoryPut
from actors.runner import CONVERSATION_NS, state_address
from memory.pg_store import TABLE, PgStore, RowCorrupt
from memory.store import InvalidName, StoreUnavailable

TIMEOUT = 30.0


class CountingPgStore(PgStore):
    """The real store, remembering the addresses of each `get_many` call."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[list[tuple[str, str, str]]] = []

    def get_many(self, addresses: Sequence[tuple[str, str, str]]) -> list[Any]:
        self.batches.append(list(addresses))
        return super().get_many(addresses)


class Answers:
    """`MemoryFetch` callbacks that record (value, error) by name; wait for them."""

    def __init__(self) -> None:
        self.got: dict[str, tuple[Any, BaseException | None]] = {}
        self._changed = threading.Condition()

    def fetch(self, name: str, namespace: str, owner: str, key: str) -> MemoryFetch:
        def notify(value: Any, error: BaseException | None) -> None:
            with self._changed:
                self.got[name] = (value, error)
                self._changed.notify_all()

        return MemoryFetch(namespace, owner, key, notify)

    def wait(self, count: int) -> dict[str, tuple[Any, BaseException | None]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.got) >= count, TIMEOUT), self.got
            return dict(self.got)


class Hold:
    """A barrier whose callback blocks the memory actor until `release()`."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self._released = threading.Event()

    def barrier(self) -> MemoryBarrier:
        def notify(error: BaseException | None) -> None:
            self.holding.set()
            assert self._released.wait(TIMEOUT)

        return MemoryBarrier(notify)

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def memory(pg_url: str) -> Iterator[tuple[pykka.ActorRef[Any], CountingPgStore]]:
    store = CountingPgStore(pg_url)
    ref = MemoryActor.start(store)
    yield ref, store
    ref.stop(timeout=TIMEOUT)


def _hold(ref: pykka.ActorRef[Any]) -> Hold:
    hold = Hold()
    ref.tell(MemoryPut("user", "hold", "k", 0))  # a barrier only commits when writes wait
    ref.tell(hold.barrier())
    assert hold.holding.wait(TIMEOUT)
    return hold


def test_get_many_answers_each_address_as_get_would(pg_url: str) -> None:
    with PgStore(pg_url) as other:  # another process's committed rows
        other.put("user", "alice", "pager", "555-0100")
        other.put("user", "bob", "pager", {"n": 2})
        other.put("user", "carol", "gone", 1)
        other.put("user", "dave", "bad", 1)
        other.commit()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f"UPDATE {TABLE} SET value = '{{no' WHERE owner = 'dave'")
    with PgStore(pg_url) as pg:
        pg.put("user", "bob", "pager", "pending wins")
        pg.delete("user", "carol", "gone")
        answers = pg.get_many(
            [
                ("user", "alice", "pager"),
                ("user", "bob", "pager"),
                ("user", "carol", "gone"),
                ("user", "nobody", "pager"),
                ("user", "nul\x00", "pager"),
                ("user", "dave", "bad"),
                ("user", "alice", "pager"),
            ]
        )
        assert answers[:4] == ["555-0100", "pending wins", None, None]
        assert isinstance(answers[4], InvalidName)
        assert isinstance(answers[5], RowCorrupt)
        assert "'dave'" in str(answers[5])
        assert answers[6] == "555-0100"
        assert pg.get_many([]) == []


def test_dialog_reads_that_wait_together_are_served_by_one_query(
    memory: tuple[pykka.ActorRef[Any], CountingPgStore], pg_url: str
) -> None:
    talks = [f'["test","C1","u{n:03d}",""]' for n in range(40)]
    with PgStore(pg_url) as other:  # dialogs another process left open, every other one
        for n, talk in enumerate(talks[::2]):
            other.put(CONVERSATION_NS, *state_address(talk), {"dialog": "incident", "n": n})
        other.commit()
    ref, store = memory
    hold = _hold(ref)
    answers = Answers()
    for talk in talks:
        ref.tell(answers.fetch(talk, CONVERSATION_NS, *state_address(talk)))
    assert store.batches == []
    hold.release()
    got = answers.wait(len(talks))
    for n, talk in enumerate(talks):
        expected = {"dialog": "incident", "n": n // 2} if n % 2 == 0 else None
        assert got[talk] == (expected, None)
    assert len(store.batches) == 1
    assert len(store.batches[0]) == len(talks)


def test_a_fetch_sees_the_writes_told_before_it_and_not_those_after(
    memory: tuple[pykka.ActorRef[Any], CountingPgStore], pg_url: str
) -> None:
    with PgStore(pg_url) as other:
        other.put("user", "alice", "step", 1)
        other.put("user", "bob", "step", 1)
        other.commit()
    ref, store = memory
    hold = _hold(ref)
    answers = Answers()
    ref.tell(answers.fetch("alice before", "user", "alice", "step"))
    ref.tell(answers.fetch("bob before", "user", "bob", "step"))
    ref.tell(MemoryPut("user", "alice", "step", 2))  # a write to a key being read
    ref.tell(answers.fetch("alice after", "user", "alice", "step"))
    ref.tell(MemoryDelete("user", "bob", "step"))
    ref.tell(answers.fetch("bob after", "user", "bob", "step"))
    ref.tell(answers.fetch("carol", "user", "carol", "step"))
    hold.release()
    got = answers.wait(5)
    assert got["alice before"] == (1, None)
    assert got["bob before"] == (1, None)
    assert got["alice after"] == (2, None)  # pending, not yet committed, and seen
    assert got["bob after"] == (None, None)
    assert got["carol"] == (None, None)
    # The first two were served before the write to alice's key; the rest together.
    assert [len(batch) for batch in store.batches] == [2, 3]


def test_a_fetch_the_database_cannot_answer_gets_the_error(
    memory: tuple[pykka.ActorRef[Any], CountingPgStore], postgres: Any
) -> None:
    ref, _ = memory
    hold = _hold(ref)
    answers = Answers()
    ref.tell(answers.fetch("a", "user", "alice", "step"))
    ref.tell(answers.fetch("b", "user", "bob", "step"))
    postgres.stop()
    try:
        hold.release()
        got = answers.wait(2)
    finally:
        postgres.start()
    for name in ("a", "b"):
        value, error = got[name]
        assert value is None
        assert isinstance(error, StoreUnavailable)
