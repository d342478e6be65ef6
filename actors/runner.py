"""The runner: the one path every person's message takes once `decide` has read it.

The conversation reads a message into a `Plan` (`actors/turn.py`) and hands it here as
a `Turn`, whatever it is: a command, a dialog's start or step, `help` or `cancel` in a
dialog. A turn

1. authorizes the command or dialog it runs (admins only; the groups of
   `[access.commands]`): a refusal is logged, counted and answered;
2. runs it (with a `Context`, which always carries `services`), timing it for
   `services.metrics`; a failure is logged under an error id, which the reply cites;
3. commits once: tells memory the dialog's new state (if it changed) after whatever
   the command wrote, then one `MemoryBarrier`;
4. answers once that barrier fires (`services.answer`), never earlier, then tells the
   conversation `TurnDone` with the dialog as it now is.

A turn runs on the worker pool, in its conversation's lane (`actors/lanes.py`), except
one that can neither wait nor write (a `quick` command, an unknown command), which the
conversation runs inline on the dispatcher: same code, no Context, no `TurnDone`.

Dialog state lives in memory, namespace `conversation`: a `DialogState` as JSON under
the conversation's id (`conversation_id`), in one of `STATE_SHARDS` owners picked by a
hash of that id (`state_address`); nothing is stored while no dialog is open. Shards
rather than one owner per conversation because the store rewrites one file per owner
written since its last checkpoint: 5,000 open dialogs then cost 16 small files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pykka

from actors.access import refusal
from actors.event import Event, EventType
from actors.messages import (
    DialogLoaded,
    MemoryBarrier,
    MemoryDelete,
    MemoryGet,
    MemoryPut,
    TurnDone,
)
from actors.turn import (
    AnswerStep,
    Cancel,
    ConfirmSwitch,
    Expired,
    Gone,
    HelpInDialog,
    NothingToCancel,
    OfferSwitch,
    Plan,
    Resume,
    RunCommand,
    StartDialog,
    Unknown,
)
from commands.context import MAX_KEY_CHARS, MAX_VALUE_BYTES, Context, MemoryRefused
from commands.dialogs import Dialog, DialogState, Outcome, answer, begin, current_question
from commands.when import say_duration
from memory.store import InvalidWrite, encode_value

if TYPE_CHECKING:
    from actors.services import Services
    from commands.base import Command

logger = logging.getLogger(__name__)

ConversationKey = tuple[str, str, str, str]
"""(input, channel, user, thread). A plain tuple of strings, not a NamedTuple: the
garbage collector stops tracking those, and the router keeps one per conversation."""

CONVERSATION_NS = "conversation"
"""Memory namespace of conversation state (the open dialog)."""
STATE_SHARDS = 16
CANCEL_HINT = "(Say `cancel` at any time to stop.)"
_ASK_TIMEOUT = 10.0


def conversation_key(event: Event) -> ConversationKey:
    return (event.input, event.channel, event.user, event.thread)


def conversation_id(key: ConversationKey) -> str:
    """A stable name for a conversation: unambiguous whatever its parts contain."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def state_address(conversation: str) -> tuple[str, str]:
    """(owner, key) of a conversation's dialog state in the `conversation` namespace."""
    digest = hashlib.sha256(conversation.encode("utf-8", "surrogatepass")).hexdigest()
    owner = f"dialogs-{int(digest[:8], 16) % STATE_SHARDS:02d}"
    return owner, conversation if len(conversation) <= MAX_KEY_CHARS else f"sha256:{digest}"


def runs_inline(plan: Plan) -> bool:
    """Whether the conversation may run this plan on its own thread: it cannot wait
    (no Context, no user code but a quick command's) and writes nothing."""
    if isinstance(plan, RunCommand):
        return plan.command.quick
    return isinstance(plan, Unknown | NothingToCancel)


def load_dialog(services: Services, talk: str, conversation: pykka.ActorRef[Any]) -> None:
    """Worker job, first in a new conversation's lane: tell it `DialogLoaded`."""
    state: DialogState | None = None
    try:
        raw = services.memory.ask(
            MemoryGet(CONVERSATION_NS, *state_address(talk)), timeout=_ASK_TIMEOUT
        )
        if raw is not None:
            state = DialogState.from_json(raw)
    except ValueError as exc:
        logger.warning("dropped an unreadable dialog state of %s: %s", talk, exc)
        with contextlib.suppress(pykka.ActorDeadError):
            services.memory.tell(MemoryDelete(CONVERSATION_NS, *state_address(talk)))
    except Exception:
        # Memory is down or slow: carry on without the dialog rather than hang the
        # conversation; the state stays in memory for the next conversation actor.
        logger.exception("could not load the dialog state of %s", talk)
    with contextlib.suppress(pykka.ActorDeadError):
        conversation.tell(DialogLoaded(state))


