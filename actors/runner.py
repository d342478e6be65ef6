"""The runner: the one path every person's message takes once `decide` has read it.

A `Turn` runs its `Plan` (a command, a dialog's start or step, `help` or `cancel`) with
a `Context`, logging a failure under an error id the reply cites; it tells memory the
dialog's new state, then one `MemoryBarrier`, and once that fires it answers and tells
the conversation `TurnDone`. Dialog states live in namespace `conversation`, in one of
`STATE_SHARDS` owners (`state_address`), so open dialogs cost few store files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pykka

from actors import turn as plans
from actors.context import Context
from actors.messages import (
    DialogLoaded,
    MemoryBarrier,
    MemoryDelete,
    MemoryFetch,
    MemoryPut,
    TurnDone,
)
from commands.base import ReplyTypeError
from commands.dialogs import (
    Choice,
    Confirm,
    Dialog,
    DialogState,
    Invalid,
    Outcome,
    answer,
    begin,
    current_question,
    dialog_of,
)
from core.context import MAX_KEY_CHARS, MAX_VALUE_BYTES, MemoryRefused
from core.event import Event, EventType
from memory.store import InvalidWrite, StoreError, encode_value

if TYPE_CHECKING:
    from actors.lanes import Slot
    from actors.runtime import Runtime
    from commands.base import Command

logger = logging.getLogger(__name__)

CONVERSATION_NS = "conversation"
"""Memory namespace of conversation state (the open dialog)."""
STATE_SHARDS = 16
CANCEL_HINT = "(Say `cancel` at any time to stop.)"
ANSWERS_KEPT = "Your answers so far are kept: answer again, or say `cancel`."
YES_NO = ("yes", "no")


def conversation_id(key: tuple[str, ...]) -> str:
    """A stable name for a conversation: unambiguous whatever its parts contain."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def new_error_id() -> str:
    """A short id that ties what a person is told to the log line with the details."""
    return uuid.uuid4().hex[:8]


def state_address(conversation: str) -> tuple[str, str]:
    """(owner, key) of a conversation's dialog state in the `conversation` namespace."""
    digest = hashlib.sha256(conversation.encode("utf-8", "surrogatepass")).hexdigest()
    owner = f"dialogs-{int(digest[:8], 16) % STATE_SHARDS:02d}"
    return owner, conversation if len(conversation) <= MAX_KEY_CHARS else f"sha256:{digest}"


def refused_store_text(exc: MemoryRefused) -> str:
    """The reply when memory refuses what a command stores (too big, a bad key)."""
    return f"Sorry, I can't store that: {exc}."


def load_dialog(runtime: Runtime, talk: str, conversation: pykka.ActorRef[Any]) -> None:
    """Ask memory for the open dialog of `talk`; `conversation` is told `DialogLoaded`.

    Returns at once: the read is a `MemoryFetch`, served with the other reads waiting
    in the memory actor, and it sees every write told to memory before this call.
    Run it first in a new conversation's lane (after its predecessor's turns), or
    from an idle conversation (its turns' writes already told).
    """
    owner, key = state_address(talk)

    def loaded(raw: Any, error: BaseException | None) -> None:  # on memory's thread
        state: DialogState | None = None
        if error is not None:
            # Memory is down or slow: carry on without the dialog rather than hang the
            # conversation; the state stays in memory for the next read.
            logger.error("could not load the dialog state of %s: %s", talk, error)
        elif raw is not None:
            try:
                state = DialogState.from_json(raw)
            except ValueError as exc:
                logger.warning("dropped an unreadable dialog state of %s: %s", talk, exc)
                with contextlib.suppress(pykka.ActorDeadError):
                    runtime.memory.tell(MemoryDelete(CONVERSATION_NS, owner, key))
        with contextlib.suppress(pykka.ActorDeadError):
            conversation.tell(DialogLoaded(state))

    try:
        runtime.memory.tell(MemoryFetch(CONVERSATION_NS, owner, key, loaded))
    except pykka.ActorDeadError:
        loaded(None, RuntimeError("memory actor is down"))


