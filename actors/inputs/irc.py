"""The IRC input: channels and private messages, through pydle (see irc_client.py).

The actor turns IRC messages into `Event`s for the router and the bot's replies into
paced IRC lines; `IrcClient` keeps the connection up on a thread of its own. Messages
are translated on the client's loop thread and handed straight to the router (`submit`
is a thread-safe `tell`); replies arrive on the threads that produce them (the actor's
inbox hands them over without waking the actor's thread).

How a message becomes an event:

* in a configured channel, addressed to the bot by its current nick (`harken: ping`,
  `harken, ping`, `@harken ping`; `harken_: ping` if its nick was taken) or starting
  with the `prefix`
  (`!ping`): channel is the channel (lower case), user the sender's nick (lower case),
  so each person in a channel has a conversation of their own; the reply goes to the
  channel, each line addressed to them (`alice: pong`);
* a private message: user and channel are the sender's nick; the reply goes back to
  them, privately.

Colour and formatting codes are removed first. Ignored: channel messages not addressed
to the bot, messages in channels not configured, our own, and empty ones. IRC proves
no one's nick without services: a nick is who the person says they are.

With `[cluster] enabled` every process is in every channel (each under a nick of its
own, as IRC wants: the configured one taken, the server gives `harken_` and so on), and
each answers to the configured nick as well as its own. One process answers in a
channel at a time, for a lease it renews (`actors.claims.RoomLeases`); a private
message reaches one nick, so one process, and is always answered.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from actors.inputs.base import HEARD, RoomsInput
from actors.inputs.irc_client import Incoming, IrcClient, Line
from actors.inputs.irc_options import IrcOptions, is_channel
from actors.inputs.irc_text import split_lines, strip_formatting
from actors.text import clean_text
from core.event import Event, EventType

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)

MAX_REPLY_LINES = 40
"""Most IRC lines one reply is sent as: at a line a second, a longer reply would hold
the channel for minutes. The rest is cut, with a note saying so."""


def _addressed(nick: str) -> re.Pattern[str]:
    name = re.escape(nick)
    # "harken: ping", "harken, ping", "@harken ping" (clients complete mentions so).
    return re.compile(rf"\s*(?:@{name}(?![\w\[\]\\`^{{|}}-])[:,]?|{name}\s*[:,])\s*", re.I)


class IrcInput(RoomsInput):
    options_class = IrcOptions
    client: IrcClient

    @classmethod
    def preflight(cls, settings: InputSettings) -> None:
        """Check the options before any actor starts (a bad one stops start-up, exit 2)."""
        IrcOptions.from_settings(settings)

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        options = IrcOptions.from_settings(settings)
        channels = frozenset(options.channel_names)
        super().__init__(settings, runtime, router, leased=sorted(channels))
        self.options = options
        self.channels = channels
        self._current: tuple[str, re.Pattern[str]] = (options.nick, _addressed(options.nick))
        self._configured = _addressed(options.nick) if self.leases is not None else None
        """In a cluster: the configured nick, which people address whoever holds it."""
        self.client = IrcClient(options, self._on_message, self._connected)

    # -- bot -> IRC (any thread: the inbox hands replies over on the sender's) --------

    def _deliver(self, events: tuple[Event, ...]) -> None:
        lines: list[Line] = []
        for event in events:
            lines.extend(self._lines(event))
        self.client.deliver(lines)

    def _lines(self, event: Event) -> list[Line]:
        target = event.channel or event.to
        prefix = ""
        if is_channel(target) and event.display_name:
            prefix = f"{event.display_name}: "
        elif not is_channel(target) and event.display_name:
            target = event.display_name  # the nick as they wrote it
        texts = split_lines(clean_text(event.data), self.options.max_line_bytes, prefix)
        if len(texts) > MAX_REPLY_LINES:
            logger.info(
                "IRC: reply to %s is %d lines; sending the first %d",
                target,
                len(texts),
                MAX_REPLY_LINES,
            )
            texts = [*texts[:MAX_REPLY_LINES], f"{prefix}[… cut: the reply was too long for IRC]"]
        return [Line(target, text) for text in texts]

    # -- IRC -> bot (the client's loop thread) ---------------------------------------

    def _on_message(self, message: Incoming) -> None:
        nick = message.nick
        if not nick or nick.lower() == self.client.nick.lower():
            return
        text = strip_formatting(message.text)
        if not text.strip():
            logger.debug("IRC: ignored an empty message from %s", nick)
            return
        if is_channel(message.target):
            channel = message.target.lower()
            if channel not in self.channels:
                logger.info("IRC: ignored a message in %s, a channel not configured", channel)
                return
            if not self._owns(channel):
                logger.debug("IRC: another process answers in %s", channel)
                return
            command = self._strip_address(text)
            if command is None:
                if self._hear_all:  # for the streams only
                    self.submit(self._event(nick, channel, text, {HEARD: True}))
                return
            self.submit(self._event(nick, channel, command))
        else:
            # "harken: ping" in a private message is still "ping".
            command = self._strip_address(text, prefix=False)
            self.submit(self._event(nick, nick.lower(), text if command is None else command))

    def _strip_address(self, text: str, *, prefix: bool = True) -> str | None:
        """The command in a message addressed to the bot, or None if not addressed.

        By the nick it has now: with its nick taken, "harken: ..." is for the other
        "harken", and the bot answers to "harken_: ..."."""
        current = self.client.nick
        if current != self._current[0]:
            self._current = (current, _addressed(current))
        if found := self._current[1].match(text):
            return text[found.end() :]
        if self._configured is not None and (found := self._configured.match(text)):
            return text[found.end() :]
        mark = self.options.prefix if prefix else ""
        stripped = text.lstrip()
        if mark and stripped.startswith(mark):
            return stripped[len(mark) :].lstrip()
        return None

    def _event(
        self, nick: str, channel: str, text: str, meta: dict[str, Any] | None = None
    ) -> Event:
        return Event(
            type=EventType.TEXT,
            sender=nick.lower(),
            to=self.bot_name,
            data=text,
            input=self.name,
            channel=channel,
            display_name=nick,
            meta=meta or {},
        )
