"""Streams at run time: the hub that hands events out, one actor per stream, and the
`stream` input that takes the answers to what streams run.

The router (every message in) and the reply path (`Runtime.answer`, `deliver`,
`send`: only for streams that asked for replies) call `StreamHub.publish`, which
filters on the caller's thread (input, channel, person, pattern: no I/O, no lock but
one per stream it hands to) and tells the stream's actor. Each `StreamRunner` counts the
events it handed over and not yet handled: past its mailbox bound a new event is
dropped, counted in `harken_stream_dropped_total{stream}` and warned of at most once
a minute, so a slow or failing stream never holds a reply or another stream up.

A `StreamActor` has a thread of its own and runs the stream's function there, with a
`BotStreamContext` (actors/streams_context.py). The `StreamInput` (input name
`stream`) is where the answers to commands that streams run (`ctx.run`, scheduled
jobs) arrive: it hands them to the stream waiting for them, or logs them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from actors.inputs.base import HEARD, InputActor
from actors.messages import Answered
from actors.runner import new_error_id
from actors.streams_context import BotStreamContext
from commands.streams import STREAM_INPUT, Stream, Subscription
from core.event import Event

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)

__all__ = ["StreamActor", "StreamHub", "StreamInput", "StreamRunner"]

WARN_EVERY_SECONDS = 60.0
"""A stream that drops events is warned of at most this often (each drop is counted)."""
STOP_SECONDS = 5.0
"""On stop, how long a stream's event in progress may take to finish."""
LINGER_SECONDS = 0.005
"""How long a stream's actor waits, once woken, for more events to take in one go."""


class StreamRunner:
    """One stream as the hub sees it: its filter, and its mailbox (a bounded deque)."""

    def __init__(
        self,
        stream: Stream,
        options: Any,
        subscription: Subscription,
        mailbox: int,
        hub: StreamHub,
    ) -> None:
        self.stream = stream
        self.name = stream.name
        self.options = options
        self.subscription = subscription
        self.mailbox = mailbox
        self.hub = hub
        self.actor: StreamActor | None = None
        self.lock = threading.Lock()
        """Guards the drop warning's figures (the mailbox itself needs no lock)."""
        self.waiting: deque[Event] = deque()
        """Events handed over and not yet taken by the actor (appends and pops are atomic)."""
        self.busy = 0
        """Events the actor took and has not handled yet; written by the actor alone."""
        self.wake = threading.Event()
        """Set by a hand-over the actor has not woken for yet; cleared by the actor before
        it takes what waits, so no event is left behind unannounced."""
        sub = subscription
        self.plain = not (sub.channels or sub.users or sub.pattern is not None)
        """Only inputs to filter on, which the hub's index already did."""
        self._dropped_since_warning = 0
        self._warned_at = -WARN_EVERY_SECONDS
        self._dropped = hub.dropped.labels(self.name)
        self.taken = hub.taken.labels(self.name)
        self.errors = hub.errors.labels(self.name)

    def offer(self, event: Event) -> None:
        """Queue `event` for the actor, unless its mailbox is full (then drop and count
        it). Wakes the actor only if it is not already awake for earlier events."""
        waiting = self.waiting
        # Reads of two counters without a lock: two threads handing over at once may
        # pass the bound by one each; the actor counts `busy` before it takes events, so
        # the sum never falls below what is really in flight.
        if len(waiting) + self.busy < self.mailbox:
            waiting.append(event)
            if not self.wake.is_set():
                self.wake.set()
            return
        self._drop()

    def _drop(self) -> None:
        self._dropped.inc()
        now = time.monotonic()
        with self.lock:
            self._dropped_since_warning += 1
            if now - self._warned_at < WARN_EVERY_SECONDS:
                return
            self._warned_at = now
            count, self._dropped_since_warning = self._dropped_since_warning, 0
        logger.warning(
            "stream %s is behind: dropped %d event(s) since the last warning (its mailbox "
            "holds %d; harken_stream_dropped_total counts them all)",
            self.name,
            count,
            self.mailbox,
        )


