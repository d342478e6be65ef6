"""What the private test servers share: skip or fail when one cannot run, free ports,
a server process started, watched and stopped by its owner, and a TLS certificate.

`require` is the one rule for a missing server: outside CI the test skips with the
reason; under CI=true, where every test must run, it fails. `ServerProcess` runs a
server in the foreground on 127.0.0.1 (Prosody, ngircd), reads its output for its whole
life, tries other free ports when one was taken meanwhile, and stops it: SIGTERM, then
SIGKILL if it hangs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import Self

PORT_ATTEMPTS = 5
"""How many times `ServerProcess.start` tries new free ports before it gives up."""


def require(reason: str | None, tests: str) -> None:
    """Go on if `reason` is None (what the tests need is here); else skip the test with
    the reason, or under CI=true fail it: "CI must run the `tests`, but `reason`"."""
    if reason is None:
        return
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the {tests}, but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[str], timeout: float) -> None:
    """SIGTERM (after SIGCONT, in case a test froze it), then SIGKILL if it has not
    exited within `timeout` seconds; returns once it is gone."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGCONT)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost and 127.0.0.1, made by openssl.

    The key is readable by all (ngircd reads it after dropping root). Without openssl
    the test skips, or fails under CI=true.
    """
    missing = None if shutil.which("openssl") else "openssl is not installed"
    require(missing and f"{missing} (Debian: apt-get install openssl)", "TLS tests")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        capture_output=True,
        check=True,
        timeout=60,
    )
    key.chmod(0o644)
    return cert, key


class ServerProcess:
    """A private server run in the foreground by its owner, on free ports of 127.0.0.1.

    A subclass says how: `_pick_ports()` (sets `port`, and any other), `_write_config()`,
    `_command()` and `_outcome(lines)`: "ready", "busy" (a port was taken meanwhile: try
    others) or None (not yet). `start()` keeps the ports the server had (a restart), else
    tries new ones a few times. `stop()` keeps them.
    """

    program = "server"
    error: type[RuntimeError] = RuntimeError
    start_timeout = 15.0

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.port = 0
        self._process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- what a subclass says --------------------------------------------------------

    def _pick_ports(self) -> None:
        self.port = free_port()

    def _write_config(self) -> None:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _outcome(self, lines: list[str]) -> str | None:
        raise NotImplementedError

    # -- the process -----------------------------------------------------------------

    def start(self, timeout: float | None = None) -> Self:
        """Start the server and return once it accepts client connections."""
        if self._process is not None:
            return self
        timeout = self.start_timeout if timeout is None else timeout
        keep_ports = self.port != 0
        for _ in range(1 if keep_ports else PORT_ATTEMPTS):
            if not keep_ports:
                self._pick_ports()
            self._write_config()
            outcome = self._launch(timeout)
            if outcome == "ready":
                return self
            self.stop()
            if outcome != "busy":
                raise self.error(f"{self.program} did not start: {outcome}")
        raise self.error(f"{self.program} found no free port (last tried {self.port})")

    def _launch(self, timeout: float) -> str:
        with self._changed:
            self._lines.clear()
        self._process = subprocess.Popen(
            self._command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=self.directory,
        )
        self._reader = threading.Thread(
            target=self._read_output,
            args=(self._process,),
            name=f"{self.program}-log",
            daemon=True,
        )
        self._reader.start()
        with self._changed:
            finished = self._changed.wait_for(
                lambda: self._outcome(self._lines) is not None or self._exited(), timeout
            )
            lines = list(self._lines)
        outcome = self._outcome(lines)
        if outcome is not None:
            return outcome
        tail = " | ".join(lines[-5:]) or "no output"
        return f"{'exited' if finished else f'not ready after {timeout:.0f} s'}: {tail}"

    def _exited(self) -> bool:
        return self._process is None or self._process.poll() is not None

    def _read_output(self, process: subprocess.Popen[str]) -> None:
        # Drain the pipe for the server's whole life, or a full pipe would block it.
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait for a line of the server's output matching the regular expression."""
        found = re.compile(pattern)
        with self._changed:
            self._changed.wait_for(lambda: any(found.search(x) for x in self._lines), timeout)
            for line in self._lines:
                if found.search(line):
                    return line
        raise self.error(f"no {self.program} log line matching {pattern!r} within {timeout} s")

    @property
    def log_lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    @property
    def running(self) -> bool:
        return not self._exited()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it hangs); the ports are kept."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process, timeout)
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None

    def restart(self, timeout: float | None = None) -> None:
        """Stop and start again on the same ports."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