def _counted_as(plan: Plan) -> str | None:
    """The command or dialog a plan's turn counts as a call of (None: no call)."""
    if isinstance(plan, RunCommand | StartDialog | AnswerStep | HelpInDialog):
        return plan.command.name
    if isinstance(plan, Expired | Gone):
        return _counted_as(plan.then)
    if isinstance(plan, Cancel | OfferSwitch | ConfirmSwitch | Resume):
        return plan.state.dialog
    return None


class Turn:
    """One person's message, from authorization to the reply (see the module)."""

    # A turn waits for its barrier holding only what its answer needs (replies, the
    # dialog): with slots and without its Context, it costs the collector little.
    __slots__ = (
        "admin",
        "before",
        "conversation",
        "ctx",
        "event",
        "name",
        "notes",
        "now",
        "plan",
        "refused",
        "replies",
        "services",
        "state",
        "talk",
    )

    def __init__(
        self,
        services: Services,
        talk: str,
        event: Event,
        plan: Plan,
        *,
        dialog: DialogState | None,
        now: float,
        conversation: pykka.ActorRef[Any] | None,
    ) -> None:
        self.services = services
        self.talk = talk
        """The conversation's id (`conversation_id`)."""
        self.event = event
        self.plan: Plan | None = plan
        self.name = _counted_as(plan)
        """The command or dialog this turn counts as a call of, if any."""
        self.before = dialog
        self.state = dialog
        """The open dialog after this turn, so far."""
        self.now = now
        self.conversation = conversation
        """Told `TurnDone` at the end; None when the conversation runs the turn inline."""
        self.notes: list[Event] | None = None
        """Replies that stand whatever happens next (an expired dialog's notice)."""
        self.replies: list[Event] = []
        self.ctx: Context | None = None
        self.admin: bool | None = None
        self.refused = False

    def run(self) -> None:
        plan, name = self.plan, self.name
        assert plan is not None, "a turn runs once"
        started = time.perf_counter()
        failed = False
        try:
            self._do(plan)
        except MemoryRefused as exc:
            self._error(f"Sorry, I can't store that: {exc}.")
        except Exception:
            failed = True
            error_id = new_error_id()
            logger.exception(
                "command %s failed for %s on %s (error id %s)",
                name,
                self.event.user,
                self.event.input,
                error_id,
            )
            self._error(
                f"Sorry, `{name}` failed (error id {error_id}). "
                "The details are in Harken's log under that id."
            )
        if name is not None and not self.refused:
            self.services.metrics.command_done(name, time.perf_counter() - started, failed=failed)
        self._commit()

    # --- what each plan does --------------------------------------------------------

    def _do(self, plan: Plan) -> None:
        text = self.event.data.strip()
        match plan:
            case RunCommand(command, groups):
                if self._allowed(command):
                    self._say_all(self._call(command, groups))
            case StartDialog(command, flow, abandoning):
                if abandoning is not None:
                    self.state = None
                    self._say(f"OK, I abandoned `{abandoning}`.")
                if self._allowed(command):
                    self._start(flow)
            case AnswerStep(command, flow, state):
                if self._allowed(command):
                    self._apply(flow, answer(flow, state, text, self.now))
            case Cancel(state):
                self.state = None
                self._say(f"OK, I cancelled `{state.dialog}`. Nothing from it was saved.")
            case HelpInDialog(command, groups, flow, state):
                if self._allowed(command):
                    self._say_all(self._call(command, groups))
                self._say(
                    f"We are in the middle of `{state.dialog}`: "
                    f"{current_question(flow, state)}\n{CANCEL_HINT}"
                )
            case OfferSwitch(target, flow, state, wanted):
                if not self._allowed(target):
                    self._say(f"We are still in `{state.dialog}`: {current_question(flow, state)}")
                    return
                other = target.name
                what = "start it again" if other == state.dialog else f"start `{other}`"
                self.state = dataclasses.replace(state, switch_to=wanted, last_activity=self.now)
                self._say(
                    f"You are in the middle of `{state.dialog}`. Abandon it and {what}? (yes/no)"
                )
            case ConfirmSwitch(state):
                self._say(f"Please answer yes or no: abandon `{state.dialog}`?")
            case Resume(flow, state):
                self.state = dataclasses.replace(state, switch_to=None, last_activity=self.now)
                self._say(f"OK, let's go on with `{state.dialog}`. {current_question(flow, state)}")
            case Expired(state, timeout, then):
                duration = say_duration(timedelta(seconds=max(1, round(timeout))))
                self._drop(
                    f"Your unfinished `{state.dialog}` expired after {duration} without an "
                    "answer, so I dropped it; nothing from it was saved.",
                    then,
                )
            case Gone(state, then):
                self._drop(
                    f"I could not go on with your unfinished `{state.dialog}`: this version "
                    "of Harken no longer has that dialog (or that step of it). I dropped it; "
                    "nothing from it was saved.",
                    then,
                )
            case Unknown(reply):
                self._say(reply)
            case NothingToCancel():
                self._say("There is nothing to cancel: no dialog is open.")

    def _drop(self, notice: str, then: Plan) -> None:
        self.state = None
        self.notes = [self.event.reply(notice)]
        self._do(then)

    def _start(self, flow: Dialog) -> None:
        outcome = begin(flow, self.now)
        if outcome.complete:
            self._finish_dialog(flow, outcome)
            return
        self.state = outcome.state
        self._say(f"{outcome.replies[0]}\n{CANCEL_HINT}")

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
        self._say_all(outcome.replies)

    def _finish_dialog(self, flow: Dialog, outcome: Outcome) -> None:
        replies = flow.call_finish(self._context(), dict(outcome.answers or {}))
        # Only now: a finish that raises leaves the dialog at its last step, answers kept.
        self.state = None
        self._say_all(replies)

    # --- authorize, run ---------------------------------------------------------------

    def _is_admin(self) -> bool:
        if self.admin is None:
            self.admin = self.services.is_admin(self.event)
        return self.admin

    def _allowed(self, command: Command) -> bool:
        event = self.event
        refused = refusal(
            self.services.settings, command.name, command.admin_only, event, self._is_admin()
        )
        if refused is None:
            return True
        reason, text = refused
        self.refused = True
        self.services.metrics.refused(command.name)
        logger.warning("refused %s for %s on %s: %s", command.name, event.user, event.input, reason)
        self._say(text, EventType.ERROR)
        return False

    def _call(self, command: Command, groups: Any) -> list[str]:
        if command.quick:
            return command.call_quick(self.event, groups)
        return command.call(self._context(), groups)

    def _context(self) -> Context:
        if self.ctx is None:
            services, event = self.services, self.event
            self.ctx = Context(
                event,
                memory=services.memory,
                settings=services.settings,
                registry=services.registry,
                is_admin=self._is_admin(),
                say=lambda text: services.deliver(event.reply(text)),
                scheduler=services.scheduler,
                services=services,
            )
        return self.ctx

    def _say(self, text: str, type: EventType = EventType.REPLY) -> None:
        self.replies.append(self.event.reply(text, type=type))

    def _say_all(self, texts: list[str]) -> None:
        reply = self.event.reply
        self.replies.extend([reply(text) for text in texts])

    def _error(self, text: str) -> None:
        if self.state is not None:
            # The dialog stays where it was: the person may answer again, or cancel.
            text += " Your answers so far are kept: answer again, or say `cancel`."
        self.replies = [self.event.reply(text, type=EventType.ERROR)]

    # --- commit, answer -----------------------------------------------------------------

    def _commit(self) -> None:
        """Tell memory the dialog's new state after the command's writes, then one
        barrier; answer when it fires."""
        memory, before, after = self.services.memory, self.before, self.state
        wrote = self.ctx is not None and self.ctx.wrote
        self.plan = self.ctx = self.before = None
        try:
            if not _same(before, after):
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
            error_id = new_error_id()
            logger.error(
                "could not save what %s wrote for %s on %s (error id %s): %s",
                self.name,
                self.event.user,
                self.event.input,
                error_id,
                error,
            )
            text = (
                f"Sorry, I could not save that (error id {error_id}); "
                "it may not be remembered. Please try again."
            )
            self.replies = [self.event.reply(text, type=EventType.ERROR)]
        self._done()

    def _done(self) -> None:
        replies = self.notes + self.replies if self.notes is not None else self.replies
        self.services.answer(self.event, replies)
        if self.conversation is not None:
            # The conversation may have stopped while the turn ran (its router
            # restarted); its successor needs nothing from this turn but its writes.
            with contextlib.suppress(pykka.ActorDeadError):
                self.conversation.tell(TurnDone(self.event.id, self.state))


def new_error_id() -> str:
    return uuid.uuid4().hex[:8]


def _same(a: DialogState | None, b: DialogState | None) -> bool:
    """Equal but for the time of the last answer: a re-ask is not worth a disk write."""
    if a is None or b is None:
        return a is b
    return (a.dialog, a.step, a.answers, a.switch_to, a.started_at) == (
        b.dialog,
        b.step,
        b.answers,
        b.switch_to,
        b.started_at,
    )
