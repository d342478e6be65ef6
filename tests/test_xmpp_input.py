"""The XMPP input against a real Prosody server, with real slixmpp clients as people.

Each test gets a private Prosody (tests/support/xmpp.py) on 127.0.0.1 and a free port,
with accounts for the bot and for the people, and stops it afterwards. Without Prosody
installed these tests skip, except under CI=true, where they must run.
"""

from __future__ import annotations

import base64
import logging
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import clean_env, harken
from support.servers import make_certificate
from support.xmpp import Heard, PrivateProsody, XmppPerson, require_prosody

from actors.inputs.testing import Done, Reply, TestingInput
from actors.inputs.xmpp import XmppInput
from actors.messages import Inbound
from actors.runtime import Runtime
from actors.supervision import Handle
from actors.system import BotSystem, StartupError
from config import InputSettings, load_settings
from core.event import Event, EventType

BOT_PASSWORD = "bot-secret-7f3a"
PEOPLE = {"alice": "alice-pw", "bob": "bob-pw", "mallory": "mallory-pw"}


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[PrivateProsody]:
    require_prosody()
    server = PrivateProsody(tmp_path / "prosody")
    server.register("bot", BOT_PASSWORD)
    for user, password in PEOPLE.items():
        server.register(user, password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class LogWatch(logging.Handler):
    """Every log record of Harken's XMPP input, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        with self._changed:
            return [r.getMessage() for r in self.records if r.levelno >= level]

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 15.0) -> list[str]:
        """Wait until `count` messages match the regular expression; return them."""
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
    watched = [logging.getLogger("actors.inputs"), logging.getLogger("slixmpp")]
    levels = [logger.level for logger in watched]
    for logger in watched:
        logger.setLevel(logging.DEBUG)
        logger.addHandler(watch)
    try:
        yield watch
    finally:
        for logger, level in zip(watched, levels, strict=True):
            logger.removeHandler(watch)
            logger.setLevel(level)


BotFactory = Callable[..., BotSystem]


@pytest.fixture
def start_bot(prosody: PrivateProsody, tmp_path: Path, logs: LogWatch) -> Iterator[BotFactory]:
    """Start Harken with the XMPP input on the private server; stopped after the test."""
    started: list[BotSystem] = []

    def start(
        *,
        password: str = BOT_PASSWORD,
        wait_online: bool = True,
        inputs: dict[str, Any] | None = None,
        **options: str,
    ) -> BotSystem:
        overrides = {
            "bot.inputs": ",".join([*(inputs or {}), "xmpp"]),
            "memory.path": str(tmp_path / "memory"),
            "inputs.xmpp.jid": prosody.jid("bot"),
            "inputs.xmpp.host": "127.0.0.1",
            "inputs.xmpp.port": str(prosody.port),
            "inputs.xmpp.allow_plaintext": "true",
            "inputs.xmpp.reconnect_delay": "0.1",
            "inputs.xmpp.reconnect_max_delay": "0.5",
            **{f"inputs.xmpp.{key}": value for key, value in options.items()},
        }
        settings = load_settings(env={"HARKEN_XMPP_PASSWORD": password}, overrides=overrides)
        system = BotSystem(settings, inputs=inputs)
        system.start()
        started.append(system)
        if wait_online:
            logs.wait_for(r"^XMPP: online as bot@localhost")
        return system

    try:
        yield start
    finally:
        for system in started:
            system.stop()


@pytest.fixture
def people(prosody: PrivateProsody) -> Iterator[Callable[[str], XmppPerson]]:
    """Log people in (`people("alice")`); they log out after the test."""
    connected: list[XmppPerson] = []

    def log_in(user: str) -> XmppPerson:
        person = XmppPerson(prosody.jid(user), PEOPLE[user], prosody.port).connect()
        connected.append(person)
        return person

    try:
        yield log_in
    finally:
        for person in connected:
            person.disconnect()


BOT = "bot@localhost"


def from_bot_in(room: str) -> Callable[[Heard], bool]:
    return lambda heard: heard.sender == f"{room}/harken"


# --- direct chats --------------------------------------------------------------------


def test_a_direct_ping_is_answered_pong(start_bot: BotFactory, people: Any) -> None:
    start_bot()
    alice = people("alice")

    assert alice.ask(BOT, "ping") == "pong"
    assert alice.ask(BOT, "echo hello <there> & 'you'") == "hello <there> & 'you'"


def test_each_jid_has_its_own_memory(start_bot: BotFactory, people: Any) -> None:
    start_bot()
    alice, bob = people("alice"), people("bob")

    assert alice.ask(BOT, "remember pager is 555-0100") == (
        "OK, I'll remember that pager is 555-0100."
    )
    assert bob.ask(BOT, "recall pager").startswith("I don't know pager")
    assert alice.ask(BOT, "recall pager") == "pager is 555-0100"
    assert "alice@localhost" in alice.ask(BOT, "whoami")


def test_messages_from_the_bots_own_account_are_ignored(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody, logs: LogWatch
) -> None:
    start_bot()
    twin = XmppPerson(f"{BOT}/twin", BOT_PASSWORD, prosody.port).connect()
    try:
        twin.say(BOT, "ping")
        logs.wait_for(r"ignored a message from our own account")
        alice = people("alice")
        assert alice.ask(BOT, "ping") == "pong"
        # The server hands the twin its own message too (it is a resource of the same
        # account); anything else would be the bot answering itself.
        assert [h for h in twin.nothing_more() if h.sender.startswith(BOT)] == [
            Heard(f"{BOT}/twin", "chat", "ping")
        ]
    finally:
        twin.disconnect()


# --- rooms ---------------------------------------------------------------------------


def test_in_a_room_the_bot_answers_only_when_addressed(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody
) -> None:
    room = prosody.room("ops")
    start_bot(rooms=room, prefix="!")
    alice = people("alice")
    alice.join(room, "alice")

    # Not addressed: no answer. Replies to one person keep their order, so if the bot
    # had answered this, that answer would come before the next one.
    alice.say(room, "ping", "groupchat")
    alice.say(room, "harken: ping", "groupchat")
    assert alice.expect(from_bot_in(room)).body == "alice: pong"

    alice.say(room, "Harken, echo by name", "groupchat")
    assert alice.expect(from_bot_in(room)).body == "alice: by name"
    alice.say(room, "!echo by prefix", "groupchat")
    assert alice.expect(from_bot_in(room)).body == "alice: by prefix"
    alice.say(room, "harkening back: ping", "groupchat")
    alice.say(room, "@harken echo by mention", "groupchat")
    assert alice.expect(from_bot_in(room)).body == "alice: by mention"


def test_two_people_in_a_room_have_separate_conversations(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody
) -> None:
    room = prosody.room("ops")
    start_bot(rooms=room)
    alice, bob = people("alice"), people("bob")
    alice.join(room, "alice")
    bob.join(room, "bob")

    alice.say(room, "harken: remember shift is nights", "groupchat")
    assert alice.expect(lambda h: h.body.startswith("alice: OK")).body == (
        "alice: OK, I'll remember that shift is nights."
    )
    bob.say(room, "harken: recall shift", "groupchat")
    assert bob.expect(lambda h: h.body.startswith("bob:")).body.startswith(
        "bob: I don't know shift"
    )
    alice.say(room, "harken: recall shift", "groupchat")
    assert alice.expect(lambda h: h.body.startswith("alice: shift")).body == (
        "alice: shift is nights"
    )


def test_own_room_messages_and_replayed_history_are_ignored(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody, logs: LogWatch
) -> None:
    room = prosody.room("ops")
    alice = people("alice")
    alice.join(room, "alice")
    # Said before the bot joined: the room keeps it as history (20 messages here).
    alice.say(room, "harken: echo old news", "groupchat")
    # The prefix makes the bot's own replies ("alice: ...") look addressed to it, so an
    # input that read its own messages would answer itself.
    start_bot(rooms=room, prefix="alice:")

    alice.say(room, "harken: echo fresh", "groupchat")
    assert alice.expect(from_bot_in(room)).body == "alice: fresh"
    alice.say(room, "harken: ping", "groupchat")
    assert alice.expect(from_bot_in(room)).body == "alice: pong"
    assert [h for h in alice.nothing_more() if h.sender == f"{room}/harken"] == []


def test_a_private_message_from_a_room_occupant_is_answered_privately(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody
) -> None:
    room = prosody.room("ops")
    start_bot(rooms=room)
    alice = people("alice")
    alice.join(room, "alice")

    alice.say(f"{room}/harken", "ping")
    heard = alice.expect(lambda h: h.sender == f"{room}/harken")
    assert (heard.type, heard.body) == ("chat", "pong")


# --- resilience ----------------------------------------------------------------------


def test_after_the_server_restarts_the_bot_reconnects_rejoins_and_answers(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody, logs: LogWatch
) -> None:
    room = prosody.room("ops")
    bot = start_bot(rooms=room)
    alice = people("alice")
    assert alice.ask(BOT, "ping") == "pong"

    prosody.stop()
    logs.wait_for(r"^XMPP: connection to .* lost")
    # Sent while the server is down: kept, and delivered once the bot is back.
    assert bot.runtime is not None
    bot.runtime.deliver(
        Event(
            EventType.REPLY, sender="harken", to="alice@localhost", data="while away", input="xmpp"
        )
    )
    logs.wait_for(r"^XMPP: cannot connect to")
    prosody.start()
    logs.wait_for(r"^XMPP: online as bot@localhost.*in rooms ops@", count=2)
    logs.wait_for(r"^XMPP: sending 1 message\(s\) queued while offline")

    alice = people("alice")  # her old connection died with the server
    assert alice.expect().body == "while away"  # kept for her by the server until now
    assert alice.ask(BOT, "ping") == "pong"
    alice.join(room, "alice")
    alice.say(room, "harken: echo still here", "groupchat")
    assert alice.expect(from_bot_in(room)).body == "alice: still here"


def test_a_connection_that_dies_silently_is_noticed_by_ping_and_replaced(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody, logs: LogWatch
) -> None:
    start_bot(ping_interval="0.3")
    prosody.freeze()
    try:
        logs.wait_for(r"^XMPP: connection to .* lost .*stopped answering pings")
    finally:
        prosody.thaw()
    logs.wait_for(r"^XMPP: online as bot@localhost", count=2)
    assert people("alice").ask(BOT, "ping") == "pong"


def _waits(logs: LogWatch) -> list[float]:
    """The backoff waits the input logged ("next attempt in ..."), unrounded."""
    return [
        arg
        for record in list(logs.records)
        if "next attempt in" in record.getMessage()
        for arg in (record.args if isinstance(record.args, tuple) else ())
        if isinstance(arg, float)
    ]


def test_the_reconnect_wait_never_exceeds_reconnect_max_delay(
    start_bot: BotFactory, prosody: PrivateProsody, logs: LogWatch
) -> None:
    prosody.stop()
    start_bot(wait_online=False, reconnect_delay="0.1", reconnect_max_delay="0.1")
    logs.wait_for(r"^XMPP: cannot connect to .* next attempt in", count=20)

    waits = _waits(logs)
    assert len(waits) >= 20
    assert all(0 < wait <= 0.1 for wait in waits), waits


def test_a_server_restarted_again_and_again_is_rejoined_at_once_each_time(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody, logs: LogWatch
) -> None:
    # Sessions here last a second or two, far below STABLE_SESSION: each carried a
    # message, so each drop resets the backoff instead of growing it restart after
    # restart (which had the bot come back a minute late when the server restarted
    # every minute).
    start_bot(reconnect_delay="0.2", reconnect_max_delay="10")
    restarts = 4
    for restart in range(restarts):
        assert people("alice").ask(BOT, "ping") == "pong"
        before = len(logs.records)
        prosody.restart()
        logs.wait_for(r"^XMPP: online as bot@localhost", count=restart + 2)
        lines = [r.getMessage() for r in list(logs.records)[before:]]
        lost = [line for line in lines if re.match(r"XMPP: connection to .* lost", line)]
        assert len(lost) == 1
        assert lost[0].endswith("; reconnecting"), lost[0]
        first_wait = next(line for line in lines if "next attempt in" in line)
        assert float(re.findall(r"next attempt in ([\d.]+) s", first_wait)[0]) <= 0.2

    # A session that carried nothing and ended as soon still counts as a failed attempt,
    # so a server that lets the bot in and throws it out at once gets backoff, no storm.
    prosody.restart()
    lost = logs.wait_for(r"^XMPP: connection to .* lost", count=restarts + 1)[-1]
    assert re.search(r"before the session carried a message; next attempt in [\d.]+ s$", lost)
    logs.wait_for(r"^XMPP: online as bot@localhost", count=restarts + 2)
    assert people("alice").ask(BOT, "ping") == "pong"


def test_replies_beyond_the_queue_limit_are_dropped_oldest_first_and_logged(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody, logs: LogWatch
) -> None:
    bot = start_bot(queue_limit="1")
    assert bot.runtime is not None
    prosody.stop()
    logs.wait_for(r"^XMPP: connection to .* lost")
    for text in ("first", "second"):
        bot.runtime.deliver(
            Event(EventType.REPLY, sender="harken", to="alice@localhost", data=text, input="xmpp")
        )
    dropped = logs.wait_for(r"dropped the oldest, to alice@localhost")
    assert "queue_limit" in dropped[0]
    prosody.start()
    logs.wait_for(r"^XMPP: sending 1 message\(s\) queued while offline")

    alice = people("alice")
    assert alice.expect().body == "second"
    assert alice.ask(BOT, "ping") == "pong"  # and "first" never came


def test_an_unreachable_server_is_retried_while_other_inputs_keep_working(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody, logs: LogWatch
) -> None:
    prosody.stop()
    replies: queue.Queue[Reply | Done] = queue.Queue()

    def testing(settings: InputSettings, runtime: Runtime, router: Handle) -> TestingInput:
        return TestingInput(settings, runtime, router, replies.put)

    bot = start_bot(inputs={"testing": testing}, wait_online=False)
    # Not a wrong password: start-up goes on, and the log says the input keeps trying.
    logs.wait_for(
        r"^XMPP: could not check the login of bot@localhost at 127\.0\.0\.1:\d+ "
        r"\(.*\); starting anyway, and retrying in the background"
    )
    logs.wait_for(r"^XMPP: cannot connect to 127\.0\.0\.1:\d+ as bot@localhost .* next attempt")
    logs.wait_for(r"^XMPP: cannot connect to", count=3)  # it keeps trying

    assert bot.router is not None
    asked = Event(EventType.TEXT, sender="carol", to="harken", data="ping", input="testing")
    bot.router.tell(Inbound(asked))
    done = replies.get(timeout=10)
    assert isinstance(done, Done)
    assert [e.data for e in done.replies] == ["pong"]

    prosody.start()
    logs.wait_for(r"^XMPP: online as bot@localhost")
    assert people("alice").ask(BOT, "ping") == "pong"


def test_a_wrong_password_stops_start_up_with_one_line_naming_the_jid(
    start_bot: BotFactory, logs: LogWatch
) -> None:
    wrong = "not-the-password-91c2"
    with pytest.raises(StartupError) as caught:
        start_bot(password=wrong, wait_online=False)

    assert str(caught.value) == (
        "xmpp: the server refused the login of bot@localhost (not-authorized): check "
        "inputs.xmpp.jid and HARKEN_XMPP_PASSWORD"
    )
    encoded = base64.b64encode(f"\0bot\0{wrong}".encode()).decode()
    for line in logs.messages():
        assert wrong not in line
        assert encoded not in line


def test_a_password_changed_while_running_is_logged_once_and_not_retried(
    start_bot: BotFactory, prosody: PrivateProsody, logs: LogWatch
) -> None:
    start_bot()
    prosody.stop()
    prosody.register("bot", "changed-meanwhile-5d1e")
    prosody.start()

    errors = logs.wait_for(r"refused the login of bot@localhost")
    assert len(errors) == 1
    assert "HARKEN_XMPP_PASSWORD" in errors[0]
    assert "Not retrying" in errors[0]
    # With a 0.1 s retry delay, a retrying input would try again within a second.
    attempts = len(logs.wait_for(r"^XMPP: connecting to"))
    with pytest.raises(TimeoutError):
        logs.wait_for(r"^XMPP: connecting to", count=attempts + 1, timeout=1.0)
    assert [m for m in logs.messages(logging.ERROR) if m.startswith("XMPP")] == errors
    for line in logs.messages():
        assert BOT_PASSWORD not in line


def test_plaintext_login_is_refused_unless_allowed(start_bot: BotFactory, logs: LogWatch) -> None:
    # The test server offers no TLS; without allow_plaintext the bot must not log in, and
    # since it never could, start-up stops and says which setting decides it.
    with pytest.raises(StartupError, match=r"^xmpp: .* offers no login method") as caught:
        start_bot(allow_plaintext="false", wait_online=False)
    assert "inputs.xmpp.allow_plaintext" in str(caught.value)
    assert [m for m in logs.messages() if m.startswith("XMPP: online as")] == []


@pytest.fixture
def tls_prosody(tmp_path: Path) -> Iterator[tuple[PrivateProsody, Path]]:
    """A private Prosody offering STARTTLS with a self-signed certificate for localhost."""
    require_prosody()
    cert, key = make_certificate(tmp_path / "tls")
    server = PrivateProsody(tmp_path / "prosody", tls=(cert, key))
    server.register("bot", BOT_PASSWORD)
    server.register("alice", PEOPLE["alice"])
    with server:
        yield server, cert


def test_the_bot_logs_in_over_starttls_and_checks_the_certificate(
    tls_prosody: tuple[PrivateProsody, Path], tmp_path: Path, logs: LogWatch
) -> None:
    server, cert = tls_prosody
    untrusted = _start_plain_bot(server, tmp_path / "untrusted", allow_plaintext="false")
    try:
        failed = logs.wait_for(r"^XMPP: cannot connect to .*certificate is not trusted")
        assert "inputs.xmpp.ca_file" in failed[0]
    finally:
        untrusted.stop()

    bot = _start_plain_bot(server, tmp_path / "trusted", allow_plaintext="false", ca_file=str(cert))
    try:
        logs.wait_for(r"^XMPP: online as bot@localhost")
        with XmppPerson(server.jid("alice"), PEOPLE["alice"], server.port) as alice:
            assert alice.ask(BOT, "ping") == "pong"
    finally:
        bot.stop()


def _start_plain_bot(server: PrivateProsody, memory: Path, **options: str) -> BotSystem:
    overrides = {
        "bot.inputs": "xmpp",
        "memory.path": str(memory),
        "inputs.xmpp.jid": server.jid("bot"),
        "inputs.xmpp.host": "127.0.0.1",
        "inputs.xmpp.port": str(server.port),
        **{f"inputs.xmpp.{key}": value for key, value in options.items()},
    }
    settings = load_settings(env={"HARKEN_XMPP_PASSWORD": BOT_PASSWORD}, overrides=overrides)
    system = BotSystem(settings)
    system.start()
    return system


# --- bad input -----------------------------------------------------------------------


def test_bad_stanzas_are_logged_and_the_input_keeps_answering(
    start_bot: BotFactory, people: Any, logs: LogWatch
) -> None:
    start_bot()
    alice = people("alice")
    to = f"to='{BOT}'"
    # Servers drop error messages sent to a bare JID, so this one goes to the session.
    bot_session = logs.wait_for(r"^XMPP: online as (bot@localhost/\S+)")[0].split()[3]

    alice.send_raw(f"<message {to} type='chat'><body/></message>")
    alice.send_raw(f"<message {to} type='chat'><body>   </body></message>")
    logs.wait_for(r"ignored a chat message with an empty body from alice@localhost", count=2)
    alice.send_raw(
        f"<message to='{bot_session}' type='error'><body>ping</body>"
        "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "</error></message>"
    )
    logs.wait_for(r"error message from alice@localhost.*item-not-found")
    alice.send_raw(f"<message {to} type='headline'><body>ping</body></message>")
    logs.wait_for(r"ignored a headline message")

    # Markup inside a body is read as its text; escaped markup stays literal.
    alice.send_raw(f"<message {to} type='chat'><body>echo a<b>bold</b>c</body></message>")
    assert alice.expect().body == "aboldc"
    alice.say(BOT, "echo <script>alert('x')</script> &amp; \u202eevil")
    assert alice.expect().body == "<script>alert('x')</script> &amp; evil"

    alice.say(BOT, "echo " + "x" * 1_000_000)
    refusal = alice.expect(timeout=20).body
    assert "only read messages up to 65,536 bytes" in refusal

    # None of the above got an answer it should not have, and the input is still up.
    assert alice.ask(BOT, "ping") == "pong"
    assert alice.nothing_more() == []


def test_senders_not_on_the_allow_list_are_ignored_and_logged(
    start_bot: BotFactory, people: Any, logs: LogWatch
) -> None:
    start_bot(allow_from="alice@localhost,example.org")
    mallory, alice = people("mallory"), people("alice")

    for _ in range(3):
        mallory.say(BOT, "ping")
    logs.wait_for(r"ignored another message from mallory@localhost", count=2)
    warnings = logs.wait_for(r"mallory@localhost, who is not in allow_from")
    assert len(warnings) == 1  # once per sender, so a flood cannot fill the log
    assert alice.ask(BOT, "ping") == "pong"
    assert mallory.nothing_more() == []


# --- configuration -------------------------------------------------------------------


def _xmpp_settings(env: dict[str, str], **options: str) -> InputSettings:
    overrides = {f"inputs.xmpp.{key}": value for key, value in options.items()}
    return load_settings(env=env, overrides=overrides).inputs["xmpp"]


@pytest.mark.parametrize(
    ("env", "options", "message"),
    [
        ({"HARKEN_XMPP_PASSWORD": "pw"}, {}, "inputs.xmpp.jid: the XMPP input needs"),
        ({}, {"jid": "bot@example.org"}, "HARKEN_XMPP_PASSWORD is not set"),
        ({"HARKEN_XMPP_PASSWORD": "pw"}, {"jid": "example.org"}, "needs a user part"),
        (
            {"HARKEN_XMPP_PASSWORD": "pw"},
            {"jid": "b@example.org", "rooms": "not a jid@"},
            "inputs.xmpp.rooms",
        ),
        ({"HARKEN_XMPP_PASSWORD": "pw"}, {"jid": "b@x.org", "port": "70000"}, "inputs.xmpp.port"),
        (
            {"HARKEN_XMPP_PASSWORD": "pw"},
            {"jid": "b@x.org", "reconnect_delay": "0"},
            "inputs.xmpp.reconnect_delay",
        ),
    ],
)
def test_preflight_names_the_setting_at_fault(
    env: dict[str, str], options: dict[str, str], message: str
) -> None:
    with pytest.raises(StartupError, match=re.escape(message)) as caught:
        XmppInput.preflight(_xmpp_settings(env, **options))
    assert "\n" not in str(caught.value)
    assert "pw" not in str(caught.value).replace("password", "")


# --- the command line ----------------------------------------------------------------


@pytest.mark.e2e
def test_harken_run_without_a_password_exits_2_with_one_line(tmp_path: Path) -> None:
    done = harken(
        "run", "--inputs", "xmpp", cwd=tmp_path, env={"HARKEN_XMPP_JID": "bot@example.org"}
    )
    assert done.returncode == 2
    assert done.stderr.decode().strip().splitlines() == [
        "harken: HARKEN_XMPP_PASSWORD is not set: the XMPP input needs the password of "
        "bot@example.org in the environment"
    ]


@pytest.mark.e2e
def test_harken_run_with_a_wrong_password_exits_2_with_one_line(
    prosody: PrivateProsody, tmp_path: Path
) -> None:
    wrong = "wrong-pw-4b8e"
    process = subprocess.Popen(
        [sys.executable, "-m", "harken", "run", "--inputs", "xmpp"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(
            {
                "HARKEN_XMPP_JID": prosody.jid("bot"),
                "HARKEN_XMPP_PASSWORD": wrong,
                "HARKEN_XMPP_HOST": "127.0.0.1",
                "HARKEN_XMPP_PORT": str(prosody.port),
                "HARKEN_XMPP_ALLOW_PLAINTEXT": "true",
            }
        ),
    )
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"harken kept running with a wrong password: {err}")
    assert process.returncode == 2, err
    fatal = [line for line in err.splitlines() if line.startswith("harken:")]
    assert fatal == [
        "harken: xmpp: the server refused the login of bot@localhost (not-authorized): check "
        "inputs.xmpp.jid and HARKEN_XMPP_PASSWORD"
    ]
    assert wrong not in err


@pytest.mark.e2e
def test_harken_run_answers_over_xmpp_and_stops_on_sigterm(
    prosody: PrivateProsody, people: Any, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "harken", "run", "--inputs", "xmpp"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(
            {
                "HARKEN_XMPP_JID": prosody.jid("bot"),
                "HARKEN_XMPP_PASSWORD": BOT_PASSWORD,
                "HARKEN_XMPP_HOST": "127.0.0.1",
                "HARKEN_XMPP_PORT": str(prosody.port),
                "HARKEN_XMPP_ALLOW_PLAINTEXT": "true",
            }
        ),
    )
    seen: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if "XMPP: online as bot@localhost" in line:
                break
        else:
            pytest.fail(f"harken never came online: {''.join(seen)}")
        assert people("alice").ask(BOT, "ping") == "pong"
    finally:
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=30)[1]
    assert process.returncode == 0, rest
    assert BOT_PASSWORD not in "".join(seen) + rest


# --- dialogs and reminders over XMPP -------------------------------------------------


def test_a_profile_dialog_runs_over_a_direct_chat(start_bot: BotFactory, people: Any) -> None:
    start_bot()
    alice = people("alice")

    assert alice.ask(BOT, "profile").startswith("What should I call you?")
    assert alice.ask(BOT, "Alice Liddell").startswith("What is your time zone?")
    refused = alice.ask(BOT, "Mars/Olympus")
    assert refused.startswith("`Mars/Olympus` is not a time zone.")
    if "What is your time zone?" not in refused:  # asked again in a message of its own
        alice.expect(lambda h: h.body.startswith("What is your time zone?"))
    assert alice.ask(BOT, "europe/paris").startswith(
        "Thanks, Alice Liddell. I'll give you times in Europe/Paris."
    )
    whoami = alice.ask(BOT, "whoami")
    assert "Alice Liddell" in whoami
    assert "Europe/Paris" in whoami


def test_two_people_in_a_room_each_answer_their_own_dialog(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody
) -> None:
    room = prosody.room("ops")
    start_bot(rooms=room)
    alice, bob = people("alice"), people("bob")
    alice.join(room, "alice")
    bob.join(room, "bob")

    def says(person: XmppPerson, nick: str, text: str) -> str:
        person.say(room, f"harken: {text}", "groupchat")
        return person.expect(lambda h: h.body.startswith(f"{nick}: ")).body

    assert says(alice, "alice", "profile").startswith("alice: What should I call you?")
    assert says(bob, "bob", "profile").startswith("bob: What should I call you?")
    # Unaddressed chatter in the room is not taken as anyone's answer.
    alice.say(room, "brb, coffee", "groupchat")
    assert says(bob, "bob", "Robert").startswith("bob: What is your time zone?")
    assert says(alice, "alice", "Al").startswith("alice: What is your time zone?")
    assert says(alice, "alice", "Asia/Tokyo").startswith("alice: Thanks, Al.")
    assert says(bob, "bob", "America/New_York").startswith("bob: Thanks, Robert.")


def test_a_reminder_is_delivered_over_xmpp(
    start_bot: BotFactory, people: Any, prosody: PrivateProsody
) -> None:
    room = prosody.room("ops")
    start_bot(rooms=room)
    alice = people("alice")
    alice.join(room, "alice")

    assert alice.ask(BOT, "remind me in 1 second to check the backups").startswith(
        "OK, I'll remind you on "
    )
    assert alice.expect(lambda h: "backups" in h.body).body == (
        "Reminder for alice: check the backups"
    )
    alice.say(room, "harken: remind me in 1 second to rotate the logs", "groupchat")
    assert alice.expect(from_bot_in(room)).body.startswith("alice: OK, I'll remind you on ")
    reminder = alice.expect(lambda h: "rotate" in h.body)
    assert (reminder.sender, reminder.body) == (
        f"{room}/harken",
        "alice: Reminder for alice: rotate the logs",
    )
