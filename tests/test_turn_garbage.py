"""A person's turn is freed by reference counting as soon as it is answered.

A cycle among the objects of a turn (the turn and its place in the lane, a context and
its memory views) would leave them to the garbage collector: collections then come
more often and walk more objects while every message in flight waits for them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from actors.context import Context, MemoryView
from actors.lanes import Slot
from actors.runner import Turn
from harken.testbot import TestBot

TURN_PARTS = (Turn, Slot, Context, MemoryView)


@pytest.fixture
def collector_off() -> Iterator[None]:
    """The collector stopped, and what it would free kept aside in `gc.garbage`."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _left_to_the_collector() -> list[str]:
    gc.collect()
    return sorted({type(o).__name__ for o in gc.garbage if isinstance(o, TURN_PARTS)})


def test_a_command_that_writes_leaves_no_cycle(testbot: TestBot, collector_off: None) -> None:
    for i in range(20):
        assert testbot.ask(f"remember k{i} is v{i}").startswith("OK")
    assert testbot.ask("recall k3") == "k3 is v3"
    assert _left_to_the_collector() == []


def test_a_quick_command_leaves_no_cycle(testbot: TestBot, collector_off: None) -> None:
    for i in range(20):
        assert testbot.ask(f"echo {i}") == str(i)
    assert _left_to_the_collector() == []
