"""The thread that empties the email outbox: deliveries, retries, and who hears of them.

A round connects (STARTTLS or TLS, login), sends every waiting mail in order and hangs
up. A temporary failure ends the round and backs off (`retry_delay` doubling to
`retry_max_delay`); a permanent one (5xx) removes that mail and reports it. A command
that asked waits briefly on a `Future` for the first try; an outcome nobody waits for
goes as a message to the conversation that asked (the mail's `origin`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError

from actors.inputs.base import Backoff
from actors.inputs.email_message import Mail
from actors.inputs.email_options import EmailOptions
from actors.inputs.email_outbox import Outbox
from actors.inputs.email_smtp import SmtpFailure, SmtpSession
from actors.metrics import DISCONNECTED, UP
from core.context import SendRefused, SendResult
from core.event import Event, EventType

__all__ = ["Sender"]

logger = logging.getLogger(__name__)


class Sender:
    """Sends the outbox on a thread of its own; `submit` wakes it for a new mail."""

    def __init__(
        self,
        options: EmailOptions,
        outbox: Outbox,
        *,
        tell: Callable[[Event], None],
        report_state: Callable[[str], None],
        name: str,
    ) -> None:
        self.options = options
        self.outbox = outbox
        self._tell = tell
        self._report_state = report_state
        self._changed = threading.Condition()
        self._waiting: dict[str, Future[SendResult]] = {}
        self._stopping = False
        self._backoff = Backoff(options.retry_delay, options.retry_max_delay)
        self._retry_at = 0.0
        """When the next round may start after a failure (time.monotonic); 0: at once."""
        self._last_failure = ""
        self._thread = threading.Thread(target=self._run, name=f"{name}-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop after the mail being sent, if any; mails not sent stay in the outbox."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._changed:
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            _set(
                future,
                SendResult(
                    delivered=False,
                    note="Harken is stopping; the mail waits in its outbox and goes out "
                    "after the restart",
                ),
            )

    def submit(self, mail: Mail, future: Future[SendResult]) -> None:
        """`mail` is in the outbox: send it soon, and settle `future` after its first try
        (at once if the server failed a moment ago and the next try is not due yet)."""
        with self._changed:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                _set(
                    future,
                    SendResult(
                        delivered=False,
                        note=f"the mail server failed at the last try ({self._last_failure}); "
                        f"I'll try again in {wait:.0f} s and tell you if it fails for good",
                    ),
                )
            else:
                self._waiting[mail.id] = future
            self._changed.notify_all()

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._stopping:
                    if len(self.outbox):
                        wait = self._retry_at - time.monotonic()
                        if wait <= 0:
                            break
                        self._changed.wait(wait)
                    else:
                        self._changed.wait()
                if self._stopping:
                    return
            try:
                self._round()
            except Exception as exc:  # a bug must not stop the mail for good
                logger.exception("email: the sender failed; trying again later")
                self._retry_later(SmtpFailure(f"internal error: {exc}", permanent=False))

    def _round(self) -> None:
        mails = self.outbox.pending()
        try:
            with SmtpSession(self.options) as session:
                for mail in mails:
                    if self._stopping:
                        return
                    try:
                        session.send(mail)
                    except SmtpFailure as failure:
                        if not failure.permanent:
                            raise
                        self._refused(mail, failure)
                    else:
                        self._delivered(mail)
        except SmtpFailure as failure:
            if not failure.permanent:
                self._retry_later(failure)
                return
            # A 5xx outside one mail's send (the login) refuses every mail of the round.
            for mail in mails:
                if mail.id in self.outbox:
                    self._refused(mail, failure)
        with self._changed:
            self._backoff.reset()
            self._retry_at = 0.0
        self._report_state(UP)

    def _delivered(self, mail: Mail) -> None:
        self.outbox.remove(mail.id)
        logger.info(
            "email: delivered %s to %s via %s (subject %r)",
            mail.message_id,
            mail.to,
            self.options.server,
            mail.subject,
        )
        self._settle(
            mail,
            SendResult(delivered=True),
            f"The mail to {mail.to} ({mail.subject}) is delivered now.",
        )

    def _refused(self, mail: Mail, failure: SmtpFailure) -> None:
        self.outbox.remove(mail.id)
        logger.warning(
            "email: %s refused the mail %s to %s (%s); not retried",
            self.options.server,
            mail.message_id,
            mail.to,
            failure.detail,
        )
        self._settle(
            mail,
            SendRefused(f"the mail server refused it ({failure.detail}); nothing was sent"),
            f"I could not send the mail to {mail.to} ({mail.subject}): the mail server "
            f"refused it ({failure.detail}). I won't try again.",
            error=True,
        )

    def _retry_later(self, failure: SmtpFailure) -> None:
        options = self.options
        with self._changed:
            wait = self._backoff.next_wait()
            self._retry_at = time.monotonic() + wait
            self._last_failure = failure.detail
            waiting, self._waiting = self._waiting, {}
        self._report_state(DISCONNECTED)
        logger.warning(
            "email: cannot deliver %d mail(s) via %s (%s); trying again in %.1f s",
            len(self.outbox),
            options.server,
            failure.detail,
            wait,
        )
        for future in waiting.values():
            _set(
                future,
                SendResult(
                    delivered=False,
                    note=f"the mail server is not taking mail right now ({failure.detail}); "
                    "I'll keep trying and tell you if it fails for good",
                ),
            )

    def _settle(
        self, mail: Mail, outcome: SendResult | SendRefused, later: str, *, error: bool = False
    ) -> None:
        """Tell whoever waits for `mail` the outcome; if nobody does (any more), tell the
        conversation that asked for it."""
        with self._changed:
            future = self._waiting.pop(mail.id, None)
        if future is not None and _set(future, outcome):
            return
        if mail.origin is None:
            return
        try:
            origin = Event.from_dict(mail.origin)
        except ValueError:
            logger.warning("email: cannot tell who asked for %s: %s", mail.message_id, later)
            return
        self._tell(origin.reply(later, type=EventType.ERROR if error else EventType.REPLY))


def _set(future: Future[SendResult], outcome: SendResult | SendRefused) -> bool:
    """Settle `future`; False if its asker had stopped waiting (cancelled it)."""
    try:
        if isinstance(outcome, SendRefused):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        return False
    return True
