"""The IRC input against a real ngircd server, with plain-socket clients as people.

Each test gets a private ngircd (tests/support/irc.py) on 127.0.0.1 and a free port, and
stops it afterwards. Without ngircd installed these tests skip, except under CI=true,
where they must run. ngircd has no SASL: what it permits (no SASL offered, a server
password) is tested here.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import harken
from support.irc import Heard, IrcPerson, PrivateNgircd, require_ngircd
from support.servers import make_certificate

from actors.system import BotSystem
from config import load_settings

BOT = "harken"


class LogWatch(logging.Handler):
    """Every log record of Harken's inputs, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def text(self) -> str:
        with self._changed:
            return "\n".join(r.getMessage() for r in self.records)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[str]:
        found = re.compile(pattern)

        def matching() -> list[str]:
            return [m for r in self.records if found.search(m := r.getMessage())]

        with self._changed:
            if not self._changed.wait_for(lambda: len(matching()) >= count, timeout):
                raise TimeoutError(
                    f"no log line matching {pattern!r} (x{count}) within {timeout} s; "
                    f"last lines: {[r.getMessage() for r in self.records[-8:]]}"
                )
            return matching()


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    watched = logging.getLogger("actors.inputs")
    level = watched.level
    watched.setLevel(logging.DEBUG)
    watched.addHandler(watch)
    try:
        yield watch
    finally:
        watched.removeHandler(watch)
        watched.setLevel(level)


