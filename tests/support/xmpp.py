"""Testing over XMPP for real: a private Prosody server, and people who talk to the bot.

The XMPP input is tested against a real server, not a mock: this starts the Debian
package's `prosody` in the foreground with a config generated in a directory of the
caller's (a test's `tmp_path`), listening on 127.0.0.1 only, on a free port, with
plaintext login allowed (it is loopback), Prosody's rate limits off, and a MUC
component whose rooms open unlocked. It never touches the system server or its config.

    with PrivateProsody(tmp_path) as server:
        server.register("bot", "secret")
        ... connect to server.port as bot@localhost ...

`stop()` sends SIGTERM (Prosody shuts down gracefully in a second or two); `restart()`
keeps the accounts and the port, for tests of a server that goes away and comes back.

`XmppPerson` is a second slixmpp client, on a thread of its own, that plays the person:
it says things to the bot (directly or in a room) and waits for what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from slixmpp import ClientXMPP
from slixmpp.jid import JID
from slixmpp.stanza import Message

DOMAIN = "localhost"
MUC_DOMAIN = "conference.localhost"
_READY = "Activated service 'c2s' on [127.0.0.1]:{port}"
_PORT_BUSY = re.compile(r"port is in use|Activated service 'c2s' on no ports")
_PORT_ATTEMPTS = 5


def prosody_missing() -> str | None:
    """Why a private Prosody cannot run here, or None if it can."""
    for tool in ("prosody", "prosodyctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install prosody)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ProsodyError(RuntimeError):
    """The private server could not be started or driven; the message says why."""


class PrivateProsody:
    """One private Prosody process, configured and owned by the caller."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        stanza_size_limit: int = 4 * 1024 * 1024,
        history_length: int = 20,
        tls: tuple[Path, Path] | None = None,
        offline_storage: bool = True,
    ) -> None:
        """`tls` is (certificate, key): offer STARTTLS with them (default: no TLS).

        With `offline_storage` the server keeps messages for people who are not logged
        in, as a real deployment would, so a test need not race the bot to log in.
        """
        self.directory = Path(directory)
        self.stanza_size_limit = stanza_size_limit
        self.history_length = history_length
        self.tls = tls
        self.offline_storage = offline_storage
        self.port = 0
        self.config = self.directory / "prosody.cfg.lua"
        self._process: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- accounts ------------------------------------------------------------------

    def jid(self, user: str) -> str:
        return f"{user}@{DOMAIN}"

    def room(self, name: str) -> str:
        return f"{name}@{MUC_DOMAIN}"

    def register(self, user: str, password: str) -> str:
        """Create an account (the server may be running or not); return its JID."""
        if not self.config.exists():
            self._write_config()
        done = subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", user, DOMAIN, password],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise ProsodyError(f"prosodyctl register {user} failed: {done.stderr.strip()}")
        return self.jid(user)

    # -- process -------------------------------------------------------------------

    def _write_config(self) -> None:
        data = self.directory / "data"
        certs = self.directory / "certs"
        data.mkdir(parents=True, exist_ok=True)
        certs.mkdir(parents=True, exist_ok=True)
        modules = ['"roster"', '"saslauth"', '"disco"', '"ping"', '"posix"']
        if self.offline_storage:
            modules.append('"offline"')
        tls_lines = ""
        if self.tls is not None:
            modules.append('"tls"')
            cert, key = self.tls
            tls_lines = f'ssl = {{ certificate = "{cert}"; key = "{key}"; }}\n'
        # No "limits" module: Debian's default (10 KiB/s per client) would throttle the
        # benchmark to about 70 messages/s. No s2s, no offline storage: a closed box.
        self.config.write_text(
            f"""-- Generated by harken.prosody for a test or benchmark; delete freely.
pidfile = "{self.directory / "prosody.pid"}"
data_path = "{data}"
certificates = "{certs}"
run_as_root = true
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {self.port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ {"; ".join(modules)} }}
modules_disabled = {{ "s2s"{"" if self.offline_storage else '; "offline"'} }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
c2s_stanza_size_limit = {self.stanza_size_limit}
log = {{ {{ levels = {{ min = "info" }}, to = "console" }} }}
{tls_lines}
VirtualHost "{DOMAIN}"

Component "{MUC_DOMAIN}" "muc"
    muc_room_locking = false
    muc_room_default_history_length = {self.history_length}
""",
            encoding="utf-8",
        )

    def start(self, timeout: float = 15.0) -> PrivateProsody:
        """Start the server and return once it accepts client connections."""
        if self._process is not None:
            return self
        keep_port = self.port != 0
        for _ in range(1 if keep_port else _PORT_ATTEMPTS):
            if not keep_port:
                self.port = _free_port()
            self._write_config()
            outcome = self._launch(timeout)
            if outcome == "ready":
                return self
            self.stop()
            if outcome != "busy":
                raise ProsodyError(f"prosody did not start: {outcome}")
        raise ProsodyError(f"prosody found no free port (last tried {self.port})")

    def _launch(self, timeout: float) -> str:
        with self._changed:
            self._lines.clear()
        self._process = subprocess.Popen(
            ["prosody", "-F", "--config", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=self.directory,
        )
        self._reader = threading.Thread(
            target=self._read_output, args=(self._process,), name="prosody-log", daemon=True
        )
        self._reader.start()
        ready = _READY.format(port=self.port)
        with self._changed:
            finished = self._changed.wait_for(
                lambda: (
                    any(ready in line or _PORT_BUSY.search(line) for line in self._lines)
                    or self._exited()
                ),
                timeout,
            )
            lines = list(self._lines)
        if any(ready in line for line in lines):
            return "ready"
        if any(_PORT_BUSY.search(line) for line in lines):
            return "busy"
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
        """Wait for a log line matching the regular expression; return it."""
        found = re.compile(pattern)
        with self._changed:
            self._changed.wait_for(lambda: any(found.search(x) for x in self._lines), timeout)
            for line in self._lines:
                if found.search(line):
                    return line
        raise ProsodyError(f"no prosody log line matching {pattern!r} within {timeout} s")

    @property
    def log_lines(self) -> list[str]:
        with self._changed:
            return list(self._lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it hangs); the port is kept."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test froze it
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._reader is not None:
            self._reader.join(timeout)
            self._reader = None

    def freeze(self) -> None:
        """Stop the server process without closing anything (SIGSTOP): to the bot it
        looks like a connection that died silently."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same port, with the same accounts."""
        self.stop()
        self.start(timeout)

    @property
    def running(self) -> bool:
        return not self._exited()

    def __enter__(self) -> PrivateProsody:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class Heard:
    """A message a person received: who from (full JID), its type and body."""

    sender: str
    type: str
    body: str


class XmppPerson:
    """A person on XMPP, for tests: a real slixmpp client on a thread of its own.

    Everything it receives with a body lands in a queue; `expect` waits for the next
    message that matches, with a timeout. Log in with `connect()` before use and
    `disconnect()` after (or use it as a context manager).
    """

    def __init__(self, jid: str, password: str, port: int, *, host: str = "127.0.0.1") -> None:
        self.jid = jid
        self.heard: queue.Queue[Heard] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._client = ClientXMPP(jid, password, loop=self._loop)
        self._client.enable_plaintext = True
        self._client.enable_starttls = False
        self._client.enable_direct_tls = False
        mechanisms = self._client.plugin["feature_mechanisms"]
        mechanisms.config["unencrypted_plain"] = True
        mechanisms.config["unencrypted_scram"] = True
        self._client.register_plugin("xep_0045")
        self._client.add_event_handler("message", self._on_message)
        self._address = (host, port)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.name = f"person:{jid}"

    def _on_message(self, message: Message) -> None:
        self.heard.put(Heard(str(message["from"]), message["type"], message["body"]))

    def _call(self, make: Callable[[], Any], timeout: float = 15.0) -> Any:
        """Run a coroutine (or a plain call) on the client's loop and return its result."""

        async def run() -> Any:
            result = make()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def connect(self, timeout: float = 15.0) -> XmppPerson:
        self._thread.start()

        async def log_in() -> None:
            started = asyncio.ensure_future(self._client.wait_until("session_start", timeout))
            self._client.connect(*self._address)
            await started
            self._client.send_presence()

        self._call(log_in, timeout + 1)
        return self

    def disconnect(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(lambda: self._client.disconnect(wait=2.0), 5.0)

        async def finish_tasks() -> None:
            # Every task must end while the loop still runs: slixmpp cancels its send
            # task when garbage collected, which fails on a closed loop.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(finish_tasks, 5.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> XmppPerson:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # -- talking ---------------------------------------------------------------------

    def say(self, to: str, text: str, kind: Literal["chat", "groupchat"] = "chat") -> None:
        self._call(lambda: self._client.send_message(mto=JID(to), mbody=text, mtype=kind))

    def send_raw(self, xml: str) -> None:
        """Send a stanza exactly as written (for malformed and hostile input)."""
        self._call(lambda: self._client.send_raw(xml))

    def join(self, room: str, nick: str, timeout: float = 15.0) -> None:
        muc = self._client.plugin["xep_0045"]
        self._call(lambda: muc.join_muc_wait(JID(room), nick, maxstanzas=0, timeout=timeout))

    def expect(
        self, match: Callable[[Heard], bool] = lambda heard: True, timeout: float = 10.0
    ) -> Heard:
        """The next message that `match` accepts (others are skipped); TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                heard = self.heard.get(timeout=left)
            except queue.Empty:
                break
            if match(heard):
                return heard
        raise TimeoutError(f"{self.jid} heard nothing matching within {timeout} s")

    def ask(self, to: str, text: str, timeout: float = 10.0) -> str:
        """Say `text` to `to` directly and return the body of the reply from it."""
        bare = str(JID(to).bare)
        self.say(to, text)
        return self.expect(lambda h: str(JID(h.sender).bare) == bare, timeout).body

    def nothing_more(self) -> list[Heard]:
        """Everything heard so far and not yet expected (without waiting)."""
        items = []
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self.heard.get_nowait())
        return items
