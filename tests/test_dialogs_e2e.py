"""End to end: a dialog in `harken shell` survives the process being stopped or killed."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from actors.runner import CANCEL_HINT

pytestmark = pytest.mark.e2e

TZ_QUESTION = "What is your time zone? An IANA name such as Europe/Paris or America/New_York."


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}


def harken_shell(stdin: bytes, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "harken", "shell", "--user", "ann"],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=_env(),
        timeout=60,
        check=False,
    )


class Lines:
    """The lines a subprocess prints, read on a thread so a test can wait with a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))

    def expect(self, *lines: str, timeout: float = 30) -> None:
        for line in lines:
            got = self._lines.get(timeout=timeout)
            assert got == line


def test_a_dialog_continues_after_kill_9_of_the_process(tmp_path: Path) -> None:
    bot = subprocess.Popen(
        [sys.executable, "-m", "harken", "shell", "--user", "ann"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
        env=_env(),
    )
    try:
        assert bot.stdin is not None
        assert bot.stdout is not None
        out = Lines(bot.stdout)
        bot.stdin.write(b"profile\n")
        bot.stdin.flush()
        out.expect("What should I call you?", CANCEL_HINT)
        bot.stdin.write(b"Ann Lee\n")
        bot.stdin.flush()
        # The question is sent only once the answer before it is on disk.
        out.expect(TZ_QUESTION)
        bot.send_signal(signal.SIGKILL)
        assert bot.wait(timeout=30) == -signal.SIGKILL
    finally:
        if bot.poll() is None:
            bot.kill()
            bot.wait()
    again = harken_shell(b"Europe/Paris\nwhoami\n", tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    lines = again.stdout.decode().splitlines()
    assert (
        lines[0] == "Thanks, Ann Lee. I'll give you times in Europe/Paris. Say `whoami` to check."
    )
    assert "You are ann (Ann Lee)." in lines
    assert "Time zone: Europe/Paris" in lines


def test_a_dialog_continues_after_a_clean_stop_of_the_process(tmp_path: Path) -> None:
    first = harken_shell(b"incident\n1\n", tmp_path)
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout.decode().splitlines()[-1] == "Which service is affected?"
    second = harken_shell(b"api\nlogin fails\nyes\nincidents\n", tmp_path)
    assert second.returncode == 0, second.stderr.decode()
    lines = second.stdout.decode().splitlines()
    assert lines[:3] == [
        "What is happening, in one line?",
        "Severity 1, api: login fails",
        "Record this incident? (yes/no)",
    ]
    assert lines[3] == "Recorded INC-1: severity 1, api: login fails"
    assert lines[-2] == "Open incidents (1):"
    assert lines[-1].startswith("INC-1 (sev 1) api: login fails - opened by ann")
