"""Streams at run time: the hub that hands events out, one actor per stream, and the
`stream` input that takes the answers to what streams run.

The router (every message in) and the reply path (`Runtime.answer`, `deliver`,
`send`: only for streams that asked for replies) call `StreamHub.publish`, which on
the caller's thread only appends the event to the hub's inbox if a stream subscribes
to its input. The streams' scheduler hands it out (`fan_out`: channel, person,
pattern, loop safety) to each stream's mailbox. Each `StreamRunner` counts the events
handed to it and not yet handled: past its mailbox bound a new event is dropped,
counted in `harken_stream_dropped_total{stream}` and warned of at most once a minute,
so a slow or failing stream never holds a reply or another stream up.

The streams run as background work (actors/stream_scheduler.py), holding back while
the `ReplyGate` here says a person's message is on its way to its answer. The
`StreamInput` (input
name `stream`) is where the answers to commands that streams run (`ctx.run`, scheduled
jobs) arrive: it hands them to the stream waiting for them, or logs them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from actors.inputs.base import HEARD, InputActor
from actors.messages import Answered
from actors.stream_scheduler import (
    SLICE_EVENTS,
    STOP_SECONDS,
    StreamActor,
    StreamScheduler,
    StreamWatch,
)
from commands.streams import STREAM_INPUT, Stream, Subscription
from core.event import Event

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)

__all__ = ["ReplyGate", "StreamHub", "StreamInput", "StreamRunner"]

WARN_EVERY_SECONDS = 60.0
"""A stream that drops events is warned of at most this often (each drop is counted)."""
INBOX_EVENTS = 10_000
"""Events published and waiting for the fan-out, at the least (StreamHub.inbox)."""
HOLD_SECONDS = 0.02
"""How long ready stream events may be held back while replies are in flight."""
POLL_SECONDS = 0.0002
"""While held back: how often the scheduler looks whether the replies are out."""
STALE_SECONDS = 1.0
"""A message routed this long ago and not answered no longer holds the streams back."""


class ReplyGate:
    """Whether a person's message is between the router and its answer.

    The router marks each message it gives to a conversation (`routed`), and
    `Runtime.answer` takes a mark back (`answered`): a deque, whose appends and pops
    need no lock. Answers without a mark (a scheduled command's) take nothing. A
    message never answered here (another process of a cluster answers it) leaves its
    mark: marks older than `STALE_SECONDS` are ignored, and the deque is bounded.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.marks: deque[float] = deque(maxlen=4096)

    def routed(self) -> None:
        self.marks.append(self.clock())

    def answered(self) -> None:
        with contextlib.suppress(IndexError):
            self.marks.popleft()

    def busy(self) -> bool:
        """A reply is in flight: a mark newer than `STALE_SECONDS`."""
        marks = self.marks
        try:
            return self.clock() - marks[-1] < STALE_SECONDS
        except IndexError:
            return False

    def hold(self, ready_since: float) -> None:
        """Wait while a reply is in flight, but not past `HOLD_SECONDS` after
        `ready_since` (when the events waiting were handed over)."""
        if not self.busy():
            return
        until = ready_since + HOLD_SECONDS
        while self.busy() and self.clock() < until:
            time.sleep(POLL_SECONDS)  # releases the interpreter to the reply path


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
        """Set by a hand-over the thread running this stream has not woken for yet (the
        scheduler's, shared by the streams it runs, or the stream's own); cleared by
        that thread before it takes what waits, so no event is left behind unannounced."""
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
            wake = self.wake
            if not wake.is_set():
                wake.set()
            return
        self.drop()

    def take(self) -> list[Event]:
        """What waits, for the thread running this stream (counted busy first, so the
        mailbox never looks emptier than it is)."""
        waiting = self.waiting
        count = len(waiting)
        self.busy += count
        return [waiting.popleft() for _ in range(count)]

    def drop(self) -> None:
        """Count (and at most once a minute warn of) an event this stream missed."""
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
        self.inbox: deque[tuple[Event, bool]] = deque()
        """Events published and not yet handed to the streams: (event, a reply of the
        bot's). One append per event on the reply path; the fan-out is the scheduler's."""
        self.inbox_bound = INBOX_EVENTS
        """Past this many waiting, an event is dropped (counted for each stream it was
        for); at least the streams' mailboxes together."""
        self.wake = threading.Event()
        """The scheduler's: set by a publish it has not woken for yet."""
        self.pending: dict[str, Future[list[Event]]] = {}
        """Commands streams run (`ctx.run`) by event id, waiting for their answers."""
        self._pending_lock = threading.Lock()
        self.stopping = False
        self.gate = ReplyGate()
        """People's messages between the router and their answers: streams hold back."""
        self.watch: StreamWatch | None = None

    def add(self, stream: Stream, options: Any, subscription: Subscription, mailbox: int) -> None:
        runner = StreamRunner(stream, options, subscription, mailbox, self)
        self.runners.append(runner)
        self.inbox_bound = max(INBOX_EVENTS, sum(r.mailbox for r in self.runners))
        if subscription.replies:
            self._replies_to.append(runner)
        self.replies = bool(self._replies_to)

    def hears(self, input_name: str) -> bool:
        """Whether a stream wants the messages of `input_name` that are not for the bot."""
        return bool(self._subscribed(input_name, self.runners))

    def publish(self, event: Event) -> bool:
        """A person's message (router): queue it for the streams if one subscribes to
        its input. True if only streams want it (not addressed to the bot:
        `meta["heard"]`)."""
        name = event.input
        if name != STREAM_INPUT:
            runners = self._by_input.get(name)
            if runners is None:
                runners = self._by_input[name] = self._subscribed(name, self.runners)
            if runners:
                self._queue(event, False)
        if HEARD in event.meta:
            return True
        self.gate.routed()  # on its way to an answer: the streams hold back
        return False

    @staticmethod
    def _subscribed(name: str, runners: list[StreamRunner]) -> list[StreamRunner]:
        return [r for r in runners if not r.subscription.inputs or name in r.subscription.inputs]

    def publish_replies(self, events: tuple[Event, ...] | list[Event]) -> None:
        """The bot's own messages, for the streams that asked for them."""
        for event in events:
            if event.input != STREAM_INPUT:
                self._queue(event, True)

    def _queue(self, event: Event, reply: bool) -> None:
        """One append on the caller's thread (the router's, a reply's); the streams'
        scheduler hands it to each stream (`fan_out`), as background work."""
        inbox = self.inbox
        if len(inbox) < self.inbox_bound:
            inbox.append((event, reply))
            wake = self.wake
            if not wake.is_set():
                wake.set()
            return
        runners = self._replies_to if reply else self._by_input.get(event.input, [])
        for runner in runners:
            runner.drop()

    def fan_out(self, gate: ReplyGate | None, ready_since: float) -> None:
        """Hand what waits in the inbox to the streams it matches, `SLICE_EVENTS` at a
        time, holding back before each slice while a reply is in flight (`gate`).
        Called by the scheduler's thread, one at a time."""
        inbox, by_input, replies_to = self.inbox, self._by_input, self._replies_to
        hand_out = self._hand_out
        while inbox:
            if gate is not None:
                gate.hold(ready_since)
            for _ in range(min(SLICE_EVENTS, len(inbox))):
                event, reply = inbox.popleft()
                runners = replies_to if reply else by_input.get(event.input)
                if runners:
                    hand_out(event, runners)

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
        """Start the streams' scheduler (before the inputs, so none misses an event)."""
        actors = []
        for runner in self.runners:
            runner.actor = StreamActor(runner, self.runtime)
            actors.append(runner.actor)
        if actors:
            self.watch = StreamWatch(self, StreamScheduler(self, actors, self.gate))
            self.watch.start()

    def begin(self) -> None:
        """The bot is up (the scheduler too): let each stream run its `on_start`."""
        for runner in self.runners:
            if runner.actor is not None:
                runner.actor.begun = True
                runner.wake.set()

    def stop(self) -> None:
        """Stop the streams: the event each is handling may finish; the rest are dropped."""
        self.stopping = True
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.stop()
        actors = [r.actor for r in self.runners if r.actor is not None]
        for actor in actors:
            actor.stop()
        threads = [] if watch is None else watch.threads()
        deadline = time.monotonic() + STOP_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for actor in actors:
            actor.runner.actor = None
            own = actor.own
            if own is not None:
                own.join(max(0.0, deadline - time.monotonic()))
            if own is not None and own.is_alive():
                logger.warning(
                    "stream %s did not finish within %.0f s; left behind",
                    actor.runner.name,
                    STOP_SECONDS,
                )
        owned = {a.own for a in actors}
        stuck = [t.name for t in threads if t.is_alive() and t not in owned]
        if stuck:
            logger.warning("stream scheduler %s did not finish; left behind", ", ".join(stuck))
        with self._pending_lock:
            waiting, self.pending = list(self.pending.values()), {}
        for future in waiting:
            future.cancel()
        if self.inbox:
            logger.warning("streams stopped with %d event(s) not handed out", len(self.inbox))


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
