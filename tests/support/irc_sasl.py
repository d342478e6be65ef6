"""Testing SASL over IRC for real: a private InspIRCd with Atheme services linked to it.

ngircd has no SASL, so the IRC input's SASL PLAIN is tested against the Debian
packages `inspircd` (its m_sasl hands SASL to services) and `atheme-services` (which
checks SASL PLAIN against its registered accounts). Both run in the foreground with
configs generated in a directory of the caller's, on 127.0.0.1 only and free ports; no
system config or service is touched. Accounts are made as a person makes one: a raw
client sends NickServ REGISTER.

    with SaslIrcNetwork(tmp_path) as net:
        net.register("harkenacct", "right-pw")
        ... connect the bot to net.port with SASL ...
        net.account_of("harken")   # the account the server says the nick is logged in as
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from support.irc import IrcPerson

SERVER_NAME = "irc.harken.test"
SERVICES_NAME = "services.harken.test"
_IRCD_READY = "InspIRCd is now running as"
_SERVICES_READY = "finished synching with uplink"
_PORT_BUSY = "failed to bind"
_PORT_ATTEMPTS = 5


def _binary(name: str) -> str | None:
    for found in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if found and Path(found).exists():
            return found
    return None


def sasl_servers_missing() -> str | None:
    """Why a private InspIRCd + Atheme cannot run here, or None if they can."""
    missing = [name for name in ("inspircd", "atheme-services") if _binary(name) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not installed "
            "(Debian: apt-get install inspircd atheme-services)"
        )
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SaslServerError(RuntimeError):
    """The private servers could not be started; the message says why."""


class _Daemon:
    """One server process in the foreground; its output read for its whole life."""

    def __init__(self, name: str, argv: list[str], cwd: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Drain the pipe, or a full pipe would block the server.
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> str:
        """Whether a line with `text` came first: "ready", "exited" or "timeout"."""
        with self._changed:
            self._changed.wait_for(
                lambda: any(text in line for line in self.lines) or self.process.poll() is not None,
                timeout,
            )
            if any(text in line for line in self.lines):
                return "ready"
        return "exited" if self.process.poll() is not None else "timeout"

    def saw(self, text: str) -> bool:
        with self._changed:
            return any(text in line for line in self.lines)

    def tail(self) -> str:
        with self._changed:
            return " | ".join(self.lines[-6:]) or "no output"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._reader.join(timeout)


class SaslIrcNetwork:
    """A private InspIRCd (clients on `port`) with Atheme linked to it, owned by the caller."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.port = 0
        self.link_port = 0
        self._link_password = secrets.token_hex(16)
        self._ircd: _Daemon | None = None
        self._services: _Daemon | None = None

    # -- configs ------------------------------------------------------------------------

    def _write_ircd_config(self) -> Path:
        d = self.directory
        config = d / "inspircd.conf"
        (d / "motd.txt").write_text("Harken test server\n", encoding="utf-8")
        config.write_text(
            f"""# Generated for a Harken test; delete freely.
<server name="{SERVER_NAME}" description="Harken test server" network="HarkenTest" id="001">
<admin name="test" nick="test" email="test@localhost">
<bind address="127.0.0.1" port="{self.port}" type="clients">
<bind address="127.0.0.1" port="{self.link_port}" type="servers">
<connect name="main" allow="*" timeout="60" pingfreq="120" hardsendq="1048576"
         softsendq="65536" recvq="65536" threshold="1000" commandrate="100000"
         fakelag="off" localmax="1000" globalmax="1000" useident="no"
         resolvehostnames="no">
<module name="cap">
<module name="spanningtree">
<module name="services_account">
<module name="sasl">
<link name="{SERVICES_NAME}" ipaddr="127.0.0.1" port="{self.link_port}"
      allowmask="127.0.0.0/8" sendpass="{self._link_password}"
      recvpass="{self._link_password}">
<uline server="{SERVICES_NAME}" silent="yes">
<sasl target="{SERVICES_NAME}" requiressl="no">
<path configdir="{d}" datadir="{d}" logdir="{d}">
<pid file="{d}/inspircd.pid">
<files motd="{d}/motd.txt">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{d}/inspircd.log">
<dns timeout="1">
""",
            encoding="utf-8",
        )
        return config

    def _write_services_config(self) -> Path:
        config = self.directory / "atheme.conf"
        modules = [
            "protocol/inspircd",
            "backend/opensex",
            "crypto/pbkdf2v2",
            "nickserv/main",
            "nickserv/register",
            "nickserv/identify",
            "saslserv/main",
            "saslserv/plain",
        ]
        loads = "".join(f'loadmodule "modules/{m}";\n' for m in modules)

        def service(block: str, nick: str, real: str) -> str:
            return (
                f'{block} {{ nick = "{nick}"; user = "{nick}"; '
                f'host = "{SERVICES_NAME}"; real = "{real}"; }};\n'
            )

        config.write_text(
            f"""/* Generated for a Harken test; delete freely. */
{loads}serverinfo {{
    name = "{SERVICES_NAME}";
    desc = "Harken test services";
    numeric = "00A";
    recontime = 1;
    netname = "HarkenTest";
    hidehostsuffix = "users.harken.test";
    adminname = "test";
    adminemail = "test@localhost";
    registeremail = "test@localhost";
    mta = "/bin/false";
    loglevel = {{ error; info; admin; network; }};
    maxlogins = 5;
    maxusers = 5;
    mdlimit = 30;
    emaillimit = 10;
    emailtime = 300;
    auth = none;
    casemapping = rfc1459;
}};
uplink "{SERVER_NAME}" {{
    host = "127.0.0.1";
    password = "{self._link_password}";
    port = {self.link_port};
}};
{service("nickserv", "NickServ", "Nickname Services")}\
{service("saslserv", "SaslServ", "SASL Authentication Agent")}\
general {{
    commit_interval = 5;
    uplink_sendq_limit = 1048576;
}};
""",
            encoding="utf-8",
        )
        return config

    # -- life ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SaslIrcNetwork:
        """Start InspIRCd, then Atheme; return once Atheme has synced with the server."""
        if self._ircd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(_PORT_ATTEMPTS):
            self.port, self.link_port = _free_port(), _free_port()
            outcome = self._start_ircd(timeout)
            if outcome == "ready":
                break
            self.stop()
            if "bind" not in outcome.lower():
                raise SaslServerError(f"inspircd did not start: {outcome}")
        else:
            raise SaslServerError(f"inspircd found no free ports (last tried {self.port})")
        services = _binary("atheme-services") or "atheme-services"
        d = self.directory
        self._services = _Daemon(
            "atheme",
            [
                *(services, "-n", "-c", str(self._write_services_config())),
                *("-D", str(d), "-l", str(d / "atheme.log"), "-p", str(d / "atheme.pid")),
            ],
            d,
        )
        outcome = self._services.wait_for(_SERVICES_READY, timeout)
        if outcome != "ready":
            tail = self._services.tail()
            self.stop()
            raise SaslServerError(f"atheme did not link to inspircd ({outcome}): {tail}")
        return self

    def _start_ircd(self, timeout: float) -> str:
        argv = [_binary("inspircd") or "inspircd", "--nofork", "--nopid"]
        if os.geteuid() == 0:
            argv.append("--runasroot")  # it refuses root otherwise; it stays on 127.0.0.1
        argv += ["--config", str(self._write_ircd_config())]
        self._ircd = _Daemon("inspircd", argv, self.directory)
        outcome = self._ircd.wait_for(_IRCD_READY, timeout)
        # A port taken meanwhile is only a warning (it runs without that listener).
        if self._ircd.saw(_PORT_BUSY):
            return "failed to bind a port"
        if outcome == "ready":
            return outcome
        return f"{outcome}: {self._ircd.tail()}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Atheme, then InspIRCd (SIGTERM, then SIGKILL if one hangs)."""
        services, self._services = self._services, None
        if services is not None:
            services.stop(timeout)
        ircd, self._ircd = self._ircd, None
        if ircd is not None:
            ircd.stop(timeout)

    def __enter__(self) -> SaslIrcNetwork:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- as a person --------------------------------------------------------------------

    def register(self, account: str, password: str, timeout: float = 20.0) -> None:
        """Register `account` with NickServ, as a person does: connect with that nick,
        send REGISTER, wait for NickServ to confirm, quit."""
        with IrcPerson(account, self.port) as person:
            person.say("NickServ", f"REGISTER {password} {account}@harken.test")
            said = person.expect(
                lambda h: h.command == "NOTICE" and h.nick == "NickServ" and "register" in h.text,
                timeout,
            )
            if "is now registered" not in said.text:
                raise SaslServerError(f"NickServ did not register {account}: {said.text}")

    def account_of(self, nick: str, timeout: float = 10.0) -> str | None:
        """The account the server says `nick` is logged in as (WHOIS 330), or None when
        it is not logged in; SaslServerError if nobody uses that nick."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            me = f"who{secrets.token_hex(3)}"
            sock.sendall(f"NICK {me}\r\nUSER {me} 0 * :{me}\r\n".encode())
            asked = False
            buffer = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(65536)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    raw, buffer = buffer.split(b"\n", 1)
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    words = line.split()
                    if len(words) < 2:
                        continue
                    if words[0] == "PING":
                        sock.sendall(f"PONG {words[1]}\r\n".encode())
                    elif words[1] == "001" and not asked:
                        sock.sendall(f"WHOIS {nick}\r\n".encode())
                        asked = True
                    elif words[1] == "330" and len(words) >= 5:
                        return words[4]
                    elif words[1] == "401":
                        raise SaslServerError(f"no nick {nick} on the server")
                    elif words[1] == "318":
                        return None
        raise TimeoutError(f"no WHOIS answer about {nick} within {timeout} s")
