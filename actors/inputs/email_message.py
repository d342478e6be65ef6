"""One mail as Harken keeps it in its outbox, and how it is composed.

A mail is composed once, when a command asks for it: headers (From, To, Subject, Date,
Message-ID), a plain text part and an HTML part that shows the same text (escaped, in
a `<pre>`, so a report's columns line up). The composed bytes are what is stored and
sent, so a retry or a restart sends the very same message, with the same Message-ID.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from typing import Any

from actors.text import clean_text
from core.event import new_id

_POLICY = SMTP.clone(cte_type="7bit")
"""CRLF line ends, and non-ASCII text in quoted-printable or base64: the stored message
is plain ASCII, which any server takes (no 8BITMIME or SMTPUTF8 needed)."""
MAX_SUBJECT_CHARS = 200
DEFAULT_SUBJECT = "A message from {bot}"


@dataclass(frozen=True)
class Mail:
    """A composed mail waiting in the outbox."""

    id: str
    """Unique, and sorts in the order mails were queued (the outbox's file name)."""
    to: str
    subject: str
    message_id: str
    content: str
    """The whole message (headers and parts) as sent: ASCII, CRLF line ends."""
    origin: Mapping[str, Any] | None = None
    """The request (`Event.to_dict()`) that asked for it: whom to tell how it went."""
    queued_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "to": self.to,
            "subject": self.subject,
            "message_id": self.message_id,
            "content": self.content,
            "origin": dict(self.origin) if self.origin is not None else None,
            "queued_at": self.queued_at,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Mail:
        """Raises ValueError for anything that is not a mail this module wrote."""
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        try:
            origin = raw["origin"]
            if origin is not None and not isinstance(origin, dict):
                raise ValueError("origin is not an object")
            fields = {key: raw[key] for key in ("id", "to", "subject", "message_id", "content")}
            if not all(isinstance(value, str) for value in fields.values()):
                raise ValueError("a field is not a string")
            return cls(**fields, origin=origin, queued_at=float(raw["queued_at"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or wrong field: {exc}") from None


def clean_subject(subject: str, bot_name: str) -> str:
    """One line, no control characters, at most `MAX_SUBJECT_CHARS`; a default if empty."""
    line = " ".join(clean_text(subject).split())
    if len(line) > MAX_SUBJECT_CHARS:
        line = line[: MAX_SUBJECT_CHARS - 1] + "…"
    return line or DEFAULT_SUBJECT.format(bot=bot_name)


def as_html(text: str) -> str:
    """The text as a small HTML document: escaped, whitespace kept."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
        f'<pre style="font-family: monospace">{html.escape(text)}</pre>\n'
        "</body></html>\n"
    )


def compose(
    *, from_address: str, to: str, subject: str, text: str, origin: Mapping[str, Any] | None
) -> Mail:
    """A new mail; `subject` must already be clean (`clean_subject`), `to` checked."""
    body = clean_text(text)
    domain = from_address.rpartition("@")[2]
    message = EmailMessage(policy=_POLICY)
    message["From"] = from_address
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message_id = make_msgid(domain=domain)
    message["Message-ID"] = message_id
    message.set_content(body)
    message.add_alternative(as_html(body), subtype="html")
    return Mail(
        id=f"{time.time_ns():020d}-{new_id()}",
        to=to,
        subject=subject,
        message_id=message_id,
        content=message.as_string(),
        origin=origin,
        queued_at=time.time(),
    )
