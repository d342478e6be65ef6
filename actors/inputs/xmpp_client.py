"""The XMPP connection behind the XMPP input: slixmpp on an asyncio loop of its own.

Everything slixmpp does happens on that loop; other threads hand work to it with
`call_soon_threadsafe`, which also wakes it (a reply written from another thread would
wait for the next stanza). Connecting is our own loop, for our backoff and log lines:
an unreachable server is retried with jittered backoff, a dropped stable session is
reconnected at once, a refused login stops the retries (they would only lock the
account). Messages without a session wait in a bounded outbox, oldest dropped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from slixmpp import ClientXMPP
from slixmpp.exceptions import IqTimeout, PresenceError
from slixmpp.jid import JID
from slixmpp.stanza import Message
from slixmpp.xmlstream.xmlstream import NotConnectedError

from actors.inputs.xmpp_login import STOP_WAIT, close_loop, new_client, refused, untrusted
from actors.inputs.xmpp_options import XmppOptions
from actors.inputs.xmpp_stanza import Outgoing
from core.event import new_id

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
"""Seconds for TCP connect plus login; a black-holed server must not stall the loop."""
JOIN_TIMEOUT = 15.0
"""Seconds to wait for a room to confirm a join."""
STABLE_SESSION = 30.0
"""A session that lasted this long (seconds), or that carried a message, is reconnected
at once when it drops; a silent one that dropped sooner counts as a failed attempt, so a
server that accepts and then kicks the bot straight away gets backoff, not a reconnect
storm."""
JITTER = 0.8
"""Each backoff wait is drawn between this share of the current delay and all of it."""


MessageHandler = Callable[[Message], None]
_BODY = "{jabber:client}body"


class XmppClient:
    """One XMPP account's connection, kept up for as long as the client runs."""

    def __init__(
        self,
        options: XmppOptions,
        on_message: MessageHandler,
        on_connected: Callable[[bool], None] = lambda connected: None,
    ) -> None:
        """`on_message` gets every message with a body; `on_connected(True)` is called
        when a session is up (rooms joined), `on_connected(False)` when it ends. Both
        are called on the loop thread."""
        self.options = options
        self._on_message = on_message
        self._on_connected = on_connected
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop_ready = threading.Event()
        self._handover: list[tuple[Outgoing, ...]] = []
        self._handover_lock = threading.Lock()
        self._handover_scheduled = False
        self._closed = False
        self._xmpp: ClientXMPP | None = None
        # Everything below belongs to the loop thread.
        self._outbox: deque[Outgoing] = deque()
        self._online = False
        self._stop_requested: asyncio.Event | None = None
        self._session_over: asyncio.Event | None = None
        self._had_session = False
        self._carried_message = False
        """Whether the current session received or sent a message with a body."""
        self._auth_condition = ""
        self._auth_given_up = False
        self._last_error = ""
        self._pinger: asyncio.Future[None] | None = None
        self._session_up: asyncio.Event | None = None
        self._session_began = 0.0

    # -- any thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"xmpp:{self.options.bare_jid}", daemon=True
        )
        self._thread.start()
        self._loop_ready.wait()

    def deliver(self, messages: Iterable[Outgoing]) -> None:
        """Send these messages now, or once a session is up (thread-safe, never blocks)."""
        batch = tuple(messages)
        # One wake-up of the loop carries every batch handed over until it runs: under
        # load, answers arrive faster than the loop thread gets the CPU. Batches handed
        # over before the loop exists wait here and are taken when it starts.
        with self._handover_lock:
            if self._closed:
                logger.warning("XMPP input is stopped; %d message(s) dropped", len(batch))
                return
            self._handover.append(batch)
            loop = self._loop
            if self._handover_scheduled or loop is None:
                return
            self._handover_scheduled = True
        try:
            loop.call_soon_threadsafe(self._take_handover)
        except RuntimeError:  # the loop closed just now: Harken is stopping
            logger.warning("XMPP input is stopped; %d message(s) dropped", len(batch))

    def stop(self, timeout: float = 10.0) -> None:
        """Leave the server politely and end the loop thread (thread-safe)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._request_stop)
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("XMPP connection thread did not stop within %.0f s", timeout)

    @property
    def muc(self) -> Any:
        """slixmpp's multi-user chat plugin (use on the loop thread only)."""
        return self._xmpp.plugin["xep_0045"] if self._xmpp is not None else None

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
            self._xmpp = self._make_client(loop)
            self._stop_requested = asyncio.Event()
        finally:
            self._loop_ready.set()
        try:
            loop.run_until_complete(self._keep_connected())
        except Exception:
            logger.exception("XMPP connection loop failed")
        finally:
            with self._handover_lock:
                self._closed = True
                left = len(self._outbox) + sum(len(batch) for batch in self._handover)
            if left:
                logger.warning("XMPP: stopping with %d unsent message(s); they are dropped", left)
            close_loop(loop)

    def _make_client(self, loop: asyncio.AbstractEventLoop) -> ClientXMPP:
        xmpp = new_client(self.options, loop)
        xmpp.register_plugin("xep_0030")  # service discovery, which MUC relies on
        xmpp.register_plugin("xep_0045")  # multi-user chat
        xmpp.register_plugin("xep_0199")  # ping, to notice a dead connection
        xmpp.add_event_handler("session_start", self._on_session_start)
        xmpp.add_event_handler("disconnected", self._on_disconnected)
        xmpp.add_event_handler("connection_failed", self._on_connection_failed)
        xmpp.add_event_handler("failed_auth", self._on_failed_auth)
        xmpp.add_event_handler("failed_all_auth", self._on_failed_all_auth)
        xmpp.add_event_handler("stream_error", self._on_stream_error)
        xmpp.add_event_handler("ssl_invalid_chain", self._on_untrusted_certificate)
        xmpp.add_event_handler("message", self._on_message_event)
        xmpp.add_event_handler("message_error", self._on_message_error)
        xmpp.add_filter("in", self._direct_chat_first)
        return xmpp

    def _request_stop(self) -> None:
        assert self._stop_requested is not None
        self._stop_requested.set()

    async def _keep_connected(self) -> None:
        assert self._xmpp is not None
        assert self._stop_requested is not None
        xmpp, stop = self._xmpp, self._stop_requested
        options = self.options
        delay = options.reconnect_delay
        first = True
        while not stop.is_set():
            self._session_over = asyncio.Event()
            self._had_session = False
            self._carried_message = False
            self._last_error = ""
            self._auth_condition = ""
            log = logger.info if first else logger.debug
            log("XMPP: connecting to %s as %s", options.server, options.jid)
            first = False
            if await self._open_connection(xmpp):
                await self._wait_for_session(xmpp, stop)
            if stop.is_set():
                break
            if self._auth_given_up:
                await stop.wait()
                break
            # Never longer than the delay, which never exceeds reconnect_max_delay.
            wait = delay * random.uniform(JITTER, 1.0)
            if self._had_session:
                lasted = time.monotonic() - self._session_began
                why = self._last_error or "closed"
                if lasted >= STABLE_SESSION or self._carried_message:
                    # It worked: try again at once, and back off from the start if need be.
                    delay = options.reconnect_delay
                    logger.warning(
                        "XMPP: connection to %s lost after %.0f s (%s); reconnecting",
                        options.server,
                        lasted,
                        why,
                    )
                    continue
                logger.warning(
                    "XMPP: connection to %s lost after %.0f s (%s), before the session "
                    "carried a message; next attempt in %.1f s",
                    options.server,
                    lasted,
                    why,
                    wait,
                )
            else:
                logger.warning(
                    "XMPP: cannot connect to %s as %s (%s); next attempt in %.1f s",
                    options.server,
                    options.jid,
                    self._last_error or "no session",
                    wait,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            delay = min(options.reconnect_max_delay, delay * 2)
        await self._leave()

    async def _wait_for_session(self, xmpp: ClientXMPP, stop: asyncio.Event) -> None:
        """Wait until the connection ends (or Harken stops); abort a login that stalls."""
        session_over = self._session_over
        assert session_over is not None
        self._session_up = asyncio.Event()
        await self._wait_either(self._session_up, session_over, stop, timeout=CONNECT_TIMEOUT)
        if not (self._session_up.is_set() or session_over.is_set() or stop.is_set()):
            self._last_error = f"no login within {CONNECT_TIMEOUT:.0f} s"
            xmpp.abort()
        await self._wait_either(session_over, stop, timeout=None)

    async def _open_connection(self, xmpp: ClientXMPP) -> bool:
        """Open TCP (and TLS); True when connected, False when no address answered."""
        options = self.options
        host = options.host or None
        port = options.port if host else None
        try:
            retry = await asyncio.wait_for(xmpp.connect(host, port), CONNECT_TIMEOUT)
        except TimeoutError:
            self._last_error = f"no answer within {CONNECT_TIMEOUT:.0f} s"
            xmpp.cancel_connection_attempt()
            return False
        if retry is not None:
            # slixmpp scheduled a retry of its own; ours has the backoff and the logs.
            xmpp.cancel_connection_attempt()
            return False
        return True

    @staticmethod
    async def _wait_either(*events: asyncio.Event, timeout: float | None) -> None:
        waits = {asyncio.ensure_future(event.wait()) for event in events}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _leave(self) -> None:
        xmpp = self._xmpp
        assert xmpp is not None
        self._online = False
        xmpp.cancel_connection_attempt()
        if xmpp.is_connected():
            with contextlib.suppress(Exception):
                await xmpp.disconnect(wait=STOP_WAIT, reason="Harken is stopping")

    # -- slixmpp events (loop thread) -----------------------------------------------

    async def _on_session_start(self, _: Any) -> None:
        xmpp, session = self._xmpp, self._session_over
        assert xmpp is not None
        assert session is not None
        self._had_session = True
        self._session_began = time.monotonic()
        if self._session_up is not None:
            self._session_up.set()
        # Without initial presence the server drops messages sent to the bare JID.
        xmpp.send_presence()
        joined = await asyncio.gather(*(self._join(room) for room in self.options.rooms))
        if session.is_set():
            return  # the session ended while we were joining; the next one starts over
        self._online = True
        self._on_connected(True)
        rooms = [room for room, ok in zip(self.options.rooms, joined, strict=True) if ok]
        logger.info(
            "XMPP: online as %s%s",
            xmpp.boundjid,
            f"; in rooms {', '.join(rooms)}" if rooms else "",
        )
        if self._outbox:
            logger.info("XMPP: sending %d message(s) queued while offline", len(self._outbox))
            queued, self._outbox = self._outbox, deque()
            self._deliver_now(tuple(queued))
        if self.options.ping_interval > 0:
            self._pinger = asyncio.ensure_future(self._keep_alive(session))

    async def _join(self, room: str) -> bool:
        xmpp = self._xmpp
        assert xmpp is not None
        try:
            # No history: whatever was said before we joined is not for us.
            await xmpp.plugin["xep_0045"].join_muc_wait(
                JID(room), self.options.nick, maxstanzas=0, timeout=JOIN_TIMEOUT
            )
        except PresenceError as exc:
            logger.error(
                "XMPP: could not join room %s as %s: %s",
                room,
                self.options.nick,
                exc.presence["error"]["condition"],
            )
            return False
        except TimeoutError:
            logger.error("XMPP: room %s did not answer the join within %.0f s", room, JOIN_TIMEOUT)
            return False
        return True

    async def _keep_alive(self, session: asyncio.Event | None) -> None:
        xmpp = self._xmpp
        assert xmpp is not None
        assert session is not None
        interval = self.options.ping_interval
        while not session.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wait(), interval)
                return
            try:
                await xmpp.plugin["xep_0199"].ping(timeout=min(30.0, interval))
            except IqTimeout:
                if not session.is_set():
                    self._last_error = "the server stopped answering pings"
                    xmpp.abort()
                return
            except Exception as exc:  # an error reply still proves the link is alive
                logger.debug("XMPP: ping answered with %s", exc)

    def _on_disconnected(self, reason: Any) -> None:
        if self._online:
            self._on_connected(False)
        self._online = False
        if reason and not self._last_error:
            self._last_error = str(reason)
        if self._session_over is not None:
            self._session_over.set()

    def _on_connection_failed(self, error: Any) -> None:
        self._last_error = str(error)

    def _on_untrusted_certificate(self, error: Any) -> None:
        self._last_error = untrusted(error)
        assert self._xmpp is not None
        self._xmpp.abort()

    def _on_stream_error(self, error: Any) -> None:
        condition = error["condition"] if hasattr(error, "__getitem__") else error
        self._last_error = f"stream error from the server: {condition}"

    def _on_failed_auth(self, failure: Any) -> None:
        self._auth_condition = str(failure["condition"]) or "not-authorized"

    def _on_failed_all_auth(self, _: Any) -> None:
        options = self.options
        condition = self._auth_condition
        if condition == "temporary-auth-failure":
            self._last_error = "the server could not check the password just now"
            return
        self._auth_given_up = True
        logger.error(
            "XMPP: %s. Not retrying; the XMPP input stays offline until Harken restarts.",
            refused(options, condition),
        )

    def _direct_chat_first(self, stanza: Any) -> Any:
        """Take one-to-one chat messages before slixmpp matches them against its handlers.

        slixmpp tries every incoming stanza against every registered handler (about 30
        with service discovery, multi-user chat and ping), which cost more CPU than
        everything else the bot does with a message. A `chat` message with a body is
        only ever for us, so it goes straight to our handler; every other stanza
        (rooms, presence, iq, errors) takes the usual way.
        """
        if (
            isinstance(stanza, Message)
            and stanza.xml.get("type") == "chat"
            and stanza.xml.find(_BODY) is not None
        ):
            self._on_message_event(stanza)
            return None
        return stanza

    def _on_message_event(self, message: Message) -> None:
        if message.xml.get("type") != "error" and message.xml.find(_BODY) is not None:
            self._carried_message = True
        try:
            self._on_message(message)
        except Exception:
            # A stanza that trips the handler must not take the connection down.
            logger.exception("XMPP: could not handle a message from %s", message["from"])

    def _on_message_error(self, message: Message) -> None:
        error = message["error"]
        logger.info(
            "XMPP: error message from %s: %s %s",
            message["from"],
            error["condition"],
            error["text"] or "",
        )

    # -- sending (loop thread) -------------------------------------------------------

    def _take_handover(self) -> None:
        with self._handover_lock:
            batches, self._handover = self._handover, []
            self._handover_scheduled = False
        for batch in batches:
            self._deliver_now(batch)

    def _deliver_now(self, batch: tuple[Outgoing, ...]) -> None:
        xmpp = self._xmpp
        if not self._online or xmpp is None:
            self._queue(batch)
            return
        # Straight to the transport: `send()` would queue each message for slixmpp's
        # sending task (a task wake-up per message) and run outgoing filters that only
        # touch presence (entity caps, the roster's last status). The session is up, so
        # nothing it queued for "after login" can be overtaken.
        for sent, item in enumerate(batch):
            try:
                xmpp.send_raw(item.stanza(new_id()))
                self._carried_message = True
            except NotConnectedError:
                # The connection is gone and slixmpp has not told us yet: keep the rest
                # for the next session, as if we had been offline all along.
                self._queue(batch[sent:])
                return

    def _queue(self, batch: tuple[Outgoing, ...]) -> None:
        if self._auth_given_up:
            logger.warning(
                "XMPP: not logged in (the server refused the password); %d message(s) to %s "
                "dropped",
                len(batch),
                ", ".join(sorted({item.to for item in batch})),
            )
            return
        limit = self.options.queue_limit
        for item in batch:
            if len(self._outbox) >= limit:
                if not self._outbox:
                    logger.warning(
                        "XMPP: offline and queue_limit is 0; message to %s dropped", item.to
                    )
                    continue
                dropped = self._outbox.popleft()
                logger.warning(
                    "XMPP: offline and %d messages are already waiting (queue_limit); "
                    "dropped the oldest, to %s",
                    limit,
                    dropped.to,
                )
            self._outbox.append(item)
