"""A real SMTP server on 127.0.0.1 for the email input's tests: aiosmtpd.

`SmtpServer` picks a free port when made and listens only between `start()` and
`stop()`, so a test can let Harken find the server down and bring it up later on the
same port. With `tls` it offers STARTTLS with that certificate and refuses mail before
it (or, with `implicit_tls`, speaks TLS from the first byte); with `login` it requires
AUTH (offered only over TLS). Every mail it accepts is
kept, parsed (`Received.message`), and can be waited for (`wait_for`). `refuse` makes
it answer every RCPT with a given reply (e.g. "550 5.1.1 no such user"), and
`rcpt_count` says how many times it was asked.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .servers import free_port

__all__ = ["Received", "SmtpServer"]


@dataclass(frozen=True)
class Received:
    """One mail the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes
    login: str | None
    """Who logged in to send it (None: nobody)."""
    tls: bool
    """Whether it came over TLS."""

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def part(self, content_type: str) -> str:
        """The decoded text of the part of this type (text/plain, text/html)."""
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                text: str = part.get_content()
                return text.replace("\r\n", "\n")
        raise AssertionError(f"no {content_type} part in the mail")


class SmtpServer:
    """A private SMTP server on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        tls: tuple[Path, Path] | None = None,
        login: tuple[str, str] | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.host = "127.0.0.1"
        self.implicit_tls = implicit_tls
        self.port = free_port()
        self.tls = tls
        self.login = login
        self.refuse: str | None = None
        """A reply (`550 ...`, `451 ...`) to every RCPT; None accepts them."""
        self.rcpt_count = 0
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    # -- the handler aiosmtpd calls (on its loop thread) -----------------------------------

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        with self._changed:
            self.rcpt_count += 1
            self._changed.notify_all()
            if self.refuse is not None:
                return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        data = session.auth_data
        login = data.login.decode() if isinstance(data, LoginPassword) else None
        with self._changed:
            self.received.append(
                Received(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    content=content,
                    login=login,
                    tls=self.implicit_tls or session.ssl is not None,
                )
            )
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.login is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.login
        ok = data.login == user.encode() and data.password == password.encode()
        return AuthResult(success=ok, handled=False, auth_data=data)

    # -- control ----------------------------------------------------------------------------

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            if self.implicit_tls:
                # aiosmtpd sees TLS only when it came by STARTTLS: AUTH is over TLS here.
                kwargs.update(ssl_context=context, auth_require_tls=False)
            else:
                kwargs.update(tls_context=context, require_starttls=True)
        if self.login is not None:
            # Over implicit TLS aiosmtpd cannot require AUTH without warning that it does
            # not require TLS: it is offered, and `Received.login` says who used it.
            kwargs.update(authenticator=self._authenticate, auth_required=not self.implicit_tls)
        self._controller = Controller(
            self, hostname=self.host, port=self.port, server_hostname="localhost", **kwargs
        )
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int = 1, timeout: float = 15.0) -> list[Received]:
        """Wait until `count` mails arrived in all; every mail received so far."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(
                    f"{len(self.received)} mail(s) arrived within {timeout} s, not {count}"
                )
            return list(self.received)

    def wait_for_rcpt(self, count: int, timeout: float = 15.0) -> None:
        """Wait until the server was asked for `count` recipients in all."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.rcpt_count >= count, timeout):
                raise TimeoutError(f"asked {self.rcpt_count} time(s) within {timeout} s")
