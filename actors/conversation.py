"""One actor per conversation: an input, a channel, a person (and a thread, where any).

The conversation keeps that person's messages in order: it hands one message at a time
to the command that matches it and takes the next once the command reports
`InvocationDone`. Different conversations run side by side. Text that matches no command
gets a pointer to `help` here, without a trip to a command actor.

While a dialog is open (`commands.dialogs`), the person's next messages here are its
answers: each goes to a dialog job on the worker pool (`actors.dialog_runner`), which
also handles `cancel`/`stop`, `help`, and a second dialog started mid-way. The
conversation keeps a copy of the open dialog's state, loaded from memory when the actor
starts and replaced by every job's result.

Conversations hold nothing that is not also in memory, so the router can retire an idle
one at any time and start a fresh one for the next message.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import pykka

from actors.dialog_runner import DialogTurn, conversation_id, load_state
from actors.messages import (
    DialogLoaded,
    DialogTurnDone,
    IdleNow,
    Inbound,
    InvocationDone,
    Invoke,
    RetireIfIdle,
)
from actors.pool import Dispatcher, PooledActor
from commands.dialogs import DialogState, dialog_of, is_stop_word
from core.event import Event, EventType

if TYPE_CHECKING:
    from actors.services import Services
    from commands.base import Registry

logger = logging.getLogger(__name__)

_LOADING = "<loading the open dialog>"
"""`running` while the dialog state is read from memory: messages wait until it is in."""


ConversationKey = tuple[str, str, str, str]
"""(input, channel, user, thread). A plain tuple of strings, not a NamedTuple: the
garbage collector stops tracking those, and the router keeps one per conversation."""


def conversation_key(event: Event) -> ConversationKey:
    return (event.input, event.channel, event.user, event.thread)


def unknown_command_reply(text: str, registry: Registry) -> str:
    """A short answer for text that matches no command, suggesting the closest name."""
    words = text.split()
    if not words:
        return "Say `help` to see what I can do."
    too_long = registry.limit_reply(text)
    if too_long is not None:
        return too_long
    word = words[0].lower()
    known = registry.by_name(word)
    if known is not None:
        return f"Usage: {known.usage}. Say `help {known.name}` for more."
    shown = word if len(word) <= 40 else word[:40] + "…"
    close = difflib.get_close_matches(word, registry.names(), n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return f"I don't know the command `{shown}`.{hint} Say `help` to see what I can do."


class ConversationActor(PooledActor):
    def __init__(
        self, dispatcher: Dispatcher, key: ConversationKey, services: Services, router: Any
    ) -> None:
        super().__init__(dispatcher)
        self.key = key
        self.services = services
        self.router = router
        self.pending: deque[Event] | None = None
        """Messages waiting for the running one; None when there are none, which is
        most of the time, so that an idle conversation keeps no queue for the garbage
        collector to walk."""
        self.running: str | None = _LOADING
        """Id of the event whose command or dialog step is running, if any."""
        self.talk = conversation_id(key)
        self.generation = 0
        self.dialog: DialogState | None = None
        """The open dialog, as memory has it once the running job's writes are durable."""
        self.dialog_event: Event | None = None
        """The message the running dialog job handles; None between jobs, so that a
        waiting dialog holds no old message for the garbage collector to walk."""

    def on_start(self) -> None:
        self.generation = self.services.dialogs.claim(self.talk)
        self.services.workers.submit(load_state, self.services, self.talk, self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Inbound):
            if self.running is None and self.pending is None:
                self._take(message.event)
            else:
                self._hold(message.event)
        elif isinstance(message, InvocationDone) and message.event_id == self.running:
            self.running = None
            self._dispatch()
        elif isinstance(message, DialogTurnDone) and message.event_id == self.running:
            self.running = None
            self.dialog = message.state
            if message.again:
                # The dialog had expired: this message is not an answer but a new one.
                self._hold(self._event_for_again(message.event_id), first=True)
            self.dialog_event = None
            self._dispatch()
        elif isinstance(message, RetireIfIdle):
            if self.running is None and self.pending is None:
                # A router that restarted meanwhile stops this actor itself.
                with contextlib.suppress(pykka.ActorDeadError):
                    self.router.tell(IdleNow(self.key, message.seen))
        elif isinstance(message, DialogLoaded) and self.running == _LOADING:
            self.running = None
            self.dialog = message.state
            self._dispatch()
        return None

    def _event_for_again(self, event_id: str) -> Event:
        event = self.dialog_event
        assert event is not None
        assert event.id == event_id
        return event

    def _dialog_job(self, event: Event) -> DialogTurn:
        self.dialog_event = event
        self.running = event.id
        return DialogTurn(
            self.services,
            event,
            talk=self.talk,
            generation=self.generation,
            conversation=self.actor_ref,
            router=self.router,
        )

    def _hold(self, event: Event, *, first: bool = False) -> None:
        """Keep `event` until the running message is done (first in line if `first`)."""
        pending = self.pending
        if pending is None:
            pending = self.pending = deque()
        if first:
            pending.appendleft(event)
        else:
            pending.append(event)

    def _dispatch(self) -> None:
        """Take the waiting messages, in order, until one has to be waited for."""
        pending = self.pending
        if pending is None:
            return
        while self.running is None and pending:
            self._take(pending.popleft())
        if not pending:
            self.pending = None

    def _take(self, event: Event) -> None:
        """Answer `event` or hand it on; `running` is its id if the answer comes later."""
        services = self.services
        if self.dialog is not None:
            services.workers.submit(self._dialog_job(event).answer, self.dialog)
            return
        text = event.data.strip()
        # Harken's hidden commands match only the text of a scheduled job.
        found = services.registry.find(text, hidden=bool(event.meta.get("scheduled")))
        if found is not None and dialog_of(found[0]) is not None:
            services.workers.submit(self._dialog_job(event).start, found[0])
            return
        if found is None and is_stop_word(text):
            services.answer(event, [event.reply("There is nothing to cancel: no dialog is open.")])
            return
        if found is None:
            services.answer(event, [event.reply(unknown_command_reply(text, services.registry))])
            return
        command, match = found
        try:
            services.commands[command.name].tell(Invoke(event, match.groupdict(), self.actor_ref))
        except pykka.ActorDeadError:
            logger.error("command %s is down; told %s so", command.name, event.user)
            text = f"Sorry, `{command.name}` is not available right now. Please try again soon."
            services.answer(event, [event.reply(text, type=EventType.ERROR)])
            return
        self.running = event.id

    def on_stop(self) -> None:
        self.services.dialogs.release(self.talk, self.generation)
        # Stopped while messages still waited (the router restarted, or the bot is
        # stopping; idle retirement waits for an idle conversation): hand them back to
        # the router, which gives them to this conversation's successor.
        for event in self.pending or ():
            try:
                self.router.tell(Inbound(event))
            except pykka.ActorDeadError:
                logger.warning("dropped a message from %s: the bot is stopping", event.user)
        self.pending = None
