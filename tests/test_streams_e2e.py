"""Streams end to end, with real servers on 127.0.0.1: the fake Slack (Slack's wire
protocol), a real HTTP service, a real SMTP server (aiosmtpd), a private Prosody and a
private ngircd.

* chatter in a Slack channel (not addressed to the bot) triggers a stream that has the
  bot check the services and mail the report; the digest mails the channel's messages
  with the services' health when its job comes due;
* the relay mirrors an XMPP room into an IRC channel and back, and nothing comes round
  twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from support.irc import IrcPerson, PrivateNgircd, require_ngircd
from support.ops_services import running_services
from support.smtp import SmtpServer
from support.xmpp import PrivateProsody, XmppPerson, require_prosody

from actors.messages import BringJobsForward, MemoryKeys
from actors.system import BotSystem
from commands.streams import StreamContext, load_streams, stream
from config import load_settings
from core.event import Event
from harken.testbot import wait_until

pytestmark = pytest.mark.e2e

OPS = "C0OPS0001"
ONCALL = "oncall@example.org"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:  # slack-sdk would send 127.0.0.1 to a proxy
        monkeypatch.delenv(var, raising=False)


@stream(name="deploys", inputs=("slack",), channels=(OPS,), pattern=r"\bdeployed\b")
def deploys(ctx: StreamContext, event: Event) -> None:
    """After a deploy is announced, mail on-call the health of every service."""
    ctx.run(f"health report to {ONCALL}")


class Ops:
    """A bot on the fake Slack and a real SMTP server, with one real HTTP service."""

    def __init__(self, tmp_path: Path, slack: FakeSlack, smtp: SmtpServer, base: str) -> None:
        self.tmp_path, self.slack, self.smtp, self.base = tmp_path, slack, smtp, base
        self.system: BotSystem | None = None

    def start(self, **streams: str) -> BotSystem:
        overrides = {
            "bot.inputs": "slack,email",
            "memory.path": str(self.tmp_path / "memory"),
            "inputs.slack.api_url": self.slack.api_url,
            "inputs.email.host": self.smtp.host,
            "inputs.email.port": str(self.smtp.port),
            "inputs.email.tls": "none",
            "inputs.email.from_address": "harken@example.org",
            "inputs.email.allowed_domains": "example.org",
            "services.web.url": self.base,
            "services.web.health": "/healthz",
            **streams,
        }
        settings = load_settings(
            env={"HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN, "HARKEN_SLACK_APP_TOKEN": APP_TOKEN},
            overrides=overrides,
        )
        found = load_streams(use_entry_points=False).streams
        self.system = BotSystem(settings, streams={**found, "deploys": deploys})
        self.system.start()
        self.slack.wait_connections(1)
        return self.system

    def chatter(self, text: str) -> None:
        self.slack.say(text, channel=OPS, channel_type="channel")


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    with FakeSlack() as slack, running_services() as (base, _), SmtpServer() as smtp:
        harness = Ops(tmp_path, slack, smtp, base)
        try:
            yield harness
        finally:
            if harness.system is not None:
                harness.system.stop()


def test_slack_chatter_triggers_a_stream_that_checks_a_real_service_and_mails_the_report(
    ops: Ops,
) -> None:
    ops.start(**{"streams.deploys.mailbox": "10"})
    ops.chatter("web deployed v42, all green here")
    (mail,) = ops.smtp.wait_for(1)
    assert mail.rcpt_tos == (ONCALL,)
    assert "health report" in str(mail.message["Subject"])
    body = mail.part("text/plain")
    assert "1 of 1 services up." in body
    assert "web" in body
    assert "asked by stream deploys" in body
    # The chatter was for the streams only: nothing was said in the channel.
    ops.slack.say("!ping", channel=OPS, channel_type="channel")
    ops.slack.wait_post(lambda p: p.text == "pong", what="pong")
    assert [p.text for p in ops.slack.posts_to(OPS)] == ["pong"]


def test_the_digest_mails_the_channel_and_the_services_health_when_its_job_is_due(
    ops: Ops,
) -> None:
    system = ops.start(
        **{
            "streams.digest.channel": f"slack:{OPS}",
            "streams.digest.recipient": ONCALL,
            "streams.digest.at": "every day at 18:00",
        }
    )
    ops.chatter("the database failover finished")
    ops.chatter("cache hit rate back to 97%")
    assert system.runtime is not None
    memory = system.runtime.memory
    wait_until(
        lambda: len(memory.ask(MemoryKeys("user", "stream:digest"), timeout=5)) == 2, timeout=10
    )
    scheduler = system.runtime.scheduler
    assert scheduler is not None
    scheduler.ask(BringJobsForward(25 * 3600), timeout=5)
    (mail,) = ops.smtp.wait_for(1)
    assert mail.rcpt_tos == (ONCALL,)
    assert f"digest of slack:{OPS}: 2 messages" in str(mail.message["Subject"])
    body = mail.part("text/plain")
    assert "the database failover finished" in body
    assert "cache hit rate back to 97%" in body
    assert "Services: 1 of 1 up, 0 down." in body
    # Sent: forgotten, so the next digest starts empty.
    wait_until(lambda: memory.ask(MemoryKeys("user", "stream:digest"), timeout=5) == [])


# --- XMPP room <-> IRC channel -------------------------------------------------------------


class _Online(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.lines.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, start: str, timeout: float = 20.0) -> None:
        with self.changed:
            if not self.changed.wait_for(
                lambda: any(line.startswith(start) for line in self.lines), timeout
            ):
                raise TimeoutError(f"no log line starting {start!r}")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[PrivateProsody, PrivateNgircd]]:
    require_prosody()
    require_ngircd()
    prosody = PrivateProsody(tmp_path / "prosody")
    prosody.register("bot", "bot-pw-51c2")
    prosody.register("alice", "alice-pw")
    prosody.start()
    irc = PrivateNgircd(tmp_path / "ngircd")
    try:
        irc.start()
        yield prosody, irc
    finally:
        irc.stop()
        prosody.stop()


def test_an_xmpp_room_is_relayed_to_irc_and_back_without_loops(
    servers: tuple[PrivateProsody, PrivateNgircd], tmp_path: Path
) -> None:
    prosody, irc = servers
    room = prosody.room("ops")
    online = _Online()
    watched = logging.getLogger("actors.inputs")
    level = watched.level
    watched.setLevel(logging.INFO)
    watched.addHandler(online)
    cleanup: list[Callable[[], Any]] = [
        lambda: watched.removeHandler(online),
        lambda: watched.setLevel(level),
    ]
    try:
        bob = IrcPerson("bob", irc.port).connect()
        cleanup.append(bob.close)
        bob.join("#ops")
        alice = XmppPerson(prosody.jid("alice"), "alice-pw", prosody.port).connect()
        cleanup.append(alice.disconnect)
        alice.join(room, "alice")
        overrides = {
            "bot.inputs": "xmpp,irc",
            "memory.path": str(tmp_path / "memory"),
            "inputs.xmpp.jid": prosody.jid("bot"),
            "inputs.xmpp.host": "127.0.0.1",
            "inputs.xmpp.port": str(prosody.port),
            "inputs.xmpp.allow_plaintext": "true",
            "inputs.xmpp.rooms": room,
            "inputs.irc.host": "127.0.0.1",
            "inputs.irc.port": str(irc.port),
            "inputs.irc.tls": "false",
            "inputs.irc.channels": "#ops",
            "inputs.irc.lines_per_second": "20",
            "streams.relay.from_room": f"xmpp:{room}",
            "streams.relay.to_room": "irc:#ops",
            "streams.relay.both_ways": "true",
            # The bot's own answers are mirrored too; what the relay posts comes by the
            # hub as well, and must not be relayed again.
            "streams.relay.replies": "true",
        }
        settings = load_settings(env={"HARKEN_XMPP_PASSWORD": "bot-pw-51c2"}, overrides=overrides)
        system = BotSystem(settings)
        system.start()
        cleanup.append(system.stop)
        online.wait_for("XMPP: online as")
        online.wait_for("IRC: online at ")
        bob.expect(lambda h: h.command == "JOIN" and h.nick == "harken", 20)

        def from_bot_in_room(heard: Any) -> bool:
            return bool(heard.sender == f"{room}/harken")

        # The bot is in the room once it answers there.
        alice.say(room, "harken: ping", "groupchat")
        assert alice.expect(from_bot_in_room, 20).body == "alice: pong"

        def said_by_bot(heard: Any) -> bool:
            return bool(heard.command == "PRIVMSG" and heard.nick == "harken")

        assert bob.expect(said_by_bot).text == "[xmpp] alice: ping"
        assert bob.expect(said_by_bot).text == "[xmpp] harken: alice: pong"

        alice.say(room, "is anyone on irc?", "groupchat")
        assert bob.expect(said_by_bot).text == "[xmpp] alice: is anyone on irc?"
        bob.say("#ops", "yes, bob here")
        assert alice.expect(from_bot_in_room).body == "[irc] bob: yes, bob here"

        # A last round trip each way: had anything come round again, it came first.
        alice.say(room, "end of test", "groupchat")
        assert bob.expect(said_by_bot).text == "[xmpp] alice: end of test"
        bob.say("#ops", "bye")
        assert alice.expect(from_bot_in_room).body == "[irc] bob: bye"
        assert [h for h in bob.nothing_more() if said_by_bot(h)] == []
        assert [h for h in alice.nothing_more() if from_bot_in_room(h)] == []
    finally:
        for step in reversed(cleanup):
            step()
