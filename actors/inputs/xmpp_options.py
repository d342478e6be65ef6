"""The XMPP input's settings, checked once: `[inputs.xmpp]` plus `HARKEN_XMPP_PASSWORD`.

`XmppOptions` is also the input's declaration (the `harken.input_options` entry point),
from which the config loader checks the options and reads the password; this module
imports slixmpp only when options are checked for a start. What a type cannot say (a
JID with a local part, a port in range) is checked here, so a bad value stops start-up
with one line naming the key instead of failing later on a thread nobody watches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.errors import StartupError
from config.inputs import OptionReader
from config.settings import InputSettings, Secret


def _bare_jid(key: str, text: str, *, need_user: bool = True) -> str:
    # slixmpp is imported here, not at the top: the loader imports this module.
    from slixmpp.jid import JID, InvalidJID

    try:
        jid = JID(text.strip())
    except InvalidJID as exc:
        raise StartupError(f"{key}: {text!r} is not a valid JID ({exc})") from None
    if need_user and not jid.user:
        raise StartupError(f"{key}: {text!r} needs a user part, e.g. name@example.org")
    return str(jid.bare)


@dataclass(frozen=True, kw_only=True)
class XmppOptions:
    """`[inputs.xmpp]` options and the password, checked; the defaults are the input's."""

    jid: str = field(default="", metadata={"required": True})
    """The bot's account as written (a resource, if given, is kept); required."""
    password: Secret = field(metadata={"secret": True, "required": True})
    rooms: tuple[str, ...] = ()
    """Multi-user chat rooms to join; once checked, bare room JIDs in lower case."""
    nick: str = "harken"
    """Nickname used in rooms."""
    host: str = ""
    """Server host; empty means "look it up from the JID's domain"."""
    port: int = 5222
    allow_plaintext: bool = False
    """Allow login without TLS: only for a test server on loopback."""
    direct_tls: bool = False
    """TLS from the first byte (port 5223 style) instead of STARTTLS."""
    ca_file: str = field(default="", metadata={"path": True})
    """CA bundle to verify the server's certificate; empty uses the system's."""
    prefix: str = ""
    """In rooms, also answer messages starting with this (e.g. "!"); the nick
    ("harken: ping") always works."""
    allow_from: tuple[str, ...] = ()
    """Bare JIDs and domains allowed to talk to the bot; empty allows everyone."""
    reconnect_delay: float = 1.0
    """Reconnect backoff: the first delay, doubling up to the maximum (seconds)."""
    reconnect_max_delay: float = 60.0
    queue_limit: int = 1000
    """Replies kept while disconnected, sent after reconnecting; the oldest beyond this
    are dropped (and logged)."""
    ping_interval: float = 60.0
    """Ping the server this often (seconds) to notice a dead connection; 0: off."""

    @property
    def bare_jid(self) -> str:
        from slixmpp.jid import JID

        return str(JID(self.jid).bare)

    @property
    def server(self) -> str:
        """Where the bot connects, for log lines."""
        from slixmpp.jid import JID

        return f"{self.host}:{self.port}" if self.host else f"{JID(self.jid).domain} (DNS)"

    def allows(self, bare_jid: str) -> bool:
        """Whether the allow-list lets this bare JID talk to the bot."""
        if not self.allow_from:
            return True
        bare = bare_jid.lower()
        return bare in self.allow_from or bare.partition("@")[2] in self.allow_from

    @classmethod
    def from_settings(cls, settings: InputSettings) -> XmppOptions:
        """Check the settings; raise `StartupError` naming the first bad key."""
        read = OptionReader(cls, settings, StartupError)
        jid_text = read.required(
            "jid", "the XMPP input needs the bot's account", "harken@example.org"
        )
        _bare_jid(read.key("jid"), jid_text)
        password = read.secret("password", f"the XMPP input needs the password of {jid_text}")
        rooms = tuple(_bare_jid(read.key("rooms"), str(room)) for room in read["rooms"])
        nick = read.text("nick")
        if not nick or "/" in nick:
            raise read.fail("nick", "must be a non-empty name without '/'")
        port = read.port()
        allow_from = tuple(
            _bare_jid(read.key("allow_from"), str(entry), need_user=False).lower()
            for entry in read["allow_from"]
        )
        delay, max_delay = read.backoff("reconnect_delay", "reconnect_max_delay")
        queue_limit = read.whole("queue_limit", 0)
        ping_interval = float(read["ping_interval"])
        if ping_interval < 0:
            raise read.fail("ping_interval", "must be >= 0 (0 turns pings off)")
        return cls(
            jid=jid_text,
            password=password,
            rooms=tuple(dict.fromkeys(rooms)),
            nick=nick,
            host=read.text("host"),
            port=port,
            allow_plaintext=bool(read["allow_plaintext"]),
            direct_tls=bool(read["direct_tls"]),
            ca_file=read.text("ca_file"),
            prefix=str(read["prefix"]),
            allow_from=allow_from,
            reconnect_delay=delay,
            reconnect_max_delay=max_delay,
            queue_limit=queue_limit,
            ping_interval=ping_interval,
        )
