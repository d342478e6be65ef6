"""A conversation's jobs on the worker pool run one at a time, in order (`actors.lanes`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import pytest

from actors.lanes import Lanes
from actors.workers import WorkerPool
from harken.testbot import wait_until


@pytest.fixture
def workers() -> Iterator[WorkerPool]:
    pool = WorkerPool(4)
    yield pool
    pool.shutdown(timeout=5)


def test_a_job_waits_for_the_one_before_it_in_its_lane_but_not_for_other_lanes(
    workers: WorkerPool,
) -> None:
    lanes = Lanes(workers)
    release = threading.Event()
    done: queue.SimpleQueue[str] = queue.SimpleQueue()

    def slow() -> None:
        release.wait(10)
        done.put("slow")

    lanes.submit("ann", slow)
    lanes.submit("ann", done.put, "after slow")
    lanes.submit("bob", done.put, "bob")
    assert done.get(timeout=5) == "bob"  # another lane runs while ann's is held up
    wait_until(lambda: lanes.busy() == 2)  # bob's job is done, ann's two wait
    release.set()
    assert [done.get(timeout=5), done.get(timeout=5)] == ["slow", "after slow"]
    wait_until(lambda: lanes.busy() == 0)  # nothing is left behind once a lane is empty


def test_a_failing_job_does_not_block_its_lane(
    workers: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    lanes = Lanes(workers)
    done: queue.SimpleQueue[int] = queue.SimpleQueue()
    release = threading.Event()

    def fail() -> None:
        release.wait(10)
        raise RuntimeError("job broke")

    lanes.submit("ann", fail)
    for n in range(3):
        lanes.submit("ann", done.put, n)
    release.set()
    assert [done.get(timeout=5) for _ in range(3)] == [0, 1, 2]
    assert "job broke" in caplog.text


def test_places_run_in_the_order_taken_whoever_fills_them_first(workers: WorkerPool) -> None:
    # The conversation takes a place before its command actor fills it: a successor's
    # job submitted meanwhile waits behind the place, not in front of it.
    lanes = Lanes(workers)
    done: queue.SimpleQueue[str] = queue.SimpleQueue()
    turn = lanes.reserve("ann")
    given_up = lanes.reserve("ann")
    lanes.submit("ann", done.put, "load")
    assert lanes.busy() == 3
    given_up.fill(None)  # answered at once: nothing to run, but still in order
    assert lanes.busy() == 3
    turn.fill(done.put, "turn")
    assert [done.get(timeout=5), done.get(timeout=5)] == ["turn", "load"]
    wait_until(lambda: lanes.busy() == 0)


def test_a_place_given_up_at_the_head_wakes_no_worker(workers: WorkerPool) -> None:
    lanes = Lanes(workers)
    lanes.reserve("ann").fill(None)
    assert lanes.busy() == 0
    slot = lanes.reserve("ann")
    slot.fill(None)
    with pytest.raises(RuntimeError, match="filled once"):
        slot.fill(None)
