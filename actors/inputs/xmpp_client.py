"""The XMPP connection behind the XMPP input: slixmpp on an asyncio loop of its own.

Everything slixmpp does happens on that loop (`LoopClient`, base.py, owns it, the
hand-over from other threads, the reconnect loop and the offline outbox). A dropped
stable session is reconnected at once; a refused login stops the retries (they would
only lock the account).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from slixmpp import ClientXMPP
from slixmpp.exceptions import IqTimeout, PresenceError
from slixmpp.jid import JID
from slixmpp.stanza import Message
from slixmpp.xmlstream.xmlstream import NotConnectedError

from actors.inputs.base import LoopClient, wait_either
from actors.inputs.xmpp_login import STOP_WAIT, new_client, untrusted
from actors.inputs.xmpp_login import refused as login_refused
from actors.inputs.xmpp_options import XmppOptions
from actors.inputs.xmpp_stanza import Outgoing
from core.event import new_id

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
"""Seconds for TCP connect plus login; a black-holed server must not stall the loop."""
JOIN_TIMEOUT = 15.0
"""Seconds to wait for a room to confirm a join."""

MessageHandler = Callable[[Message], None]
_BODY = "{jabber:client}body"


class XmppClient(LoopClient[Outgoing]):
    """One XMPP account's connection, kept up for as long as the client runs."""

    label, unit, reconnect_at_once, log = "XMPP", "message", True, logger
    options: XmppOptions

    def __init__(
        self,
        options: XmppOptions,
        on_message: MessageHandler,
        on_connected: Callable[[bool], None] = lambda connected: None,
    ) -> None:
        """`on_message` gets every message with a body; `on_connected(True)` is called
        when a session is up (rooms joined), `on_connected(False)` when it ends. Both
        are called on the loop thread."""
        super().__init__(options, options.jid, f"xmpp:{options.bare_jid}", on_connected)
        self._on_message = on_message
        self._xmpp: ClientXMPP | None = None
        # Everything below belongs to the loop thread.
        self._session_over: asyncio.Event | None = None
        self._had_session = False
        self._auth_condition = ""
        self._pinger: asyncio.Future[None] | None = None
        self._session_up: asyncio.Event | None = None
        self._session_began = 0.0

    @property
    def muc(self) -> Any:
        """slixmpp's multi-user chat plugin (use on the loop thread only)."""
        return self._xmpp.plugin["xep_0045"] if self._xmpp is not None else None

    # -- the loop thread -------------------------------------------------------------

    def _prepare(self, loop: asyncio.AbstractEventLoop) -> None:
        self._xmpp = self._make_client(loop)

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

    async def _main(self) -> None:
        await self._keep_connected()
        await self._leave()

    async def _attempt(self, stop: asyncio.Event) -> float | None:
        xmpp = self._xmpp
        assert xmpp is not None
        self._session_over = asyncio.Event()
        self._had_session = False
        self._auth_condition = ""
        if await self._open_connection(xmpp):
            await self._wait_for_session(xmpp, stop)
        return time.monotonic() - self._session_began if self._had_session else None

    async def _wait_for_session(self, xmpp: ClientXMPP, stop: asyncio.Event) -> None:
        """Wait until the connection ends (or Harken stops); abort a login that stalls."""
        session_over = self._session_over
        assert session_over is not None
        self._session_up = asyncio.Event()
        await wait_either(self._session_up, session_over, stop, timeout=CONNECT_TIMEOUT)
        if not (self._session_up.is_set() or session_over.is_set() or stop.is_set()):
            self._last_error = f"no login within {CONNECT_TIMEOUT:.0f} s"
            xmpp.abort()
        await wait_either(session_over, stop, timeout=None)

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
        self._set_online(True)
        rooms = [room for room, ok in zip(self.options.rooms, joined, strict=True) if ok]
        logger.info(
            "XMPP: online as %s%s",
            xmpp.boundjid,
            f"; in rooms {', '.join(rooms)}" if rooms else "",
        )
        if self._outbox:
            logger.info("XMPP: sending %d message(s) queued while offline", len(self._outbox))
            queued = tuple(self._outbox)
            self._outbox.clear()
            self._deliver_now(queued)
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
        self._set_online(False)
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
        if self._auth_condition == "temporary-auth-failure":
            self._last_error = "the server could not check the password just now"
            return
        self.refused(login_refused(self.options, self._auth_condition))

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
            self.carried_message = True
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

    def _take(self, items: list[Outgoing]) -> None:
        self._deliver_now(tuple(items))

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
                self.carried_message = True
            except NotConnectedError:
                # The connection is gone and slixmpp has not told us yet: keep the rest
                # for the next session, as if we had been offline all along.
                self._queue(batch[sent:])
                return
