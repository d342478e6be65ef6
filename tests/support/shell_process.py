"""Test helper: `harken shell` as a subprocess, as a person or a script would run it.

`Shell` keeps one running and reads what it prints line by line on a thread, so a test
waits for the line it expects (with a timeout, never a sleep); `run` and `run_logged`
run a short-lived one to the end. Both run in a given directory, so memory and the job
store are under its `./var/`, and without the caller's `HARKEN_*` settings.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

WAIT = 30.0


class Shell:
    """A running `harken shell`, its output read line by line on a thread."""

    def __init__(
        self, cwd: Path, script: str, *args: str, env: dict[str, str] | None = None
    ) -> None:
        """`env`: `HARKEN_*` settings of its own (the caller's are never passed on)."""
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
        env.update(extra)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harken", "shell", "--user", "ann", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(script.encode())
        self.proc.stdin.close()
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.log: list[str] = []
        """What it logged (stderr), read on a thread so a busy log never blocks it."""
        self.log_lines: queue.Queue[str | None] = queue.Queue()
        self._log_reader = threading.Thread(target=self._read_log, daemon=True)
        self._log_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.log.append(line)
            self.log_lines.put(line)
        self.log_lines.put(None)

    def expect(self, pattern: str, timeout: float = WAIT) -> str:
        """The next printed line matching `pattern` (a regex), waiting up to `timeout`."""
        return _expect(self.lines, self.seen, pattern, timeout, "printed")

    def expect_log(self, pattern: str, timeout: float = WAIT) -> str:
        """The next logged line (stderr) matching `pattern`, waiting up to `timeout`."""
        return _expect(self.log_lines, [], pattern, timeout, "logged")

    def printed(self) -> list[str]:
        """Every line it printed (call once the process has ended)."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return list(self.seen)
            if line is not None:
                self.seen.append(line)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            tail = "\n".join(self.log[-40:])
            raise AssertionError(
                f"harken did not stop within {WAIT} s; it logged:\n{tail}"
            ) from None
        finally:
            self._reader.join(timeout=WAIT)
            self._log_reader.join(timeout=WAIT)

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL: no clean-up of any kind
        self.proc.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        self._log_reader.join(timeout=WAIT)


def run(cwd: Path, script: str, *args: str) -> str:
    return run_logged(cwd, script, *args)[0]


def run_logged(cwd: Path, script: str, *args: str) -> tuple[str, str]:
    """What a short-lived `harken shell` printed: (stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
    done = subprocess.run(
        [sys.executable, "-m", "harken", "shell", "--user", "ann", *args],
        input=script.encode(),
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode(), done.stderr.decode()


def _expect(
    lines: queue.Queue[str | None], seen: list[str], pattern: str, timeout: float, what: str
) -> str:
    deadline = datetime.now() + timedelta(seconds=timeout)
    while True:
        remaining = (deadline - datetime.now()).total_seconds()
        try:
            line = lines.get(timeout=max(0.0, remaining))
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern!r}; {what}: {seen}") from None
        if line is None:
            raise AssertionError(f"harken exited before it {what} {pattern!r}: {seen}")
        seen.append(line)
        if re.search(pattern, line):
            return line
