"""The IRC input's settings, checked once: `[inputs.irc]` plus its two secrets.

`IrcOptions` is also the input's declaration (the `harken.input_options` entry point):
the config loader type-checks the options against its defaults and reads the secrets
(`HARKEN_IRC_PASSWORD` for SASL, `HARKEN_IRC_SERVER_PASSWORD` for the server's `PASS`)
from the environment. `harken check` imports this module, so it imports no IRC library.
What makes a value valid beyond its type (a nick IRC accepts, a channel name, a port in
range, a positive rate) is checked here, so that `harken run --inputs irc` stops with one
line naming the key instead of failing later on a thread nobody watches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from actors.errors import StartupError
from config.inputs import InputSpec, input_env_var
from config.settings import InputSettings, Secret

# RFC 2812's nickname: a letter or special first, then letters, digits, specials, '-'.
_NICK = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*\Z")
_CHANNEL_PREFIXES = "#&+!"
# Bytes a channel name may not hold (RFC 2812): NUL, BEL, CR, LF, space, comma, colon.
_BAD_CHANNEL = re.compile(r"[\x00\x07\r\n ,:]")


@dataclass(frozen=True)
class Channel:
    """A channel to join, with its key if it has one (`+k`)."""

    name: str
    key: str = ""


@dataclass(frozen=True, kw_only=True)
class IrcOptions:
    """`[inputs.irc]` options and the secrets, checked; the defaults are the input's."""

    host: str = field(default="", metadata={"required": True})
    """The IRC server's host name (or address); required."""
    port: int = 6697
    tls: bool = True
    """TLS from the first byte (port 6697 style), with the server's certificate verified
    against the system's trusted CAs. False only for a server on loopback or a trusted
    network: everything, passwords included, then travels in clear."""
    nick: str = "harken"
    """The nick to take, and the name people address the bot by in channels."""
    alt_nicks: tuple[str, ...] = ()
    """Nicks to try, in order, when `nick` is taken; then `nick_`, `nick__`, ..."""
    username: str = ""
    """The user name sent at registration; empty uses the nick."""
    realname: str = "Harken ChatOps bot"
    channels: tuple[str, ...] = ()
    """Channels to join: "#ops", or "#ops key" for a channel with a key."""
    prefix: str = "!"
    """In channels, also answer messages starting with this (e.g. "!ping"); "" turns it
    off. Being addressed ("harken: ping") always works."""
    sasl_username: str = ""
    """The account to log in to with SASL PLAIN (its password in HARKEN_IRC_PASSWORD);
    empty: no SASL."""
    password: Secret = field(metadata={"secret": True})
    """SASL password (HARKEN_IRC_PASSWORD); needed when sasl_username is set."""
    server_password: Secret = field(metadata={"secret": True})
    """The server's connection password, sent with PASS (HARKEN_IRC_SERVER_PASSWORD)."""
    lines_per_second: float = 1.0
    """Lines sent per second once the burst is spent: IRC servers disconnect a client
    that sends faster than they allow (\"Excess Flood\")."""
    line_burst: int = 4
    """Lines that may go out at once after a quiet spell."""
    max_line_bytes: int = 400
    """Longest line of text sent (UTF-8 bytes, the "nick: " included); longer lines are
    split. A server relays at most 512 bytes per line, its own prefix included."""
    reconnect_delay: float = 1.0
    """Reconnect backoff: the first delay, doubling up to the maximum (seconds)."""
    reconnect_max_delay: float = 60.0
    queue_limit: int = 1000
    """Lines kept while disconnected, sent after reconnecting; the oldest beyond this
    are dropped (and logged)."""

    @property
    def server(self) -> str:
        """Where the bot connects, for log lines."""
        return f"{self.host}:{self.port}{' (TLS)' if self.tls else ''}"

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(channel.name for channel in self.joins)

    @property
    def joins(self) -> tuple[Channel, ...]:
        """The channels to join, parsed (names in lower case)."""
        return tuple(_channel("channels", entry) for entry in self.channels)

    @classmethod
    def from_settings(cls, settings: InputSettings) -> IrcOptions:
        """Check the settings; raise `StartupError` naming the first bad key."""
        name = settings.name
        raw: Mapping[str, Any] = {**InputSpec.of(cls).defaults, **settings.options}

        def key(leaf: str) -> str:
            return f"inputs.{name}.{leaf}"

        host = str(raw["host"]).strip()
        if not host:
            raise StartupError(
                f"{key('host')}: the IRC input needs the server, e.g. "
                f"--set {key('host')}=irc.example.org (or {input_env_var(name, 'host')})"
            )
        port = raw["port"]
        if not isinstance(port, int) or not 0 < port < 65536:
            raise StartupError(f"{key('port')}: must be a port number 1-65535 (got {port!r})")
        nick = _nick(key("nick"), str(raw["nick"]))
        alt_nicks = tuple(_nick(key("alt_nicks"), str(alt)) for alt in raw["alt_nicks"])
        channels = tuple(str(entry).strip() for entry in raw["channels"])
        for entry in channels:
            _channel(key("channels"), entry)
        sasl_username = str(raw["sasl_username"]).strip()
        password = settings.secrets.get("password") or Secret("")
        if sasl_username and not password.reveal():
            raise StartupError(
                f"{input_env_var(name, 'password')} is not set: the IRC input needs the SASL "
                f"password of {sasl_username} ({key('sasl_username')}) in the environment"
            )
        server_password = settings.secrets.get("server_password") or Secret("")
        rate, burst = float(raw["lines_per_second"]), raw["line_burst"]
        if not rate > 0:
            raise StartupError(f"{key('lines_per_second')}: must be > 0 (got {rate})")
        if not isinstance(burst, int) or burst < 1:
            raise StartupError(f"{key('line_burst')}: must be an integer >= 1 (got {burst!r})")
        max_line = raw["max_line_bytes"]
        if not isinstance(max_line, int) or not 64 <= max_line <= 450:
            raise StartupError(
                f"{key('max_line_bytes')}: must be an integer 64-450 (got {max_line!r}): "
                "a server relays at most 512 bytes per line, its own prefix included"
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
        return cls(
            host=host,
            port=port,
            tls=bool(raw["tls"]),
            nick=nick,
            alt_nicks=alt_nicks,
            username=str(raw["username"]).strip() or nick,
            realname=str(raw["realname"]).strip() or nick,
            channels=tuple(dict.fromkeys(channels)),
            prefix=str(raw["prefix"]),
            sasl_username=sasl_username,
            password=password,
            server_password=server_password,
            lines_per_second=rate,
            line_burst=burst,
            max_line_bytes=max_line,
            reconnect_delay=delay,
            reconnect_max_delay=max_delay,
            queue_limit=queue_limit,
        )


def is_channel(name: str) -> bool:
    """Whether a message target is a channel (rather than a nick)."""
    return name[:1] in _CHANNEL_PREFIXES


def _nick(key: str, text: str) -> str:
    nick = text.strip()
    if not _NICK.match(nick):
        raise StartupError(
            f"{key}: {text!r} is not a nick IRC accepts (a letter or one of []\\`_^{{|}} "
            "first, then letters, digits, those and '-')"
        )
    return nick


def _channel(key: str, entry: str) -> Channel:
    name, _, channel_key = entry.strip().partition(" ")
    channel_key = channel_key.strip()
    if not is_channel(name) or len(name) < 2 or _BAD_CHANNEL.search(name):
        raise StartupError(
            f"{key}: {entry!r} is not a channel: '#ops', or '#ops key' for one with a key"
        )
    if _BAD_CHANNEL.search(channel_key):
        raise StartupError(f"{key}: the key of {name} may not hold spaces, commas or colons")
    return Channel(name.lower(), channel_key)
