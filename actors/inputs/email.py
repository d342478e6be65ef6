"""The email input: Harken's mail out, over SMTP (inbound mail is not read).

A command's `ctx.send(input="email", ...)` asks this actor with an `Outbound` event. On
its thread the actor checks the recipient against `allowed_domains` (anyone who can
talk to Harken can ask it to send mail, so it must never relay elsewhere), composes the
mail, stores it in the outbox and answers a `Future` the sender thread settles after
the mail's first try. A refused recipient or a full outbox is answered at once, with
nothing stored. ARCHITECTURE.md, "The email input", draws the whole path.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from actors.inputs.base import InputActor
from actors.inputs.email_message import clean_subject, compose
from actors.inputs.email_options import MAX_ADDRESS_CHARS, EmailOptions, split_address
from actors.inputs.email_outbox import Outbox, OutboxFull, outbox_path
from actors.inputs.email_sender import Sender
from actors.messages import Answered, Outbound
from core.context import SendRefused, SendResult
from core.event import Event

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)

STOP_SECONDS = 5.0
"""On stop, how long the mail being sent gets to finish (it stays queued otherwise)."""


class EmailInput(InputActor):
    options_class = EmailOptions

    @classmethod
    def preflight(cls, settings: InputSettings) -> None:
        """Check the options (a bad one stops start-up with exit 2). The server is not
        contacted: mail waits in the outbox until it answers."""
        EmailOptions.from_settings(settings)

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        super().__init__(settings, runtime, router)
        self.options = EmailOptions.from_settings(settings)
        self.bot_name = runtime.settings.bot.name
        self.outbox = Outbox(outbox_path(runtime.settings, settings.name), self.options.outbox_size)
        self.sender = Sender(
            self.options,
            self.outbox,
            tell=runtime.deliver,
            report_state=self.report_state,
            name=f"input-{settings.name}",
        )

    def on_start(self) -> None:
        super().on_start()
        waiting = len(self.outbox)
        if waiting:
            logger.info(
                "email: %d mail(s) in %s from before; sending them", waiting, self.outbox.path
            )
        self.sender.start()

    def release(self) -> None:
        self.sender.stop(STOP_SECONDS)

    def on_receive(self, message: Any) -> Any:
        # An ask from `Runtime.send` is answered with the Future of the mail's first try.
        if isinstance(message, Outbound):
            return self.take(message.event)
        if isinstance(message, Answered):
            return None  # nobody writes to Harken by mail: there is nothing to answer
        return super().on_receive(message)

    def send(self, event: Event) -> None:
        self.take(event)

    def take(self, event: Event) -> Future[SendResult]:
        """Check, compose and queue the mail `event` asks for; the Future is settled by
        its first try, or at once (with `SendRefused`) if it is not queued."""
        future: Future[SendResult] = Future()
        origin = event.meta.get("origin")
        origin = origin if isinstance(origin, dict) else None
        asker = f"{origin.get('input')}:{origin.get('from')}" if origin else "(unknown)"
        to = event.to.strip()
        if split_address(to) is None:
            logger.warning("email: refused a mail to %r asked by %s: not an address", to, asker)
            future.set_exception(
                SendRefused(
                    f"`{to[:MAX_ADDRESS_CHARS]}` is not a plain email address such as "
                    "name@example.org; nothing was sent"
                )
            )
            return future
        if not self.options.allows(to):
            allowed = ", ".join(self.options.allowed_domains)
            logger.warning(
                "email: refused a mail to %s asked by %s: its domain is not in "
                "allowed_domains (%s)",
                to,
                asker,
                allowed,
            )
            future.set_exception(
                SendRefused(
                    f"I may only send mail to addresses at {allowed}, not to {to}; nothing was sent"
                )
            )
            return future
        subject = clean_subject(str(event.meta.get("subject") or ""), self.bot_name)
        mail = compose(
            from_address=self.options.from_address,
            to=to,
            subject=subject,
            text=event.data,
            origin=origin,
        )
        try:
            self.outbox.add(mail)
        except OutboxFull as exc:
            logger.warning(
                "email: refused a mail to %s asked by %s: outbox full (%s)", to, asker, exc
            )
            future.set_exception(
                SendRefused(
                    f"my email outbox is full ({exc}) until the mail server takes them; "
                    "nothing was sent"
                )
            )
            return future
        except OSError as exc:
            logger.error("email: cannot store a mail in %s: %s", self.outbox.path, exc)
            future.set_exception(
                SendRefused(
                    f"I can't write my email outbox ({exc.strerror or exc}); nothing was sent"
                )
            )
            return future
        logger.info(
            "email: queued %s to %s for %s (subject %r)", mail.message_id, to, asker, subject
        )
        self.sender.submit(mail, future)
        return future
