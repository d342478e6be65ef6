"""One actor per command: it decides whether a call may run, runs it, and reports.

The actor hands each call to the shared worker pool, so a command that takes ten seconds
(an HTTP check, a runbook) holds one worker thread and delays nobody else, not even
another person calling the same command. Only commands declared `quick` (they compute
their reply from their arguments, and cannot reach memory) run on the actor itself,
which saves waking a worker on every call. The actor owns the command's policy (who
may call it).

A call ends, whatever happens, with its replies delivered, the input told the event is
processed, and the conversation told `InvocationDone`, in that order.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from actors.access import authorize
from actors.context import Context
from actors.messages import InvocationDone, Invoke, MemoryBarrier
from actors.pool import Dispatcher
from actors.supervision import SupervisedPooledActor
from commands.base import ReplyTypeError
from core.context import MemoryRefused
from core.event import Event, EventType
from memory.store import StoreError

if TYPE_CHECKING:
    from actors.services import Services
    from commands.base import Command

logger = logging.getLogger(__name__)


def new_error_id() -> str:
    return uuid.uuid4().hex[:8]


class CommandActor(SupervisedPooledActor):
    def __init__(self, dispatcher: Dispatcher, command: Command, services: Services) -> None:
        super().__init__(dispatcher)
        self.command = command
        self.services = services

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Invoke):
            self._invoke(message)
        return None

    def _invoke(self, message: Invoke) -> None:
        event = message.event
        is_admin = self.services.is_admin(event)
        refusal = authorize(
            self.services.settings,
            self.services.metrics,
            self.command.name,
            admin_only=self.command.admin_only,
            event=event,
            is_admin=is_admin,
        )
        if refusal is not None:
            finish_call(self.services, event, [event.reply(refusal, type=EventType.ERROR)], message)
            return
        if self.command.quick:
            self._run_quick(message)
        else:
            self.services.workers.submit(self._run, message, is_admin)

    def _run_quick(self, message: Invoke) -> None:
        """Runs on the actor's own (dispatcher) thread: the command cannot wait."""
        event = message.event
        started = time.perf_counter()
        failed = False
        try:
            replies = [event.reply(text) for text in self.command.call_quick(event, message.groups)]
        except Exception:
            failed = True
            replies = [self._failure_reply(event)]
        self.services.metrics.command_done(
            self.command.name, time.perf_counter() - started, failed=failed
        )
        finish_call(self.services, event, replies, message)

    def _failure_reply(self, event: Event) -> Event:
        """Log the exception being handled under a new error id; the reply that cites it."""
        error_id = new_error_id()
        logger.exception(
            "command %s failed for %s on %s (error id %s)",
            self.command.name,
            event.user,
            event.input,
            error_id,
        )
        wrong = sys.exc_info()[1]
        why = f": {wrong.reason}" if isinstance(wrong, ReplyTypeError) else ""
        text = (
            f"Sorry, `{self.command.name}` failed{why} (error id {error_id}). "
            "The details are in Harken's log under that id."
        )
        failure = sys.exc_info()[1]
        if isinstance(failure, StoreError):  # unreadable is not "not found": say so
            text = (
                f"Sorry, I can't use my memory right now: {failure.for_people} "
                f"(error id {error_id})."
            )
        return event.reply(text, type=EventType.ERROR)

    def _run(self, message: Invoke, is_admin: bool) -> None:
        """Runs on a worker thread."""
        event = message.event
        services = self.services
        ctx = Context(
            event,
            memory=services.memory,
            settings=services.settings,
            registry=services.registry,
            is_admin=is_admin,
            say=lambda text: services.deliver(event.reply(text)),
            scheduler=services.scheduler,
            services=services,
        )
        started = time.perf_counter()
        failed = False
        try:
            replies = [event.reply(text) for text in self.command.call(ctx, message.groups)]
        except MemoryRefused as exc:
            replies = [event.reply(f"Sorry, I can't store that: {exc}.", type=EventType.ERROR)]
        except Exception:
            failed = True
            replies = [self._failure_reply(event)]
        services.metrics.command_done(
            self.command.name, time.perf_counter() - started, failed=failed
        )
        if not ctx.wrote:
            finish_call(services, event, replies, message)
            return
        try:
            services.memory.tell(MemoryBarrier(self._after_commit(event, replies, message)))
        except pykka.ActorDeadError:
            self._after_commit(event, replies, message)(RuntimeError("memory actor is down"))

    def _after_commit(
        self, event: Event, replies: list[Event], message: Invoke
    ) -> Callable[[BaseException | None], None]:
        def notify(error: BaseException | None) -> None:
            if error is None:
                finish_call(self.services, event, replies, message)
                return
            error_id = new_error_id()
            logger.error(
                "could not save what %s wrote for %s on %s (error id %s): %s",
                self.command.name,
                event.user,
                event.input,
                error_id,
                error,
            )
            text = (
                f"Sorry, I could not save that (error id {error_id}); "
                "it may not be remembered. Please try again."
            )
            if isinstance(error, StoreError):
                text = f"Sorry, I can't save right now: {error.for_people} (error id {error_id})."
            finish_call(self.services, event, [event.reply(text, type=EventType.ERROR)], message)

        return notify


def finish_call(services: Services, event: Event, replies: list[Event], message: Invoke) -> None:
    services.answer(event, replies)
    # The conversation may have stopped while the command ran (its router restarted);
    # its successor needs nothing.
    with contextlib.suppress(pykka.ActorDeadError):
        message.conversation.tell(InvocationDone(event.id))
