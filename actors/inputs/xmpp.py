"""The XMPP (Jabber) input: direct chats and multi-user chat rooms, through slixmpp.

The actor turns stanzas into `Event`s for the router and replies into stanzas;
`XmppClient` (xmpp_client.py) keeps the connection up on a thread of its own. A
direct message is answered to its sender; a room message counts only when addressed to
the bot (`harken: ping` or the `prefix`), and each occupant has a conversation of their
own. Own messages, room history, empty bodies, `error`/`headline` messages and senders
outside `allow_from` are ignored with a log line (ARCHITECTURE.md, "The XMPP input").

With `[cluster] enabled` every process is in every room, and Prosody gives a message
sent to the bare JID to each of them (all its top-priority resources). One process
answers in a room at a time, and one answers what is sent to the bare JID, each for a
lease it renews (`actors.claims.RoomLeases`); a message sent to this process's full JID
reached it alone and is always answered.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from slixmpp.jid import JID
from slixmpp.stanza import Message

from actors.errors import StartupError
from actors.inputs.base import HEARD, RoomsInput
from actors.inputs.xmpp_client import XmppClient
from actors.inputs.xmpp_login import check_login
from actors.inputs.xmpp_options import XmppOptions
from actors.inputs.xmpp_stanza import Outgoing
from actors.text import clean_text
from core.event import Event, EventType

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)

MAX_BODY_CHARS = 50_000
"""Longest reply sent in one message. Prosody closes the stream of a client whose stanza
exceeds 256 KiB (after XML escaping, which can grow text fivefold); a longer reply is
cut, with a note, rather than cost the bot its connection."""
_NOT_XML = re.compile("[\ud800-\udfff\ufffe\uffff]")
_BODY_TAG = "{jabber:client}body"
_DELAY_TAG = "{urn:xmpp:delay}delay"
_LEGACY_DELAY_TAG = "{jabber:x:delay}x"
_SUBJECT_TAG = "{jabber:client}subject"
_WARNED_SENDERS_MAX = 10_000
DIRECT = "direct"
"""In a cluster, the lease of what is sent to the account's bare JID (besides rooms)."""


