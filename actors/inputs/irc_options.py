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
from dataclasses import dataclass, field

from actors.errors import StartupError
from config.inputs import OptionReader
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
        read = OptionReader(cls, settings, StartupError)
        host = read.required("host", "the IRC input needs the server", "irc.example.org")
        port = read.port()
        nick = _nick(read.key("nick"), str(read["nick"]))
        alt_nicks = tuple(_nick(read.key("alt_nicks"), str(alt)) for alt in read["alt_nicks"])
        channels = tuple(str(entry).strip() for entry in read["channels"])
        for entry in channels:
            _channel(read.key("channels"), entry)
        sasl_username = read.text("sasl_username")
        password = read.secret(
            "password",
            sasl_username
            and f"the IRC input needs the SASL password of {sasl_username} "
            f"({read.key('sasl_username')})",
        )
        rate, burst = read.positive("lines_per_second"), read.whole("line_burst", 1)
        max_line = read["max_line_bytes"]
        if not isinstance(max_line, int) or not 64 <= max_line <= 450:
            raise read.fail(
                "max_line_bytes",
                f"must be an integer 64-450 (got {max_line!r}): "
                "a server relays at most 512 bytes per line, its own prefix included",
            )
        delay, max_delay = read.backoff("reconnect_delay", "reconnect_max_delay")
        return cls(
            host=host,
            port=port,
            tls=bool(read["tls"]),
            nick=nick,
            alt_nicks=alt_nicks,
            username=read.text("username") or nick,
            realname=read.text("realname") or nick,
            channels=tuple(dict.fromkeys(channels)),
            prefix=str(read["prefix"]),
            sasl_username=sasl_username,
            password=password,
            server_password=read.secret("server_password"),
            lines_per_second=rate,
            line_burst=burst,
            max_line_bytes=max_line,
            reconnect_delay=delay,
            reconnect_max_delay=max_delay,
            queue_limit=read.whole("queue_limit", 0),
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
