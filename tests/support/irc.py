"""Testing over IRC for real: a private ngircd server, and people who talk to the bot.

The IRC input is tested against a real server, not a mock: this starts the Debian
package's `ngircd` in the foreground with a config generated in a directory of the
caller's (a test's `tmp_path`), listening on 127.0.0.1 only, on a free port (and a TLS
port with a given certificate), including no system config. It never touches the
system server or its config.

    with PrivateNgircd(tmp_path) as server:
        ... connect the bot to server.port ...

`stop()` sends SIGTERM (tests/support/servers.py); `restart()` keeps the ports, for
tests of a server that goes away and comes back.

`IrcPerson` plays a person: a plain socket speaking IRC (so a test can send exactly the
bytes it means, invalid UTF-8 and CTCP included), on a thread of its own that answers
PINGs and queues every line it receives; `expect` waits for one with a timeout.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .servers import ServerProcess, free_port, require

SERVER_NAME = "irc.harken.test"
_READY = re.compile(r'Server "irc\.harken\.test" \(on .*\) ready')
_PORT_BUSY = re.compile(r"Can't bind socket|Address already in use|No listening")


def ngircd_missing() -> str | None:
    """Why a private ngircd cannot run here, or None if it can."""
    if shutil.which("ngircd") is None and not Path("/usr/sbin/ngircd").exists():
        return "ngircd is not installed (Debian: apt-get install ngircd)"
    return None


def require_ngircd() -> None:
    """Skip the test without ngircd, or fail it under CI=true (`servers.require`)."""
    require(ngircd_missing(), "IRC tests")


def _ngircd() -> str:
    return shutil.which("ngircd") or "/usr/sbin/ngircd"


class NgircdError(RuntimeError):
    """The private server could not be started; the message says why."""


class PrivateNgircd(ServerProcess):
    """One private ngircd process, configured and owned by the caller."""

    program = "ngircd"
    error = NgircdError
    start_timeout = 20.0

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        password: str = "",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        """`password`: the server password every client must send (PASS); `tls`:
        (certificate, key) for a TLS port besides the plain one."""
        super().__init__(directory)
        self.password = password
        self.tls = tls
        self.tls_port = 0
        self.config = self.directory / "ngircd.conf"

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.tls_port = free_port() if self.tls is not None else 0

    def _command(self) -> list[str]:
        return [_ngircd(), "--nodaemon", "--config", str(self.config)]

    def _outcome(self, lines: list[str]) -> str | None:
        # A port it could not bind is "busy" even if it went on with the other one.
        if any(_PORT_BUSY.search(line) for line in lines):
            return "busy"
        if any(_READY.search(line) for line in lines):
            return "ready"
        return None

    def _write_config(self) -> None:
        include = self.directory / "conf.d"  # empty: no system config comes in
        include.mkdir(parents=True, exist_ok=True)
        ssl = ""
        if self.tls is not None:
            cert, key = self.tls
            ssl = f"[SSL]\nCertFile = {cert}\nKeyFile = {key}\nPorts = {self.tls_port}\n"
        self.config.write_text(
            f"""# Generated for a Harken test; delete freely.
[Global]
Name = {SERVER_NAME}
Info = Harken test server
AdminInfo1 = test
AdminInfo2 = test
AdminEMail = test@localhost
Listen = 127.0.0.1
Ports = {self.port}
MotdPhrase = Harken test server
Password = {self.password}
[Limits]
MaxConnectionsIP = 0
MaxNickLength = 30
PingTimeout = 120
[Options]
IncludeDir = {include}
PAM = no
Ident = no
DNS = no
{ssl}""",
            encoding="utf-8",
        )


@dataclass(frozen=True)
class Heard:
    """One line a person received: who from (the nick), the command, target and text."""

    nick: str
    command: str
    target: str
    text: str


def parse_line(raw: bytes) -> Heard:
    """Read an IRC line as a person's client would (invalid UTF-8 is replaced)."""
    line = raw.decode("utf-8", "replace").rstrip("\r\n")
    source = ""
    if line.startswith(":"):
        source, _, line = line[1:].partition(" ")
    head, _, trailing = line.partition(" :")
    words = head.split()
    command = words[0] if words else ""
    params = [*words[1:], trailing] if trailing or " :" in line else words[1:]
    target = params[0] if params else ""
    text = params[-1] if len(params) > 1 else ""
    return Heard(source.partition("!")[0], command.upper(), target, text)


class IrcPerson:
    """A person on IRC, for tests: a plain socket on a thread of its own.

    Every line it receives lands in a queue (PINGs are answered); `expect` waits for the
    next line that matches. `connect()` registers the nick; `close()` quits.
    """

    def __init__(self, nick: str, port: int, *, password: str = "") -> None:
        self.nick = nick
        self.port = port
        self.password = password
        self.heard: queue.Queue[Heard] = queue.Queue()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._send_lock = threading.Lock()

    def connect(self, timeout: float = 10.0) -> IrcPerson:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read, name=f"person:{self.nick}", daemon=True)
        self._reader.start()
        if self.password:
            self.send_raw(f"PASS {self.password}\r\n".encode())
        self.send_raw(f"NICK {self.nick}\r\nUSER {self.nick} 0 * :{self.nick}\r\n".encode())
        self.expect(lambda h: h.command == "001", timeout)
        return self

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        buffer = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                heard = parse_line(raw)
                if heard.command == "PING":
                    self.send_raw(b"PONG :" + raw.partition(b" :")[2].rstrip(b"\r") + b"\r\n")
                    continue
                self.heard.put(heard)
        self.heard.put(Heard("", "CLOSED", "", ""))

    def send_raw(self, data: bytes) -> None:
        """Send exactly these bytes (for malformed and hostile input)."""
        assert self._sock is not None
        with self._send_lock:
            self._sock.sendall(data)

    def say(self, target: str, text: str) -> None:
        self.send_raw(f"PRIVMSG {target} :{text}\r\n".encode())

    def join(self, channel: str, key: str = "", timeout: float = 10.0) -> None:
        self.send_raw(f"JOIN {channel}{' ' + key if key else ''}\r\n".encode())
        self.expect(
            lambda h: h.command == "JOIN" and h.nick == self.nick and channel in (h.target, h.text),
            timeout,
        )

    def expect(
        self, match: Callable[[Heard], bool] = lambda h: True, timeout: float = 10.0
    ) -> Heard:
        """The next line that `match` accepts (others are skipped); TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                heard = self.heard.get(timeout=left)
            except queue.Empty:
                break
            if match(heard):
                return heard
        raise TimeoutError(f"{self.nick} heard nothing matching within {timeout} s")

    def from_bot(self, bot: str = "harken", to: str | None = None, timeout: float = 10.0) -> Heard:
        """The next PRIVMSG from the bot's nick (to `to`, a channel or us, if given)."""
        return self.expect(
            lambda h: h.command == "PRIVMSG" and h.nick == bot and (to is None or h.target == to),
            timeout,
        )

    def ask(self, bot: str, text: str, timeout: float = 10.0) -> str:
        """Say `text` to the bot privately; return its reply's text."""
        self.say(bot, text)
        return self.from_bot(bot, self.nick, timeout).text

    def nothing_more(self) -> list[Heard]:
        """Every line heard and not yet expected (without waiting)."""
        items = []
        while True:
            try:
                items.append(self.heard.get_nowait())
            except queue.Empty:
                return items

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            with self._send_lock:
                sock.sendall(b"QUIT :bye\r\n")
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._reader is not None:
            self._reader.join(5.0)

    def __enter__(self) -> IrcPerson:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
