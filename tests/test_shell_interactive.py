"""The shell at a real (pseudo-)terminal: prompt, replies, line editing, history, quit."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


REPLY = "\x1b[K"
"""What the shell writes before a reply: it clears the prompt line first."""


class Terminal:
    def __init__(self, cwd: Path, home: Path) -> None:
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
        env.update({"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "TERM": "xterm"})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harken", "shell", "--user", "ann"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
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
