"""One lane per conversation on the worker pool: its jobs run one at a time, in order.

A conversation takes a place in its lane (`reserve`) for each message before it hands
it to a command actor, which fills the place (`Slot.fill`) with the job to run, or with
nothing if it answered at once. Jobs run in the order their places were taken, so a
successor's first job (loading the open dialog) sees what the turn before it wrote
(ARCHITECTURE.md, "One lane per conversation"). No locks in the jobs.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from actors.workers import WorkerPool

logger = logging.getLogger(__name__)


class Slot:
    """A place in a lane, taken in order and filled later with the job to run there."""

    __slots__ = ("args", "filled", "func", "lane", "lanes")

    def __init__(self, lanes: Lanes, lane: Hashable) -> None:
        self.lanes = lanes
        self.lane = lane
        self.func: Callable[..., object] | None = None
        self.args: tuple[Any, ...] = ()
        self.filled = False

    def fill(self, func: Callable[..., object] | None = None, *args: Any) -> None:
        """Run `func(*args)` here, on a worker, once every earlier place is done; with
        no `func`, give the place up (its work is done)."""
        self.lanes.fill(self, func, args)


class Lanes:
    """The worker pool, seen as one first-in-first-out lane per conversation."""

    def __init__(self, workers: WorkerPool) -> None:
        self._workers = workers
        self._guard = threading.Lock()
        # lane -> its places not yet run, oldest first. An entry lives only while a place
        # of that lane is taken, so quiet conversations cost nothing here.
        self._lanes: dict[Hashable, deque[Slot]] = {}
        self._running: set[Hashable] = set()
        """Lanes a worker is running jobs of: only that worker may run their next."""

    def reserve(self, lane: Hashable) -> Slot:
        """Take the next place in `lane`."""
        slot = Slot(self, lane)
        with self._guard:
            waiting = self._lanes.get(lane)
            if waiting is None:
                self._lanes[lane] = deque((slot,))
            else:
                waiting.append(slot)
        return slot

    def submit(self, lane: Hashable, func: Callable[..., object], *args: Any) -> None:
        """Run `func(*args)` on a worker once every place taken before in `lane` is done."""
        self.reserve(lane).fill(func, *args)

    def fill(self, slot: Slot, func: Callable[..., object] | None, args: tuple[Any, ...]) -> None:
        with self._guard:
            if slot.filled:
                raise RuntimeError("a place in a lane is filled once")
            slot.func, slot.args, slot.filled = func, args, True
            lane = slot.lane
            if lane in self._running:
                return  # whoever runs the places before it will run it
            first = self._next(lane)
            if first is None:
                return
            self._running.add(lane)
        self._workers.submit(self._run, lane, first)

    def _next(self, lane: Hashable) -> Slot | None:
        """Take `lane`'s next job if its turn has come, dropping the given-up places
        before it; forget the lane once no place is left (call with the guard held)."""
        waiting = self._lanes.get(lane)
        if waiting is None:
            return None
        while waiting:
            head = waiting[0]
            if not head.filled:
                return None
            waiting.popleft()
            if head.func is not None:
                if not waiting:
                    del self._lanes[lane]
                return head
        del self._lanes[lane]
        return None

    def _run(self, lane: Hashable, slot: Slot) -> None:
        while True:
            func, args = slot.func, slot.args
            assert func is not None
            # The job often holds what holds its slot (a turn and its place): let go of
            # it, so that no cycle waits for the garbage collector.
            slot.func, slot.args = None, ()
            try:
                func(*args)
            except Exception:
                # The jobs given here report their own failures; this is the net under
                # that net, so that one bad job never blocks its lane.
                logger.exception("a job on the worker pool failed")
            with self._guard:
                following = self._next(lane)
                if following is None:
                    self._running.discard(lane)
                    return
            slot = following

    def busy(self) -> int:
        """Places taken and not yet done, all lanes together (for tests)."""
        with self._guard:
            return sum(len(waiting) for waiting in self._lanes.values()) + len(self._running)