class XmppInput(RoomsInput):
    options_class = XmppOptions
    client: XmppClient

    @classmethod
    def preflight(cls, settings: InputSettings) -> None:
        """Check the options, then log in once: a password the server refuses stops
        start-up (exit 2); a server that cannot be reached now does not, the input
        retries it in the background as it would any lost connection."""
        options = XmppOptions.from_settings(settings)
        found = check_login(options)
        if found.refused:
            raise StartupError(f"xmpp: {found.detail}")
        if found.accepted:
            logger.info("XMPP: %s accepted the login of %s", options.server, options.jid)
        else:
            logger.warning(
                "XMPP: could not check the login of %s at %s (%s); starting anyway, and "
                "retrying in the background",
                options.jid,
                options.server,
                found.detail,
            )

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        options = XmppOptions.from_settings(settings)
        super().__init__(settings, runtime, router, leased=(*sorted(options.rooms), DIRECT))
        self.options = options
        self.rooms = frozenset(options.rooms)
        nick = re.escape(options.nick)
        # "harken: ping", "harken, ping", "@harken ping" (clients complete mentions so).
        self._addressed = re.compile(rf"\s*(?:@{nick}(?![\w-])[:,]?|{nick}\s*[:,])\s*", re.I)
        self._warned_senders: set[str] = set()
        self.client = XmppClient(options, self._on_message, self._connected)

    def _answers(self, message: Message, room: str | None) -> bool:
        """In a cluster: whether this process answers `message` (see the module)."""
        if self.leases is None:
            return True
        if room is None:
            to: JID = message["to"]
            if to.resource:  # sent to this process's own resource: no one else has it
                return True
            room = DIRECT
        if self._owns(room):
            return True
        logger.debug("XMPP: another process answers in %s", room)
        return False

    # -- bot -> XMPP (any thread: the inbox hands replies over on the sender's) -------

    def _deliver(self, events: tuple[Event, ...]) -> None:
        self.client.deliver([self._outgoing(event) for event in events])

    def _outgoing(self, event: Event) -> Outgoing:
        text = _NOT_XML.sub("", clean_text(event.data))
        if len(text) > MAX_BODY_CHARS:
            logger.info(
                "XMPP: reply to %s is %d characters; sending the first %d",
                event.to,
                len(text),
                MAX_BODY_CHARS,
            )
            text = text[:MAX_BODY_CHARS] + "\n[… cut: the reply was too long for one message]"
        channel = event.channel or event.to
        if channel in self.rooms:
            nick = event.display_name
            return Outgoing(channel, "groupchat", f"{nick}: {text}" if nick else text)
        return Outgoing(channel, "chat", text)

    # -- XMPP -> bot (the client's loop thread) --------------------------------------

    def _on_message(self, message: Message) -> None:
        kind = message["type"]
        sender: JID = message["from"]
        if kind == "error":
            return  # the client logs these; never answer one (two bots would loop)
        if kind == "headline":
            logger.debug("XMPP: ignored a headline message from %s", sender)
            return
        body = message.xml.find(_BODY_TAG)
        # itertext: markup inside a body (which no client should send) is read as text.
        text = "".join(body.itertext()) if body is not None else ""
        if not text.strip():
            logger.info("XMPP: ignored a %s message with an empty body from %s", kind, sender)
            return
        if kind == "groupchat":
            if not self._answers(message, str(sender.bare)):
                return
            event = self._room_event(message, sender, text)
        else:
            bare = str(sender.bare)
            if not self._answers(message, bare if bare in self.rooms else None):
                return
            event = self._direct_event(sender, text)
        if event is not None:
            self.submit(event)

    def _direct_event(self, sender: JID, text: str) -> Event | None:
        bare = str(sender.bare)
        if bare == self.options.bare_jid:
            logger.debug("XMPP: ignored a message from our own account (%s)", sender)
            return None
        if bare in self.rooms:
            # A private message from a room occupant: answer privately, to the occupant.
            user = self._occupant_id(sender)
            if user is None:
                return None
            return self._event(user, str(sender), text, sender.resource)
        if not self._allowed(bare):
            return None
        return self._event(bare, bare, text, sender.user)

    def _room_event(self, message: Message, sender: JID, text: str) -> Event | None:
        room, nick = str(sender.bare), sender.resource
        if room not in self.rooms:
            logger.info("XMPP: ignored a room message from %s, a room not configured", room)
            return None
        if not nick or nick == self.options.nick:
            return None  # the room itself, or our own message echoed back
        if message.xml.find(_DELAY_TAG) is not None or (
            message.xml.find(_LEGACY_DELAY_TAG) is not None
        ):
            logger.debug("XMPP: ignored room history from %s", sender)
            return None
        if message.xml.find(_SUBJECT_TAG) is not None:
            return None
        command = self._strip_address(text)
        if command is None and not self._hear_all:
            return None
        user = self._occupant_id(sender)
        if user is None:
            return None
        if command is None:  # for the streams only
            return self._event(user, room, text, nick, {HEARD: True})
        return self._event(user, room, command, nick)

    def _strip_address(self, text: str) -> str | None:
        """The command in a room message addressed to the bot, or None if not addressed."""
        if found := self._addressed.match(text):
            return text[found.end() :]
        prefix = self.options.prefix
        stripped = text.lstrip()
        if prefix and stripped.startswith(prefix):
            return stripped[len(prefix) :].lstrip()
        return None

    def _occupant_id(self, occupant: JID) -> str | None:
        """Who a room occupant is: their real bare JID if the room shows it, else room/nick.

        None when the allow-list refuses the real JID.
        """
        muc = self.client.muc
        real = muc.get_jid_property(occupant.bare, occupant.resource, "jid") if muc else None
        if real:
            bare = str(JID(real).bare)
            return bare if self._allowed(bare) else None
        return str(occupant)

    def _allowed(self, bare: str) -> bool:
        if self.options.allows(bare):
            return True
        # Log each refused sender once at warning level: a hostile sender must not be
        # able to fill the log.
        if bare not in self._warned_senders:
            if len(self._warned_senders) >= _WARNED_SENDERS_MAX:
                self._warned_senders.clear()
            self._warned_senders.add(bare)
            logger.warning("XMPP: ignored a message from %s, who is not in allow_from", bare)
        else:
            logger.debug("XMPP: ignored another message from %s (not in allow_from)", bare)
        return False

    def _event(
        self,
        user: str,
        channel: str,
        text: str,
        display_name: str,
        meta: dict[str, Any] | None = None,
    ) -> Event:
        return Event(
            type=EventType.TEXT,
            sender=user,
            to=self.bot_name,
            data=text,
            input=self.name,
            channel=channel,
            display_name=display_name,
            meta=meta or {},
        )
