"""One actor per conversation: an input, a channel, a person (and a thread, where any).

It keeps that person's messages in order and a copy of their open dialog's state,
nothing else: it reads each message (`actors.turn.decide`), takes a place in its lane
and hands the turn to the actor of its command, then takes the next message on
`TurnDone`. The dialog's state is loaded from memory when the actor starts, so the
router can retire an idle conversation at any time (ARCHITECTURE.md, Dialogs).

In a cluster (`[cluster] enabled`) another process may have answered this person
since this actor's last turn, so a message that finds the conversation idle waits for
the state to be read again, asked of memory straight from here (its turns' writes are
told already) and batched there with other such reads; messages that queued behind a
turn of this actor follow it without a read (ARCHITECTURE.md, "Running several
processes").
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

import pykka

from actors.messages import DialogLoaded, IdleNow, Inbound, RetireIfIdle, RunTurn, TurnDone
from actors.pool import Dispatcher, PooledActor
from actors.runner import Turn, conversation_id, load_dialog
from actors.turn import Unknown, decide
from core.event import Event

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from commands.dialogs import DialogState

logger = logging.getLogger(__name__)

_LOADING = "<loading the open dialog>"
"""`running` while the dialog state is read from memory: messages wait until it is in."""


ConversationKey = tuple[str, str, str, str]
"""(input, channel, user, thread). A plain tuple of strings, not a NamedTuple: the
garbage collector stops tracking those, and the router keeps one per conversation."""


def conversation_key(event: Event) -> ConversationKey:
    return (event.input, event.channel, event.user, event.thread)


class ConversationActor(PooledActor):
    def __init__(
        self, dispatcher: Dispatcher, key: ConversationKey, runtime: Runtime, router: Any
    ) -> None:
        super().__init__(dispatcher)
        self.key = key
        self.talk = conversation_id(key)
        """The conversation's id: its lane, and where its dialog's state is stored."""
        self.runtime = runtime
        self.router = router
        self.pending: deque[Event] | None = None
        """Messages waiting for the running one; None when there are none, which is
        most of the time, so that an idle conversation keeps no queue for the garbage
        collector to walk."""
        self.running: str | None = _LOADING
        """Id of the event whose turn is running, if any."""
        self.dialog: DialogState | None = None
        """The open dialog, as memory has it once the running turn's writes are durable."""
        self.reload = runtime.settings.cluster.enabled
        """Read the dialog again before a message that finds the conversation idle."""

    def on_start(self) -> None:
        # First in this conversation's lane: after any turn a predecessor left running.
        self.runtime.lanes.submit(self.talk, load_dialog, self.runtime, self.talk, self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Inbound):
            if self.running is None and self.pending is None:
                if self.reload:  # another process may have served them since
                    self._hold(message.event)
                    # Idle: this actor's turns told memory their writes before TurnDone,
                    # so the read needs no place in the lane.
                    self.running = _LOADING
                    load_dialog(self.runtime, self.talk, self.actor_ref)
                else:
                    self._take(message.event)
            else:
                self._hold(message.event)
        elif isinstance(message, TurnDone) and message.event_id == self.running:
            self.running = None
            self.dialog = message.dialog
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

    def _hold(self, event: Event) -> None:
        """Keep `event` until the running message is done."""
        if self.pending is None:
            self.pending = deque()
        self.pending.append(event)

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
        """Answer `event` now or hand it on; `running` is its id if the answer comes later."""
        runtime, dialog, talk = self.runtime, self.dialog, self.talk
        now = runtime.clock()
        plan = decide(
            event.data,
            runtime.registry,
            dialog,
            now,
            runtime.settings.bot.dialog_timeout_seconds,
            scheduled=bool(event.meta.get("scheduled")),
        )
        turn = Turn(runtime, talk, event, plan, dialog=dialog, now=now)
        if isinstance(plan, Unknown):  # nothing to wait for or write: answered right here
            turn.run()
            return
        turn.conversation = self.actor_ref
        self.running = event.id
        command = turn.command
        if command is None or not command.quick or dialog is not None:
            # A place in the lane, so that whatever runs next in it (a successor's load
            # of the dialog) comes after this turn. A quick command with no dialog open
            # runs on the dispatcher and writes nothing: it needs none.
            turn.slot = runtime.lanes.reserve(talk)
        if command is None:  # a dialog dropped, then nothing to run: no one to ask
            turn.run_on_worker()
            return
        try:
            runtime.commands[command.name].tell(RunTurn(turn))
        except pykka.ActorDeadError:
            logger.error("command %s is down; told %s so", command.name, event.user)
            turn.run_here(
                f"Sorry, `{command.name}` is not available right now. Please try again soon."
            )

    def on_stop(self) -> None:
        # Stopped while messages still waited (the router restarted, or the bot is
        # stopping; idle retirement waits for an idle conversation): hand them back to
        # the router, which gives them to this conversation's successor.
        for event in self.pending or ():
            try:
                self.router.tell(Inbound(event))
            except pykka.ActorDeadError:
                logger.warning("dropped a message from %s: the bot is stopping", event.user)
        self.pending = None
