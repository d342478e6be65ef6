"""The dialog API: a multi-turn conversation declared as a form.

A dialog is a command that asks its steps' questions one after the other (`Ask`,
`Choice`, `Confirm`; `when` for branching), checks each answer, and hands them all to
a finish function, which gets what a command gets plus `answers`. The bot runs it
(`actors.runner`; README.md shows an example). This module holds the declarations and
the pure step logic: no actors, no memory, no clocks.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from commands.base import (
    Command,
    CommandError,
    CommandResult,
    check_function,
    declared,
    replies_of,
)

if TYPE_CHECKING:
    from core.context import Context

JSON = Any
"""A value `json.dumps` accepts: every answer is kept in memory as JSON."""
Answers = Mapping[str, JSON]
"""The answers so far, by step key."""
Question = str | Callable[[Answers], str]

DEFAULT_MAX_CHARS = 1000
"""Longest free-text answer an `Ask` takes unless it says otherwise."""
STATE_VERSION = 1

_FINISH_INJECTABLE = frozenset({"ctx", "answers", "event", "memory"})
_YES = frozenset({"yes", "y", "yeah", "yep", "ok", "okay", "sure", "confirm", "confirmed"})
_NO = frozenset({"no", "n", "nope", "nah"})
_STOP_WORDS = frozenset({"cancel", "stop"})


class Invalid(ValueError):
    """Raised by a step's `parse`: the answer is refused and the question asked again.

    The message is shown to the person, so say what is wrong and what would do.
    """


def is_stop_word(text: str) -> bool:
    """A bare `cancel` or `stop`: ends the open dialog (`cancel <id>` is someone else's)."""
    return text.strip().lower() in _STOP_WORDS


def parse_yes_no(text: str) -> bool | None:
    """True for yes, False for no, None for anything else."""
    word = " ".join(text.lower().split()).rstrip(".!")
    if word in _YES:
        return True
    if word in _NO:
        return False
    return None


# --- steps ------------------------------------------------------------------------------


def _required(text: str) -> str:
    text = text.strip()
    if not text:
        raise Invalid("I need an answer to go on.")
    return text


@dataclass(frozen=True)
class Step:
    """One question of a dialog; its answer is kept under `key`."""

    key: str
    question: Question
    when: Callable[[Answers], bool] | None = field(default=None, kw_only=True)
    """Ask this step only if `when(answers so far)` is true (branching)."""

    def applies(self, answers: Answers) -> bool:
        return self.when is None or bool(self.when(answers))

    def ask(self, answers: Answers) -> str:
        return self.question(answers) if callable(self.question) else self.question

    def accept(self, text: str) -> JSON:
        """The value to keep for this answer; raise `Invalid` to ask again."""
        raise NotImplementedError


@dataclass(frozen=True)
class Ask(Step):
    """A free-text answer, optionally parsed and checked by `parse`."""

    parse: Callable[[str], JSON] | None = field(default=None, kw_only=True)
    """Turns the (stripped) answer into the value to keep; raises `Invalid` to refuse it."""
    invalid: str | None = field(default=None, kw_only=True)
    """What to say when `parse` raises a plain `ValueError` (`int`, `float`, ...)."""
    max_chars: int = field(default=DEFAULT_MAX_CHARS, kw_only=True)

    def accept(self, text: str) -> JSON:
        text = _required(text)
        if len(text) > self.max_chars:
            raise Invalid(
                f"That answer is {len(text):,} characters long; "
                f"please keep it to {self.max_chars:,}."
            )
        if self.parse is None:
            return text
        try:
            return self.parse(text)
        except Invalid:
            raise
        except ValueError as exc:
            raise Invalid(self.invalid or "That is not an answer I can use.") from exc


@dataclass(frozen=True)
class Choice(Step):
    """One of a few answers (without regard to case); the question lists them."""

    choices: Sequence[str] | Mapping[str, JSON]
    """The accepted answers, or a mapping from each accepted answer to the value kept."""

    def __post_init__(self) -> None:
        if not self.choices:
            raise CommandError(f"choice {self.key!r} offers no choices")

    def labels(self) -> list[str]:
        return list(self.choices)

    def ask(self, answers: Answers) -> str:
        return f"{super().ask(answers)} ({' / '.join(self.labels())})"

    def accept(self, text: str) -> JSON:
        wanted = " ".join(_required(text).split()).lower()
        for label in self.labels():
            if label.lower() == wanted:
                if isinstance(self.choices, Mapping):
                    return self.choices[label]
                return label
        shown = text.strip()
        shown = shown if len(shown) <= 40 else shown[:40] + "…"
        offered = ", ".join(f"`{label}`" for label in self.labels())
        raise Invalid(f"`{shown}` is not one of the choices. Please answer {offered}.")


@dataclass(frozen=True)
class Confirm(Step):
    """A yes or a no. By default a no ends the dialog with `on_no` as the reply."""

    on_no: str | None = field(default="OK, I stopped there: nothing was saved.", kw_only=True)
    """The reply when the answer is no; None keeps `False` as the answer and goes on."""

    def ask(self, answers: Answers) -> str:
        return f"{super().ask(answers)} (yes/no)"

    def accept(self, text: str) -> JSON:
        answer = parse_yes_no(_required(text))
        if answer is None:
            raise Invalid("Please answer yes or no.")
        return answer


# --- the dialog -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dialog:
    """A declared dialog: its steps and what to do with the answers.

    It is the function of the `Command` that `@dialog` returns; `actors.turn.decide`
    recognises it there (`dialog_of`) and the runner runs the dialog instead of calling it.
    """

    name: str
    steps: tuple[Step, ...]
    finish: Callable[..., CommandResult]
    timeout_seconds: float | None = None
    """Expire after this long without an answer; None uses `bot.dialog_timeout_seconds`."""
    start: Callable[[Context, Mapping[str, str | None]], Answers] | None = None
    """Run when the dialog starts, with `ctx` and the named groups of its pattern: the
    answers to begin with. Raising `Invalid` refuses to start (its message is the reply)."""
    params: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise CommandError(f"dialog {self.name!r} has no steps")
        keys = [step.key for step in self.steps]
        if any(not key for key in keys):
            raise CommandError(f"dialog {self.name!r}: every step needs a key")
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise CommandError(f"dialog {self.name!r}: step keys used twice: {duplicates}")
        if self.timeout_seconds is not None and not (
            self.timeout_seconds > 0 and math.isfinite(self.timeout_seconds)
        ):
            raise CommandError(f"dialog {self.name!r}: timeout_seconds must be > 0")
        check_function(f"dialog {self.name!r}: the finish function", self.finish)
        params = tuple(inspect.signature(self.finish).parameters)
        unknown = [p for p in params if p not in _FINISH_INJECTABLE]
        if unknown:
            raise CommandError(
                f"dialog {self.name!r}: the finish function's parameter(s) "
                f"{', '.join(unknown)} are not one of {', '.join(sorted(_FINISH_INJECTABLE))}"
            )
        object.__setattr__(self, "params", params)

    def __call__(self, ctx: Context) -> CommandResult:
        # Never reached through the conversation, which runs dialogs itself; a caller
        # that invokes the command function directly gets a clear answer instead.
        return f"`{self.name}` is a dialog: say `{self.name}` to the bot to start it."

    def step(self, key: str) -> Step | None:
        for step in self.steps:
            if step.key == key:
                return step
        return None

    def next_step(self, answers: Answers, after: str | None = None) -> Step | None:
        """The first step after `after` (or from the start) that applies to `answers`."""
        index = 0
        if after is not None:
            index = next(i for i, step in enumerate(self.steps) if step.key == after) + 1
        for step in self.steps[index:]:
            if step.applies(answers):
                return step
        return None

    def call_finish(self, ctx: Context, answers: Answers) -> list[str]:
        available: dict[str, Any] = {
            "ctx": ctx,
            "answers": answers,
            "event": ctx.event,
            "memory": ctx.memory,
        }
        return replies_of(self.name, self.finish(**{p: available[p] for p in self.params}))


def dialog(
    pattern: str,
    *,
    steps: Sequence[Step],
    name: str | None = None,
    usage: str | None = None,
    description: str | None = None,
    admin_only: bool = False,
    timeout_seconds: float | None = None,
    start: Callable[[Context, Mapping[str, str | None]], Answers] | None = None,
) -> Callable[[Callable[..., CommandResult]], Command]:
    """Declare a dialog: the decorated function is called with the answers at the end.

    The result is a `Command` (found, listed in `help` and loaded like any other);
    `pattern`, `name`, `usage`, `description` and `admin_only` mean what they mean for
    `@command`. `start(ctx, groups)`, if given, runs as the dialog starts and returns
    the answers it begins with (see `Dialog.start`). A finish function that raises
    `Invalid` refuses the last answer: the person is told why and asked it again.
    """

    def wrap(finish: Callable[..., CommandResult]) -> Command:
        cmd_name = name or finish.__name__.replace("_", "-")
        flow = Dialog(cmd_name, tuple(steps), finish, timeout_seconds, start)
        return declared(
            finish,
            flow,
            pattern,
            name=cmd_name,
            usage=usage,
            description=description,
            admin_only=admin_only,
        )

    return wrap


def dialog_of(cmd: Command) -> Dialog | None:
    """The dialog a command starts, or None for a plain command."""
    return cmd.func if isinstance(cmd.func, Dialog) else None


# --- state --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DialogState:
    """Where one conversation is in one dialog; kept in memory after every step."""

    dialog: str
    step: str
    """Key of the step whose answer the next message is."""
    answers: Mapping[str, JSON]
    started_at: float
    last_activity: float
    """Wall-clock time of the last answer (the dialog expires after a quiet spell)."""
    switch_to: str | None = None
    """Text of a message that would start another dialog, while we ask whether to
    abandon this one for it."""

    def to_json(self) -> dict[str, JSON]:
        return {
            "v": STATE_VERSION,
            "dialog": self.dialog,
            "step": self.step,
            "answers": dict(self.answers),
            "started_at": self.started_at,
            "last_activity": self.last_activity,
            "switch_to": self.switch_to,
        }

    @classmethod
    def from_json(cls, raw: JSON) -> DialogState:
        """Raise ValueError for anything that is not a state this version wrote."""
        if not isinstance(raw, dict) or raw.get("v") != STATE_VERSION:
            raise ValueError("not a dialog state of this version")
        try:
            state = cls(
                dialog=str(raw["dialog"]),
                step=str(raw["step"]),
                answers=dict(raw["answers"]),
                started_at=float(raw["started_at"]),
                last_activity=float(raw["last_activity"]),
                switch_to=None if raw.get("switch_to") is None else str(raw["switch_to"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a dialog state: {exc!r}") from exc
        return state

    def expired(self, now: float, timeout_seconds: float) -> bool:
        return now - self.last_activity > timeout_seconds


class Outcome(NamedTuple):
    """What an answer did: the state after it and what to say."""

    state: DialogState | None
    """None once the dialog is over (finished, or ended by a no)."""
    replies: list[str]
    complete: bool = False
    """Every step is answered: run the finish function with `answers`."""
    answers: Answers | None = None
    """The complete answers, when `complete`."""


def begin(flow: Dialog, now: float, answers: Answers | None = None) -> Outcome:
    """Start a dialog with `answers` (from its `start`): its first question (or, if no
    step applies, completion)."""
    given = dict(answers or {})
    first = flow.next_step(given)
    if first is None:
        return Outcome(None, [], complete=True, answers=given)
    state = DialogState(flow.name, first.key, given, started_at=now, last_activity=now)
    return Outcome(state, [first.ask(given)])


def current_question(flow: Dialog, state: DialogState) -> str:
    step = flow.step(state.step)
    return step.ask(state.answers) if step is not None else ""


def answer(flow: Dialog, state: DialogState, text: str, now: float) -> Outcome:
    """Apply one answer to the current step. Runs the step's `parse` (user code)."""
    step = flow.step(state.step)
    if step is None:
        raise ValueError(f"dialog {flow.name!r} has no step {state.step!r}")
    try:
        value = step.accept(text)
    except Invalid as exc:
        touched = DialogState(
            state.dialog, state.step, state.answers, state.started_at, now, state.switch_to
        )
        return Outcome(touched, [str(exc), step.ask(state.answers)])
    if isinstance(step, Confirm) and value is False and step.on_no is not None:
        return Outcome(None, [step.on_no])
    answers = {**state.answers, step.key: value}
    following = flow.next_step(answers, after=step.key)
    if following is None:
        return Outcome(None, [], complete=True, answers=answers)
    moved = DialogState(flow.name, following.key, answers, state.started_at, now)
    return Outcome(moved, [following.ask(answers)])
