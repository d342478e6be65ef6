"""Hostile and malformed text: a clear answer, the bot keeps running, nothing stored is lost."""

from __future__ import annotations

from harken import TestBot


def test_a_one_megabyte_message_is_refused_and_nothing_stored_is_lost(testbot: TestBot) -> None:
    testbot.ask("remember pager is 555-0100")
    reply = testbot.ask("remember pager is " + "x" * 1_000_000)
    assert "only read messages up to 65,536 bytes" in reply
    assert testbot.ask("recall pager") == "pager is 555-0100"
    assert testbot.ask("ping") == "pong"


def test_a_value_too_large_to_keep_is_refused_clearly(testbot: TestBot) -> None:
    testbot.ask("remember pager is 555-0100")
    reply = testbot.ask("remember pager is " + "y" * 40_000)
    assert reply.startswith("Sorry, I can't store that")
    assert testbot.ask("recall pager") == "pager is 555-0100"


def test_nul_and_control_characters_are_removed_before_matching(testbot: TestBot) -> None:
    assert testbot.ask("pi\x00ng\x07\x1b") == "pong"
    assert testbot.ask("echo a\x07b\x00c") == "abc"


def test_right_to_left_overrides_are_removed(testbot: TestBot) -> None:
    assert testbot.ask("echo \u202eevil\u202c text") == "evil text"


def test_replacement_characters_from_invalid_utf8_are_answered(testbot: TestBot) -> None:
    assert testbot.ask("echo caf\ufffd") == "caf\ufffd"
    assert "`help`" in testbot.ask("\ufffd\ufffd")


def test_empty_and_blank_messages_point_to_help(testbot: TestBot) -> None:
    assert testbot.ask("   ") == "Say `help` to see what I can do."
