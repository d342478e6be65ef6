"""Keys that cannot name a value (empty, over 200 characters): answered at once, and never
counted as a write that failed.

Such a key used to reach the memory actor, which counted the refused delete as a failed
write and handed the failure to the next barrier, whoever's it was: `forget` with a long
key said "could not save", and so could another person's unrelated `remember`.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.context import MemoryView
from actors.memory_actor import MemoryActor
from actors.messages import MemoryBarrier, MemoryDelete, MemoryGet, MemoryPut
from memory.store import InvalidName
from memory.tinydb_store import TinyDBStore

TIMEOUT = 10.0


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[pykka.ActorRef[Any]]:
    ref = MemoryActor.start(TinyDBStore(str(tmp_path / "memory")))
    try:
        yield ref
    finally:
        ref.stop()


class Recorder:
    """Stands in for the memory actor's handle: records what a view sends, then sends it."""

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        self.ref = ref
        self.sent: list[object] = []

    def ask(self, message: object, timeout: float | None = None) -> Any:
        self.sent.append(message)
        return self.ref.ask(message, timeout=timeout)

    def tell(self, message: object) -> None:
        self.sent.append(message)
        self.ref.tell(message)


def test_deleting_a_key_that_cannot_exist_is_not_a_failed_write(
    memory: pykka.ActorRef[Any],
) -> None:
    assert memory.ask(MemoryDelete("user", "ann", "k" * 1000), timeout=TIMEOUT) is False
    # Bob's write, and the barrier he waits on before telling him it is saved.
    heard: queue.Queue[BaseException | None] = queue.Queue()
    memory.tell(MemoryPut("user", "bob", "pager", "555-0100"))
    memory.tell(MemoryBarrier(heard.put))
    assert heard.get(timeout=TIMEOUT) is None
    assert memory.ask(MemoryGet("user", "bob", "pager"), timeout=TIMEOUT) == "555-0100"


def test_a_view_answers_for_an_impossible_key_without_asking_memory(
    memory: pykka.ActorRef[Any],
) -> None:
    recorder = Recorder(memory)
    writes: list[str] = []
    view = MemoryView(recorder, "user", "ann", lambda: writes.append("write"))  # type: ignore[arg-type]
    assert view.get("k" * 201, "none") == "none"
    assert view.get("", "none") == "none"
    assert view.delete("k" * 201) is False
    assert view.delete("") is False
    assert recorder.sent == []
    assert writes == []  # nothing to wait for: no "could not save"


def test_a_key_of_the_wrong_type_is_still_a_programming_error(
    memory: pykka.ActorRef[Any],
) -> None:
    view = MemoryView(Recorder(memory), "user", "ann", lambda: None)  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        view.get(42)  # type: ignore[arg-type]
