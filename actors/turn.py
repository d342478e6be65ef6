"""What a person's message is: `decide` reads it into a `Plan`, and nothing else.

A command to run, a dialog to start, the answer to a dialog's step, or a word a dialog
understands on the side (`cancel`, `help`, a yes or no to "abandon it?"). `decide` is
pure: it reads the text, the commands, the open dialog, the time and whether a
scheduled job sent it; the user's code runs later, in `actors/runner.py`. A scheduled
job's text is never the answer to an open dialog.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

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
    groups: Mapping[str, str | None] = field(default_factory=dict)
    """The named groups of the dialog's pattern, for its `start`."""


@dataclass(frozen=True, slots=True)
class InDialog:
    """A dialog is open (`flow`, where `state` says): `command` is that dialog, or for
    `OfferSwitch` the one the text would start (the person must be allowed to)."""

    command: Command
    flow: Dialog
    state: DialogState


class AnswerStep(InDialog):
    """The text answers the open dialog's current step."""


class Cancel(InDialog):
    """A bare `cancel` or `stop` ends the open dialog."""


class ConfirmSwitch(InDialog):
    """Neither yes nor no to "abandon it?": ask again."""


class Resume(InDialog):
    """No to "abandon it?": go on with the open dialog."""


@dataclass(frozen=True, slots=True)
class HelpInDialog(InDialog):
    """`help` in the middle of a dialog: run it, then ask the open question again."""

    help: Command
    groups: Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class OfferSwitch(InDialog):
    """The text would start another dialog: ask whether to abandon the open one."""

    text: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """The open dialog cannot go on (it expired, or this version lacks it or its step):
    drop it, say `notice`, then do `then` with the text, read as new."""

    state: DialogState
    notice: str
    then: Plan


@dataclass(frozen=True, slots=True)
class Unknown:
    """No command takes the text (or there is no dialog to `cancel`): answer `reply`,
    which says so (and suggests the closest name)."""

    reply: str


Plan = (
    RunCommand
    | StartDialog
    | AnswerStep
    | Cancel
    | HelpInDialog
    | OfferSwitch
    | ConfirmSwitch
    | Resume
    | Dropped
    | Unknown
)


def handler(plan: Plan) -> Command | None:
    """The command whose actor authorizes and runs this plan; None for a plan that
    concerns no command (`Unknown`)."""
    if isinstance(plan, Dropped):
        return handler(plan.then)
    if isinstance(plan, Unknown):
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
    """What to do with `text`, said with `open_dialog` open (or none) at time `now`;
    `scheduled`: a scheduled job sent it (only then may it run a hidden command)."""
    text = text.strip()
    found = registry.find(text, hidden=scheduled)
    flow = dialog_of(found[0]) if found is not None else None
    starts = flow is not None
    state = open_dialog
    if state is None or (scheduled and not starts):
        if found is None:
            nothing = "There is nothing to cancel: no dialog is open."
            return Unknown(nothing if is_stop_word(text) else unknown_command_reply(text, registry))
        if flow is None:
            return RunCommand(found[0], found[1].groupdict())
        return StartDialog(found[0], flow, groups=found[1].groupdict())
    command = registry.by_name(state.dialog)
    flow = dialog_of(command) if command is not None else None
    if command is None or flow is None or flow.step(state.step) is None:
        notice = (
            f"I could not go on with your unfinished `{state.dialog}`: this version of "
            "Harken no longer has that dialog (or that step of it). I dropped it; nothing "
            "from it was saved."
        )
        return Dropped(state, notice, decide(text, registry, None, now, dialog_timeout))
    timeout = flow.timeout_seconds or dialog_timeout
    if state.expired(now, timeout):
        notice = (
            f"Your unfinished `{state.dialog}` expired after {describe_duration(timeout)} "
            "without an answer, so I dropped it; nothing from it was saved."
        )
        return Dropped(state, notice, decide(text, registry, None, now, dialog_timeout))
    if is_stop_word(text):
        return Cancel(command, flow, state)
    helper = registry.by_name("help")
    asked = helper.match(text) if helper is not None else None
    if helper is not None and asked is not None:
        return HelpInDialog(command, flow, state, helper, asked.groupdict())
    if state.switch_to is not None:
        choice = parse_yes_no(text)
        wanted = registry.find(state.switch_to)
        target = dialog_of(wanted[0]) if wanted is not None else None
        if choice is True and wanted is not None and target is not None:
            groups = wanted[1].groupdict()
            return StartDialog(wanted[0], target, abandoning=state.dialog, groups=groups)
        if choice is None:
            return ConfirmSwitch(command, flow, state)
        return Resume(command, flow, state)
    if found is not None and starts:
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


def describe_duration(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    count = max(1, round(seconds))
    return f"{count} second{'s' if count != 1 else ''}"
