"""What every input actor shares, and what the inputs with a connection loop share.

An input actor owns one chat connection: it turns what arrives into `Event`s for the
router (`Inbound`) and sends what it is told (`Outbound`, now; `Answered`, the complete
answer to one of its events). A new input is a subclass registered under the
`harken.inputs` entry point group; its options are a dataclass (`options_class`, see
`config.inputs`) from which the config loader checks `[inputs.<name>]`. Inputs whose
connection runs on an asyncio loop of its own build on `RepliesInput` (replies handed
to the loop on the sender's thread), and XMPP and IRC on `RoomsInput` and `LoopClient`
(room leases in a cluster; the loop thread, the reconnect loop and the offline outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from actors.messages import Answered, Inbound, Outbound
from actors.metrics import CONNECTED, DISCONNECTED, DOWN, UP
from actors.supervision import SupervisedActor
from core.event import Event

if TYPE_CHECKING:
    from actors.claims import RoomLeases
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings


HEARD = "heard"
"""`meta` key of a message not addressed to the bot, handed over only because a stream
wants every message of its input (`InputActor.hears_all`): the router gives it to the
streams and to no conversation."""


class InputActor(SupervisedActor):
    """Base class: subclasses implement `send`, and may implement `processed`.

    A subclass may also override the class method `preflight`, which `BotSystem.start`
    calls before any actor starts: raise `StartupError` there (a missing token, a
    credential the server refuses) and Harken stops with that one line and exit 2.
    """

    options_class: ClassVar[type[Any] | None] = None
    """The dataclass declaring this input's options and secrets (`config.inputs`), or
    None for an input without any. The loader reads it through the `harken.inputs` entry
    point, which imports the input's module: an input whose module is heavy also
    registers the dataclass alone under `harken.input_options`."""

    @classmethod
    def preflight(cls, settings: InputSettings) -> None:
        """Check the settings (and, if need be, the credentials) before start-up."""

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        super().__init__()
        self.settings = settings
        self.runtime = runtime
        self.router = router

    @property
    def name(self) -> str:
        return self.settings.name

    def on_start(self) -> None:
        # An input with a connection reports `connected`/`disconnected` itself, through
        # `report_state`; one without (the shell) is up while its actor runs.
        self.report_state(UP)

    def on_stop(self) -> None:
        super().on_stop()  # `release`: the subclass closes its connection
        self.report_state(DOWN)

    def report_state(self, state: str) -> None:
        """Say how this input's connection is: `up`, `connected`, `disconnected` or `down`
        (safe from any thread). `/healthz` and `status` show it."""
        self.runtime.metrics.set_input_state(self.name, state)

    def report_connected(self, connected: bool) -> None:
        self.report_state(CONNECTED if connected else DISCONNECTED)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Outbound):
            self.send(message.event)
        elif isinstance(message, Answered):
            self.answered(message)
        return None

    def answered(self, message: Answered) -> None:
        for reply in message.replies:
            self.send(reply)
        self.processed(message.event_id)

    def submit(self, event: Event) -> None:
        """Hand a person's message to the bot (safe from any thread)."""
        self.router.tell(Inbound(event))

    def hears_all(self) -> bool:
        """Whether a stream wants this input's messages that are not for the bot too:
        then hand them over with `meta[HEARD]` (the same for the bot's whole run)."""
        return self.runtime.hears(self.name)

    def send(self, event: Event) -> None:
        raise NotImplementedError

    def processed(self, event_id: str) -> None:
        """Every reply to `event_id` is out; most inputs need not care."""


