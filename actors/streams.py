"""Streams at run time: the hub that hands events out, one actor per stream, and the
`stream` input that takes the answers to what streams run.

The router (every message in) and the reply path (`Services.answer`, `deliver`,
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
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka
from prometheus_client import Counter

from actors.inputs.base import HEARD, InputActor
from actors.messages import Answered
from actors.runner import new_error_id
from actors.streams_context import BotStreamContext, via_of
from commands.streams import STREAM_INPUT, Stream, Subscription
from core.event import Event

if TYPE_CHECKING:
    from actors.services import Services
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)

__all__ = ["StreamActor", "StreamHub", "StreamInput", "StreamRunner"]

WARN_EVERY_SECONDS = 60.0
"""A stream that drops events is warned of at most this often (each drop is counted)."""
STOP_SECONDS = 5.0
"""On stop, how long a stream's event in progress may take to finish."""


class _Handle(NamedTuple):
    """Hub -> stream actor: one event to handle."""

    event: Event


class _Begin(NamedTuple):
    """Hub -> stream actor, once the bot is up: run the stream's `on_start`."""


class StreamRunner:
    """One stream as the hub sees it: its filter, its actor and its mailbox count."""

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
        self.ref: pykka.ActorRef[Any] | None = None
        self._lock = threading.Lock()
        self._in_flight = 0
        self._dropped_since_warning = 0
        self._warned_at = -WARN_EVERY_SECONDS
        self._dropped = hub.dropped.labels(self.name)
        self._taken = hub.taken.labels(self.name)
        self.errors = hub.errors.labels(self.name)

    def offer(self, event: Event) -> None:
        """Tell the actor `event`, unless its mailbox is full (then drop and count it)."""
        with self._lock:
            full = self._in_flight >= self.mailbox
            if not full:
                self._in_flight += 1
        if not full:
            ref = self.ref
            if ref is not None:
                try:
                    ref.tell(_Handle(event))
                    self._taken.inc()
                    return
                except pykka.ActorDeadError:
                    pass
            self.done()
        self._drop()

    def done(self) -> None:
        """An event told to the actor is handled (or will never be)."""
        with self._lock:
            self._in_flight -= 1

    def _drop(self) -> None:
        self._dropped.inc()
        now = time.monotonic()
        with self._lock:
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

    def __init__(self, services: Services) -> None:
        self.services = services
        registry = services.metrics.registry
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
        return any(
            not r.subscription.inputs or input_name in r.subscription.inputs for r in self.runners
        )

    def publish(self, event: Event) -> bool:
        """A person's message (router): hand it to the streams it matches. True if only
        streams want it (a message not addressed to the bot: `meta["heard"]`)."""
        if event.input != STREAM_INPUT:
            self._hand_out(event, self.runners)
        return HEARD in event.meta

    def publish_replies(self, events: tuple[Event, ...] | list[Event]) -> None:
        """The bot's own messages, for the streams that asked for them."""
        for event in events:
            if event.input != STREAM_INPUT:
                self._hand_out(event, self._replies_to)

    @staticmethod
    def _hand_out(event: Event, runners: list[StreamRunner]) -> None:
        via = event.meta.get("via") if event.meta else None
        for runner in runners:
            if via and runner.name in via:
                continue  # it, or a stream downstream of it, made this event
            if runner.subscription.matches(event):
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
            runner.ref = StreamActor.start(runner, self.services)

    def begin(self) -> None:
        """The bot is up (the scheduler too): let each stream run its `on_start`."""
        for runner in self.runners:
            if runner.ref is not None:
                runner.ref.tell(_Begin())

    def stop(self) -> None:
        """Stop the streams: the event each is handling may finish; the rest are dropped."""
        self.stopping = True
        for runner in self.runners:
            ref, runner.ref = runner.ref, None
            if ref is None:
                continue
            try:
                ref.stop(block=True, timeout=STOP_SECONDS)
            except pykka.Timeout:
                logger.warning(
                    "stream %s did not finish within %.0f s; left behind",
                    runner.name,
                    STOP_SECONDS,
                )
        with self._pending_lock:
            waiting, self.pending = list(self.pending.values()), {}
        for future in waiting:
            future.cancel()


class StreamActor(pykka.ThreadingActor):
    """Runs one stream's function, on a thread of its own, one event at a time."""

    use_daemon_thread = True  # a stream stuck in its own code must not keep Harken up

    def __init__(self, runner: StreamRunner, services: Services) -> None:
        super().__init__()
        self.runner = runner
        self.services = services
        self.on_event, self.on_start_hook = runner.stream.make_handler()
        self.skipped = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Handle):
            try:
                if self.runner.hub.stopping:
                    self.skipped += 1
                else:
                    self._run(lambda ctx: self.on_event(ctx, message.event), message.event)
            finally:
                self.runner.done()
        elif isinstance(message, _Begin) and self.on_start_hook is not None:
            hook = self.on_start_hook
            self._run(hook, None)
        return None

    def on_stop(self) -> None:
        if self.skipped:
            logger.warning(
                "stream %s stopped with %d event(s) not handled", self.runner.name, self.skipped
            )

    def _run(self, call: Any, event: Event | None) -> None:
        ctx = BotStreamContext(self.runner, self.services, via_of(event))
        try:
            call(ctx)
        except Exception:
            self.runner.errors.inc()
            error_id = new_error_id()
            what = f"event {event.id} from {event.input}" if event is not None else "its start"
            logger.exception(
                "stream %s failed on %s (error id %s)", self.runner.name, what, error_id
            )


class StreamInput(InputActor):
    """The input `stream`: answers to the commands streams run come back here."""

    def __init__(self, settings: InputSettings, services: Services, router: Handle) -> None:
        super().__init__(settings, services, router)
        self.hub = services.streams

    def answered(self, message: Answered) -> None:
        if self.hub is not None and self.hub.answered(message.event_id, message.replies):
            return
        for reply in message.replies:
            self.send(reply)

    def send(self, event: Event) -> None:
        # Nobody waits for it: the answer to a scheduled command, a late outcome.
        level = logging.WARNING if event.type.value == "error" else logging.INFO
        logger.log(level, "stream %s was told: %s", event.to, event.data)
