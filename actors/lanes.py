"""One lane per conversation on the worker pool: its jobs run one at a time, in order.

A conversation actor hands a job to the pool (loading its open dialog, a turn) and
waits for it before the next, so while it lives its jobs never overlap. An actor can
be stopped while its job runs, though (the router crashed, which stops every
conversation), and a successor for the same person starts at the next message. Its
first job, loading the dialog state, must see what the job still running will write.
The lane gives that order without locks in the jobs: a job submitted while another of
the same conversation is queued or running waits behind it, and a turn tells memory its
writes before it returns, so the load that follows it asks memory after them (the
memory actor handles messages in the order they arrive).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from actors.workers import WorkerPool

logger = logging.getLogger(__name__)

Job = tuple[Callable[..., object], tuple[Any, ...]]


class Lanes:
    """The worker pool, seen as one first-in-first-out lane per conversation."""

    def __init__(self, workers: WorkerPool) -> None:
        self._workers = workers
        self._guard = threading.Lock()
        # conversation -> the jobs waiting behind the one running (None: none wait). An
        # entry lives only while a job of that conversation is queued or running.
        self._busy: dict[Hashable, deque[Job] | None] = {}

    def submit(self, lane: Hashable, func: Callable[..., object], *args: Any) -> None:
        """Run `func(*args)` on a worker once every job submitted before on `lane` is done."""
        with self._guard:
            if lane in self._busy:
                waiting = self._busy[lane]
                if waiting is None:
                    waiting = self._busy[lane] = deque()
                waiting.append((func, args))
                return
            self._busy[lane] = None
        self._workers.submit(self._run, lane, func, args)

    def _run(self, lane: Hashable, func: Callable[..., object], args: tuple[Any, ...]) -> None:
        while True:
            try:
                func(*args)
            except Exception:
                # The jobs given here report their own failures; this is the net under
                # that net, so that one bad job never blocks its lane.
                logger.exception("a job on the worker pool failed")
            with self._guard:
                waiting = self._busy[lane]
                if not waiting:
                    del self._busy[lane]
                    return
                # The next job of this lane runs on this thread: nothing else may run it.
                func, args = waiting.popleft()

    def busy(self) -> int:
        """Jobs queued or running, all lanes together (for tests)."""
        with self._guard:
            return sum(1 + len(waiting or ()) for waiting in self._busy.values())