class RepliesInbox:
    """An input actor's inbox that hands replies over on the sender's thread.

    For inputs whose connection runs on a thread of its own (an asyncio loop), where
    waking the actor's thread only to wake the loop's would be a hop for nothing: it
    gives `Answered` and `Outbound` to `direct` (thread-safe, never blocking: a hand-off
    to the loop) and queues everything else for the actor's thread, as does everything
    until `direct` is set.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.direct: Callable[[tuple[Event, ...]], None] | None = None

    def put(self, envelope: Any, block: bool = True, timeout: float | None = None) -> None:
        direct = self.direct
        if direct is not None and envelope.reply_to is None:
            message = envelope.message
            if isinstance(message, Answered):
                if message.replies:
                    direct(message.replies)
                return
            if isinstance(message, Outbound):
                direct((message.event,))
                return
        self._queue.put(envelope)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._queue.get(block, timeout)

    def empty(self) -> bool:
        return self._queue.empty()


class Outstanding:
    """Event ids sent to the bot whose replies are not all out yet (thread-safe)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._changed = threading.Condition()

    def add(self, event_id: str) -> None:
        with self._changed:
            self._ids.add(event_id)

    def done(self, event_id: str) -> None:
        with self._changed:
            self._ids.discard(event_id)
            if not self._ids:
                self._changed.notify_all()

    def __len__(self) -> int:
        return len(self._ids)

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until nothing is outstanding; False if `timeout` ran out first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._ids, timeout)


STABLE_SESSION = 30.0
"""A session that lasted this long (seconds), or that carried a message, worked: when it
drops, the backoff starts over. A silent one that dropped sooner counts as a failed
attempt, so a server that lets the bot in and throws it out at once gets backoff, not a
reconnect storm."""
JITTER = 0.8
"""Each backoff wait is drawn between this share of the current delay and all of it."""


class Backoff:
    """Waits between attempts: `first` doubling up to `most`, each drawn between 80 and
    100% of the current delay, so a wait never exceeds `most`."""

    def __init__(self, first: float, most: float) -> None:
        self.first, self.most = first, most
        self._delay = first

    def reset(self) -> None:
        self._delay = self.first

    def next_wait(self) -> float:
        """The wait before the next attempt; the delay after it doubles."""
        wait = self._delay * random.uniform(JITTER, 1.0)
        self._delay = min(self.most, self._delay * 2)
        return wait


async def wait_either(*events: asyncio.Event, timeout: float | None) -> None:
    """Wait until one of `events` is set, or `timeout` (seconds) ran out."""
    waits = {asyncio.ensure_future(event.wait()) for event in events}
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what still runs on a loop of the input's own, let it unwind, close it."""
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    with contextlib.suppress(Exception):
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


class Addressed(Protocol):
    """What a connection sends: one item to someone (`to`, for log lines)."""

    @property
    def to(self) -> str: ...


class ClientOptions(Protocol):
    @property
    def server(self) -> str: ...
    @property
    def reconnect_delay(self) -> float: ...
    @property
    def reconnect_max_delay(self) -> float: ...
    @property
    def queue_limit(self) -> int: ...


Item = TypeVar("Item", bound=Addressed)


