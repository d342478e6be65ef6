"""No message stalls the bot in pattern matching.

Matching runs on the dispatcher and holds the interpreter lock, so one pattern that
backtracks over a long message would keep every person waiting. Built-in patterns are
linear; a plugin's pattern is tried only on messages up to its `max_chars`.
"""

from __future__ import annotations

import re

import pytest

from commands.base import DEFAULT_MAX_CHARS, command
from commands.loader import load_commands
from harken import TestBot

RUN = 64_000
"""Characters of whitespace after the command word."""
WHITESPACE = ["\t", "\u3000", "\xa0", " "]
BOUND = 5.0
"""Seconds within which an answer must come: generous; a stall took 20-53 s."""

_ANY_RUN = re.compile(r"(?<!\\)\.(?:[*+]|\{\d*,\})\??")


def _words(pattern: str) -> set[str]:
    """The words a pattern starts with: `^ping`, `^(?:hello|hi)`, `^(?P<spec>(?:in|at)`."""
    words = set()
    if plain := re.match(r"\^([a-z][a-z-]*)", pattern):
        words.add(plain.group(1))
    if choice := re.match(r"\^(?:\(\?P<\w+>)?\(\?:([a-z|-]+)\)", pattern):
        words.update(choice.group(1).split("|"))
    return words


def command_words() -> list[str]:
    words: set[str] = set()
    for cmd in load_commands(use_entry_points=False).registry.commands():
        words |= _words(cmd.pattern) | {cmd.name}
        if not cmd.usage.startswith("<"):
            words.add(cmd.usage.split()[0])
    return sorted(words)


def tail_only_runs(pattern: str) -> list[str]:
    """Where a match-anything run (`.*`, `.+?`, `.{2,}`) is followed by more pattern.

    At the end of a pattern such a run takes the rest of the message once. With more
    pattern after it, the engine gives it back one character at a time to try the rest;
    with another unbounded part before it (`(in|at)\\s.*?\\s+run`), that happens from
    every place the earlier part could end, which is quadratic in the message.
    """
    return [
        pattern[m.start() :]
        for m in _ANY_RUN.finditer(pattern)
        if not re.fullmatch(r"[)?$]*", pattern[m.end() :])
    ]


def test_every_built_in_pattern_matches_anything_only_at_its_end() -> None:
    registry = load_commands(use_entry_points=False).registry
    found = {cmd.name: tail_only_runs(cmd.pattern) for cmd in registry.commands()}
    assert {name: runs for name, runs in found.items() if runs} == {}
    # The check finds what stalled the bot: the deferred command's first pattern.
    assert tail_only_runs(r"^(?P<spec>(?:in|at)\s.*?)\s+run\s+(?P<text>.+)$") == [
        r".*?)\s+run\s+(?P<text>.+)$"
    ]


def test_built_in_commands_have_no_length_limit_and_plugins_have_one() -> None:
    @command(r"^mine(?:\s+(?P<text>.*))?$")
    def mine(text: str | None) -> str:
        return text or ""

    assert mine.max_chars == DEFAULT_MAX_CHARS
    registry = load_commands(use_entry_points=False).registry
    assert [cmd.name for cmd in registry.commands() if cmd.max_chars is not None] == []


@pytest.fixture
def bot(testbot: TestBot) -> TestBot:
    # Big enough that a 64,000-character run of 3-byte spaces reaches the patterns.
    return testbot.configure(settings={"bot.max_message_bytes": 4 * (RUN + 100)})


def _answered_alongside_a_ping(bot: TestBot, text: str) -> list[str]:
    """Send `text` as alice and `ping` as bob; both answers must come within BOUND."""
    long = bot.send(text, user="alice")
    ping = bot.send("ping", user="bob")
    assert [e.data for e in bot.replies(ping, timeout=BOUND)] == ["pong"]
    return [e.data for e in bot.replies(long, timeout=BOUND)]


@pytest.mark.parametrize("space", WHITESPACE, ids=["tab", "ideographic", "nbsp", "space"])
def test_a_long_whitespace_run_after_any_command_word_is_answered_at_once(
    bot: TestBot, space: str
) -> None:
    words = command_words()
    assert {"ping", "remember", "tomorrow", "every", "tz", "list"} <= set(words)
    for word in words:
        replies = _answered_alongside_a_ping(bot, word + space * RUN + "x")
        assert replies, word
        assert all(len(reply) < 1000 for reply in replies), word


def test_a_plugin_pattern_is_not_tried_on_a_message_over_its_limit(bot: TestBot) -> None:
    @command(r"^slow\s.*?\s+end$", usage="slow <text> end")
    def slow() -> str:
        """A pattern that backtracks quadratically."""
        return "done"

    bot.add(slow)
    assert bot.ask("slow a b end") == "done"
    text = "slow" + "\t" * RUN + "x"
    assert _answered_alongside_a_ping(bot, text) == [
        f"`slow` reads messages of up to {DEFAULT_MAX_CHARS:,} characters; "
        f"that one has {len(text):,}. Nothing was done."
    ]
