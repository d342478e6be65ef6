"""The bytes of one outgoing XMPP message, built without slixmpp's stanza objects.

`Outgoing` is what the XMPP input hands its connection for each reply; its `stanza`
method writes the message stanza exactly as slixmpp would, because building it through
slixmpp costs more than the rest of the bot's work on a reply. It lives apart from the
connection so that the wire format and its test stand on their own.
"""

from __future__ import annotations

from typing import Literal, NamedTuple
from xml.sax.saxutils import escape, quoteattr


class Outgoing(NamedTuple):
    """One message for the server: to whom, `chat` or `groupchat`, and the text."""

    to: str
    kind: Literal["chat", "groupchat"]
    body: str

    def stanza(self, stanza_id: str) -> bytes:
        """The message stanza as it goes on the wire.

        What slixmpp writes for `make_message(mto, mbody, mtype)` (the stream's default
        namespace is jabber:client and its language is the stream's, so the stanza
        names neither), built directly: slixmpp's stanza objects and its serializer
        cost more CPU than everything else the bot does with a reply. The body must
        already be free of characters XML forbids (the input strips them).
        """
        to, kind, key = quoteattr(self.to), quoteattr(self.kind), quoteattr(stanza_id)
        head = f"<message to={to} type={kind} id={key}"
        if not self.body:
            return f"{head} />".encode()
        return f"{head}><body>{escape(self.body)}</body></message>".encode()
