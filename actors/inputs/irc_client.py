"""The IRC connection behind the IRC input: pydle on an asyncio loop of its own.

Why pydle (1.2.0): it is asyncio from the ground up, maintained (1.2.0 is from 2026),
has no dependencies but `pure-sasl` for SASL, and brings what a bot needs through its
public API: TLS, SASL PLAIN, CAP negotiation, alternate nicks, CTCP parsing, PING/PONG.
`irc` (jaraco, 20.5.0) is built around its own select-based reactor with asyncio as an
add-on, pulls in seven helper packages and has no SASL; `bottom` 3.0.0 needs Python
3.12 (Harken supports 3.11) and is a protocol layer without SASL or nick handling.

`IrcClient` is a `LoopClient` (base.py): one thread runs one asyncio loop, where
everything pydle does happens; replies are handed over to it with
`call_soon_threadsafe`, so a reply wakes the loop at once.

* **Sessions.** Each session is a fresh pydle client (no state carried over): connect,
  register (PASS, CAP/SASL, NICK, USER), join the channels with their keys, then send.
  pydle's own reconnecting is off; the loop here decides: an unreachable server is
  retried with backoff (`reconnect_delay` doubling to `reconnect_max_delay`, each wait
  80-100% of it), a session that drops after it worked is reconnected after the first
  delay, and one that ended before registering counts as a failed attempt. A server
  password the server refuses (464) is logged once and not retried.
* **Nicks.** A taken nick makes pydle try `alt_nicks`, then the nick with `_` added.
* **Pacing.** Lines wait in one outbox and leave through a token bucket
  (`line_burst`, then `lines_per_second`): a server disconnects a client that floods it.
  While offline the outbox keeps up to `queue_limit` lines for the next session.
* **No WHOIS.** pydle asks WHOIS about every nick it meets on a server without WHOX;
  the session's `whois` asks nothing: servers charge WHOIS with seconds of penalty,
  during which they hold back the bot's replies.
* **Incoming.** PRIVMSG is read here, not through pydle's callbacks, which await user
  bookkeeping first and so could reorder a person's first messages. Each message
  reaches `on_message` on the loop thread, in the order read. NOTICEs are never
  answered (two bots would loop); CTCP VERSION is answered at most once a minute,
  other CTCP ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pydle
from pydle.features.ctcp import construct_ctcp, is_ctcp, parse_ctcp

from actors.inputs.base import LoopClient, wait_either
from actors.inputs.irc_options import IrcOptions

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
"""Seconds for TCP connect, TLS and registration; a black-holed server must not stall."""
CTCP_VERSION_EVERY = 60.0
"""Seconds between two answers to CTCP VERSION: a flood of them gets one."""
VERSION = "Harken ChatOps bot"
JOIN_ERRORS = {
    "403": "no such channel",
    "405": "joined too many channels",
    "471": "the channel is full (+l)",
    "473": "the channel is invite-only (+i)",
    "474": "the bot is banned from the channel (+b)",
    "475": "wrong channel key (+k)",
}


@dataclass(frozen=True)
class Line:
    """One IRC line to send: PRIVMSG or NOTICE to a channel or nick."""

    to: str
    text: str
    kind: Literal["PRIVMSG", "NOTICE"] = "PRIVMSG"


@dataclass(frozen=True)
class Incoming:
    """A PRIVMSG that is not CTCP: who sent it (nick), to what (a channel or our nick)."""

    nick: str
    target: str
    text: str


MessageHandler = Callable[[Incoming], None]


class _Session(pydle.Client):
    """One connection's pydle client; tells its `IrcClient` what happens."""

    RECONNECT_ON_ERROR = False  # IrcClient reconnects, with its own backoff and logs

    def __init__(self, owner: IrcClient, options: IrcOptions) -> None:
        sasl = bool(options.sasl_username)
        super().__init__(
            options.nick,
            fallback_nicknames=list(options.alt_nicks),
            username=options.username,
            realname=options.realname,
            sasl_username=options.sasl_username if sasl else None,
            sasl_password=options.password.reveal() if sasl else None,
            sasl_mechanism="PLAIN" if sasl else None,
        )
        self.owner = owner
        self.ended = asyncio.Event()
        self.welcomed = asyncio.Event()
        """Set once the session is registered and has asked to join its channels."""
        self.registered_at = 0.0
        self.sasl_offered = False
        self.own_nick = options.nick

    async def whois(self, nickname: str) -> None:
        """Never asked: Harken needs no WHOIS. pydle would send one for every new nick it
        sees (joins, NAMES, senders) on a server without WHOX, and a server charges each
        with seconds of penalty during which it holds back the bot's replies."""
        return None

    async def on_raw_001(self, message: Any) -> None:
        # The nick the server gave us, before pydle's own bookkeeping (which may wait on
        # a WHOIS) catches up.
        if message.params:
            self.own_nick = str(message.params[0])
        await super().on_raw_001(message)

    async def on_connect(self) -> None:
        await super().on_connect()
        await self.owner.session_registered(self)

    async def on_disconnect(self, expected: bool) -> None:
        # No super(): pydle's would reconnect on its own.
        self.ended.set()

    async def on_join(self, channel: str, user: str) -> None:
        if self.is_same_nick(user, self.own_nick):
            logger.info("IRC: joined %s as %s", channel, self.own_nick)

    async def on_kick(self, channel: str, target: str, by: str, reason: str | None = None) -> None:
        if self.is_same_nick(target, self.own_nick):
            logger.warning("IRC: %s kicked the bot from %s (%s)", by, channel, reason or "")

    async def on_nick_change(self, old: str, new: str) -> None:
        if self.is_same_nick(old, self.own_nick):
            self.own_nick = new
        if self.is_same_nick(new, self.own_nick) and not self.is_same_nick(
            new, self.owner.options.nick
        ):
            logger.warning("IRC: the nick %s is taken; using %s", self.owner.options.nick, new)

    async def on_raw_privmsg(self, message: Any) -> None:
        # Read here, with no await before the hand-over: see the module docstring.
        if len(message.params) < 2 or not message.source:
            return
        nick = str(message.source).partition("!")[0]
        target, text = str(message.params[0]), str(message.params[1])
        if is_ctcp(text):
            self.owner.ctcp(self, nick, target, text)
            return
        self.owner.carried_message = True
        self.owner.on_message(Incoming(nick, target, text))

    async def on_raw_notice(self, message: Any) -> None:
        logger.debug("IRC: notice from %s (not answered)", message.source)

    async def on_raw_error(self, message: Any) -> None:
        # The server's last word before it closes the link (pydle's would raise).
        text = str(message.params[-1]) if message.params else "ERROR"
        if not self.welcomed.is_set() and "password" in text.lower():
            await self.on_raw_464(message)
        else:
            self.owner.server_said(text)

    async def on_raw_464(self, message: Any) -> None:
        self.owner.refused("the server refused the server password (HARKEN_IRC_SERVER_PASSWORD)")

    async def on_capability_sasl_available(self, value: Any) -> Any:
        self.sasl_offered = True
        return await super().on_capability_sasl_available(value)

    async def on_raw_903(self, message: Any) -> None:
        logger.info("IRC: logged in with SASL as %s", self.owner.options.sasl_username)
        await super().on_raw_903(message)

    async def on_raw_904(self, message: Any) -> None:
        # pydle would carry on without logging in; a bot that was told to log in leaves.
        self.owner.refused(
            f"the server refused the SASL login of {self.owner.options.sasl_username} "
            "(check inputs.irc.sasl_username and HARKEN_IRC_PASSWORD)"
        )
        await self.quit("SASL login refused")

    async def on_raw_905(self, message: Any) -> None:
        await self.on_raw_904(message)

    async def on_unknown(self, message: Any) -> None:
        code = str(message.command).zfill(3)
        if code in JOIN_ERRORS and len(message.params) >= 2:
            logger.error("IRC: cannot join %s: %s", message.params[1], JOIN_ERRORS[code])
            return
        logger.debug("IRC: unhandled %s from the server", message.command)


