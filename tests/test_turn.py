"""What a message is (`actors.turn.decide`): pure, no actors, no memory, no user code.

And which command's actor authorizes and runs each plan (`actors.turn.handler`).
"""

from __future__ import annotations

import dataclasses

import pytest

from actors.turn import (
    AnswerStep,
    Cancel,
    ConfirmSwitch,
    Dropped,
    HelpInDialog,
    OfferSwitch,
    Plan,
    Resume,
    RunCommand,
    StartDialog,
    Unknown,
    decide,
    handler,
)
from commands.base import Command, Registry, command
from commands.builtin.basic import echo, help, ping
from commands.dialogs import Answers, Ask, Choice, DialogState, dialog, dialog_of

NOW = 1_800_000_000.0
NOTHING = Unknown("There is nothing to cancel: no dialog is open.")
TIMEOUT = 1800.0

asked: list[str] = []


def _question(answers: Answers) -> str:
    asked.append("called")  # a question is user code: decide must not call it
    return "How many?"


@dialog(r"^deploy$", steps=[Choice("env", "Which?", ["prod", "staging"]), Ask("n", _question)])
def deploy(answers: Answers) -> str:
    return "deployed"


@dialog(r"^survey$", steps=[Ask("a", "A?")], timeout_seconds=60)
def survey(answers: Answers) -> str:
    return "thanks"


@command(r"^cancel (?P<job>\w+)$", usage="cancel <id>")
def cancel_job(job: str) -> str:
    return f"cancelled {job}"


@command(r"^tick$", usage="tick", hidden=True)
def tick() -> str:
    return "ticked"


REGISTRY = Registry([ping, echo, help, cancel_job, tick, deploy, survey])


def flow(cmd: Command):  # type: ignore[no-untyped-def]
    found = dialog_of(cmd)
    assert found is not None
    return found


def open_deploy(**changes: object) -> DialogState:
    state = DialogState("deploy", "env", {}, started_at=NOW - 60, last_activity=NOW - 60)
    return dataclasses.replace(state, **changes)  # type: ignore[arg-type]


def plan(
    text: str,
    state: DialogState | None = None,
    registry: Registry = REGISTRY,
    *,
    scheduled: bool = False,
) -> Plan:
    return decide(text, registry, state, NOW, TIMEOUT, scheduled=scheduled)


# --- no dialog open -------------------------------------------------------------------


def test_a_command_runs_with_the_groups_of_its_pattern() -> None:
    assert plan("ping") == RunCommand(ping, {})
    assert plan("  echo hello there ") == RunCommand(echo, {"text": "hello there"})
    assert plan("cancel k3x9pq") == RunCommand(cancel_job, {"job": "k3x9pq"})


def test_a_dialogs_pattern_starts_it() -> None:
    assert plan("deploy") == StartDialog(deploy, flow(deploy))


@pytest.mark.parametrize("word", ["cancel", "stop", " STOP "])
def test_a_bare_cancel_with_no_dialog_open_has_nothing_to_cancel(word: str) -> None:
    assert plan(word) == NOTHING


def test_an_unknown_command_is_answered_with_the_closest_name() -> None:
    assert plan("pnig") == Unknown(
        "I don't know the command `pnig`. Did you mean `ping`? Say `help` to see what I can do."
    )
    assert plan("echo") == RunCommand(echo, {"text": None})
    assert plan("") == Unknown("Say `help` to see what I can do.")


# --- a dialog open --------------------------------------------------------------------


def test_in_a_dialog_any_other_text_answers_the_step_even_a_command() -> None:
    state = open_deploy()
    for text in ["prod", "ping", "echo hi", "cancel k3x9pq"]:
        assert plan(text, state) == AnswerStep(deploy, flow(deploy), state)
    assert asked == []


@pytest.mark.parametrize("word", ["cancel", "stop", " Cancel "])
def test_cancel_or_stop_ends_the_open_dialog(word: str) -> None:
    assert plan(word, open_deploy()) == Cancel(deploy, flow(deploy), open_deploy())


def test_help_runs_mid_dialog_with_its_groups() -> None:
    state = open_deploy()
    assert plan("help", state) == HelpInDialog(deploy, flow(deploy), state, help, {"name": None})
    assert plan("help ping", state) == HelpInDialog(
        deploy, flow(deploy), state, help, {"name": "ping"}
    )


def test_a_dialogs_pattern_mid_dialog_offers_to_switch() -> None:
    state = open_deploy()
    assert plan("survey", state) == OfferSwitch(survey, flow(deploy), state, "survey")
    assert plan("deploy", state) == OfferSwitch(deploy, flow(deploy), state, "deploy")