class StreamHub:
    """Hands the bot's events to the streams that want them; thread-safe, no I/O."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        registry = runtime.metrics.registry
        self.taken = Counter(
            "harken_stream_events", "Events handed to each stream.", ["stream"], registry=registry
        )
        self.dropped = Counter(
            "harken_stream_dropped",
            "Events a stream's full mailbox made Harken drop.",
            ["stream"],
            registry=registry,
        )
        self.errors = Counter(
            "harken_stream_errors", "Events a stream failed on.", ["stream"], registry=registry
        )
        self.runners: list[StreamRunner] = []
        self._replies_to: list[StreamRunner] = []
        self._by_input: dict[str, list[StreamRunner]] = {}
        """Input name -> the streams subscribed to it, built on first use."""
        self.replies = False
        """Whether any stream asked for the bot's own messages."""
        self.pending: dict[str, Future[list[Event]]] = {}
        """Commands streams run (`ctx.run`) by event id, waiting for their answers."""
        self._pending_lock = threading.Lock()
        self.stopping = False

    def add(self, stream: Stream, options: Any, subscription: Subscription, mailbox: int) -> None:
        runner = StreamRunner(stream, options, subscription, mailbox, self)
        self.runners.append(runner)
        if subscription.replies:
            self._replies_to.append(runner)
        self.replies = bool(self._replies_to)

    def hears(self, input_name: str) -> bool:
        """Whether a stream wants the messages of `input_name` that are not for the bot."""
        return bool(self._subscribed(input_name, self.runners))

    def publish(self, event: Event) -> bool:
        """A person's message (router): hand it to the streams it matches. True if only
        streams want it (a message not addressed to the bot: `meta["heard"]`)."""
        name = event.input
        if name != STREAM_INPUT:
            runners = self._by_input.get(name)
            if runners is None:
                runners = self._by_input[name] = self._subscribed(name, self.runners)
            if runners:
                self._hand_out(event, runners)
        return HEARD in event.meta

    @staticmethod
    def _subscribed(name: str, runners: list[StreamRunner]) -> list[StreamRunner]:
        return [r for r in runners if not r.subscription.inputs or name in r.subscription.inputs]

    def publish_replies(self, events: tuple[Event, ...] | list[Event]) -> None:
        """The bot's own messages, for the streams that asked for them."""
        for event in events:
            if event.input != STREAM_INPUT:
                self._hand_out(event, self._replies_to)

    @staticmethod
    def _hand_out(event: Event, runners: list[StreamRunner]) -> None:
        via = event.meta.get("via")
        for runner in runners:
            if via and runner.name in via:
                continue  # it, or a stream downstream of it, made this event
            if runner.plain or runner.subscription.matches(event):
                runner.offer(event)

    # -- commands run by streams -------------------------------------------------------

    def expect_answer(self, event_id: str) -> Future[list[Event]]:
        future: Future[list[Event]] = Future()
        with self._pending_lock:
            self.pending[event_id] = future
        return future

    def forget_answer(self, event_id: str) -> None:
        with self._pending_lock:
            self.pending.pop(event_id, None)

    def answered(self, event_id: str, replies: tuple[Event, ...]) -> bool:
        """Give an answer to the stream waiting for it; False if none waits."""
        with self._pending_lock:
            future = self.pending.pop(event_id, None)
        if future is None:
            return False
        future.set_result(list(replies))
        return True

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        """Start an actor per stream (before the inputs, so none misses an event)."""
        for runner in self.runners:
            runner.actor = StreamActor(runner, self.runtime)
            runner.actor.start()

    def begin(self) -> None:
        """The bot is up (the scheduler too): let each stream run its `on_start`."""
        for runner in self.runners:
            if runner.actor is not None:
                runner.actor.begin()

    def stop(self) -> None:
        """Stop the streams: the event each is handling may finish; the rest are dropped."""
        self.stopping = True
        for runner in self.runners:
            if runner.actor is not None:
                runner.actor.stop()
        for runner in self.runners:
            actor, runner.actor = runner.actor, None
            if actor is not None and not actor.join(STOP_SECONDS):
                logger.warning(
                    "stream %s did not finish within %.0f s; left behind",
                    runner.name,
                    STOP_SECONDS,
                )
        with self._pending_lock:
            waiting, self.pending = list(self.pending.values()), {}
        for future in waiting:
            future.cancel()