class IrcClient(LoopClient[Line]):
    """One IRC identity's connection, kept up for as long as the client runs."""

    label, unit, no_session, log = "IRC", "line", "closed before registering", logger
    options: IrcOptions

    def __init__(
        self,
        options: IrcOptions,
        on_message: MessageHandler,
        on_connected: Callable[[bool], None] = lambda connected: None,
    ) -> None:
        """`on_message` gets every channel or private message that is not CTCP;
        `on_connected(True)` is called once a session is registered and has asked to
        join its channels, `on_connected(False)` when it ends. Both on the loop thread."""
        super().__init__(options, options.nick, f"irc:{options.host}", on_connected)
        self.on_message = on_message
        # Everything below belongs to the loop thread.
        self._session: _Session | None = None
        self._wake: asyncio.Event | None = None
        self._last_version_reply = -CTCP_VERSION_EVERY

    @property
    def nick(self) -> str:
        """The nick the bot has now (loop thread only); the configured one if offline."""
        session = self._session
        return session.own_nick if session is not None else self.options.nick

    # -- the loop thread -------------------------------------------------------------

    def _prepare(self, loop: asyncio.AbstractEventLoop) -> None:
        self._wake = asyncio.Event()

    async def _main(self) -> None:
        sender = asyncio.ensure_future(self._send_paced())
        try:
            await self._keep_connected()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _attempt(self, stop: asyncio.Event) -> float | None:
        session = _Session(self, self.options)
        self._session = session
        began = time.monotonic()
        if await self._open(session):
            await wait_either(session.ended, stop, timeout=None)
        lasted = time.monotonic() - (session.registered_at or began)
        await self._end(session, "Harken is stopping" if stop.is_set() else "")
        return lasted if session.registered_at > 0 else None

    async def _open(self, session: _Session) -> bool:
        """Connect and register; False (with `_last_error`) if that failed."""
        options = self.options
        welcomed = asyncio.ensure_future(wait_either(session.welcomed, session.ended, timeout=None))
        try:
            await asyncio.wait_for(
                session.connect(
                    options.host,
                    options.port,
                    tls=options.tls,
                    tls_verify=options.tls,
                    password=options.server_password.reveal() or None,
                ),
                CONNECT_TIMEOUT,
            )
            await asyncio.wait_for(asyncio.shield(welcomed), CONNECT_TIMEOUT)
        except TimeoutError:
            self._last_error = f"no registration within {CONNECT_TIMEOUT:.0f} s"
            return False
        except OSError as exc:  # refused, unreachable, TLS (ssl.SSLError is an OSError)
            self._last_error = str(exc) or type(exc).__name__
            return False
        finally:
            welcomed.cancel()
        return not session.ended.is_set()

    async def session_registered(self, session: _Session) -> None:
        """Called by the session once the server welcomed it: join, then go online."""
        if session is not self._session:
            return
        options = self.options
        if options.sasl_username and not session.sasl_offered:
            logger.warning(
                "IRC: %s offers no SASL; connected without logging in as %s",
                options.server,
                options.sasl_username,
            )
        for channel in options.joins:
            await session.join(channel.name, channel.key or None)
        session.registered_at = time.monotonic()
        session.welcomed.set()
        logger.info(
            "IRC: online at %s as %s%s",
            options.server,
            session.own_nick,
            f"; joining {', '.join(options.channel_names)}" if options.joins else "",
        )
        self._set_online(True)
        self._kick_sender()

    async def _end(self, session: _Session, reason: str) -> None:
        self._set_online(False)
        if session.connected:
            with contextlib.suppress(Exception):
                if reason:
                    await asyncio.wait_for(session.quit(reason), 2.0)
                else:
                    await session.disconnect(expected=True)

    def server_said(self, text: str) -> None:
        """The server's ERROR line: why it is closing the connection."""
        self._last_error = f"the server said: {text}"

    def ctcp(self, session: _Session, nick: str, target: str, text: str) -> None:
        what, _ = parse_ctcp(text)
        if str(what).upper() != "VERSION":
            logger.debug("IRC: ignored CTCP %s from %s", what, nick)
            return
        now = time.monotonic()
        if now - self._last_version_reply < CTCP_VERSION_EVERY:
            logger.debug("IRC: ignored another CTCP VERSION from %s", nick)
            return
        self._last_version_reply = now
        self._take([Line(nick, construct_ctcp("VERSION", VERSION), "NOTICE")])

    # -- sending (loop thread) -------------------------------------------------------

    def _take(self, lines: list[Line]) -> None:
        self._queue(lines, bounded=not self._online)
        self._kick_sender()

    def _kick_sender(self) -> None:
        if self._wake is not None and self._outbox and self._online:
            self._wake.set()

    async def _send_paced(self) -> None:
        """Send the outbox through a token bucket, for as long as the client runs."""
        wake = self._wake
        assert wake is not None
        options = self.options
        rate, burst = options.lines_per_second, float(options.line_burst)
        tokens, refilled = burst, time.monotonic()
        while True:
            await wake.wait()
            wake.clear()
            while self._outbox and self._online:
                now = time.monotonic()
                tokens = min(burst, tokens + (now - refilled) * rate)
                refilled = now
                if tokens < 1.0:
                    await asyncio.sleep((1.0 - tokens) / rate)
                    continue
                session = self._session
                if session is None or not self._online:
                    break
                line = self._outbox[0]
                try:
                    await session.rawmsg(line.kind, line.to, line.text)
                except Exception as exc:
                    # The connection is going; the line waits for the next session.
                    logger.debug("IRC: could not send a line (%s); keeping it", exc)
                    break
                self._outbox.popleft()
                self.carried_message = True
                tokens -= 1.0
