"""One person on Slack and XMPP, end to end with real servers on 127.0.0.1: the fake
Slack (Slack's wire protocol) and a private Prosody. Alice links her XMPP account from
Slack with the code the bot sends her there; a reminder she sets on Slack is listed
from XMPP and, as she asked from XMPP, delivered there."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from support.xmpp import Heard, PrivateProsody, XmppPerson, require_prosody

from actors.messages import BringJobsForward
from actors.system import BotSystem
from config import load_settings

pytestmark = pytest.mark.e2e

ALICE_DM = "D0ALICE01"  # the fake Slack's direct channel with U0ALICE01
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in PROXY_VARS:  # slack-sdk would send 127.0.0.1 to a proxy
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[PrivateProsody]:
    require_prosody()
    server = PrivateProsody(tmp_path / "prosody")
    server.register("bot", "bot-pw-7d1e")
    server.register("alice", "alice-pw")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_reminder_set_on_slack_reaches_the_linked_person_over_xmpp(
    prosody: PrivateProsody, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bot_jid = prosody.jid("bot")
    with FakeSlack() as slack, XmppPerson(prosody.jid("alice"), "alice-pw", prosody.port) as xmpp:
        overrides = {
            "bot.inputs": "slack,xmpp",
            "memory.path": str(tmp_path / "memory"),
            "inputs.slack.api_url": slack.api_url,
            "inputs.xmpp.jid": bot_jid,
            "inputs.xmpp.host": "127.0.0.1",
            "inputs.xmpp.port": str(prosody.port),
            "inputs.xmpp.allow_plaintext": "true",
        }
        env = {
            "HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN,
            "HARKEN_SLACK_APP_TOKEN": APP_TOKEN,
            "HARKEN_XMPP_PASSWORD": "bot-pw-7d1e",
        }
        system = BotSystem(load_settings(env=env, overrides=overrides))
        system.start()
        try:
            slack.wait_connections(1)
            assert xmpp.ask(bot_jid, "ping", timeout=20) == "pong"  # the bot is online

            def slack_reply(contains: str) -> str:
                return slack.wait_post(
                    lambda p: p.channel == ALICE_DM and contains in p.text, what=contains
                ).text

            def from_bot(heard: Heard) -> bool:
                return heard.sender.split("/")[0] == bot_jid

            slack.say(f"link xmpp {xmpp.jid}")
            slack_reply(f"Say the code I sent you on xmpp (to {xmpp.jid}).")
            sent = xmpp.expect(from_bot)
            found = re.search(r"say this code there: (\d{6})", sent.body)
            assert found is not None, sent.body
            assert "U0ALICE01 on slack asked me to link this account" in sent.body
            slack.say(found.group(1))
            assert "Linked: you and " in slack_reply("Linked:")

            slack.say("remind me in 10 minutes to ship the release")
            set_reply = slack_reply("OK, I'll remind you")
            job = re.search(r"Job id (\w+):", set_reply)
            assert job is not None, set_reply
            # Listed from XMPP; and from XMPP she asks for her reminders there.
            assert job.group(1) in xmpp.ask(bot_jid, "reminders")
            assert xmpp.ask(bot_jid, "reminders go to xmpp") == "OK: reminders reach you on xmpp."

            assert system.runtime is not None
            assert system.runtime.scheduler is not None
            system.runtime.scheduler.ask(BringJobsForward(600), timeout=5)
            reminder = xmpp.expect(lambda h: from_bot(h) and "ship the release" in h.body, 20)
            assert reminder.body.startswith("Reminder for ")
            assert reminder.type == "chat"
            assert not [
                p for p in slack.posts if "ship the release" in p.text and "Reminder" in p.text
            ]
        finally:
            system.stop()
    # Harken never logs the code. The libraries' DEBUG lines show every message, the
    # code among them: slixmpp's and slack-sdk's (whose loggers Harken names
    # actors.inputs.slack.web / .socket).
    ours = ("actors", "commands", "core", "memory", "harken", "config")
    sdk = ("actors.inputs.slack.web", "actors.inputs.slack.socket")
    logged = [
        r.getMessage() for r in caplog.records if r.name.split(".")[0] in ours and r.name not in sdk
    ]
    assert logged
    assert not [line for line in logged if found.group(1) in line]