class StreamActor:
    """Runs one stream's function on a thread of its own, one event at a time.

    An actor in all but library: it alone runs the stream's code and holds its state,
    and takes its events from its mailbox in order. Not a pykka actor, whose inbox
    wakes the thread for every message: this one takes everything waiting at each
    wake-up and lingers `LINGER_SECONDS` first, so a busy stream wakes a few hundred
    times a second rather than once per event, and steals the interpreter from the
    reply path that much less often (BENCHMARKS.md, streams).
    """

    def __init__(self, runner: StreamRunner, runtime: Runtime) -> None:
        self.runner = runner
        self.runtime = runtime
        self.on_event, self.on_start_hook = runner.stream.make_handler()
        self.ctx: BotStreamContext | None = None
        """Made on the actor's thread once the scheduler is up (`begin`)."""
        self._begin = False
        self._stop = False
        # Daemon: a stream stuck in its own code must not keep Harken up.
        self.thread = threading.Thread(target=self._loop, name=f"stream:{runner.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def begin(self) -> None:
        self._begin = True
        self.runner.wake.set()

    def stop(self) -> None:
        self._stop = True
        self.runner.wake.set()

    def join(self, timeout: float) -> bool:
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _loop(self) -> None:
        runner = self.runner
        while True:
            runner.wake.wait()
            if not self._stop:
                time.sleep(LINGER_SECONDS)  # let a burst gather: one wake-up for it all
            runner.wake.clear()  # before taking: a later hand-over wakes it again
            waiting = runner.waiting
            count = len(waiting)
            runner.busy += count  # before taking, so the mailbox never looks emptier
            batch = [waiting.popleft() for _ in range(count)]
            if self._stop:
                if batch:
                    logger.warning(
                        "stream %s stopped with %d event(s) not handled", runner.name, len(batch)
                    )
                return
            ctx = self.ctx
            if ctx is None or ctx.stale():
                ctx = self.ctx = BotStreamContext(runner, self.runtime)
            if self._begin:
                self._begin = False
                if self.on_start_hook is not None:
                    ctx.handling(None)
                    self._guarded(self.on_start_hook, ctx, None)
            if batch:
                runner.taken.inc(len(batch))
                self._handle(ctx, batch)

    def _handle(self, ctx: BotStreamContext, batch: list[Event]) -> None:
        """Run the stream on each event in order; what it raises is logged and counted."""
        runner, on_event = self.runner, self.on_event
        for event in batch:
            if not self._stop:
                ctx.handling(event)
                try:
                    on_event(ctx, event)
                except Exception:
                    self._failed(event)
            runner.busy -= 1

    def _guarded(self, call: Any, ctx: BotStreamContext, event: Event | None) -> None:
        try:
            call(ctx)
        except Exception:
            self._failed(event)

    def _failed(self, event: Event | None) -> None:
        self.runner.errors.inc()
        error_id = new_error_id()
        what = f"event {event.id} from {event.input}" if event is not None else "its start"
        logger.exception("stream %s failed on %s (error id %s)", self.runner.name, what, error_id)


class StreamInput(InputActor):
    """The input `stream`: answers to the commands streams run come back here."""

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        super().__init__(settings, runtime, router)
        self.hub = runtime.streams

    def answered(self, message: Answered) -> None:
        if self.hub is not None and self.hub.answered(message.event_id, message.replies):
            return
        for reply in message.replies:
            self.send(reply)

    def send(self, event: Event) -> None:
        # Nobody waits for it: the answer to a scheduled command, a late outcome.
        level = logging.WARNING if event.type.value == "error" else logging.INFO
        logger.log(level, "stream %s was told: %s", event.to, event.data)