def test_the_answer_to_abandon_it_is_yes_no_or_asked_again() -> None:
    state = open_deploy(switch_to="survey")
    assert plan("yes", state) == StartDialog(survey, flow(survey), abandoning="deploy")
    assert plan("Nope", state) == Resume(deploy, flow(deploy), state)
    assert plan("perhaps", state) == ConfirmSwitch(deploy, flow(deploy), state)
    assert plan("cancel", state) == Cancel(deploy, flow(deploy), state)
    assert plan("help", state) == HelpInDialog(deploy, flow(deploy), state, help, {"name": None})


def test_yes_to_a_dialog_that_is_gone_goes_on_with_the_open_one() -> None:
    state = open_deploy(switch_to="survey")
    without = Registry([ping, echo, help, deploy])
    assert plan("yes", state, without) == Resume(deploy, flow(deploy), state)


EXPIRED = (
    "Your unfinished `deploy` expired after 30 minutes without an answer, so I dropped it; "
    "nothing from it was saved."
)
GONE = (
    "I could not go on with your unfinished `deploy`: this version of Harken no longer has "
    "that dialog (or that step of it). I dropped it; nothing from it was saved."
)


def test_an_expired_dialog_is_dropped_and_the_text_read_as_new() -> None:
    quiet = open_deploy(last_activity=NOW - TIMEOUT - 1)
    assert plan("ping", quiet) == Dropped(quiet, EXPIRED, RunCommand(ping, {}))
    assert plan("deploy", quiet) == Dropped(quiet, EXPIRED, StartDialog(deploy, flow(deploy)))
    assert plan("prod", open_deploy(last_activity=NOW - TIMEOUT)) == AnswerStep(
        deploy, flow(deploy), open_deploy(last_activity=NOW - TIMEOUT)
    )


def test_a_dialogs_own_timeout_wins() -> None:
    state = DialogState("survey", "a", {}, started_at=NOW - 61, last_activity=NOW - 61)
    dropped = plan("x", state)
    assert isinstance(dropped, Dropped)
    assert dropped.notice.startswith("Your unfinished `survey` expired after 1 minute without")
    assert dropped.then == plan("x")


def test_a_dialog_or_step_this_version_lacks_is_dropped() -> None:
    state = open_deploy()
    assert plan("ping", state, Registry([ping])) == Dropped(state, GONE, RunCommand(ping, {}))
    lost_step = open_deploy(step="colour")
    assert plan("cancel", lost_step) == Dropped(lost_step, GONE, NOTHING)


# --- scheduled jobs' text -----------------------------------------------------------------


def test_a_hidden_command_runs_only_for_a_scheduled_job() -> None:
    assert isinstance(plan("tick"), Unknown)
    assert plan("tick", scheduled=True) == RunCommand(tick, {})


def test_a_scheduled_command_is_never_the_answer_to_an_open_dialog() -> None:
    # The person set `run in 5 minutes ping` before; it fires while a dialog is open.
    state = open_deploy()
    assert plan("ping", state, scheduled=True) == RunCommand(ping, {})
    assert plan("tick", state, scheduled=True) == RunCommand(tick, {})
    assert plan("cancel k3x9pq", state, scheduled=True) == RunCommand(cancel_job, {"job": "k3x9pq"})
    # Nor does it cancel, or expire, the dialog: the person's next message does that.
    assert plan("cancel", state, scheduled=True) == NOTHING
    quiet = open_deploy(last_activity=NOW - TIMEOUT - 1)
    assert plan("ping", quiet, scheduled=True) == RunCommand(ping, {})


def test_a_scheduled_dialog_start_mid_dialog_asks_before_abandoning_the_open_one() -> None:
    state = open_deploy()
    assert plan("survey", state, scheduled=True) == OfferSwitch(
        survey, flow(deploy), state, "survey"
    )


# --- who handles a plan -------------------------------------------------------------------


def test_each_plan_goes_to_the_actor_of_the_command_it_concerns() -> None:
    state = open_deploy()
    assert handler(plan("ping")) is ping
    assert handler(plan("deploy")) is deploy
    for text in ["prod", "cancel", "help", "survey"]:
        expected = survey if text == "survey" else deploy  # whether she may start survey
        assert handler(plan(text, state)) is expected, text
    asking = open_deploy(switch_to="survey")
    assert handler(plan("yes", asking)) is survey
    assert handler(plan("no", asking)) is deploy
    assert handler(plan("perhaps", asking)) is deploy
    quiet = open_deploy(last_activity=NOW - TIMEOUT - 1)
    assert handler(plan("ping", quiet)) is ping  # the dialog is dropped, ping runs
    assert handler(plan("pnig", quiet)) is None
    assert handler(plan("pnig")) is None
    assert handler(plan("stop")) is None
