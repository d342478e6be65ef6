"""The email output's settings, checked once: `[inputs.email]` plus `HARKEN_EMAIL_PASSWORD`.

`EmailOptions` is also the input's declaration (the `harken.input_options` entry point),
so this module stays light: the config loader and `harken check` import it. What makes a
value valid beyond its type (a TLS mode Harken knows, no plain SMTP to another machine,
a sender address, at least one allowed recipient domain) is checked here, so that
`harken run --inputs email` stops with one line naming the key instead of failing on
the first mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from actors.errors import StartupError
from config.inputs import OptionReader
from config.settings import InputSettings, Secret

TLS_MODES = ("starttls", "implicit", "none")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""The only hosts plain SMTP (`tls = "none"`) may talk to: a password or a mail never
crosses a network in clear."""

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(
    r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
MAX_ADDRESS_CHARS = 254


def split_address(text: str) -> tuple[str, str] | None:
    """(local part, lower-case domain) of a plain address `name@example.org`, else None.

    Deliberately strict: one address, no display name, no quoted local part, no comments,
    no route, nothing a mail server could read as a second recipient.
    """
    if len(text) > MAX_ADDRESS_CHARS or text.count("@") != 1:
        return None
    local, _, domain = text.partition("@")
    if len(local) > 64 or not _LOCAL_PART.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        return None
    return local, domain.lower()


@dataclass(frozen=True, kw_only=True)
class EmailOptions:
    """`[inputs.email]` options and the password, checked."""

    host: str = field(default="", metadata={"required": True})
    """The SMTP server (the "smart host") Harken hands its mail to."""
    port: int = 587
    """587 for STARTTLS (submission), 465 for implicit TLS."""
    tls: str = "starttls"
    """`starttls`, `implicit` (TLS from the first byte) or `none` (loopback only)."""
    ca_file: str = field(default="", metadata={"path": True})
    """CA bundle to verify the server's certificate; empty uses the system's."""
    username: str = ""
    """Login name; empty sends without logging in."""
    password: Secret | None = field(default=None, metadata={"secret": True})
    """From `HARKEN_EMAIL_PASSWORD`; needed when `username` is set."""
    from_address: str = field(default="", metadata={"required": True})
    """The sender, e.g. `harken@example.org`."""
    allowed_domains: tuple[str, ...] = field(default=(), metadata={"required": True})
    """Recipient domains Harken may write to (`example.org` allows `x@example.org` only,
    not its subdomains); any other recipient is refused and nothing is sent."""
    outbox_size: int = 100
    """Mails waiting to be sent, at most; a new one beyond that is refused."""
    timeout: float = 30.0
    """Seconds to wait for the server at each step of a delivery."""
    retry_delay: float = 5.0
    """After a temporary failure, the first wait before trying again (seconds); it
    doubles up to `retry_max_delay`."""
    retry_max_delay: float = 600.0

    @property
    def server(self) -> str:
        """Where mail goes, for log lines and replies."""
        return f"{self.host}:{self.port}"

    def allows(self, address: str) -> bool:
        """Whether `address` is a plain address in an allowed domain."""
        split = split_address(address)
        return split is not None and split[1] in self.allowed_domains

    @classmethod
    def from_settings(cls, settings: InputSettings) -> EmailOptions:
        """Check the settings; raise `StartupError` naming the first bad key."""
        read = OptionReader(cls, settings, StartupError)
        host = read.required("host", "the email input needs an SMTP server", "smtp.example.org")
        port = read.port()
        tls = read.text("tls").lower()
        if tls not in TLS_MODES:
            raise read.fail("tls", f"must be one of {', '.join(TLS_MODES)} (got {tls!r})")
        if tls == "none" and host.lower() not in LOOPBACK_HOSTS:
            raise read.fail(
                "tls",
                '"none" sends mail and password in clear, so it is only allowed for a '
                f"server on this machine (127.0.0.1 or localhost), not {host!r}",
            )
        username = read.text("username")
        password = read.secret(
            "password", username and f"the email input needs the password of {username}"
        )
        from_address = read.text("from_address")
        if split_address(from_address) is None:
            raise read.fail(
                "from_address",
                f"must be a plain address such as harken@example.org (got {from_address!r})",
            )
        domains: list[str] = []
        for entry in read["allowed_domains"]:
            domain = str(entry).strip().lower()
            if split_address(f"x@{domain}") is None:
                raise read.fail("allowed_domains", f"{entry!r} is not a domain such as example.org")
            domains.append(domain)
        if not domains:
            raise read.fail(
                "allowed_domains",
                'list the domains Harken may send mail to, e.g. ["example.org"]; without '
                "them it would refuse every recipient",
            )
        outbox_size, timeout = read.whole("outbox_size", 1), read.positive("timeout")
        delay, max_delay = read.backoff("retry_delay", "retry_max_delay")
        return cls(
            host=host,
            port=port,
            tls=tls,
            ca_file=read.text("ca_file"),
            username=username,
            password=password if username else None,
            from_address=from_address,
            allowed_domains=tuple(dict.fromkeys(domains)),
            outbox_size=outbox_size,
            timeout=timeout,
            retry_delay=delay,
            retry_max_delay=max_delay,
        )
