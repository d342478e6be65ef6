"""Runs dialogs for the conversations, on the worker pool.

A conversation actor runs on the dispatcher and must not block, so every step of a
dialog (loading its state, running the step's `parse`, the finish function, writing
the state) is a job here, on the worker pool, like a command. A job ends the way a
command does: replies to the input once everything it wrote is durable, then
`DialogTurnDone` (or `DialogLoaded`) to the conversation, which only then takes the
person's next message. So the state in memory is always the state the last reply
promised: the next question is sent only after the answer before it is on disk.

State lives in memory, namespace `conversation`: a `DialogState` as JSON under the
conversation's id (`conversation_id`), in one of `STATE_SHARDS` owners picked by a hash of
that id (`state_address`); nothing is stored while no dialog is open. Shards rather than
one owner per conversation because the store rewrites one file per owner written since
its last checkpoint: 5,000 open dialogs then cost 16 small files, not 5,000.

Succession. Idle retirement waits until a conversation says it is idle, but a
conversation can still be stopped while a job of its runs (its router crashed and was
restarted, which stops every conversation), and a successor starts for the next
message. Two rules keep them from working on the same state at once:

* every job for a conversation holds that conversation's lock (`DialogRuntime.exclusive`)
  from before it reads or runs anything until it has told memory its writes, and the
  successor's load takes the same lock, so it reads what the job wrote;
* each conversation actor claims a generation when it starts; a job whose actor is no
  longer the current one does nothing and hands its message back to the router, which
  gives it to the successor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pykka

from actors.access import authorize
from actors.command_actor import new_error_id
from actors.context import Context
from actors.messages import (
    DialogLoaded,
    DialogTurnDone,
    Inbound,
    MemoryBarrier,
    MemoryDelete,
    MemoryGet,
    MemoryPut,
)
from commands.base import ReplyTypeError
from commands.dialogs import (
    Dialog,
    DialogState,
    Outcome,
    answer,
    begin,
    current_question,
    dialog_of,
    is_stop_word,
    parse_yes_no,
)
from core.context import MAX_KEY_CHARS, MAX_VALUE_BYTES, MemoryRefused
from core.event import Event, EventType
from memory.store import InvalidWrite, encode_value

if TYPE_CHECKING:
    from actors.conversation import ConversationKey
    from actors.services import Services
    from commands.base import Command

logger = logging.getLogger(__name__)

CONVERSATION_NS = "conversation"
"""Memory namespace of conversation state (the open dialog)."""
STATE_SHARDS = 16
CANCEL_HINT = "(Say `cancel` at any time to stop.)"
_ASK_TIMEOUT = 10.0


def conversation_id(key: ConversationKey) -> str:
    """A stable name for a conversation: unambiguous whatever its parts contain."""
    return json.dumps(list(key), ensure_ascii=False, separators=(",", ":"))


def state_address(conversation: str) -> tuple[str, str]:
    """(owner, key) of a conversation's dialog state in the `conversation` namespace."""
    digest = hashlib.sha256(conversation.encode("utf-8", "surrogatepass")).hexdigest()
    owner = f"dialogs-{int(digest[:8], 16) % STATE_SHARDS:02d}"
    return owner, conversation if len(conversation) <= MAX_KEY_CHARS else f"sha256:{digest}"


def describe_duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = max(1, round(seconds))
    return f"{count} second{'s' if count != 1 else ''}"


