"""The XMPP input's settings, checked once: `[inputs.xmpp]` plus `HARKEN_XMPP_PASSWORD`.

`XmppOptions` is also the input's declaration (the `harken.input_options` entry point),
from which the config loader checks the options and reads the password; this module
imports slixmpp only when options are checked for a start. What a type cannot say (a
JID with a local part, a port in range) is checked here, so a bad value stops start-up
with one line naming the key instead of failing later on a thread nobody watches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.errors import StartupError
from config.inputs import InputSpec, input_env_var
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
        name = settings.name
        raw: Mapping[str, Any] = {**InputSpec.of(cls).defaults, **settings.options}

        def key(leaf: str) -> str:
            return f"inputs.{name}.{leaf}"

        jid_text = str(raw["jid"]).strip()
        if not jid_text:
            raise StartupError(
                f"{key('jid')}: the XMPP input needs the bot's account, e.g. "
                f"--set {key('jid')}=harken@example.org (or {input_env_var(name, 'jid')})"
            )
        _bare_jid(key("jid"), jid_text)
        password = settings.secrets.get("password")
        if password is None or not password.reveal():
            raise StartupError(
                f"{input_env_var(name, 'password')} is not set: the XMPP input needs the "
                f"password of {jid_text} in the environment"
            )
        rooms = tuple(_bare_jid(key("rooms"), str(room)) for room in raw["rooms"])
        nick = str(raw["nick"]).strip()
        if not nick or "/" in nick:
            raise StartupError(f"{key('nick')}: must be a non-empty name without '/'")
        port = raw["port"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise StartupError(f"{key('port')}: must be a port number 1-65535 (got {port!r})")
        allow_from = tuple(
            _bare_jid(key("allow_from"), str(entry), need_user=False).lower()
            for entry in raw["allow_from"]
        )
        delay, max_delay = float(raw["reconnect_delay"]), float(raw["reconnect_max_delay"])
        if not 0 < delay <= max_delay:
            raise StartupError(
                f"{key('reconnect_delay')}: must be > 0 and <= reconnect_max_delay "
                f"(got {delay} and {max_delay})"
            )
        queue_limit = raw["queue_limit"]
        if not isinstance(queue_limit, int) or queue_limit < 0:
            raise StartupError(f"{key('queue_limit')}: must be an integer >= 0")
        ping_interval = float(raw["ping_interval"])
        if ping_interval < 0:
            raise StartupError(f"{key('ping_interval')}: must be >= 0 (0 turns pings off)")
        return cls(
            jid=jid_text,
            password=password,
            rooms=tuple(dict.fromkeys(rooms)),
            nick=nick,
            host=str(raw["host"]).strip(),
            port=port,
            allow_plaintext=bool(raw["allow_plaintext"]),
            direct_tls=bool(raw["direct_tls"]),
            ca_file=str(raw["ca_file"]).strip(),
            prefix=str(raw["prefix"]),
            allow_from=allow_from,
            reconnect_delay=delay,
            reconnect_max_delay=max_delay,
            queue_limit=queue_limit,
            ping_interval=ping_interval,
        )