class Turn:
    """One person's message, from its plan to the reply (see the module)."""

    __slots__ = (
        "admin",
        "before",
        "command",
        "conversation",
        "ctx",
        "event",
        "name",
        "notes",
        "now",
        "plan",
        "refusal",
        "replies",
        "runtime",
        "slot",
        "state",
        "talk",
    )

    def __init__(
        self,
        runtime: Runtime,
        talk: str,
        event: Event,
        plan: plans.Plan,
        *,
        dialog: DialogState | None,
        now: float,
    ) -> None:
        self.runtime = runtime
        self.talk = talk  # the conversation's id (`conversation_id`)
        self.event = event
        self.plan: plans.Plan | None = plan
        self.command = command = plans.handler(plan)  # whose actor authorizes and runs it
        self.name = command.name if command is not None else None  # what it counts as
        self.before = self.state = dialog  # the open dialog before, and after this turn
        self.now = now
        self.conversation: pykka.ActorRef[Any] | None = None  # told `TurnDone` at the end
        self.slot: Slot | None = None  # this turn's place in its conversation's lane
        self.notes: list[Event] = []  # replies that stand whatever happens next
        self.replies: list[Event] = []
        self.ctx: Context | None = None
        self.admin: bool | None = None
        self.refusal: str | None = None

    def run_here(self, refusal: str | None = None) -> None:
        """Run on the caller's thread (it cannot wait: a quick command, a refusal), then
        give up the turn's place in the lane."""
        self.refusal = refusal
        try:
            self.run()
        finally:
            if self.slot is not None:
                self.slot.fill(None)

    def run_on_worker(self) -> None:
        """Run on a worker, in the turn's place in the lane."""
        assert self.slot is not None
        self.slot.fill(self.run)

    def is_admin(self) -> bool:
        if self.admin is None:
            self.admin = self.runtime.is_admin(self.event)
        return self.admin

    def run(self) -> None:
        plan, name = self.plan, self.name
        assert plan is not None, "a turn runs once"
        started = time.perf_counter()
        failed = False
        try:
            self._do(plan)
        except MemoryRefused as exc:
            self._error(refused_store_text(exc))
        except Exception:
            failed = True
            self._failed()
        if name is not None and self.refusal is None:
            self.runtime.metrics.command_done(name, time.perf_counter() - started, failed=failed)
        self._commit()

    # --- what each plan does --------------------------------------------------------

    def _do(self, plan: plans.Plan) -> None:
        if self.refusal is not None and not isinstance(plan, plans.Dropped):
            self._refused()
            return
        match plan:
            case plans.RunCommand(command, groups):
                self._say_all(self._call(command, groups))
            case plans.StartDialog(_, flow, abandoning, groups):
                if abandoning is not None:
                    self.state = None
                    self._say(f"OK, I abandoned `{abandoning}`.")
                self._start(flow, groups)
            case plans.AnswerStep(_, flow, state):
                self._apply(flow, answer(flow, state, self.event.data.strip(), self.now))
            case plans.Cancel(_, _, state):
                self.state = None
                self._say(f"OK, I cancelled `{state.dialog}`. Nothing from it was saved.")
            case plans.HelpInDialog(_, flow, state, help_command, groups):
                self._say_all(self._call(help_command, groups))
                question = f"{current_question(flow, state)}\n{CANCEL_HINT}"
                self._ask([f"We are in the middle of `{state.dialog}`: {question}"], flow, state)
            case plans.OfferSwitch(target, _, state, wanted):
                other = target.name
                what = "start it again" if other == state.dialog else f"start `{other}`"
                self.state = dataclasses.replace(state, switch_to=wanted, last_activity=self.now)
                self._say(
                    f"You are in the middle of `{state.dialog}`. Abandon it and {what}? (yes/no)",
                    choices=YES_NO,
                )
            case plans.ConfirmSwitch(_, _, state):
                self._say(f"Please answer yes or no: abandon `{state.dialog}`?", choices=YES_NO)
            case plans.Resume(_, flow, state):
                self.state = dataclasses.replace(state, switch_to=None, last_activity=self.now)
                question = current_question(flow, state)
                self._ask([f"OK, let's go on with `{state.dialog}`. {question}"], flow, state)
            case plans.Dropped(_, notice, then):
                self.state = None
                self.notes = [self.event.reply(notice)]
                self._do(then)
            case plans.Unknown(reply):
                self._say(reply)

    def _refused(self) -> None:
        """The command actor refused the turn: say why, and where an open dialog is."""
        assert self.refusal is not None
        state = self.state
        command = self.runtime.registry.by_name(state.dialog) if state is not None else None
        flow = dialog_of(command) if command is not None else None
        if state is None or flow is None:
            self._say(self.refusal, EventType.ERROR)
            return
        text = f"{self.refusal} We are still in `{state.dialog}`: {current_question(flow, state)}"
        self._say(text, EventType.ERROR, choices=_options(flow, state))

    def _start(self, flow: Dialog, groups: Mapping[str, str | None]) -> None:
        given = None
        if flow.start is not None:
            try:
                given = flow.start(self._context(), groups)
            except Invalid as exc:
                self._say(str(exc))
                return
        outcome = begin(flow, self.now, given)
        if outcome.complete or outcome.state is None:
            self._finish_dialog(flow, outcome)
            return
        self.state = outcome.state
        self._ask([f"{outcome.replies[0]}\n{CANCEL_HINT}"], flow, outcome.state)

    def _apply(self, flow: Dialog, outcome: Outcome) -> None:
        if outcome.complete:
            self._finish_dialog(flow, outcome)
            return
        if outcome.state is not None:
            try:
                encode_value(outcome.state.to_json(), MAX_VALUE_BYTES)
            except InvalidWrite:
                # Answers so long together that the state would not fit in memory: refuse
                # this one, keep the dialog where it was.
                self._say(
                    "That answer is too long for me to keep along with your others. "
                    "Please answer more briefly."
                )
                return
        self.state = outcome.state
        self._ask(outcome.replies, flow, outcome.state)

    def _finish_dialog(self, flow: Dialog, outcome: Outcome) -> None:
        try:
            replies = flow.call_finish(self._context(), dict(outcome.answers or {}))
        except Invalid as exc:
            # The last answer is refused: ask it again, the dialog where it was.
            state = self.state
            if state is None:
                self._say(str(exc))
                return
            self.state = dataclasses.replace(state, last_activity=self.now)
            self._ask([str(exc), current_question(flow, state)], flow, state)
            return
        # Only now: a finish that raises leaves the dialog at its last step, answers kept.
        self.state = None
        self._say_all(replies)

    # --- run ----------------------------------------------------------------------------

    def _call(self, command: Command, groups: Mapping[str, str | None]) -> list[str]:
        if command.quick:
            return command.call_quick(self.event, groups)
        return command.call(self._context(), groups)

    def _context(self) -> Context:
        if self.ctx is None:
            runtime, event = self.runtime, self.event
            self.ctx = Context(
                event,
                memory=runtime.memory,
                settings=runtime.settings,
                registry=runtime.registry,
                is_admin=self.is_admin(),
                say=lambda text: runtime.deliver(event.reply(text)),
                scheduler=runtime.scheduler,
                runtime=runtime,
            )
        return self.ctx

    def _say(
        self, text: str, type: EventType = EventType.REPLY, *, choices: tuple[str, ...] = ()
    ) -> None:
        meta = {"choices": list(choices)} if choices else {}
        self.replies.append(self.event.reply(text, type=type, **meta))

    def _say_all(self, texts: list[str]) -> None:
        self.replies.extend([self.event.reply(text) for text in texts])

    def _ask(self, texts: list[str], flow: Dialog, state: DialogState | None) -> None:
        """Say `texts`; the last is the question of `state`'s step, with its answers."""
        self._say_all(texts[:-1])
        if texts:
            self._say(texts[-1], choices=_options(flow, state) if state is not None else ())

    def _log(self, what: str, error: BaseException | None = None) -> str:
        """Log `what` went wrong (with the exception being handled unless `error` is
        given) under a new error id, and return the id."""
        error_id, event = new_error_id(), self.event
        where = f"{what} for {event.user} on {event.input} (error id {error_id})"
        if error is None:
            logger.exception("%s", where)
        else:
            logger.error("%s: %s", where, error)
        return error_id

    def _failed(self) -> None:
        error_id = self._log(f"command {self.name} failed")
        wrong = sys.exc_info()[1]
        if isinstance(wrong, StoreError):  # unreadable is not "not found": say so
            self._error(
                f"Sorry, I can't use my memory right now: {wrong.for_people} (error id {error_id})."
            )
            return
        why = f": {wrong.reason}" if isinstance(wrong, ReplyTypeError) else ""
        self._error(
            f"Sorry, `{self.name}` failed{why} (error id {error_id}). "
            "The details are in Harken's log under that id."
        )

    def _error(self, text: str) -> None:
        if self.state is not None and not isinstance(self.plan, plans.RunCommand):
            # The dialog stays where it was: the person may answer again, or cancel.
            text = f"{text} {ANSWERS_KEPT}"
        self.replies = [self.event.reply(text, type=EventType.ERROR)]

    # --- commit, answer -----------------------------------------------------------------

    def _commit(self) -> None:
        """Tell memory the dialog's new state after the command's writes, then one
        barrier; answer when it fires."""
        memory, before, after = self.runtime.memory, self.before, self.state
        wrote = self.ctx is not None and self.ctx.wrote
        self.plan = self.ctx = self.before = None
        try:
            if before is not after and not _same(before, after):
                owner, key = state_address(self.talk)
                if after is None:
                    memory.tell(MemoryDelete(CONVERSATION_NS, owner, key))
                else:
                    memory.tell(MemoryPut(CONVERSATION_NS, owner, key, after.to_json()))
                wrote = True
            if wrote:
                memory.tell(MemoryBarrier(self._committed))
                return
        except pykka.ActorDeadError:
            self._committed(RuntimeError("memory actor is down"))
            return
        self._done()

    def _committed(self, error: BaseException | None) -> None:
        if error is not None:
            error_id = self._log(f"could not save what {self.name} wrote", error)
            text = (
                f"Sorry, I could not save that (error id {error_id}); "
                "it may not be remembered. Please try again."
            )
            if isinstance(error, StoreError):
                text = f"Sorry, I can't save right now: {error.for_people} (error id {error_id})."
            self.replies = [self.event.reply(text, type=EventType.ERROR)]
        self._done()

    def _done(self) -> None:
        notes = self.notes
        self.runtime.answer(self.event, notes + self.replies if notes else self.replies)
        if self.conversation is not None:
            # The conversation may have stopped while the turn ran (its router
            # restarted); its successor needs nothing from this turn but its writes.
            with contextlib.suppress(pykka.ActorDeadError):
                self.conversation.tell(TurnDone(self.event.id, self.state))


def _options(flow: Dialog, state: DialogState) -> tuple[str, ...]:
    """The answers the current step of `state` offers, for inputs with buttons."""
    step = flow.step(state.step)
    if isinstance(step, Choice):
        return tuple(step.labels())
    return YES_NO if isinstance(step, Confirm) else ()


def _same(a: DialogState | None, b: DialogState | None) -> bool:
    """Equal but for the time of the last answer: a re-ask is not worth a disk write."""
    if a is None or b is None:
        return a is b
    return dataclasses.replace(a, last_activity=0) == dataclasses.replace(b, last_activity=0)
