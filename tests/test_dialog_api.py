"""The dialog API on its own: declarations, step parsing, branching, the saved state."""

from __future__ import annotations

import pytest

from commands.base import CommandError
from commands.dialogs import (
    Ask,
    Choice,
    Confirm,
    DialogState,
    Invalid,
    answer,
    begin,
    dialog,
    dialog_of,
)
from harken import Answers


def form_done(answers: Answers) -> str:
    return f"got {dict(answers)}"


def _flow(*steps: Ask | Choice | Confirm):  # type: ignore[no-untyped-def]
    cmd = dialog(r"^form$", steps=list(steps))(form_done)
    flow = dialog_of(cmd)
    assert flow is not None
    return flow


def test_dialog_is_a_command_named_and_described_like_one() -> None:
    @dialog(r"^swap$", steps=[Ask("who", "Who?")])
    def swap_shift(answers: Answers) -> str:
        """Hand your shift to someone."""
        return "ok"

    assert swap_shift.name == "swap-shift"
    assert swap_shift.description == "Hand your shift to someone."
    assert dialog_of(swap_shift) is not None


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([], "has no steps"),
        ([Ask("a", "A?"), Ask("a", "Again?")], "step keys used twice"),
        ([Ask("", "A?")], "every step needs a key"),
    ],
)
def test_a_badly_declared_dialog_is_refused_with_a_clear_error(
    steps: list[Ask], problem: str
) -> None:
    with pytest.raises(CommandError, match=problem):
        dialog(r"^bad$", steps=steps)(form_done)


def test_a_finish_function_asking_for_unknown_arguments_is_refused() -> None:
    def finish(answers: Answers, colour: str) -> str:
        return colour

    with pytest.raises(CommandError, match="colour"):
        dialog(r"^bad$", steps=[Ask("a", "A?")])(finish)


def test_ask_refuses_empty_and_overlong_answers_and_explains_parse_errors() -> None:
    step = Ask("n", "How many?", parse=int, invalid="A whole number, please.", max_chars=5)
    with pytest.raises(Invalid, match="I need an answer"):
        step.accept("   ")
    with pytest.raises(Invalid, match="keep it to 5"):
        step.accept("123456")
    with pytest.raises(Invalid, match="A whole number, please"):
        step.accept("many")
    assert step.accept(" 42 ") == 42


def test_choice_accepts_any_case_and_keeps_the_mapped_value() -> None:
    step = Choice("env", "Where?", {"Prod": "production", "Staging": "staging"})
    assert step.ask({}) == "Where? (Prod / Staging)"
    assert step.accept("  PROD ") == "production"
    with pytest.raises(Invalid, match="not one of the choices"):
        step.accept("dev")


def test_confirm_no_ends_the_dialog_unless_told_to_keep_the_answer() -> None:
    flow = _flow(Ask("a", "A?"), Confirm("ok", "Sure?"))
    state = begin(flow, now=0).state
    assert state is not None
    state = answer(flow, state, "x", now=1).state
    assert state is not None
    ended = answer(flow, state, "no", now=2)
    assert ended.state is None
    assert ended.replies == ["OK, I stopped there: nothing was saved."]
    assert not ended.complete

    keep = _flow(Confirm("ok", "Sure?", on_no=None))
    first = begin(keep, now=0).state
    assert first is not None
    done = answer(keep, first, "nope", now=1)
    assert done.complete
    assert done.answers == {"ok": False}


def test_when_asks_a_step_only_if_earlier_answers_call_for_it() -> None:
    flow = _flow(
        Choice("sev", "Severity?", ["1", "2"]),
        Ask("commander", "Who leads?", when=lambda a: a["sev"] == "1"),
        Ask("service", lambda a: f"Which service (sev {a['sev']})?"),
    )
    start = begin(flow, now=0).state
    assert start is not None
    minor = answer(flow, start, "2", now=1)
    assert minor.replies == ["Which service (sev 2)?"]
    major = answer(flow, start, "1", now=1)
    assert major.replies == ["Who leads?"]


def test_a_refused_answer_keeps_the_step_and_the_answers() -> None:
    flow = _flow(Ask("n", "How many?", parse=int, invalid="A number."))
    state = begin(flow, now=0).state
    assert state is not None
    again = answer(flow, state, "lots", now=5)
    assert again.replies == ["A number.", "How many?"]
    assert again.state is not None
    assert (again.state.step, dict(again.state.answers)) == ("n", {})
    assert again.state.last_activity == 5


def test_state_round_trips_through_json_and_junk_is_refused() -> None:
    state = DialogState("incident", "service", {"severity": 1}, 10.0, 20.0, switch_to="profile")
    assert DialogState.from_json(state.to_json()) == state
    for junk in [None, [], {"v": 99}, {"v": 1, "dialog": "x"}]:
        with pytest.raises(ValueError, match="dialog state"):
            DialogState.from_json(junk)
    assert state.expired(now=20.0 + 31, timeout_seconds=30)
    assert not state.expired(now=20.0 + 29, timeout_seconds=30)
