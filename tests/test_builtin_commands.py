"""The built-in commands, through the real actor system (the `testbot` fixture)."""

from __future__ import annotations

import re

import pytest

from harken import TestBot


def test_ping_replies_pong(testbot: TestBot) -> None:
    assert testbot.ask("ping") == "pong"


def test_commands_match_regardless_of_case_and_spaces(testbot: TestBot) -> None:
    assert testbot.ask("  PING  ") == "pong"


def test_echo_says_the_text_back(testbot: TestBot) -> None:
    assert testbot.ask("echo hello  there") == "hello  there"


def test_bare_echo_asks_what(testbot: TestBot) -> None:
    assert testbot.ask("echo") == "echo what?"


def test_help_lists_every_command_with_usage(testbot: TestBot) -> None:
    text = testbot.ask("help")
    assert testbot.system is not None
    assert testbot.system.runtime is not None
    for cmd in testbot.system.runtime.registry.commands():
        listed = f"{cmd.usage} - {cmd.description}" in text
        assert listed != cmd.hidden, cmd.name  # Harken's hidden ones are not listed


def test_help_for_one_command(testbot: TestBot) -> None:
    assert testbot.ask("help echo").startswith("echo <text>\nSay <text> back.")


def test_help_for_an_unknown_name_says_so(testbot: TestBot) -> None:
    assert "There is no command called `frobnicate`" in testbot.ask("help frobnicate")


def test_unknown_text_points_to_help_and_suggests_the_closest_command(testbot: TestBot) -> None:
    reply = testbot.ask("pnig please")
    assert "`help`" in reply
    assert "Did you mean `ping`?" in reply


def test_unknown_text_with_nothing_close_points_to_help(testbot: TestBot) -> None:
    reply = testbot.ask("xyzzy")
    assert "`help`" in reply
    assert "Did you mean" not in reply


def test_a_command_name_with_bad_arguments_shows_usage(testbot: TestBot) -> None:
    assert testbot.ask("time in paris").startswith("Usage: time")


def test_time_names_the_default_zone(testbot: TestBot) -> None:
    assert re.match(r"It is \w+ \d\d \w+ \d{4}, \d\d:\d\d:\d\d in UTC", testbot.ask("time"))


def test_time_uses_the_stored_time_zone(testbot: TestBot) -> None:
    assert testbot.ask("timezone Europe/Paris") == "Your time zone is now Europe/Paris."
    assert " in Europe/Paris (" in testbot.ask("time")


def test_timezone_refuses_what_is_not_a_zone(testbot: TestBot) -> None:
    assert "is not a time zone" in testbot.ask("timezone Mars/Olympus")
    assert testbot.ask("timezone") == "Your time zone is UTC."


def test_whoami_names_id_display_name_input_channel_and_zone(testbot: TestBot) -> None:
    testbot.ask("timezone Asia/Tokyo", user="U7")
    reply = testbot.ask("whoami", user="U7", channel="C1", display_name="Kim")
    assert "You are U7 (Kim)." in reply
    assert "Input: testing" in reply
    assert "Channel: C1" in reply
    assert "Time zone: Asia/Tokyo" in reply


def test_remember_and_recall(testbot: TestBot) -> None:
    assert testbot.ask("remember pager is 555-0100") == "OK, I'll remember that pager is 555-0100."
    assert testbot.ask("recall Pager") == "pager is 555-0100"


def test_recall_of_an_unknown_key_says_i_dont_know(testbot: TestBot) -> None:
    assert testbot.ask("recall nothing").startswith("I don't know nothing.")


def test_forget_removes_a_key(testbot: TestBot) -> None:
    testbot.ask("remember a is 1")
    assert testbot.ask("forget a") == "OK, I forgot a."
    assert testbot.ask("recall a").startswith("I don't know a")
    assert "nothing to forget" in testbot.ask("forget a")


def test_memory_lists_only_your_own_keys(testbot: TestBot) -> None:
    testbot.ask("remember colour is blue", user="ann")
    testbot.ask("remember secret is 42", user="bob")
    assert testbot.ask("memory", user="ann") == "I remember, for you: colour"
    assert testbot.ask("recall secret", user="ann").startswith("I don't know secret")
    assert testbot.ask("recall secret", user="bob") == "secret is 42"


def test_remember_without_is_shows_usage(testbot: TestBot) -> None:
    assert testbot.ask("remember pager").startswith("Usage: remember <key> is <value>")


def test_memory_survives_a_restart(testbot: TestBot) -> None:
    testbot.ask("remember build is green")
    testbot.restart()
    assert testbot.ask("recall build") == "build is green"


LONG_KEY = "k" * 1000


@pytest.mark.parametrize(
    "text", [f"remember {LONG_KEY} is x", f"recall {LONG_KEY}", f"forget {LONG_KEY}"]
)
def test_a_key_over_the_limit_is_refused_at_once_naming_the_limit(
    testbot: TestBot, text: str
) -> None:
    testbot.ask("remember pager is 555-0100")
    reply = testbot.ask(text)
    assert reply == "That key is 1,000 characters long; a key is at most 200 characters."
    assert testbot.ask("recall pager") == "pager is 555-0100"
    assert testbot.ask("memory") == "I remember, for you: pager"


def test_a_key_of_exactly_the_limit_is_kept_recalled_and_forgotten(testbot: TestBot) -> None:
    key = "k" * 200
    assert testbot.ask(f"remember {key} is x") == f"OK, I'll remember that {key} is x."
    assert testbot.ask(f"recall {key}") == f"{key} is x"
    assert testbot.ask(f"forget {key}") == f"OK, I forgot {key}."
    assert "200 characters" in testbot.ask(f"recall {key}k")


def test_the_limit_applies_to_the_key_as_matched_not_as_typed(testbot: TestBot) -> None:
    # Repeated spaces count once; a character whose lower case is longer counts as that.
    assert testbot.ask(f"remember {'k  ' * 100}is x").startswith("OK, I'll remember that")
    dotted_i = "\u0130"  # İ, lower-cased to i + a combining dot
    assert testbot.ask("recall " + dotted_i * 150) == (
        "That key is 300 characters long; a key is at most 200 characters."
    )