class LoopClient(Generic[Item]):
    """A connection kept up on an asyncio loop that runs on a thread the client owns.

    Other threads only call `start`, `deliver` and `stop`; `deliver` hands items over with
    `call_soon_threadsafe`, which wakes the loop at once (a write from another thread
    would wait for the next read), and one wake-up takes every item handed over until it
    runs. `_keep_connected` runs one session after another (`_attempt`, the subclass's):
    a server that cannot be reached is retried with `Backoff`; a session that worked is
    retried at once (`reconnect_at_once`) or after the first delay; a credential the
    server refuses (`refused`) ends the retries. Items without a session wait in a
    bounded outbox (`queue_limit`), the oldest dropped first.
    """

    label: ClassVar[str]
    """The input's name in log lines ("XMPP")."""
    unit: ClassVar[str]
    """What an item is called in log lines ("message")."""
    no_session: ClassVar[str] = "no session"
    """Why an attempt failed, when nothing more precise is known."""
    reconnect_at_once: ClassVar[bool] = False
    log: ClassVar[logging.Logger]

    def __init__(
        self,
        options: ClientOptions,
        who: str,
        thread_name: str,
        on_connected: Callable[[bool], None],
    ) -> None:
        self.options = options
        self.who = who
        """Who the bot connects as, for log lines."""
        self._thread_name = thread_name
        self._on_connected = on_connected
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop_ready = threading.Event()
        self._handover: list[Item] = []
        self._handover_lock = threading.Lock()
        self._handover_scheduled = False
        self._closed = False
        # Everything below belongs to the loop thread.
        self._outbox: deque[Item] = deque()
        self._online = False
        self._stop_requested: asyncio.Event | None = None
        self._given_up = ""
        self._last_error = ""
        self.carried_message = False
        """Whether the current session received or sent a message."""

    # -- any thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
        self._thread.start()
        self._loop_ready.wait()

    def deliver(self, items: Iterable[Item]) -> None:
        """Send these now, or once a session is up (thread-safe, never blocks)."""
        batch = list(items)
        if not batch:
            return
        # Items handed over before the loop exists wait here; it takes them when it starts.
        with self._handover_lock:
            if self._closed:
                self._dropped_stopped(len(batch))
                return
            self._handover.extend(batch)
            loop = self._loop
            if self._handover_scheduled or loop is None:
                return
            self._handover_scheduled = True
        try:
            loop.call_soon_threadsafe(self._take_handover)
        except RuntimeError:  # the loop closed just now: Harken is stopping
            self._dropped_stopped(len(batch))

    def _dropped_stopped(self, count: int) -> None:
        self.log.warning("%s input is stopped; %d %s(s) dropped", self.label, count, self.unit)

    def stop(self, timeout: float = 10.0) -> None:
        """Leave the server politely and end the loop thread (thread-safe)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._request_stop)
        thread.join(timeout)
        if thread.is_alive():
            self.log.warning("%s connection thread did not stop within %.0f s", self.label, timeout)

    # -- the loop thread -------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        with self._handover_lock:
            self._loop = loop
            if self._handover:
                self._handover_scheduled = True
                loop.call_soon(self._take_handover)
        try:
            self._stop_requested = asyncio.Event()
            self._prepare(loop)
        finally:
            self._loop_ready.set()
        try:
            loop.run_until_complete(self._main())
        except Exception:
            self.log.exception("%s connection loop failed", self.label)
        finally:
            with self._handover_lock:
                self._closed = True
                left = len(self._outbox) + len(self._handover)
            if left:
                self.log.warning(
                    "%s: stopping with %d unsent %s(s); they are dropped",
                    self.label,
                    left,
                    self.unit,
                )
            close_loop(loop)

    def _prepare(self, loop: asyncio.AbstractEventLoop) -> None:
        """Set up what the loop needs, before `start` returns."""

    async def _main(self) -> None:
        await self._keep_connected()

    def _request_stop(self) -> None:
        assert self._stop_requested is not None
        self._stop_requested.set()

    async def _attempt(self, stop: asyncio.Event) -> float | None:
        """Connect, and wait until the session ends (or `stop`); how long it lasted
        (seconds), or None if there was no session."""
        raise NotImplementedError

    async def _keep_connected(self) -> None:
        stop = self._stop_requested
        assert stop is not None
        options, label = self.options, self.label
        backoff = Backoff(options.reconnect_delay, options.reconnect_max_delay)
        first = True
        while not stop.is_set():
            self._last_error = ""
            self.carried_message = False
            log = self.log.info if first else self.log.debug
            log("%s: connecting to %s as %s", label, options.server, self.who)
            first = False
            lasted = await self._attempt(stop)
            if stop.is_set():
                break
            if self._given_up:
                self.log.error(
                    "%s: %s. Not retrying; the %s input stays offline until Harken restarts.",
                    label,
                    self._given_up,
                    label,
                )
                await stop.wait()
                break
            why = self._last_error or "closed"
            if lasted is None:
                wait = backoff.next_wait()
                self.log.warning(
                    "%s: cannot connect to %s as %s (%s); next attempt in %.1f s",
                    label,
                    options.server,
                    self.who,
                    self._last_error or self.no_session,
                    wait,
                )
            elif lasted >= STABLE_SESSION or self.carried_message:
                backoff.reset()  # it worked: back off from the start if need be
                if self.reconnect_at_once:
                    self.log.warning(
                        "%s: connection to %s lost after %.0f s (%s); reconnecting",
                        label,
                        options.server,
                        lasted,
                        why,
                    )
                    continue
                wait = backoff.next_wait()
                self.log.warning(
                    "%s: connection to %s lost after %.0f s (%s); reconnecting in %.1f s",
                    label,
                    options.server,
                    lasted,
                    why,
                    wait,
                )
            else:
                wait = backoff.next_wait()
                self.log.warning(
                    "%s: connection to %s lost after %.0f s (%s), before the session "
                    "carried a message; next attempt in %.1f s",
                    label,
                    options.server,
                    lasted,
                    why,
                    wait,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    def refused(self, why: str) -> None:
        """The server refused a credential: log it once, stop retrying (loop thread)."""
        self._given_up = why
        self._last_error = why

    def _set_online(self, online: bool) -> None:
        if online != self._online:
            self._online = online
            self._on_connected(online)

    def _take_handover(self) -> None:
        with self._handover_lock:
            items, self._handover = self._handover, []
            self._handover_scheduled = False
        self._take(items)

    def _take(self, items: list[Item]) -> None:
        """Send what other threads handed over (loop thread)."""
        raise NotImplementedError

    def _queue(self, items: Sequence[Item], *, bounded: bool = True) -> None:
        """Keep items in the outbox; `bounded` (offline): at most `queue_limit`, the
        oldest dropped (and logged) to make room."""
        label, unit = self.label, self.unit
        if self._given_up:
            self.log.warning(
                "%s: not connected (%s); %d %s(s) to %s dropped",
                label,
                self._given_up,
                len(items),
                unit,
                ", ".join(sorted({item.to for item in items})),
            )
            return
        limit = self.options.queue_limit
        for item in items:
            if bounded and len(self._outbox) >= limit:
                if not self._outbox:
                    self.log.warning(
                        "%s: offline and queue_limit is 0; %s to %s dropped", label, unit, item.to
                    )
                    continue
                dropped = self._outbox.popleft()
                self.log.warning(
                    "%s: offline and %d %ss are already waiting (queue_limit); dropped the "
                    "oldest, to %s",
                    label,
                    limit,
                    unit,
                    dropped.to,
                )
            self._outbox.append(item)


class RepliesInput(InputActor):
    """An input whose connection runs on a loop of its own: its inbox (`RepliesInbox`)
    gives replies to `_deliver` on the sender's thread, without waking the actor's."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        return RepliesInbox()

    actor_inbox: RepliesInbox

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        super().__init__(settings, runtime, router)
        self.actor_inbox.direct = self._deliver

    def send(self, event: Event) -> None:
        self._deliver((event,))

    def answered(self, message: Answered) -> None:
        if message.replies:
            self._deliver(message.replies)

    def _deliver(self, events: tuple[Event, ...]) -> None:
        """Hand these replies to the connection (any thread; thread-safe, never blocks)."""
        raise NotImplementedError


