"""The Slack input end to end: the real bot and slack-sdk against a fake Slack on 127.0.0.1.

The fake (tests/support/fake_slack.py) speaks Slack's Web API over HTTP and Socket Mode over a
websocket; nothing of Harken's is mocked. To show that something was ignored without
waiting "a while", a test sends the ignorable envelope, then a `ping`: envelopes on one
connection are taken in order, so once the `pong` is posted the earlier one has been
handled, and the posts show whether it was answered.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from support.fake_slack import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, FakeSlack, Post

from actors.system import BotSystem
from commands.base import command
from commands.dialogs import Answers, Choice, Confirm, dialog
from commands.loader import load_commands
from config import load_settings
from core.event import Event, EventType
from harken.testbot import wait_until

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
ALICE = "U0ALICE01"
BOB = "U0BOB0001"
ALICE_DM = "D0ALICE01"
OPS = {"channel": "C0OPS0001", "channel_type": "channel"}


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack-sdk honours HTTP(S)_PROXY and ignores NO_PROXY: a proxy would swallow 127.0.0.1.
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


class Gate:
    """Holds the `wait` command until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()


class Harness:
    def __init__(self, slack: FakeSlack, tmp_path: Path) -> None:
        self.slack = slack
        self.tmp_path = tmp_path
        self.gate = Gate()
        self.system: BotSystem | None = None

    def start(self, env: dict[str, str] | None = None, **options: str) -> BotSystem:
        """Start the bot with `options` for `[inputs.slack]` and more settings in `env`."""
        overrides = {
            "bot.inputs": "slack",
            "memory.path": str(self.tmp_path / "memory"),
            "inputs.slack.api_url": self.slack.api_url,
            # Most tests are not about pacing: let replies go out as fast as they come.
            "inputs.slack.replies_per_second": "1000",
            "inputs.slack.reply_burst": "1000",
        }
        overrides.update({f"inputs.slack.{k}": v for k, v in options.items()})
        settings = load_settings(
            env={
                "HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN,
                "HARKEN_SLACK_APP_TOKEN": APP_TOKEN,
                **(env or {}),
            },
            overrides=overrides,
        )
        registry = load_commands((), use_entry_points=False).registry
        gate = self.gate

        @command(r"^wait$")
        def wait() -> str:
            """Block until the test lets go."""
            gate.entered.set()
            gate.open.wait(10)
            return "done waiting"

        @dialog(
            r"^rota$",
            steps=[
                Choice("rota", "Which rota?", ["ops", "db", "network"]),
                Confirm("ok", lambda a: f"Join the {a['rota']} rota?"),
            ],
        )
        def rota(answers: Answers) -> str:
            """Join an on-call rota."""
            return f"You are on the {answers['rota']} rota."

        registry.add(wait)
        registry.add(rota)
        self.system = BotSystem(settings, registry=registry)
        self.system.start()
        self.slack.wait_connections(1)
        return self.system

    def stop(self) -> None:
        if self.system is not None:
            self.gate.open.set()
            self.system.stop()
            self.system = None

    def barrier(self, **where: str) -> None:
        """Say `ping` and wait for its `pong`: everything sent before has been handled."""
        channel = where.get("channel", ALICE_DM)
        pongs = sum(p.text == "pong" for p in self.slack.posts_to(channel))
        self.slack.say("ping" if channel.startswith("D") else "!ping", **where)
        self.slack.wait_post(
            lambda p: sum(p.text == "pong" for p in self.slack.posts_to(channel)) > pongs,
            what="pong",
        )

    def ask(self, text: str, timeout: float = 10, **where: str) -> Post:
        """Say `text` and return the first post made after it, in the same channel."""
        channel = where.get("channel", ALICE_DM)
        before = len(self.slack.posts_to(channel))
        self.slack.say(text, **where)
        self.slack.wait_post(
            lambda p: len(self.slack.posts_to(channel)) > before, timeout, f"answer to {text!r}"
        )
        return self.slack.posts_to(channel)[before]


