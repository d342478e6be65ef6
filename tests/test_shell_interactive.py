"""The shell at a real (pseudo-)terminal: prompt, replies, line editing, history, quit."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from support.cli import Terminal
from support.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

pytestmark = pytest.mark.e2e


REPLY = "\x1b[K"
"""What the shell writes before a reply: it clears the prompt line first."""


def test_interactive_shell_answers_edits_lines_and_keeps_history(tmp_path: Path) -> None:
    term = Terminal(tmp_path, tmp_path)
    try:
        term.expect("you> ")
        term.type("ping\r")
        term.expect(REPLY + "pong")
        # Line editing: type the end first, jump to the start of the line (Ctrl-A) and
        # type the beginning. Without readline the Ctrl-A would be a character.
        term.type("llo there\x01echo he\r")
        term.expect(REPLY + "hello there")
        # History: the up arrow brings back the last line.
        term.screen = ""
        term.type("\x1b[A\r")
        term.expect(REPLY + "hello there")
        term.type("quit\r")
        assert term.close() == 0
    finally:
        term.kill()
    history = tmp_path / "state" / "harken" / "shell_history"
    assert "ping" in history.read_text()
    assert (tmp_path / "var" / "harken.log").exists()


def test_quitting_the_shell_of_harken_run_leaves_slack_running_until_ctrl_c(
    tmp_path: Path,
) -> None:
    with FakeSlack() as slack:
        term = Terminal(
            tmp_path,
            tmp_path,
            (
                "run",
                "--inputs",
                "shell,slack",
                "--user",
                "ann",
                "--set",
                f"inputs.slack.api_url={slack.api_url}",
            ),
            {"HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN, "HARKEN_SLACK_APP_TOKEN": APP_TOKEN},
        )
        try:
            term.expect("you> ")
            term.type("ping\r")
            term.expect(REPLY + "pong")
            term.type("quit\r")
            term.expect("The shell is closed; Harken keeps running on slack.")
            slack.wait_connections(1, timeout=30)
            slack.say("ping")
            slack.wait_post(lambda p: p.text == "pong")
            assert term.proc.poll() is None
            term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
            assert term.close() == 0
        finally:
            term.kill()
