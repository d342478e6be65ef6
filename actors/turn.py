"""What a person's message is: `decide` reads it into a `Plan`, and nothing else.

A message is a command to run, a dialog to start, the answer to a dialog's step, or one
of the words a dialog understands on the side (`cancel`, `help`, a yes or no to
"abandon it?"). Which one depends only on the text, the commands, the open dialog, the
time and whether a scheduled job sent it, so `decide` is a pure function: no actors, no
memory, no user code (a step's `parse`, a question written as a function and a finish
function all run later, in the runner, `actors/runner.py`). The conversation calls it
on the dispatcher for every message it takes.

A scheduled job's text (`run in 10 minutes ...`) is the person's command, never the
answer to whatever dialog they have open when it fires: it runs as a command, and the
dialog stays where it was. Only such text may run a hidden command.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from commands.base import Command, Registry
from commands.dialogs import Dialog, DialogState, dialog_of, is_stop_word, parse_yes_no


@dataclass(frozen=True, slots=True)
class RunCommand:
    """Run a plain command with the named groups of its pattern."""

    command: Command
    groups: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class StartDialog:
    """Start a dialog; `abandoning` names the open one the person said yes to leaving."""

    command: Command
    flow: Dialog
    abandoning: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerStep:
    """The text answers the open dialog's current step."""

    command: Command
    flow: Dialog
    state: DialogState


@dataclass(frozen=True, slots=True)
class Cancel:
    """A bare `cancel` or `stop` ends the open dialog."""

    command: Command
    state: DialogState


@dataclass(frozen=True, slots=True)
class HelpInDialog:
    """`help` in the middle of a dialog: run it, then ask the open question again."""

    command: Command
    """The open dialog (its turns count as calls of it)."""
    help: Command
    groups: Mapping[str, str | None]
    flow: Dialog
    state: DialogState


@dataclass(frozen=True, slots=True)
class OfferSwitch:
    """The text would start another dialog: ask whether to abandon the open one."""

    command: Command
    """The dialog the text would start: the person must be allowed to start it."""
    flow: Dialog
    state: DialogState
    text: str


@dataclass(frozen=True, slots=True)
class ConfirmSwitch:
    """Neither yes nor no to "abandon it?": ask again."""

    command: Command
    state: DialogState


@dataclass(frozen=True, slots=True)
class Resume:
    """No to "abandon it?": go on with the open dialog."""

    command: Command
    flow: Dialog
    state: DialogState


@dataclass(frozen=True, slots=True)
class Expired:
    """The open dialog waited longer than `timeout` seconds: drop it, then do `then`."""

    state: DialogState
    timeout: float
    then: Plan


@dataclass(frozen=True, slots=True)
class Gone:
    """The open dialog (or its step) no longer exists in this version: drop it, then
    do `then`."""

    state: DialogState
    then: Plan


@dataclass(frozen=True, slots=True)
class Unknown:
    """No command matches: `reply` says so and suggests the closest name."""

    reply: str


@dataclass(frozen=True, slots=True)
class NothingToCancel:
    """A bare `cancel` or `stop` with no dialog open (and no command taking it)."""


Plan = (
    RunCommand
    | StartDialog
    | AnswerStep
    | Cancel
    | HelpInDialog
    | OfferSwitch
    | ConfirmSwitch
    | Resume
    | Expired
    | Gone
    | Unknown
    | NothingToCancel
)


def handler(plan: Plan) -> Command | None:
    """The command whose actor authorizes and runs this plan; None for a plan that
    concerns no command (an unknown command, nothing to cancel)."""
    if isinstance(plan, Expired | Gone):
        return handler(plan.then)
    if isinstance(plan, Unknown | NothingToCancel):
        return None
    return plan.command


def decide(
    text: str,
    registry: Registry,
    open_dialog: DialogState | None,
    now: float,
    dialog_timeout: float,
    *,
    scheduled: bool = False,
) -> Plan:
    """What to do with `text`, said with `open_dialog` open (or none) at time `now`.

    `dialog_timeout` is how long a dialog waits for an answer unless it sets its own;
    `scheduled`: a scheduled job sent the text (`Event.meta["scheduled"]`).
    """
    text = text.strip()
    found = registry.find(text, hidden=scheduled)
    starts = found is not None and dialog_of(found[0]) is not None
    if open_dialog is not None and (starts or not scheduled):
        return _in_dialog(
            text, found, registry, open_dialog, now=now, dialog_timeout=dialog_timeout
        )
    if found is None:
        if is_stop_word(text):
            return NothingToCancel()
        return Unknown(unknown_command_reply(text, registry))
    command, match = found
    flow = dialog_of(command)
    if flow is not None:
        return StartDialog(command, flow)
    return RunCommand(command, match.groupdict())


def _in_dialog(
    text: str,
    found: tuple[Command, re.Match[str]] | None,
    registry: Registry,
    state: DialogState,
    *,
    now: float,
    dialog_timeout: float,
) -> Plan:
    command = registry.by_name(state.dialog)
    flow = dialog_of(command) if command is not None else None
    if command is None or flow is None or flow.step(state.step) is None:
        return Gone(state, decide(text, registry, None, now, dialog_timeout))
    timeout = flow.timeout_seconds or dialog_timeout
    if state.expired(now, timeout):
        return Expired(state, timeout, decide(text, registry, None, now, dialog_timeout))
    if is_stop_word(text):
        return Cancel(command, state)
    help_command = registry.by_name("help")
    match = help_command.match(text) if help_command is not None else None
    if help_command is not None and match is not None:
        return HelpInDialog(command, help_command, match.groupdict(), flow, state)
    if state.switch_to is not None:
        choice = parse_yes_no(text)
        wanted = registry.find(state.switch_to)
        target = dialog_of(wanted[0]) if wanted is not None else None
        if choice is True and wanted is not None and target is not None:
            return StartDialog(wanted[0], target, abandoning=state.dialog)
        if choice is None:
            return ConfirmSwitch(command, state)
        return Resume(command, flow, state)
    if found is not None and dialog_of(found[0]) is not None:
        return OfferSwitch(found[0], flow, state, text)
    return AnswerStep(command, flow, state)


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
