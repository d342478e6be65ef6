"""The reply stanzas the XMPP input writes itself are the ones slixmpp would write."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp import ClientXMPP
from slixmpp.jid import JID
from slixmpp.xmlstream import tostring

from actors.inputs.xmpp_client import XmppClient
from actors.inputs.xmpp_options import XmppOptions
from actors.inputs.xmpp_stanza import Outgoing
from config.settings import InputSettings, Secret

BODIES = [
    "pong",
    "a < b && c > d",
    "quotes \" and ' and ]]> and <![CDATA[x]]>",
    "<message to='evil@example.org'><body>injected</body></message>",
    "lines\nand\ttabs",
    "unicode: été ✓ 😀",
    "",
]


def _parsed(stanza: bytes | str) -> ET.Element:
    # Wrap as the stream does: jabber:client is the default namespace of the stream.
    text = stanza.decode() if isinstance(stanza, bytes) else stanza
    return ET.fromstring(f"<stream xmlns='jabber:client'>{text}</stream>")[0]


@pytest.mark.parametrize("kind", ["chat", "groupchat"])
@pytest.mark.parametrize("body", BODIES)
def test_a_reply_stanza_matches_what_slixmpp_would_send(kind: str, body: str) -> None:
    client = ClientXMPP("harken@localhost", "unused")
    to = "room@conference.localhost" if kind == "groupchat" else "alice@localhost/phone"
    theirs = client.make_message(mto=JID(to), mbody=body, mtype=kind)
    wire = tostring(theirs.xml, xmlns=client.default_ns, stream=client, top_level=True)
    ours = _parsed(Outgoing(to, kind, body).stanza("h1"))  # type: ignore[arg-type]
    expected = _parsed(wire)
    assert ours.tag == expected.tag == "{jabber:client}message"
    # slixmpp repeats the stream's language on the stanza; an id is any unique value.
    del expected.attrib["{http://www.w3.org/XML/1998/namespace}lang"]
    assert ours.attrib.pop("id") == "h1"
    assert expected.attrib.pop("id")
    assert ours.attrib == expected.attrib
    assert [(c.tag, c.text or "", c.attrib) for c in ours] == [
        (c.tag, c.text or "", c.attrib) for c in expected
    ]


def test_markup_in_a_reply_stays_text() -> None:
    stanza = Outgoing("alice@localhost", "chat", "<b>bold</b> & co").stanza("h2")
    message = _parsed(stanza)
    assert len(message) == 1
    assert message[0].text == "<b>bold</b> & co"
    assert b"<b>" not in stanza


def test_replies_for_a_connection_already_gone_wait_for_the_next_session() -> None:
    # slixmpp drops its transport before it reports the disconnection: a reply handed
    # over in between must wait in the outbox, not vanish with an error on the loop.
    settings = InputSettings(
        name="xmpp",
        options={"jid": "harken@localhost", "host": "127.0.0.1", "allow_plaintext": True},
        secrets={"password": Secret("unused")},
    )
    client = XmppClient(XmppOptions.from_settings(settings), on_message=lambda _: None)
    loop = asyncio.new_event_loop()
    try:
        client._xmpp = client._make_client(loop)  # made, never connected: no transport
        client._online = True  # what the client believes until slixmpp says otherwise
        batch = (
            Outgoing("alice@localhost", "chat", "one"),
            Outgoing("bob@localhost", "chat", "two"),
        )
        client._deliver_now(batch)
        assert list(client._outbox) == list(batch)
    finally:
        loop.close()
