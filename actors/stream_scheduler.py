"""Streams at run time, the running side: one actor per stream, the scheduler thread
that runs them as background work, and the watch that moves a slow stream away.

A `StreamActor` holds one stream's function and its `BotStreamContext`
(actors/streams_context.py). One `StreamScheduler` thread hands the hub's inbox out
(`StreamHub.fan_out`, actors/streams.py) and runs the streams' batches in turn, in
small slices, and holds back while a person's message is on its way to its answer (the
hub's `ReplyGate`); a stream whose slice overruns is moved to a thread of its own
(`StreamWatch`), so it delays no other stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors.runner import new_error_id
from actors.streams_context import BotStreamContext

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.streams import ReplyGate, StreamHub, StreamRunner
    from core.event import Event

logger = logging.getLogger(__name__)

__all__ = ["StreamActor", "StreamScheduler", "StreamWatch"]

STOP_SECONDS = 5.0
"""On stop, how long a stream's event in progress may take to finish."""
LINGER_SECONDS = 0.005
"""How long the scheduler waits, once woken, for more events to take in one go."""
SLICE_EVENTS = 16
"""Events a stream handles between two looks at the reply path."""
OVERRUN_SECONDS = 0.1
"""A slice running longer than this (wall time: a stream waiting on I/O counts) moves
its stream to a thread of its own."""


class StreamActor:
    """One stream's function and state, run by one thread at a time, one event at a time.

    An actor in all but library: only the thread that runs it calls the stream's code,
    which holds its state and takes its events from its mailbox in order. That thread
    is the `StreamScheduler`'s, shared with the other streams, until a slice of this
    stream overruns (`StreamWatch`): then the thread stays with this stream alone
    (`own`), and the other streams get a new scheduler.
    """

    def __init__(self, runner: StreamRunner, runtime: Runtime) -> None:
        self.runner = runner
        self.runtime = runtime
        self.on_event, self.on_start_hook = runner.stream.make_handler()
        self.ctx: BotStreamContext | None = None
        """Made on the running thread once the scheduler is up (`begin`)."""
        self.begun = False
        """Set by `begin`; the running thread then runs `on_start` before any event."""
        self.stopped = False
        self.own: threading.Thread | None = None
        """The thread this stream has to itself, once a slice of it overran."""

    def run(
        self,
        batch: list[Event],
        gate: ReplyGate | None,
        ready_since: float,
        slice_started: Callable[[], None],
    ) -> None:
        """Run `on_start` if due, then the stream on each event of `batch` in order,
        `SLICE_EVENTS` at a time; before each slice, `gate.hold` (background work) and
        `slice_started()` (for the watch)."""
        ctx = self.ctx
        if ctx is None or ctx.stale():
            ctx = self.ctx = BotStreamContext(self.runner, self.runtime)
        if self.begun:
            self.begun = False
            if self.on_start_hook is not None:
                slice_started()
                ctx.handling(None)
                self._guarded(self.on_start_hook, ctx)
        if not batch:
            return
        runner, on_event = self.runner, self.on_event
        runner.taken.inc(len(batch))
        for index, event in enumerate(batch):
            if index % SLICE_EVENTS == 0:
                if gate is not None:
                    slice_started()  # holding back is no overrun
                    gate.hold(ready_since)
                slice_started()
            if not self.stopped:
                ctx.handling(event)
                try:
                    on_event(ctx, event)
                except Exception:
                    self._failed(event)
            runner.busy -= 1

    def _guarded(self, call: Any, ctx: BotStreamContext) -> None:
        try:
            call(ctx)
        except Exception:
            self._failed(None)

    def _failed(self, event: Event | None) -> None:
        self.runner.errors.inc()
        error_id = new_error_id()
        what = f"event {event.id} from {event.input}" if event is not None else "its start"
        logger.exception("stream %s failed on %s (error id %s)", self.runner.name, what, error_id)

    def own_loop(self, wake: threading.Event) -> None:
        """The stream's own thread, after an overrun: wake, linger, run what waits."""
        runner = self.runner
        while True:
            wake.wait()
            if not self.stopped:
                time.sleep(LINGER_SECONDS)
            wake.clear()
            batch = runner.take()
            if self.stopped:
                _stopped_with(runner.name, batch)
                return
            self.run(batch, None, 0.0, _nothing)

    def stop(self) -> None:
        self.stopped = True
        self.runner.wake.set()


def _nothing() -> None:
    return None