@pytest.fixture
def harness(slack: FakeSlack, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(slack, tmp_path)
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def bot(harness: Harness) -> Harness:
    harness.start()
    return harness


# --- answering ----------------------------------------------------------------------------


def test_a_direct_message_ping_is_answered_pong_in_the_same_dm(bot: Harness) -> None:
    post = bot.ask("ping")
    assert post.channel == ALICE_DM
    assert post.text == "pong"
    assert post.thread_ts is None


def test_a_mention_in_a_channel_is_answered_in_that_channel(bot: Harness) -> None:
    post = bot.ask(f"<@{BOT_USER_ID}> echo hello ops", channel="C0OPS0001", channel_type="channel")
    assert (post.channel, post.text) == ("C0OPS0001", "hello ops")


def test_the_prefix_addresses_the_bot_in_a_channel_and_chatter_is_left_alone(
    bot: Harness,
) -> None:
    where = {"channel": "C0OPS0001", "channel_type": "channel"}
    chatter = bot.slack.say("ping me when the deploy is done", **where)
    post = bot.ask("!ping", **where)
    assert post.text == "pong"
    assert [p.text for p in bot.slack.posts_to("C0OPS0001")] == ["pong"]
    bot.slack.wait_acked(chatter["envelope_id"])


def test_a_configured_prefix_replaces_the_default(harness: Harness) -> None:
    harness.start(prefix="harken,")
    where = {"channel": "C0OPS0001", "channel_type": "channel"}
    harness.slack.say("!ping", **where)
    assert harness.ask("harken, echo configured", **where).text == "configured"
    assert [p.text for p in harness.slack.posts_to("C0OPS0001")] == ["configured"]


def test_a_reply_in_a_thread_stays_in_that_thread(bot: Harness) -> None:
    thread = "1700000000.000100"
    post = bot.ask(
        f"<@{BOT_USER_ID}> whoami", channel="C0OPS0001", channel_type="channel", thread_ts=thread
    )
    assert post.channel == "C0OPS0001"
    assert post.thread_ts == thread
    assert f"Channel: C0OPS0001, thread {thread}" in post.text


def test_each_thread_is_its_own_conversation(bot: Harness) -> None:
    # The same person in the same channel: a command still running in one thread does
    # not hold up their message in another thread.
    where = {"channel": "C0OPS0001", "channel_type": "channel"}
    bot.slack.say("!wait", thread_ts="1700000000.000100", **where)
    assert bot.gate.entered.wait(10)
    post = bot.ask("!ping", thread_ts="1700000000.000200", **where)
    assert (post.text, post.thread_ts) == ("pong", "1700000000.000200")
    bot.gate.open.set()
    done = bot.slack.wait_post(lambda p: p.text == "done waiting")
    assert done.thread_ts == "1700000000.000100"


def test_own_messages_other_bots_edits_and_deletions_are_ignored(bot: Harness) -> None:
    slack = bot.slack
    ignored = [
        slack.say("ping", user=BOT_USER_ID),
        slack.say("ping", user="U0OTHERBOT", bot_id="B0OTHER01"),
        slack.say("ping", subtype="bot_message", user="U0OTHERBOT"),
        slack.say("ping", subtype="message_changed"),
        slack.say("ping", subtype="message_deleted"),
        slack.say("ping", subtype="channel_join"),
    ]
    assert bot.ask("echo only me").text == "only me"
    assert [p.text for p in slack.posts_to(ALICE_DM)] == ["only me"]
    for envelope in ignored:
        slack.wait_acked(envelope["envelope_id"])


def test_people_are_shown_with_their_display_name_looked_up_once(bot: Harness) -> None:
    assert bot.ask("whoami").text.startswith("You are U0ALICE01 (Alice).")
    assert bot.ask("whoami").text.startswith("You are U0ALICE01 (Alice).")
    assert bot.slack.calls["users.info"] == 1


def test_a_message_from_an_unknown_user_is_answered_with_the_id_as_name(bot: Harness) -> None:
    post = bot.ask("whoami", user="U0NOBODY1", channel="D0NOBODY1")
    assert post.text.startswith("You are U0NOBODY1 (U0NOBODY1).")


def test_a_message_without_a_channel_goes_to_the_persons_direct_messages(bot: Harness) -> None:
    assert bot.system is not None
    assert bot.system.runtime is not None
    reminder = Event(
        type=EventType.REPLY, sender="harken", to="U0BOB0001", data="stand-up", input="slack"
    )
    bot.system.runtime.deliver(reminder)
    post = bot.slack.wait_post(lambda p: p.text == "stand-up")
    assert post.channel == "D0BOB0001"
    assert bot.slack.calls["conversations.open"] == 1


# --- protocol -----------------------------------------------------------------------------


def test_an_envelope_is_acknowledged_before_its_command_finishes(bot: Harness) -> None:
    envelope = bot.slack.say("wait")
    assert bot.gate.entered.wait(10)
    bot.slack.wait_acked(envelope["envelope_id"])
    assert not bot.gate.open.is_set()
    assert bot.slack.posts_to(ALICE_DM) == []
    bot.gate.open.set()
    assert bot.slack.wait_post(lambda p: p.text == "done waiting").channel == ALICE_DM


def test_a_redelivered_envelope_is_handled_once(bot: Harness) -> None:
    first = bot.slack.say("echo only once")
    again = bot.slack.redeliver(first)
    assert again["payload"]["event_id"] == first["payload"]["event_id"]
    bot.barrier()
    assert [p.text for p in bot.slack.posts_to(ALICE_DM)] == ["only once", "pong"]
    bot.slack.wait_acked(again["envelope_id"])


def test_a_message_seen_as_message_and_as_app_mention_is_answered_once(bot: Harness) -> None:
    slack = bot.slack
    event = slack.message_event(
        f"<@{BOT_USER_ID}> echo twice?", channel="C0OPS0001", channel_type="channel"
    )
    mention = {k: event[k] for k in ("user", "text", "ts", "channel", "event_ts")}
    slack.send_envelope(slack.envelope(event))
    slack.send_envelope(slack.envelope({**mention, "type": "app_mention"}))
    bot.barrier(channel="C0OPS0001", channel_type="channel")
    assert [p.text for p in slack.posts_to("C0OPS0001")] == ["twice?", "pong"]


def test_after_a_disconnect_message_the_bot_reconnects_and_answers(bot: Harness) -> None:
    assert bot.ask("ping").text == "pong"
    bot.slack.disconnect()
    bot.slack.wait_connections(2)
    assert bot.ask("echo back again").text == "back again"


def test_after_a_dropped_socket_the_bot_reconnects_and_answers(harness: Harness) -> None:
    # A dead connection is noticed by the ping; a short interval keeps the test short.
    harness.start(ping_interval="0.3")
    assert harness.ask("ping").text == "pong"
    harness.slack.drop()
    harness.slack.wait_connections(2, timeout=15)
    assert harness.ask("echo still here").text == "still here"


def test_a_429_on_post_message_is_retried_after_retry_after(bot: Harness) -> None:
    bot.slack.rate_limit_next(1, retry_after=1)
    started = time.monotonic()
    post = bot.ask("ping")
    assert post.text == "pong"
    assert bot.slack.rate_limited == 1
    assert post.at - started >= 1.0  # it waited as told, then retried
    assert bot.slack.calls["chat.postMessage"] == 2


def test_a_reply_whose_answer_breaks_off_is_not_posted_twice(
    bot: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Slack posted it and began to answer, then the connection dropped: sending the
    # request again would post the reply a second time.
    bot.slack.cut_next_answer()
    assert bot.ask("echo once").text == "once"  # posted, though its answer was cut
    assert bot.ask("echo next").text == "next"  # replies to a channel go in order
    assert [p.text for p in bot.slack.posts_to(ALICE_DM)] == ["once", "next"]
    assert bot.slack.calls["chat.postMessage"] == 2
    assert "most likely posted, so it is not sent again" in caplog.text


def test_a_reply_slack_refuses_is_logged_and_dropped_and_the_next_goes_out(
    bot: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # `{"ok": false}` with HTTP 200 is Slack saying no: retrying would not help.
    bot.slack.refuse_next("channel_not_found")
    bot.slack.say("echo refused")
    assert bot.ask("echo accepted").text == "accepted"
    assert [p.text for p in bot.slack.posts_to(ALICE_DM)] == ["accepted"]
    assert bot.slack.calls["chat.postMessage"] == 2
    assert "Slack refused a reply" in caplog.text
    assert "channel_not_found" in caplog.text


def test_a_server_error_on_post_message_is_retried(bot: Harness) -> None:
    bot.slack.refuse_next("internal_error", status=503)
    started = time.monotonic()
    post = bot.ask("ping")
    assert post.text == "pong"
    assert post.at - started >= 1.0  # the first retry waits a second
    assert bot.slack.calls["chat.postMessage"] == 2


def test_a_burst_of_replies_to_one_channel_is_paced_under_slacks_limit(
    slack: FakeSlack, tmp_path: Path
) -> None:
    # The fake enforces a per-channel limit like Slack's (here 6/s, bursts of 3) and
    # answers 429 beyond it; the bot is set a little under it.
    slack.channel_limit = (6.0, 3.0)
    harness = Harness(slack, tmp_path)
    try:
        harness.start(replies_per_second="5", reply_burst="2")
        words = " ".join(f"w{i:05d}" for i in range(3000))  # 20,999 characters: 6 parts
        slack.say(f"echo {words}")
        posts = slack.wait_posts(6, timeout=15)
        assert slack.rate_limited == 0
        assert " ".join(p.text for p in posts) == words
    finally:
        harness.stop()


def test_replies_paced_at_exactly_slacks_rate_never_trip_its_limit(
    slack: FakeSlack, tmp_path: Path
) -> None:
    # The bot's bucket earns nothing while a post is on its way, so posts arrive at
    # least a token's time apart even with no margin under the limit.
    slack.channel_limit = (10.0, 2.0)
    harness = Harness(slack, tmp_path)
    try:
        harness.start(replies_per_second="10", reply_burst="2")
        words = " ".join(f"{i:07d}" for i in range(5000)) + "!"
        slack.say(f"echo {words}")
        posts = slack.wait_posts(11, timeout=15)
        assert slack.rate_limited == 0
        assert " ".join(p.text for p in posts) == words
    finally:
        harness.stop()


def test_a_40000_character_message_is_answered_in_parts_and_nothing_is_lost(
    bot: Harness,
) -> None:
    words = " ".join(f"{i:07d}" for i in range(5000)) + "!"
    assert len(words) == 40_000
    bot.slack.say(f"echo {words}")
    bot.slack.wait_post(lambda p: words.endswith(p.text), timeout=15, what="the last part")
    posts = bot.slack.posts_to(ALICE_DM)
    assert len(posts) == 11
    assert all(len(p.text) <= 4000 for p in posts)
    assert " ".join(p.text for p in posts) == words


# --- bad input ----------------------------------------------------------------------------


def test_malformed_and_unknown_envelopes_are_logged_and_the_bot_keeps_answering(
    bot: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    slack = bot.slack
    caplog.set_level(logging.INFO)
    slack.send_raw("this is not json")
    slack.send_raw("[1, 2, 3]")
    slack.send_raw(json.dumps({"envelope_id": "e-no-payload", "type": "events_api"}))
    slack.send_raw(
        json.dumps({"envelope_id": "e-bad-payload", "type": "events_api", "payload": "x"})
    )
    no_user = slack.envelope({"type": "message", "text": "ping", "channel": ALICE_DM, "ts": "1.1"})
    slack.send_envelope(no_user)
    slack.send_raw(json.dumps({"envelope_id": "e-unknown", "type": "mystery", "payload": {}}))
    reaction = slack.envelope({"type": "reaction_added", "user": "U0ALICE01", "reaction": "+1"})
    slack.send_envelope(reaction)
    slack.send_raw(json.dumps({"envelope_id": "e-slash", "type": "slash_commands"}))

    assert bot.ask("ping").text == "pong"
    assert [p.text for p in slack.posts_to(ALICE_DM)] == ["pong"]
    for envelope_id in ("e-no-payload", "e-bad-payload", "e-unknown", "e-slash"):
        slack.wait_acked(envelope_id)
    slack.wait_acked(no_user["envelope_id"])
    slack.wait_acked(reaction["envelope_id"])
    log = caplog.text
    assert "not a JSON object" in log
    assert "without an event" in log
    assert "without a valid user" in log
    assert "unknown type 'mystery'" in log


def test_a_message_with_blocks_but_no_text_is_read_from_its_blocks(bot: Harness) -> None:
    assert bot.ask("", blocks=_rich_text("echo from blocks")).text == "from blocks"


def test_a_direct_message_with_nothing_readable_gets_a_pointer_to_help(bot: Harness) -> None:
    post = bot.ask("", blocks=[{"type": "divider"}], subtype="file_share", files=[{"id": "F1"}])
    assert "help" in post.text


def test_tokens_never_reach_the_logs_even_at_debug(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness.start()
    assert harness.ask("ping").text == "pong"
    harness.slack.disconnect()
    harness.slack.wait_connections(2)
    assert harness.ask("ping").text == "pong"
    harness.stop()
    assert "auth.test" in caplog.text or "Slack input is harken" in caplog.text
    for token in (BOT_TOKEN, APP_TOKEN):
        assert token not in caplog.text
        assert token.split("-")[-1] not in caplog.text


def _rich_text(text: str) -> list[dict[str, object]]:
    section = {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
    return [{"type": "rich_text", "block_id": "b1", "elements": [section]}]


# --- dialogs and reminders over Slack -----------------------------------------------------


def test_a_full_profile_dialog_over_slack(bot: Harness) -> None:
    thread = {"channel": "C0OPS0001", "channel_type": "channel", "thread_ts": "1700000000.000300"}
    assert bot.ask("!profile", **thread).text.startswith("What should I call you?")
    # Inside the dialog the person just answers (with the prefix, as in any channel).
    assert "time zone" in bot.ask("!Ally", **thread).text
    done = bot.ask("!Europe/Paris", **thread)
    assert done.text.startswith("Thanks, Ally. I'll give you times in Europe/Paris.")
    assert done.thread_ts == "1700000000.000300"
    assert "Time zone: Europe/Paris" in bot.ask("whoami").text


def test_a_reminder_is_delivered_to_slack(bot: Harness) -> None:
    confirmation = bot.ask("remind me in 2 seconds to stretch")
    assert confirmation.text.startswith("OK, I'll remind you")
    reminder = bot.slack.wait_post(lambda p: "stretch" in p.text and p is not confirmation, 20)
    assert reminder.channel == ALICE_DM


def test_the_connection_state_is_reported_for_health_checks(bot: Harness) -> None:
    assert bot.system is not None
    assert bot.system.runtime is not None
    metrics = bot.system.runtime.metrics
    wait_until(lambda: metrics.input_state("slack") == "connected")
    bot.slack.stop()  # Slack goes away: the socket closes and reconnecting fails
    wait_until(lambda: metrics.input_state("slack") == "disconnected")


# --- questions with buttons -----------------------------------------------------------------


def _after(slack: FakeSlack, channel: str, count: int) -> Post:
    """Wait for the post number `count` (from 1) in `channel`; return it."""
    slack.wait_post(lambda p: len(slack.posts_to(channel)) >= count, what=f"post #{count}")
    return slack.posts_to(channel)[count - 1]


def test_a_choice_is_posted_with_a_button_per_answer_and_its_text_as_fallback(
    bot: Harness,
) -> None:
    question = bot.ask("rota")
    assert question.text.startswith("Which rota? (ops / db / network)")
    assert question.buttons() == {"ops": "ops", "db": "db", "network": "network"}
    assert question.blocks is not None
    section, actions = question.blocks
    assert section["text"]["text"] == question.text
    assert actions["type"] == "actions"
    assert bot.ask("cancel").blocks is None  # a plain reply is plain text


def test_only_a_dialogs_question_gets_buttons_not_text_that_looks_like_one(
    bot: Harness,
) -> None:
    # Buttons come from what the dialog's step offers, never from the wording of a reply.
    assert bot.ask("echo Deploy now? (yes/no)").blocks is None
    assert bot.ask("echo Which one? (a / b)").blocks is None
    assert bot.ask("rota").buttons()
    offer = bot.ask("rota")  # would start it again: abandon the open one?
    assert offer.text == "You are in the middle of `rota`. Abandon it and start it again? (yes/no)"
    assert offer.buttons() == {"yes": "yes", "no": "no"}


def test_a_click_is_the_persons_answer_and_the_buttons_give_way_to_it(bot: Harness) -> None:
    slack = bot.slack
    question = bot.ask("rota")
    clicked = slack.click(question, "db")
    confirm = _after(slack, ALICE_DM, 2)
    assert confirm.text == "Join the db rota? (yes/no)"
    assert confirm.buttons() == {"yes": "yes", "no": "no"}
    slack.wait_acked(clicked["envelope_id"])
    updated = slack.wait_update(question.ts)
    assert updated.text == question.text
    assert [b["type"] for b in updated.blocks or []] == ["section", "context"]
    assert f"<@{ALICE}> answered: db" in json.dumps(updated.blocks)
    slack.click(confirm, "yes")
    assert _after(slack, ALICE_DM, 3).text == "You are on the db rota."


def test_typed_answers_still_work_beside_the_buttons(bot: Harness) -> None:
    assert bot.ask("rota").buttons()
    assert bot.ask("Network").text == "Join the network rota? (yes/no)"
    assert bot.ask("yes").text == "You are on the network rota."


def test_a_click_by_someone_else_is_refused_to_them_alone_and_not_taken(bot: Harness) -> None:
    slack = bot.slack
    thread = {**OPS, "thread_ts": "1700000000.000700"}
    question = bot.ask("!rota", **thread)
    assert question.thread_ts == "1700000000.000700"
    refused = slack.click(question, "ops", user=BOB)
    notice = slack.wait_ephemeral(lambda p: p.user == BOB)
    assert notice.text == f"This question is for <@{ALICE}>; only they can answer it."
    assert (notice.channel, notice.thread_ts) == ("C0OPS0001", "1700000000.000700")
    slack.wait_acked(refused["envelope_id"])
    # Alice's click is the answer to the same question: Bob's did not move her dialog on.
    slack.click(question, "db")
    confirm = _after(slack, "C0OPS0001", 2)
    assert (confirm.text, confirm.thread_ts) == ("Join the db rota? (yes/no)", "1700000000.000700")
    assert slack.wait_update(question.ts).channel == "C0OPS0001"


def test_a_question_takes_one_click(bot: Harness) -> None:
    slack = bot.slack
    question = bot.ask("rota")
    slack.click(question, "db")
    slack.click(question, "db")  # before the buttons are gone: a double click
    confirm = _after(slack, ALICE_DM, 2)
    slack.click(confirm, "no")
    assert _after(slack, ALICE_DM, 3).text == "OK, I stopped there: nothing was saved."
    bot.barrier()
    assert [p.text for p in slack.posts_to(ALICE_DM)][1:] == [
        "Join the db rota? (yes/no)",
        "OK, I stopped there: nothing was saved.",
        "pong",
    ]


# --- errors shown to the asker alone ---------------------------------------------------------


def test_an_error_in_a_channel_is_shown_to_the_asker_alone(bot: Harness) -> None:
    slack = bot.slack
    slack.say("!audit", **OPS, thread_ts="1700000000.000800")
    refusal = slack.wait_ephemeral(lambda p: p.user == ALICE)
    assert refusal.text.startswith("Sorry, `audit` is for admins only")
    assert (refusal.channel, refusal.thread_ts) == ("C0OPS0001", "1700000000.000800")
    bot.barrier(**OPS)
    assert [p.text for p in slack.posts_to("C0OPS0001")] == ["pong"]


def test_with_ephemeral_errors_off_an_error_is_posted_in_the_channel(harness: Harness) -> None:
    harness.start(ephemeral_errors="false")
    post = harness.ask("!audit", **OPS)
    assert post.text.startswith("Sorry, `audit` is for admins only")
    assert harness.slack.ephemerals == []


def test_in_a_direct_message_an_error_is_an_ordinary_reply(bot: Harness) -> None:
    assert bot.ask("audit").text.startswith("Sorry, `audit` is for admins only")
    assert bot.slack.ephemerals == []


# --- in a cluster: an envelope is acknowledged once its event is claimed ------------------


@pytest.fixture
def cluster_bot(harness: Harness, pg_url: str) -> Harness:
    """The bot as process `one` of a cluster on the test's database (its claims open:
    the input connects to Slack only after)."""
    harness.start(
        {
            "HARKEN_CLUSTER_ENABLED": "true",
            "HARKEN_CLUSTER_NAME": "one",
            "HARKEN_SCHEDULER_URL": pg_url,
        }
    )
    return harness


def _sample(bot: Harness, name: str) -> float:
    assert bot.system is not None
    assert bot.system.runtime is not None
    value = bot.system.runtime.metrics.registry.get_sample_value(name, {"input": "slack"})
    return value or 0.0


def _claimed_by(url: str, channel: str, ts: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT process FROM harken_event_claims WHERE source = 'slack' AND event_id = %s",
            (f"ts:{channel}:{ts}",),
        ).fetchall()
    return [str(row[0]) for row in rows]


def test_in_a_cluster_an_unclaimed_envelope_is_not_acked_and_its_redelivery_is_answered_once(
    cluster_bot: Harness, pg_url: str
) -> None:
    slack = cluster_bot.slack
    with psycopg.connect(pg_url, autocommit=True) as db:
        # The database refuses every claim, as a failing one does.
        db.execute(
            "CREATE FUNCTION refuse_claims() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN RAISE EXCEPTION 'claims refused by the test'; END $$"
        )
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON harken_event_claims"
            " FOR EACH STATEMENT EXECUTE FUNCTION refuse_claims()"
        )
        first = slack.say("echo only once")
        wait_until(lambda: _sample(cluster_bot, "harken_claim_failures_total") == 1)
        db.execute("DROP TRIGGER refuse ON harken_event_claims")  # the database is back
    # No ack, so Slack delivers the envelope again; the copy is taken, not dropped as
    # one already seen.
    again = slack.redeliver(first)
    assert slack.wait_post(lambda p: p.text == "only once").channel == ALICE_DM
    slack.wait_acked(again["envelope_id"])
    # The first envelope's fate was settled before the copy was even claimed: an ack
    # of it would have come first, on the same connection.
    assert first["envelope_id"] not in slack.acks
    cluster_bot.barrier()
    assert [p.text for p in slack.posts_to(ALICE_DM)] == ["only once", "pong"]
    assert _claimed_by(pg_url, ALICE_DM, first["payload"]["event"]["ts"]) == ["one"]
    assert _sample(cluster_bot, "harken_claim_failures_total") == 1
    assert first["envelope_id"] not in slack.acks


def test_in_a_cluster_the_ack_follows_the_written_claim(cluster_bot: Harness, pg_url: str) -> None:
    slack = cluster_bot.slack
    with psycopg.connect(pg_url) as holder, psycopg.connect(pg_url, autocommit=True) as db:
        # The claims table is locked: the claim's INSERT waits until the test lets go.
        holder.execute("LOCK TABLE harken_event_claims IN SHARE MODE")
        held = slack.say("echo held")

        def claim_waits() -> bool:
            # Asked outside the lock's transaction, which would see one snapshot only.
            row = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'harken-claims'"
                " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO harken_event_claims%'"
            ).fetchone()
            return row == (1,)

        wait_until(claim_waits)
        # A copy of it (Slack redelivers after 3 s without an ack) waits for that claim.
        copy = slack.redeliver(held)
        # Frames with nothing to claim are acked at once meanwhile; they came after the
        # copy on the same connection, so it has been taken by now.
        reaction = slack.send_envelope(
            slack.envelope({"type": "reaction_added", "user": ALICE, "reaction": "+1"})
        )
        slack.send_raw(json.dumps({"envelope_id": "e-slash", "type": "slash_commands"}))
        slack.wait_acked(reaction["envelope_id"])
        slack.wait_acked("e-slash")
        assert held["envelope_id"] not in slack.acks
        assert copy["envelope_id"] not in slack.acks
        assert slack.posts_to(ALICE_DM) == []
        released = time.monotonic()
        holder.commit()
    assert slack.wait_acked(held["envelope_id"]) >= released
    assert slack.wait_acked(copy["envelope_id"]) >= released
    assert _claimed_by(pg_url, ALICE_DM, held["payload"]["event"]["ts"]) == ["one"]
    assert slack.wait_post(lambda p: p.text == "held").channel == ALICE_DM
    cluster_bot.barrier()
    assert [p.text for p in slack.posts_to(ALICE_DM)] == ["held", "pong"]


def test_in_a_cluster_an_event_another_process_claimed_is_acked_and_not_answered(
    cluster_bot: Harness, pg_url: str
) -> None:
    slack = cluster_bot.slack
    event = slack.message_event("echo not mine")
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO harken_event_claims (source, event_id, process)"
            " VALUES ('slack', %s, 'two')",
            (f"ts:{ALICE_DM}:{event['ts']}",),
        )
    envelope = slack.send_envelope(slack.envelope(event))
    slack.wait_acked(envelope["envelope_id"])
    cluster_bot.barrier()
    assert [p.text for p in slack.posts_to(ALICE_DM)] == ["pong"]
    assert _sample(cluster_bot, "harken_claim_conflicts_total") == 1
    assert _claimed_by(pg_url, ALICE_DM, event["ts"]) == ["two"]
