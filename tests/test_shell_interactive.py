"""The shell at a real (pseudo-)terminal: prompt, replies, line editing, history, quit."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

pytestmark = pytest.mark.e2e


REPLY = "\x1b[K"
"""What the shell writes before a reply: it clears the prompt line first."""


class Terminal:
    def __init__(
        self,
        cwd: Path,
        home: Path,
        args: tuple[str, ...] = ("shell", "--user", "ann"),
        env: dict[str, str] | None = None,
    ) -> None:
        self.master, slave = pty.openpty()
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HARKEN_") and "PROXY" not in k.upper()
        }
        full_env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "TERM": "xterm"})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harken", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=full_env,
            close_fds=True,
        )
        os.close(slave)
        self.screen = ""

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not seen; screen so far:\n{self.screen}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def close(self) -> int:
        code = self.proc.wait(timeout=20)
        os.close(self.master)
        return code


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
        if term.proc.poll() is None:
            term.proc.kill()
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
            if term.proc.poll() is None:
                term.proc.kill()