def _stopped_with(name: str, batch: list[Event]) -> None:
    if batch:
        logger.warning("stream %s stopped with %d event(s) not handled", name, len(batch))


class StreamScheduler:
    """One thread that runs the batches of several streams in turn, as background work.

    Woken by a hand-over to any of its streams, it lingers `LINGER_SECONDS` to let a
    burst gather, then runs each stream's batch, `SLICE_EVENTS` events at a time. Before
    each slice it holds back while a person's message is on its way to its answer (the
    `ReplyGate`, at most `HOLD_SECONDS` after the wake-up), sleeping and so leaving the
    interpreter to the reply path. One thread for all streams: one wake-up per burst
    instead of one per stream, and never ten threads at once queueing for the
    interpreter in front of a reply.
    """

    def __init__(
        self, hub: StreamHub, actors: list[StreamActor], gate: ReplyGate, index: int = 0
    ) -> None:
        self.hub = hub
        self.actors = actors
        self.gate = gate
        self.wake = threading.Event()
        self.lock = threading.Lock()
        """Guards `current` against the watch moving it away mid-check."""
        self.current: StreamActor | None = None
        """The stream whose batch runs now; None between batches."""
        self.slice_at = 0.0
        """When the current slice started (monotonic)."""
        self.handed_over = False
        """Set by the watch: when `current`'s batch ends, this thread is its own."""
        self.stopped = False
        for actor in actors:
            actor.runner.wake = self.wake
        hub.wake = self.wake  # the fan-out is this scheduler's from now on
        name = "streams" if index == 0 else f"streams-{index}"
        # Daemon: a stream stuck in its own code must not keep Harken up.
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.wake.set()  # events handed over before the start, or to a former scheduler

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def _slice(self) -> None:
        self.slice_at = time.monotonic()

    def _loop(self) -> None:
        wake, gate = self.wake, self.gate
        while True:
            wake.wait()
            if not self.stopped:
                time.sleep(LINGER_SECONDS)  # let a burst gather: one wake-up for it all
            wake.clear()  # before taking: a later hand-over wakes it again
            ready = time.monotonic()
            if not self.stopped:
                self.hub.fan_out(gate, ready)
            for actor in self.actors:
                batch = actor.runner.take()
                if self.stopped or actor.stopped:
                    _stopped_with(actor.runner.name, batch)
                    continue
                if not batch and not actor.begun:
                    continue
                with self.lock:
                    self.current = actor
                actor.run(batch, gate, ready, self._slice)
                with self.lock:
                    self.current = None
                    handed_over = self.handed_over
                if handed_over:  # the watch gave this thread to `actor`
                    actor.own_loop(actor.runner.wake)
                    return
            if self.stopped:
                return

    def overran(self, now: float) -> StreamActor | None:
        """The watch's check: the stream whose slice has run past `OVERRUN_SECONDS`,
        now handed this thread (the caller starts a scheduler for the others)."""
        with self.lock:
            actor = self.current
            if actor is None or self.handed_over or now - self.slice_at < OVERRUN_SECONDS:
                return None
            self.handed_over = True
            actor.own = self.thread
            own = threading.Event()
            own.set()  # events handed over before the move woke this scheduler, not it
            actor.runner.wake = own
            return actor


class StreamWatch:
    """Looks at the scheduler every `OVERRUN_SECONDS`: a stream whose slice overran
    keeps the scheduler's thread to itself, and a new scheduler runs the others, so a
    slow or stuck stream delays the others by one overrun at most, once."""

    def __init__(self, hub: StreamHub, scheduler: StreamScheduler) -> None:
        self.hub = hub
        self.scheduler = scheduler
        self.schedulers = [scheduler]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="streams-watch", daemon=True)

    def start(self) -> None:
        self.scheduler.start()
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(OVERRUN_SECONDS):
            old = self.scheduler
            actor = old.overran(time.monotonic())
            if actor is None:
                continue
            logger.warning(
                "stream %s ran for over %.0f ms on one slice; it runs on a thread of its own "
                "from now on",
                actor.runner.name,
                OVERRUN_SECONDS * 1000,
            )
            others = [a for a in old.actors if a is not actor]
            new = StreamScheduler(self.hub, others, old.gate, len(self.schedulers))
            self.schedulers.append(new)
            self.scheduler = new
            new.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(STOP_SECONDS)
        for scheduler in self.schedulers:
            scheduler.stop()

    def threads(self) -> list[threading.Thread]:
        return [s.thread for s in self.schedulers]
