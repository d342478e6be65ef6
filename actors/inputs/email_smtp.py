"""Handing mail to the SMTP server, with the standard library's smtplib.

The input sends from a thread of its own, one mail after another, so an event loop
would buy nothing; smtplib brings STARTTLS, TLS and AUTH without a dependency. Every
step waits at most `timeout`. A failure is permanent (5xx: not retried) or temporary
(4xx, a connection or TLS failure: retried), `SmtpFailure.permanent`. The password
goes to `SMTP.login` only; a failure is described by the server's answer, never by
what Harken sent.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from types import TracebackType

from actors.inputs.email_message import Mail
from actors.inputs.email_options import EmailOptions

__all__ = ["SmtpFailure", "SmtpSession"]

_MAX_DETAIL_CHARS = 300


class SmtpFailure(Exception):
    """A delivery failed; `str()` says why, for people and logs."""

    def __init__(self, detail: str, *, permanent: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent


def _answer(code: int, text: bytes | str) -> str:
    said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    said = " ".join(said.split())
    return f"{code} {said}"[:_MAX_DETAIL_CHARS]


def failure_of(exc: Exception) -> SmtpFailure:
    """What an exception from smtplib or the socket means for the mail."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        for code, text in exc.recipients.values():
            return SmtpFailure(_answer(code, text), permanent=500 <= code < 600)
    if isinstance(exc, smtplib.SMTPResponseException) and exc.smtp_code > 0:
        code = exc.smtp_code
        return SmtpFailure(_answer(code, exc.smtp_error), permanent=500 <= code < 600)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"the server's certificate is not trusted ({exc.verify_message})"
    elif isinstance(exc, ConnectionRefusedError):
        detail = "connection refused"
    elif isinstance(exc, ConnectionResetError):
        detail = "connection reset"
    elif isinstance(exc, TimeoutError):
        detail = "the server did not answer in time"
    elif isinstance(exc, smtplib.SMTPServerDisconnected):
        detail = "the server closed the connection"
    elif isinstance(exc, OSError):
        detail = exc.strerror or str(exc) or type(exc).__name__
    else:
        detail = str(exc) or type(exc).__name__
    return SmtpFailure(detail[:_MAX_DETAIL_CHARS], permanent=False)


class SmtpSession:
    """One connection to the server, logged in if configured: `with SmtpSession(...)`.

    Opening and `send` raise `SmtpFailure`, nothing else.
    """

    def __init__(self, options: EmailOptions) -> None:
        self.options = options
        self._smtp: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.options.ca_file or None)

    def __enter__(self) -> SmtpSession:
        options = self.options
        # EHLO names the sender's domain: asking the resolver for this machine's name
        # (smtplib's default) can take seconds where DNS is slow.
        helo = options.from_address.rpartition("@")[2]
        smtp: smtplib.SMTP | None = None
        try:
            if options.tls == "implicit":
                smtp = smtplib.SMTP_SSL(
                    options.host,
                    options.port,
                    local_hostname=helo,
                    timeout=options.timeout,
                    context=self._context(),
                )
            else:
                smtp = smtplib.SMTP(
                    options.host, options.port, local_hostname=helo, timeout=options.timeout
                )
            smtp.ehlo()
            if options.tls == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SmtpFailure(
                        "the server does not offer STARTTLS (inputs.email.tls)", permanent=False
                    )
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if options.username:
                password = options.password.reveal() if options.password is not None else ""
                smtp.login(options.username, password)
        except SmtpFailure:
            self._close(smtp)
            raise
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            self._close(smtp)
            raise failure_of(exc) from None
        self._smtp = smtp
        return self

    def send(self, mail: Mail) -> None:
        """Hand one mail to the server; raises `SmtpFailure`."""
        if self._smtp is None:
            raise SmtpFailure("not connected", permanent=False)
        try:
            self._smtp.sendmail(self.options.from_address, [mail.to], mail.content.encode("ascii"))
        except (smtplib.SMTPException, OSError) as exc:
            raise failure_of(exc) from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            self._close(smtp)

    @staticmethod
    def _close(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()
