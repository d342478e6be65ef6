"""`harken` as a subprocess, as a person, a script or a service manager runs it.

* `harken(...)`: run it to the end with some input; the finished process.
* `Background`: `harken run` left running, its output in files read as they grow.
* `ShellSession`: `harken shell` on pipes, one line said, its one reply read.
* `Terminal`: `harken` at a real (pseudo-)terminal, for the prompt and line editing.

Every child gets the test run's environment without `HARKEN_*` and proxy variables (so
neither a developer's settings nor a proxy change what a test sees), plus what the test
gives it.
"""

from __future__ import annotations

import os
import pty
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

REPLY_TIMEOUT = 30.0
HARKEN = (sys.executable, "-m", "harken")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without `HARKEN_*` and proxy variables, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HARKEN_") and "PROXY" not in k.upper()
    }
    env.update(extra or {})
    return env


def harken(
    *args: str,
    stdin: bytes = b"",
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """`python -m harken <args>` run to its end with `stdin`; output captured."""
    return subprocess.run(
        [*HARKEN, *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )


class Background:
    """`python -m harken <args>` in the background; its output goes to files in `cwd`,
    read as it grows."""

    def __init__(
        self,
        *args: str,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[bytes] = subprocess.DEVNULL,
    ) -> None:
        self.out = cwd / "stdout.txt"
        self.err = cwd / "stderr.txt"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [*HARKEN, *args], stdin=stdin, stdout=out, stderr=err, cwd=cwd, env=clean_env(env)
            )

    def wait_for(self, ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None and not ready():
                raise AssertionError(
                    f"harken exited ({self.proc.returncode}) before {what}; stderr:\n"
                    + self.err.read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s")
            time.sleep(0.02)  # polls a file that grows; nothing to wait on instead

    def wait_stderr(self, text: str, timeout: float = 30) -> None:
        self.wait_for(lambda: text in self.err.read_text(errors="replace"), repr(text), timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class ShellSession:
    """`harken shell <args>` kept running on pipes: say a line, get its reply line.

    Standard error is collected line by line (`stderr`, `wait_stderr`).
    """

    def __init__(self, *args: str, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*HARKEN, "shell", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=clean_env(env),
        )
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr_changed = threading.Condition()
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._stderr_changed:
                self.stderr.append(line.decode(errors="replace"))
                self._stderr_changed.notify_all()
        with self._stderr_changed:
            self._stderr_changed.notify_all()

    def say(self, text: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()
        try:
            line = self._lines.get(timeout=REPLY_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no reply to {text!r} within {REPLY_TIMEOUT} s") from None
        assert line is not None, f"harken exited instead of answering {text!r}"
        return line.decode().rstrip("\n")

    def wait_stderr(self, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        """The first match of `pattern` in a line of standard error, waited for."""
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for line in self.stderr if (m := pattern.search(line))][:1]
            return bool(found) or self.process.poll() is not None

        with self._stderr_changed:
            self._stderr_changed.wait_for(seen, timeout)
        if not found:
            raise AssertionError(f"no {pattern.pattern!r} on stderr: {''.join(self.stderr)}")
        return found[0]

    def kill(self) -> None:
        """SIGKILL: what a crash leaves."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=REPLY_TIMEOUT)
        self._close_pipes()

    def stop(self) -> int:
        """End the input, as a person leaving does; the exit status."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            status = self.process.wait(timeout=REPLY_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait(timeout=REPLY_TIMEOUT)
        self._close_pipes()
        return status

    def _close_pipes(self) -> None:
        for reader in self._readers:
            reader.join(timeout=REPLY_TIMEOUT)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


class Terminal:
    """`python -m harken <args>` at a pseudo-terminal, with `HOME` (and the shell's
    history) under `home`."""

    def __init__(
        self,
        cwd: Path,
        home: Path,
        args: tuple[str, ...] = ("shell", "--user", "ann"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.master, slave = pty.openpty()
        full_env = {"HOME": str(home), "XDG_STATE_HOME": str(home / "state"), "TERM": "xterm"}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*HARKEN, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=clean_env(full_env),
            close_fds=True,
        )
        os.close(slave)
        self._master_open = True
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
        """Wait for harken to exit; its status."""
        code = self.proc.wait(timeout=20)
        self._close_master()
        return code

    def kill(self) -> None:
        """Kill harken if it still runs (a test that failed half-way), and let go of the
        terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_master()

    def _close_master(self) -> None:
        if self._master_open:
            self._master_open = False
            os.close(self.master)
