"""What a command function may be and return: `async def` runs on an event loop, and
anything that cannot be a reply is refused clearly, at declaration when it can be."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from commands.base import Command, CommandError, ReplyTypeError, command
from harken import Answers, Ask, Context, TestBot, dialog


def test_an_async_command_is_awaited_and_answers(testbot: TestBot) -> None:
    @command(r"^slow-hello (?P<name>\w+)$", usage="slow-hello <name>")
    async def slow_hello(ctx: Context, name: str) -> str:
        """Greet after a pause, remembering who."""
        await asyncio.sleep(0.01)
        ctx.memory.set("greeted", name)
        running = asyncio.get_running_loop()
        return f"Hello {name}, from {threading.current_thread().name} ({running.is_running()})"

    testbot.add(slow_hello)
    reply = testbot.ask("slow-hello ann")
    assert re.fullmatch(r"Hello ann, from command-worker-\d+ \(True\)", reply), reply
    assert testbot.ask("recall greeted") == "greeted is ann"


def test_async_commands_run_side_by_side_on_their_own_loops(testbot: TestBot) -> None:
    both_running = threading.Barrier(2, timeout=10)

    @command(r"^meet$")
    async def meet() -> list[str]:
        """Wait until another `meet` runs too."""
        await asyncio.to_thread(both_running.wait)
        return ["met", "again"]

    testbot.add(meet)
    first = testbot.send("meet", user="ann")
    second = testbot.send("meet", user="bob")
    assert [e.data for e in testbot.replies(first)] == ["met", "again"]
    assert [e.data for e in testbot.replies(second)] == ["met", "again"]


def test_an_async_dialog_finish_is_awaited(testbot: TestBot) -> None:
    @dialog(r"^order$", steps=[Ask("what", "What would you like?")])
    async def order(answers: Answers) -> str:
        """Take an order."""
        await asyncio.sleep(0)
        return f"One {answers['what']}, coming up."

    testbot.add(order)
    assert testbot.ask("order").startswith("What would you like?")
    assert testbot.ask("tea") == "One tea, coming up."


def _gen() -> Iterator[str]:
    yield "a"


async def _agen() -> AsyncIterator[str]:
    yield "a"


async def _async_quick() -> str:
    return "a"


@pytest.mark.parametrize(
    ("func", "quick", "problem"),
    [
        (_agen, False, "is an async generator \\(it uses `yield`\\): return the reply instead"),
        (_gen, False, "is a generator \\(it uses `yield`\\): return the reply instead"),
        (_async_quick, True, "is declared quick, so it cannot be `async def`"),
        ("pong", False, "'pong' is not a function"),
    ],
)
def test_a_function_that_can_never_reply_is_refused_at_declaration(
    func: Any, quick: bool, problem: str
) -> None:
    with pytest.raises(CommandError, match=problem):
        command(r"^x$", name="x", quick=quick)(func)
    with pytest.raises(CommandError, match=problem):
        Command("x", "^x$", func, "x", "x", quick=quick)


def test_a_dialog_finish_that_is_a_generator_is_refused_at_declaration() -> None:
    async def finish(answers: Answers) -> AsyncIterator[str]:
        yield "done"

    with pytest.raises(CommandError, match="the finish function is an async generator"):
        dialog(r"^gen$", steps=[Ask("a", "A?")])(finish)


WRONG = {
    "give-dict": ({"status": "ok"}, "a dict"),
    "give-int": (42, "an int"),
    "give-ints": ([1, 2], "a list holding an int"),
    "give-bytes": (b"pong", "a bytes"),
}


def _returning(value: object) -> Any:
    def func() -> object:
        return value

    return func


@pytest.fixture
def wrong_bot(testbot: TestBot) -> TestBot:
    for name, (value, _) in WRONG.items():
        testbot.add(Command(name, f"^{name}$", _returning(value), name, "returns junk"))
        quick = f"quick-{name}"
        testbot.add(Command(quick, f"^{quick}$", _returning(value), quick, "junk", quick=True))
    return testbot


@pytest.mark.parametrize("quick", ["", "quick-"])
@pytest.mark.parametrize("name", list(WRONG))
def test_a_reply_of_the_wrong_type_is_refused_with_an_error_id_in_the_log(
    wrong_bot: TestBot, caplog: pytest.LogCaptureFixture, name: str, quick: str
) -> None:
    described = WRONG[name][1]
    with caplog.at_level(logging.ERROR):
        reply = wrong_bot.ask(quick + name)
    found = re.fullmatch(
        rf"Sorry, `{quick}{name}` failed: it returned {described} instead of a reply "
        r"\(error id ([0-9a-f]{8})\)\. The details are in Harken's log under that id\.",
        reply,
    )
    assert found, reply
    logged = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    error = logged[0].exc_info[1]
    assert isinstance(error, ReplyTypeError)
    assert "a command returns a string, a list of strings, or None" in str(error)
    assert wrong_bot.ask("ping") == "pong"


def test_a_dialog_finish_of_the_wrong_type_is_refused_and_the_answers_kept(
    testbot: TestBot,
) -> None:
    @dialog(r"^count$", steps=[Ask("n", "How many?")])
    def count(answers: Answers) -> Any:
        """Count, badly."""
        return int(answers["n"])

    testbot.add(count)
    assert testbot.ask("count").startswith("How many?")
    reply = testbot.ask("3")
    assert re.match(
        r"Sorry, `count` failed: it returned an int instead of a reply \(error id [0-9a-f]{8}\)",
        reply,
    ), reply
    assert "Your answers so far are kept" in reply


def test_strings_lists_tuples_and_none_are_replies(testbot: TestBot) -> None:
    for name, value in [("one", "a"), ("two", ["a", "b"]), ("pair", ("c", "d")), ("none", None)]:
        testbot.add(Command(name, f"^{name}$", _returning(value), name, name))
    assert testbot.ask("one") == "a"
    assert testbot.ask("two") == "a\nb"
    assert testbot.ask("pair") == "c\nd"
    assert testbot.ask("none") == ""
