"""One path for every turn (`actors/runner.py`): commands and dialog steps alike go
through their command's actor, which authorizes them, and one runner, which answers
once what they wrote is durable."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.messages import MemoryGet
from actors.runner import CANCEL_HINT, CONVERSATION_NS, conversation_id, state_address
from commands.base import command
from commands.dialogs import Answers, Ask, Choice, Confirm, dialog
from core.context import Context
from harken.testbot import INPUT_NAME, TestBot, wait_until

finishing = threading.Event()
release = threading.Event()


@dialog(
    r"^rollout$",
    steps=[
        Choice("env", "Which environment?", ["prod", "staging"]),
        Ask("note", "Any note?"),
        Confirm("go", "Go?"),
    ],
)
def rollout(ctx: Context, answers: Answers) -> str:
    """Roll out, after a few questions."""
    ctx.memory.set("rollout", answers["env"])
    return f"Rolled out to {answers['env']}."


@dialog(r"^slowform$", steps=[Ask("name", "Name?")])
def slowform(ctx: Context, answers: Answers) -> str:
    """A dialog whose finish takes a while."""
    finishing.set()
    release.wait(10)
    ctx.memory.set("name", answers["name"])
    return f"Saved {answers['name']}."


@dialog(r"^badform$", steps=[Ask("x", "X?")])
def badform(answers: Answers) -> int:
    """A dialog whose finish returns no reply."""
    return 42


@command(r"^echoq$", usage="echoq")
def echoq() -> str:
    """Says something that looks like a question with answers."""
    return "Ready? (yes/no)"


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[TestBot]:
    with TestBot(tmp_path / "memory", commands=[rollout, slowform, badform, echoq]) as running:
        yield running


def stored_state(bot: TestBot) -> object:
    assert bot.system is not None
    address = state_address(conversation_id((INPUT_NAME, "", "alice", "")))
    return bot.system.runtime.memory.ask(MemoryGet(CONVERSATION_NS, *address), timeout=5)


def test_a_dialogs_steps_go_through_its_command_actor_like_a_call(bot: TestBot) -> None:
    assert bot.ask("rollout").startswith("Which environment?")
    before = stored_state(bot)
    assert bot.system is not None
    supervisor = bot.system._supervisor_ref
    assert supervisor is not None
    supervisor.proxy().stop_children(["command:rollout"]).get(timeout=5)
    assert bot.ask("prod") == (
        "Sorry, `rollout` is not available right now. Please try again soon. "
        "We are still in `rollout`: Which environment? (prod / staging)"
    )
    assert stored_state(bot) == before  # nothing moved on
    assert bot.ask("ping", user="bob") == "pong"  # other commands are not concerned


def test_a_questions_answers_go_in_the_replys_meta(bot: TestBot) -> None:
    first = bot.replies(bot.send("rollout"))
    assert first[-1].data == f"Which environment? (prod / staging)\n{CANCEL_HINT}"
    assert first[-1].meta["choices"] == ["prod", "staging"]
    refused = bot.replies(bot.send("qa"))
    assert [e.data for e in refused] == [
        "`qa` is not one of the choices. Please answer `prod`, `staging`.",
        "Which environment? (prod / staging)",
    ]
    assert "choices" not in refused[0].meta
    assert refused[1].meta["choices"] == ["prod", "staging"]
    free = bot.replies(bot.send("staging"))
    assert [e.data for e in free] == ["Any note?"]
    assert "choices" not in free[0].meta
    confirm = bot.replies(bot.send("none"))
    assert [(e.data, e.meta["choices"]) for e in confirm] == [("Go? (yes/no)", ["yes", "no"])]
    help_reply = bot.replies(bot.send("help"))[-1]
    assert help_reply.data.startswith("We are in the middle of `rollout`: Go? (yes/no)")
    assert help_reply.meta["choices"] == ["yes", "no"]
    offer = bot.replies(bot.send("rollout"))[-1]
    assert offer.meta["choices"] == ["yes", "no"]
    back = bot.replies(bot.send("no"))[-1]
    assert back.data == "OK, let's go on with `rollout`. Go? (yes/no)"
    assert back.meta["choices"] == ["yes", "no"]
    done = bot.replies(bot.send("yes"))
    assert [e.data for e in done] == ["Rolled out to staging."]
    assert "choices" not in done[0].meta
    # A command's reply offers nothing, whatever its wording.
    assert "choices" not in bot.replies(bot.send("echoq"))[0].meta


def test_a_finish_that_returns_no_reply_is_named_and_the_answers_kept(bot: TestBot) -> None:
    bot.ask("badform")
    reply = bot.ask("x")
    assert reply.startswith("Sorry, `badform` failed: it returned")
    assert reply.endswith("Your answers so far are kept: answer again, or say `cancel`.")
    assert stored_state(bot) is not None


def test_a_dialog_turn_in_flight_at_stop_answers_and_keeps_what_it_wrote(tmp_path: Path) -> None:
    finishing.clear()
    release.clear()
    bot = TestBot(tmp_path / "memory", commands=[slowform])
    try:
        assert bot.ask("slowform").startswith("Name?")
        last = bot.send("Ann")
        assert finishing.wait(5)
        assert bot.system is not None
        router = bot.system.router
        assert router is not None
        stopping = threading.Thread(target=bot.stop)
        stopping.start()
        wait_until(lambda: not router.is_alive())  # the bot takes no more work
        release.set()
        assert [e.data for e in bot.replies(last)] == ["Saved Ann."]
        stopping.join(10)
        bot.start()
        assert stored_state(bot) is None  # the finished dialog is gone from memory too
        assert bot.ask("slowform").startswith("Name?")
    finally:
        release.set()
        bot.stop()