class DialogRuntime:
    """What every conversation's dialog jobs share: per-conversation locks and
    generations, and the clock dialogs expire by (tests may replace it)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._guard = threading.Lock()
        # conversation -> [lock, number of jobs holding or waiting for it]; an entry lives only
        # while a job needs it, so 50,000 past conversations cost nothing here.
        self._locks: dict[str, list[Any]] = {}
        self._current: dict[str, int] = {}
        self._generations = itertools.count(1)

    def claim(self, talk: str) -> int:
        """A new actor for conversation `talk` starts: it is now the current one."""
        with self._guard:
            generation = next(self._generations)
            self._current[talk] = generation
            return generation

    def release(self, talk: str, generation: int) -> None:
        """A conversation actor stopped; forget it unless a successor already claimed."""
        with self._guard:
            if self._current.get(talk) == generation:
                del self._current[talk]

    def is_current(self, talk: str, generation: int) -> bool:
        with self._guard:
            return self._current.get(talk) == generation

    @contextlib.contextmanager
    def exclusive(self, talk: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.get(talk)
            if entry is None:
                entry = self._locks[talk] = [threading.Lock(), 0]
            entry[1] += 1
        lock: threading.Lock = entry[0]
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[talk]

    def held_locks(self) -> int:
        """Locks in use right now (for tests: none are left behind)."""
        with self._guard:
            return len(self._locks)


def load_state(services: Services, talk: str, conversation: pykka.ActorRef[Any]) -> None:
    """Worker job: read the conversation's open dialog and tell it `DialogLoaded`."""
    state: DialogState | None = None
    try:
        with services.dialogs.exclusive(talk):
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


