"""The worker threads that run command functions.

A fixed set of threads fed from one C-implemented queue. `concurrent.futures` would do
the same job, but it builds a `Future` (with its own lock and condition) for every call
and Harken never reads one: a command reports through messages. On the busiest path of
the bot that bookkeeping cost more than running `echo` itself.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_STOP = object()


class WorkerPool:
    def __init__(self, size: int, name: str = "command-worker") -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        self._closed = False
        for thread in self._threads:
            thread.start()

    def submit(self, func: Callable[..., object], *args: Any) -> None:
        if self._closed:
            raise RuntimeError("the worker pool is shut down")
        self._jobs.put((func, args))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            func, args = job
            try:
                func(*args)
            except Exception:
                # The functions given here report their own failures; this is the net
                # under that net, so one bad job never takes a worker thread with it.
                logger.exception("a job on the worker pool failed")

    def shutdown(self, timeout: float | None = None) -> bool:
        """Finish the jobs already queued, then stop every thread; wait for that at most
        `timeout` seconds in all. False if jobs were still running when it ran out."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(_STOP)
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)