class RoomsInput(RepliesInput):
    """The XMPP and IRC inputs: a `LoopClient` (`client`), and in a cluster the leases
    that say which process answers in each room (`leases`, see `actors.claims`)."""

    client: LoopClient[Any]

    def __init__(
        self, settings: InputSettings, runtime: Runtime, router: Handle, leased: Iterable[str]
    ) -> None:
        super().__init__(settings, runtime, router)
        self.bot_name = runtime.settings.bot.name
        self.leases = _room_leases(self.name, runtime, leased)
        self._hear_all = self.hears_all()

    def on_start(self) -> None:
        self.report_connected(False)
        if self.leases is not None:
            self.leases.start()
        self.client.start()

    def release(self) -> None:
        # On a crash too: the replacement opens a connection of its own. Rooms first:
        # another process answers in them while this one closes.
        if self.leases is not None:
            self.leases.stop()
        self.client.stop()

    def _connected(self, connected: bool) -> None:
        self.report_connected(connected)
        if self.leases is not None:
            self.leases.set_connected(connected)

    def _owns(self, room: str) -> bool:
        """Whether this process answers in `room` (always, without a cluster)."""
        return self.leases is None or self.leases.owns(f"{self.name}:{room}")


def _room_leases(name: str, runtime: Runtime, rooms: Iterable[str]) -> RoomLeases | None:
    """The room leases of a cluster's process (None without a cluster)."""
    settings = runtime.settings
    if not settings.cluster.enabled:
        return None
    from actors.claims import RoomLeases, claims_url

    url = claims_url(settings)
    if url is None:
        return None
    return RoomLeases(
        url,
        settings.cluster.process_name(),
        [f"{name}:{room}" for room in rooms],
        lease_seconds=settings.cluster.lease_seconds,
        renew_seconds=settings.cluster.renew_seconds,
        label=name,
    )