ServerFactory = Callable[..., PrivateNgircd]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start private ngircd servers (`servers(password=..., tls=True)`); stopped after."""
    require_ngircd()
    started: list[PrivateNgircd] = []

    def start(*, password: str = "", tls: bool = False) -> PrivateNgircd:
        where = tmp_path / f"ngircd-{len(started)}"
        where.mkdir(parents=True)
        tls_files = make_certificate(where / "tls") if tls else None
        server = PrivateNgircd(where, password=password, tls=tls_files)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def server(servers: ServerFactory) -> PrivateNgircd:
    return servers()


BotFactory = Callable[..., BotSystem]


@pytest.fixture
def start_bot(tmp_path: Path, logs: LogWatch) -> Iterator[BotFactory]:
    """Start Harken with the IRC input on a private server; stopped after the test."""
    started: list[BotSystem] = []

    def start(
        server: PrivateNgircd,
        *,
        env: dict[str, str] | None = None,
        wait_online: bool = True,
        **options: str,
    ) -> BotSystem:
        overrides = {
            "bot.inputs": "irc",
            "memory.path": str(tmp_path / "memory"),
            "scheduler.path": str(tmp_path / "jobs.sqlite"),
            "inputs.irc.host": "127.0.0.1",
            "inputs.irc.port": str(server.port),
            "inputs.irc.tls": "false",
            "inputs.irc.reconnect_delay": "0.1",
            "inputs.irc.reconnect_max_delay": "0.5",
            "inputs.irc.lines_per_second": "20",
            **{f"inputs.irc.{key}": value for key, value in options.items()},
        }
        settings = load_settings(env=env or {}, overrides=overrides)
        system = BotSystem(settings)
        system.start()
        started.append(system)
        if wait_online:
            logs.wait_for(r"^IRC: online at ")
        return system

    try:
        yield start
    finally:
        for system in started:
            system.stop()


@pytest.fixture
def people() -> Iterator[Callable[..., IrcPerson]]:
    """Connect people (`people(server, "alice")`); they quit after the test."""
    connected: list[IrcPerson] = []

    def connect(server: PrivateNgircd, nick: str, password: str = "") -> IrcPerson:
        person = IrcPerson(nick, server.port, password=password).connect()
        connected.append(person)
        return person

    try:
        yield connect
    finally:
        for person in connected:
            person.close()


def bot_joined(person: IrcPerson, channel: str, nick: str = BOT) -> Heard:
    return person.expect(lambda h: h.command == "JOIN" and h.nick == nick, 20)


def said_in(channel: str, nick: str = BOT) -> Callable[[Heard], bool]:
    return lambda h: h.command == "PRIVMSG" and h.nick == nick and h.target == channel


# --- private messages and channels ----------------------------------------------------


def test_a_private_ping_is_answered_pong_and_events_carry_the_input(
    server: PrivateNgircd, start_bot: BotFactory, people: Any
) -> None:
    start_bot(server)
    alice = people(server, "alice")

    assert alice.ask(BOT, "ping") == "pong"
    assert alice.ask(BOT, "harken: ping") == "pong"
    lines = [alice.ask(BOT, "whoami")] + [alice.from_bot(BOT, "alice").text for _ in range(3)]
    assert lines[:3] == ["You are alice (alice).", "Input: irc", "Channel: alice"]


def test_in_a_channel_it_answers_when_addressed_or_with_the_prefix(
    server: PrivateNgircd, start_bot: BotFactory, people: Any
) -> None:
    alice = people(server, "alice")
    alice.join("#ops")
    start_bot(server, channels="#ops")
    bot_joined(alice, "#ops")

    alice.say("#ops", "just chatting, not for the bot")
    alice.say("#ops", "harken: ping")
    # Replies come in order, so the first one proves the chatter was ignored.
    assert alice.expect(said_in("#ops")).text == "alice: pong"
    for addressed in ("harken, echo one", "@harken echo two", "!echo three", "HARKEN: echo four"):
        alice.say("#ops", addressed)
    assert [alice.expect(said_in("#ops")).text for _ in range(4)] == [
        "alice: one",
        "alice: two",
        "alice: three",
        "alice: four",
    ]


def test_two_people_in_one_channel_have_separate_dialogs(
    server: PrivateNgircd, start_bot: BotFactory, people: Any
) -> None:
    alice, bob = people(server, "alice"), people(server, "bob")
    alice.join("#ops")
    bob.join("#ops")
    start_bot(server, channels="#ops")
    bot_joined(alice, "#ops")

    alice.say("#ops", "harken: incident")
    assert alice.expect(said_in("#ops")).text.startswith("alice: How severe is it")
    # bob's "ping" is a command, not an answer to alice's question.
    bob.say("#ops", "harken: ping")
    assert bob.expect(lambda h: said_in("#ops")(h) and h.text.startswith("bob:")).text == (
        "bob: pong"
    )
    alice.say("#ops", "harken: 2")
    assert alice.expect(lambda h: said_in("#ops")(h) and "Which service" in h.text).text.startswith(
        "alice: "
    )


def test_a_reminder_comes_back_over_irc(
    server: PrivateNgircd, start_bot: BotFactory, people: Any
) -> None:
    alice = people(server, "alice")
    alice.join("#ops")
    start_bot(server, channels="#ops")
    bot_joined(alice, "#ops")

    alice.say("#ops", "harken: remind me in 2 seconds to stretch")
    assert "OK, I'll remind you" in alice.expect(said_in("#ops")).text
    reminder = alice.expect(lambda h: said_in("#ops")(h) and "stretch" in h.text, 20)
    assert reminder.text == "alice: Reminder for alice: stretch"
    assert alice.ask(BOT, "remind me in 1 second to drink water").startswith("OK, I'll remind")
    assert "drink water" in alice.from_bot(BOT, "alice", 20).text


def test_long_and_multi_line_replies_arrive_whole_in_lines_the_server_relays(
    server: PrivateNgircd, start_bot: BotFactory, people: Any
) -> None:
    alice = people(server, "alice")
    alice.join("#ops")
    start_bot(server, channels="#ops", line_burst="2", lines_per_second="10")
    bot_joined(alice, "#ops")

    # 400 bytes: two IRC lines once "alice: " is added. (Much more, and the server would
    # cut what alice sent once it adds her address to relay it.)
    text = "é" * 200
    alice.say("#ops", f"harken: echo {text}")
    parts = [alice.expect(said_in("#ops")).text for _ in range(2)]
    assert all(part.startswith("alice: ") and len(part.encode()) <= 400 for part in parts)
    assert "".join(part.removeprefix("alice: ") for part in parts) == text

    # A reply of several lines: one IRC line each, in order, each addressed.
    alice.say("#ops", "harken: whoami")
    lines = [alice.expect(said_in("#ops")).text for _ in range(4)]
    assert lines[:3] == [
        "alice: You are alice (alice).",
        "alice: Input: irc",
        "alice: Channel: #ops",
    ]
    assert lines[3].startswith("alice: Time zone: ")
    assert alice.ask(BOT, "ping") == "pong"


# --- connection -----------------------------------------------------------------------


def test_after_a_server_restart_it_reconnects_rejoins_and_answers(
    server: PrivateNgircd, start_bot: BotFactory, people: Any, logs: LogWatch
) -> None:
    start_bot(server, channels="#ops")
    alice = people(server, "alice")
    assert alice.ask(BOT, "ping") == "pong"

    server.restart()
    logs.wait_for(r"^IRC: connection to .* lost")
    logs.wait_for(r"^IRC: online at ", count=2)
    alice = people(server, "alice")
    alice.join("#ops")
    alice.say("#ops", "harken: ping")
    assert alice.expect(said_in("#ops")).text == "alice: pong"


def test_a_taken_nick_makes_it_use_an_alternate(
    server: PrivateNgircd, start_bot: BotFactory, people: Any, logs: LogWatch
) -> None:
    people(server, "harken")  # someone else has the nick
    alice = people(server, "alice")
    alice.join("#ops")
    start_bot(server, channels="#ops", alt_nicks="harkenbot")
    logs.wait_for(r"the nick harken is taken; using harkenbot")
    bot_joined(alice, "#ops", "harkenbot")

    assert alice.ask("harkenbot", "ping") == "pong"
    alice.say("#ops", "harken: echo for the other harken")
    alice.say("#ops", "harkenbot: echo for me")
    assert alice.expect(said_in("#ops", "harkenbot")).text == "alice: for me"


def test_without_alternates_it_adds_an_underscore(
    server: PrivateNgircd, start_bot: BotFactory, people: Any
) -> None:
    people(server, "harken")
    start_bot(server)
    alice = people(server, "alice")
    assert alice.ask("harken_", "ping") == "pong"


def test_it_joins_a_channel_with_its_key_and_says_why_a_join_failed(
    server: PrivateNgircd, start_bot: BotFactory, people: Any, logs: LogWatch
) -> None:
    alice = people(server, "alice")
    alice.join("#secret")
    alice.join("#locked")
    alice.send_raw(b"MODE #secret +k hunter2\r\nMODE #locked +k other\r\n")
    alice.expect(lambda h: h.command == "MODE" and h.target == "#locked")
    start_bot(server, channels="#secret hunter2,#locked wrong")

    bot_joined(alice, "#secret")
    logs.wait_for(r"cannot join #locked: wrong channel key")
    alice.say("#secret", "harken: ping")
    assert alice.expect(said_in("#secret")).text == "alice: pong"


# --- hostile input --------------------------------------------------------------------


def test_hostile_input_gets_a_clear_reply_or_is_ignored_and_the_bot_keeps_answering(
    server: PrivateNgircd, start_bot: BotFactory, people: Any
) -> None:
    alice = people(server, "alice")
    alice.join("#ops")
    start_bot(server, channels="#ops")
    bot_joined(alice, "#ops")

    # CTCP: VERSION gets a NOTICE (once a minute at most), ACTION and others nothing.
    alice.send_raw(b"PRIVMSG harken :\x01VERSION\x01\r\n")
    version = alice.expect(lambda h: h.command == "NOTICE" and h.nick == BOT)
    assert version.text == "\x01VERSION Harken ChatOps bot\x01"
    alice.send_raw(b"PRIVMSG #ops :\x01ACTION waves at harken: ping\x01\r\n")
    alice.send_raw(b"PRIVMSG harken :\x01PING 123\x01\r\n")
    alice.send_raw(b"PRIVMSG harken :\x01\x01\r\n")
    # Colour and format codes around the address and the command.
    alice.send_raw(b"PRIVMSG #ops :\x0304,01harken\x03: \x02echo\x02 \x1dred\x1d\r\n")
    assert alice.expect(said_in("#ops")).text == "alice: red"
    # A line of 512 bytes, the most a server takes; relayed with alice's address added,
    # it reaches the bot as a full 512-byte line that ngircd marks "[CUT]".
    head = b"PRIVMSG harken :echo "
    alice.send_raw(head + b"x" * (510 - len(head)) + b"\r\n")
    long_reply = [alice.from_bot(BOT, "alice").text for _ in range(2)]
    assert all(len(part.encode()) <= 400 for part in long_reply)
    assert "".join(long_reply).startswith("x" * 450)
    # Invalid UTF-8: read, not crashed on.
    alice.send_raw(b"PRIVMSG harken :echo ok \xff\xfe\xc3\r\n")
    assert alice.from_bot(BOT, "alice").text.startswith("ok ")
    # Bytes the router removes, and a message that is empty once they are gone.
    alice.send_raw(b"PRIVMSG harken :\x02\x03\r\n")
    alice.send_raw(b"PRIVMSG harken :echo a\x07b\r\n")
    assert alice.from_bot(BOT, "alice").text == "ab"
    # Still answering, in channels and privately, and nothing else was said meanwhile.
    alice.say("#ops", "harken: ping")
    assert alice.expect(said_in("#ops")).text == "alice: pong"
    assert alice.ask(BOT, "ping") == "pong"
    assert not [h for h in alice.nothing_more() if h.nick == BOT]


# --- TLS, passwords, SASL -----------------------------------------------------------------


def test_tls_with_a_trusted_certificate_works_and_an_untrusted_one_is_refused(
    servers: ServerFactory,
    start_bot: BotFactory,
    people: Any,
    logs: LogWatch,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = servers(tls=True)
    untrusted = start_bot(server, wait_online=False, port=str(server.tls_port), tls="true")
    logs.wait_for(r"^IRC: cannot connect to .*CERTIFICATE_VERIFY_FAILED")
    untrusted.stop()

    # The certificate trusted the standard OpenSSL way (a private CA would be the same).
    assert server.tls is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(server.tls[0]))
    start_bot(server, port=str(server.tls_port), tls="true", host="localhost")
    assert f":{server.tls_port} (TLS) as harken" in logs.wait_for(r"^IRC: online at ")[-1]
    alice = people(server, "alice")
    assert alice.ask(BOT, "ping") == "pong"


def test_a_server_password_is_sent_and_a_wrong_one_is_not_retried(
    servers: ServerFactory, start_bot: BotFactory, people: Any, logs: LogWatch
) -> None:
    server = servers(password="letmein")
    wrong = start_bot(server, wait_online=False, env={"HARKEN_IRC_SERVER_PASSWORD": "nope"})
    logs.wait_for(r"refused the server password .*Not retrying")
    assert "nope" not in logs.text()
    wrong.stop()

    start_bot(server, env={"HARKEN_IRC_SERVER_PASSWORD": "letmein"})
    assert "letmein" not in logs.text()
    alice = people(server, "alice", password="letmein")
    assert alice.ask(BOT, "ping") == "pong"


def test_sasl_against_a_server_without_it_is_said_and_the_bot_carries_on(
    server: PrivateNgircd, start_bot: BotFactory, people: Any, logs: LogWatch
) -> None:
    start_bot(server, sasl_username="harken-account", env={"HARKEN_IRC_PASSWORD": "s3cret-pw"})
    logs.wait_for(r"offers no SASL; connected without logging in as harken-account")
    alice = people(server, "alice")
    assert alice.ask(BOT, "ping") == "pong"
    assert "s3cret-pw" not in logs.text()


# --- configuration --------------------------------------------------------------------


def test_harken_check_lists_the_options_and_refuses_a_missing_server(tmp_path: Path) -> None:
    missing = harken("check", "--set", "bot.inputs=irc", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.decode().startswith("harken: config error: inputs.irc.host: is required")

    env = {"HARKEN_IRC_PASSWORD": "s3cret-pw", "HARKEN_IRC_SERVER_PASSWORD": "srv-pw"}
    good = harken(
        "check",
        "--set",
        "bot.inputs=irc",
        "--set",
        "inputs.irc.host=irc.example.org",
        "--set",
        "inputs.irc.sasl_username=harken",
        cwd=tmp_path,
        env=env,
    )
    out = good.stdout.decode()
    assert good.returncode == 0, good.stderr.decode()
    assert "[inputs.irc]  # started" in out
    assert 'host = "irc.example.org"' in out
    assert "port = 6697" in out
    assert '# password = "***"' in out
    assert '# server_password = "***"' in out
    assert "s3cret-pw" not in out
    assert "srv-pw" not in out


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        ("inputs.irc.nick=9lives", "inputs.irc.nick: '9lives' is not a nick"),
        ("inputs.irc.channels=ops", "inputs.irc.channels: 'ops' is not a channel"),
        ("inputs.irc.max_line_bytes=600", "inputs.irc.max_line_bytes: must be an integer 64-450"),
        ("inputs.irc.sasl_username=harken", "HARKEN_IRC_PASSWORD is not set"),
    ],
)
def test_harken_run_refuses_bad_options_with_one_line(
    tmp_path: Path, option: str, complaint: str
) -> None:
    done = harken(
        "run",
        "--set",
        "bot.inputs=irc",
        "--set",
        "inputs.irc.host=127.0.0.1",
        "--set",
        option,
        "--data-dir",
        str(tmp_path / "var"),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    err = done.stderr.decode().strip().splitlines()
    assert complaint in err[-1], err
    assert "Traceback" not in done.stderr.decode()