class DialogTurn:
    """One message handled by the dialog machinery: a start, an answer, a control word.

    Built on the dispatcher by the conversation, run on a worker (`start` or `answer`).
    """

    def __init__(
        self,
        services: Services,
        event: Event,
        *,
        talk: str,
        generation: int,
        conversation: pykka.ActorRef[Any],
        router: Any,
    ) -> None:
        self.services = services
        self.talk = talk
        """The conversation's id (`conversation_id`)."""
        self.generation = generation
        self.event = event
        self.conversation = conversation
        self.router = router
        self.replies: list[Event] = []
        self.state: DialogState | None = None
        self.wrote = False
        self.again = False
        self.denied = False
        """Refused by the access rules: not counted as a call."""

    # --- entry points (worker threads) --------------------------------------------------

    def start(self, cmd: Command) -> None:
        """Start the dialog `cmd` declares (no dialog is open)."""
        with self.services.dialogs.exclusive(self.talk):
            if not self._current(None):
                return
            started, failed = time.perf_counter(), False
            try:
                self._start(cmd)
            except MemoryRefused as exc:
                self._refused(exc)
            except Exception:
                failed = True
                self._failed(cmd.name)
            self._count(cmd.name, started, failed)
            self._write_state(None)
        self._finish()

    def answer(self, state: DialogState) -> None:
        """Handle the next message of an open dialog."""
        with self.services.dialogs.exclusive(self.talk):
            if not self._current(state):
                return
            self.state = state
            started, failed = time.perf_counter(), False
            try:
                self._answer(state)
            except MemoryRefused as exc:
                self._refused(exc)
            except Exception:
                failed = True
                self._failed(state.dialog)
            self._count(state.dialog, started, failed)
            self._write_state(state)
        self._finish()

    # --- what a message does ------------------------------------------------------------

    def _start(self, cmd: Command) -> None:
        flow = dialog_of(cmd)
        assert flow is not None
        refusal = self._refusal(cmd)
        if refusal is not None:
            self._say(refusal, EventType.ERROR)
            return
        outcome = begin(flow, self._now())
        if outcome.complete:
            self._complete(flow, outcome)
            return
        self.state = outcome.state
        self._say(f"{outcome.replies[0]}\n{CANCEL_HINT}")

    def _answer(self, state: DialogState) -> None:
        services = self.services
        text = self.event.data.strip()
        flow = self._flow(state.dialog)
        timeout = (flow.timeout_seconds if flow else None) or (
            services.settings.bot.dialog_timeout_seconds
        )
        if flow is None or flow.step(state.step) is None:
            self._drop(
                f"I could not go on with your unfinished `{state.dialog}`: this version of "
                "Harken no longer has that dialog (or that step of it). I dropped it; "
                "nothing from it was saved."
            )
            return
        if state.expired(self._now(), timeout):
            self._drop(
                f"Your unfinished `{state.dialog}` expired after "
                f"{describe_duration(timeout)} without an answer, so I dropped it; nothing "
                "from it was saved."
            )
            return
        if is_stop_word(text):
            self.state = None
            self._say(f"OK, I cancelled `{state.dialog}`. Nothing from it was saved.")
            return
        help_cmd = services.registry.by_name("help")
        match = help_cmd.match(text) if help_cmd is not None else None
        if help_cmd is not None and match is not None:
            for line in help_cmd.call(self._context(), match.groupdict()):
                self._say(line)
            self._say(
                f"We are in the middle of `{state.dialog}`: "
                f"{current_question(flow, state)}\n{CANCEL_HINT}"
            )
            return
        if state.switch_to is not None:
            self._answer_switch(flow, state, text)
            return
        found = services.registry.find(text)
        if found is not None and dialog_of(found[0]) is not None:
            other = found[0].name
            refusal = self._refusal(found[0])
            if refusal is not None:
                self._say(
                    f"{refusal} We are still in `{state.dialog}`: {current_question(flow, state)}",
                    EventType.ERROR,
                )
                return
            what = "start it again" if other == state.dialog else f"start `{other}`"
            self.state = dataclasses.replace(state, switch_to=text, last_activity=self._now())
            self._say(f"You are in the middle of `{state.dialog}`. Abandon it and {what}? (yes/no)")
            return
        outcome = answer(flow, state, text, self._now())
        if outcome.complete:
            self._complete(flow, outcome)
            return
        self._apply(outcome)

    def _answer_switch(self, flow: Dialog, state: DialogState, text: str) -> None:
        assert state.switch_to is not None
        choice = parse_yes_no(text)
        found = self.services.registry.find(state.switch_to)
        target = found[0] if found is not None and dialog_of(found[0]) is not None else None
        if choice is True and target is not None:
            self._say(f"OK, I abandoned `{state.dialog}`.")
            self.state = None
            self._start(target)
            return
        if choice is None:
            self._say(f"Please answer yes or no: abandon `{state.dialog}`?")
            return
        self.state = dataclasses.replace(state, switch_to=None, last_activity=self._now())
        self._say(f"OK, let's go on with `{state.dialog}`. {current_question(flow, state)}")

    def _apply(self, outcome: Outcome) -> None:
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
        for text in outcome.replies:
            self._say(text)

    def _complete(self, flow: Dialog, outcome: Outcome) -> None:
        ctx = self._context()
        try:
            replies = flow.call_finish(ctx, dict(outcome.answers or {}))
        finally:
            # What the finish function wrote before it failed is still told to memory.
            self.wrote = self.wrote or ctx.wrote
        # Only now: a finish that raises leaves the dialog at its last step, answers kept.
        self.state = None
        for text in replies:
            self._say(text)

    def _drop(self, notice: str) -> None:
        """The open dialog cannot go on: say why, and handle the message as a new one."""
        self.state = None
        self.again = True
        self.services.deliver(self.event.reply(notice))

    def _refused(self, exc: MemoryRefused) -> None:
        # The finish function tried to store what memory refuses (too big, bad key).
        self.replies = [
            self.event.reply(
                f"Sorry, I can't store that: {exc}. Your answers so far are kept: answer "
                "again, or say `cancel`.",
                type=EventType.ERROR,
            )
        ]

    def _failed(self, name: str) -> None:
        # The dialog stays where it was (state unchanged): the person may answer again,
        # or cancel. Whatever the step's code wrote before failing is still told.
        error_id = new_error_id()
        logger.exception(
            "dialog %s failed for %s on %s (error id %s)",
            name,
            self.event.user,
            self.event.input,
            error_id,
        )
        wrong = sys.exc_info()[1]
        why = f": {wrong.reason}" if isinstance(wrong, ReplyTypeError) else ""
        self.replies = [
            self.event.reply(
                f"Sorry, `{name}` failed{why} (error id {error_id}). The details are in "
                "Harken's log under that id. Your answers so far are kept: answer again, or "
                "say `cancel`.",
                type=EventType.ERROR,
            )
        ]

    # --- plumbing ---------------------------------------------------------------------

    def _current(self, state: DialogState | None) -> bool:
        """Whether this job's conversation is still the live one; if not, hand its
        message to the router for the successor, and tell the old actor it is done."""
        if self.services.dialogs.is_current(self.talk, self.generation):
            return True
        logger.debug("handing a message of %s to the conversation's successor", self.talk)
        with contextlib.suppress(pykka.ActorDeadError):
            self.router.tell(Inbound(self.event))
        with contextlib.suppress(pykka.ActorDeadError):
            self.conversation.tell(DialogTurnDone(self.event.id, state))
        return False

    def _write_state(self, before: DialogState | None) -> None:
        """Tell memory the new state (still under the lock, so a successor reads it)."""
        memory, after = self.services.memory, self.state
        if after == before or (after is not None and before is not None and _same(after, before)):
            return
        try:
            if after is None:
                memory.tell(MemoryDelete(CONVERSATION_NS, *state_address(self.talk)))
            else:
                owner, key = state_address(self.talk)
                memory.tell(MemoryPut(CONVERSATION_NS, owner, key, after.to_json()))
            self.wrote = True
        except pykka.ActorDeadError:
            self._could_not_save(RuntimeError("memory actor is down"))

    def _finish(self) -> None:
        if not self.wrote:
            self._done()
            return
        try:
            self.services.memory.tell(MemoryBarrier(self._after_commit))
        except pykka.ActorDeadError:
            self._after_commit(RuntimeError("memory actor is down"))

    def _after_commit(self, error: BaseException | None) -> None:
        if error is not None:
            self._could_not_save(error)
        self._done()

    def _could_not_save(self, error: BaseException) -> None:
        error_id = new_error_id()
        logger.error(
            "could not save the dialog of %s on %s (error id %s): %s",
            self.event.user,
            self.event.input,
            error_id,
            error,
        )
        self.replies = [
            self.event.reply(
                f"Sorry, I could not save that (error id {error_id}); it may not be "
                "remembered. Please try again.",
                type=EventType.ERROR,
            )
        ]

    def _done(self) -> None:
        if not self.again:
            self.services.answer(self.event, self.replies)
        with contextlib.suppress(pykka.ActorDeadError):
            self.conversation.tell(DialogTurnDone(self.event.id, self.state, self.again))

    def _say(self, text: str, type: EventType = EventType.REPLY) -> None:
        self.replies.append(self.event.reply(text, type=type))

    def _count(self, name: str, started: float, failed: bool) -> None:
        """A dialog turn is a call of its dialog in the metrics, as a command's run is."""
        if not self.denied:
            self.services.metrics.command_done(name, time.perf_counter() - started, failed=failed)

    def _refusal(self, cmd: Command) -> str | None:
        """The same access rules as for a command (admins only, `[access.commands]`)."""
        services = self.services
        refusal = authorize(
            services.settings,
            services.metrics,
            cmd.name,
            admin_only=cmd.admin_only,
            event=self.event,
            is_admin=services.is_admin(self.event),
        )
        self.denied = self.denied or refusal is not None
        return refusal

    def _flow(self, name: str) -> Dialog | None:
        cmd = self.services.registry.by_name(name)
        return dialog_of(cmd) if cmd is not None else None

    def _now(self) -> float:
        return self.services.dialogs.clock()

    def _context(self) -> Context:
        services, event = self.services, self.event
        return Context(
            event,
            memory=services.memory,
            settings=services.settings,
            registry=services.registry,
            is_admin=services.is_admin(event),
            say=lambda text: services.deliver(event.reply(text)),
            # The same Context a command gets, so a finish function can schedule work
            # and reach the ops services too.
            scheduler=services.scheduler,
            services=services,
        )


def _same(a: DialogState, b: DialogState) -> bool:
    """Equal but for the time of the last answer: a re-ask is not worth a disk write."""
    return (a.dialog, a.step, dict(a.answers), a.switch_to) == (
        b.dialog,
        b.step,
        dict(b.answers),
        b.switch_to,
    )
