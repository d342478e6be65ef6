"""Streams through the real bot (`TestBot`): filters, messages not for the bot, loop
safety, a full, failing or stuck stream that delays nobody, streams as background work
(one scheduler thread, held back while a reply is in flight), commands a stream runs,
the built-in relay and digest, and what a `[streams.<name>]` section may say."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.cli import harken

from actors.inputs.base import HEARD
from actors.messages import ListJobs, MemoryGet, MemoryKeys
from actors.streams import HOLD_SECONDS, STALE_SECONDS, ReplyGate
from actors.system import StartupError
from commands.base import command
from commands.streams import Stream, StreamContext, Subscription, stream
from config.loader import load_settings
from core.event import Event, EventType
from harken.testbot import INPUT_NAME, TestBot, wait_until


class Seen:
    """What a stream was handed, for the test to wait on (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = threading.Condition()

    def add(self, event: Event) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def texts(self) -> list[str]:
        with self.changed:
            return [e.data for e in self.events]

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: text in [e.data for e in self.events], timeout):
                raise AssertionError(f"the stream never saw {text!r}: {self.texts()}")


def _bot(tmp_path: Path, *streams: Any, **settings: Any) -> TestBot:
    sections = {f"streams.{s.name}.mailbox": "1000" for s in streams}
    sections.update(settings)
    return TestBot(tmp_path / "memory", streams=streams, settings=sections)


def test_a_stream_sees_only_the_messages_its_filter_lets_through(tmp_path: Path) -> None:
    seen = Seen()

    @stream(name="deploys", channels=("ops",), users=("alice",), pattern=r"\bdeploy")
    def deploys(ctx: StreamContext, event: Event) -> None:
        seen.add(event)

    with _bot(tmp_path, deploys) as bot:
        bot.send("echo deploy elsewhere", channel="dev")
        bot.send("echo deploy by bob", channel="ops", user="bob")
        bot.send("echo nothing to see", channel="ops")
        assert bot.ask("echo deploy web", channel="ops") == "deploy web"
        seen.wait_for("echo deploy web")
        # One router hands events over in order: had another passed, it came first.
        assert seen.texts() == ["echo deploy web"]


@dataclass(frozen=True)
class _WatchedFilter(Subscription):
    """A subscription that notes which thread tried it on each event."""

    threads: list[str] = field(default_factory=list, compare=False)

    def matches(self, event: Event) -> bool:
        self.threads.append(threading.current_thread().name)
        return super().matches(event)


def test_the_reply_path_only_queues_events_and_the_streams_thread_filters_them(
    tmp_path: Path,
) -> None:
    seen = Seen()
    watched = _WatchedFilter(channels=("ops",))

    def ops(ctx: StreamContext, event: Event) -> None:
        seen.add(event)

    with _bot(tmp_path, Stream("ops", ops, watched)) as bot:
        assert bot.ask("echo one", channel="dev") == "one"
        assert bot.ask("echo two", channel="ops") == "two"
        seen.wait_for("echo two")
        assert seen.texts() == ["echo two"]
        # Both were tried by the filter, on the streams' scheduler, not on the router's
        # thread: a reply waits for no stream's filter.
        assert watched.threads == ["streams", "streams"]


def test_messages_not_for_the_bot_reach_streams_and_no_conversation(tmp_path: Path) -> None:
    seen = Seen()

    @stream(name="chatter")
    def chatter(ctx: StreamContext, event: Event) -> None:
        seen.add(event)

    with _bot(tmp_path, chatter) as bot:
        heard = bot.event("lunch anyone?", channel="ops")
        bot.send_event(Event.from_dict({**heard.to_dict(), "meta": {HEARD: True}}))
        seen.wait_for("lunch anyone?")
        assert bot.system is not None
        assert bot.system.router_stats()["active_conversations"] == 0
        assert bot.ask("ping") == "pong"


def test_an_input_hands_over_messages_not_for_the_bot_only_when_a_stream_wants_them(
    tmp_path: Path,
) -> None:
    @stream(name="slack-only", inputs=("slack",))
    def slack_only(ctx: StreamContext, event: Event) -> None:
        pass

    with _bot(tmp_path, slack_only) as bot:
        bot.start()
        assert bot.system is not None
        assert bot.system.runtime is not None
        assert bot.system.runtime.hears("slack")
        assert not bot.system.runtime.hears(INPUT_NAME)
    with TestBot(tmp_path / "other") as plain:
        assert plain.system is not None
        assert plain.system.runtime is not None
        assert not plain.system.runtime.hears("slack")


def test_a_stream_can_send_to_any_input_and_never_gets_back_what_it_or_a_downstream_made(
    tmp_path: Path,
) -> None:
    first_seen, second_seen = Seen(), Seen()

    @stream(name="first", replies=True)
    def first(ctx: StreamContext, event: Event) -> None:
        first_seen.add(event)
        if event.type is EventType.TEXT:
            ctx.send(input=INPUT_NAME, to="room-b", text=f"first: {event.data}")

    @stream(name="second", replies=True, channels=("room-b",))
    def second(ctx: StreamContext, event: Event) -> None:
        second_seen.add(event)
        ctx.send(input=INPUT_NAME, to="room-c", text=f"second: {event.data}")

    with _bot(tmp_path, first, second) as bot:
        bot.send("hello", user="bob", channel="room-a")
        made = bot.wait_for("second: first: hello")
        assert made.channel == "room-c"
        assert list(made.meta["via"]) == ["first", "second"]
        assert bot.ask("echo done", channel="room-a") == "done"
        first_seen.wait_for("done")  # its answer: every reply before it was handed out
        assert "first: hello" not in first_seen.texts()
        assert "second: first: hello" not in first_seen.texts()
        assert second_seen.texts()[0] == "first: hello"
        assert not [text for text in second_seen.texts() if text.startswith("second:")]


def test_a_full_stream_drops_counts_and_warns_once_while_replies_keep_coming(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    seen = Seen()

    @stream(name="slow", mailbox=2)
    def slow(ctx: StreamContext, event: Event) -> None:
        release.wait(30)
        seen.add(event)

    caplog.set_level(logging.WARNING, logger="actors.streams")
    bot = TestBot(tmp_path / "memory", streams=[slow], settings={"streams.slow.mailbox": "2"})
    with bot:
        try:
            answers = [bot.ask(f"echo {n}") for n in range(10)]
            assert answers == [str(n) for n in range(10)]
            assert bot.system is not None
            assert bot.system.runtime is not None
            registry = bot.system.runtime.metrics.registry

            def dropped() -> float | None:
                labels = {"stream": "slow"}
                return registry.get_sample_value("harken_stream_dropped_total", labels)

            # The streams' scheduler hands the events out in the background: once the
            # slow stream has a thread of its own (it overran), 8 of the 9 it was not
            # running find its mailbox of 2 full (one running, one waiting).
            wait_until(lambda: dropped() == 8)
            warnings = [r for r in caplog.records if "stream slow is behind" in r.getMessage()]
            assert len(warnings) == 1
        finally:
            release.set()
        seen.wait_for("echo 1")
        assert seen.texts() == ["echo 0", "echo 1"]


def test_a_failing_stream_is_logged_and_counted_and_keeps_getting_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()

    @stream(name="fragile")
    def fragile(ctx: StreamContext, event: Event) -> None:
        seen.add(event)
        if "boom" in event.data:
            raise RuntimeError("the stream broke")

    caplog.set_level(logging.ERROR, logger="actors.streams")
    with _bot(tmp_path, fragile) as bot:
        assert bot.ask("echo boom") == "boom"
        bot.send("echo after")
        seen.wait_for("echo after")
        failures = [r for r in caplog.records if "stream fragile failed" in r.getMessage()]
        assert len(failures) == 1
        assert "error id" in failures[0].getMessage()
        assert bot.system is not None
        assert bot.system.runtime is not None
        registry = bot.system.runtime.metrics.registry
        assert registry.get_sample_value("harken_stream_errors_total", {"stream": "fragile"}) == 1


def test_streams_run_in_turn_on_one_scheduler_thread(tmp_path: Path) -> None:
    threads: dict[str, str] = {}
    seen = Seen()

    def make(name: str) -> Any:
        def record(ctx: StreamContext, event: Event) -> None:
            threads[name] = threading.current_thread().name
            seen.add(event)

        return stream(record, name=name)

    with _bot(tmp_path, make("one"), make("two"), make("three")) as bot:
        bot.send("echo hello")
        wait_until(lambda: len(threads) == 3)
    assert set(threads.values()) == {"streams"}


def test_a_stuck_stream_gets_a_thread_of_its_own_and_the_others_carry_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    release = threading.Event()
    entered = threading.Event()
    stuck_seen, quick_seen = Seen(), Seen()

    @stream(name="stuck")
    def stuck(ctx: StreamContext, event: Event) -> None:
        entered.set()
        release.wait(30)
        stuck_seen.add(event)

    @stream(name="quick")
    def quick(ctx: StreamContext, event: Event) -> None:
        quick_seen.add(event)

    caplog.set_level(logging.WARNING, logger="actors.streams")
    with _bot(tmp_path, stuck, quick) as bot:
        try:
            assert bot.ask("echo 1") == "1"
            assert entered.wait(10)
            assert bot.ask("echo 2") == "2"
            # The scheduler's thread stays with the stuck stream; a new one runs quick.
            quick_seen.wait_for("echo 2")
            assert stuck_seen.texts() == []
            moved = [r for r in caplog.records if "stream stuck ran for over" in r.getMessage()]
            assert len(moved) == 1
        finally:
            release.set()
        stuck_seen.wait_for("echo 2")
        assert stuck_seen.texts() == ["echo 1", "echo 2"]
        bot.send("echo 3")
        quick_seen.wait_for("echo 3")
        stuck_seen.wait_for("echo 3")


def test_the_reply_gate_holds_streams_back_only_while_a_reply_is_in_flight() -> None:
    now = [100.0]

    def clock() -> float:
        now[0] += 0.001  # each look moves time on, so that holding back ends
        return now[0]

    gate = ReplyGate(clock)
    assert not gate.busy()
    gate.routed()
    gate.routed()
    gate.answered()
    assert gate.busy()  # one of two still on its way
    start = now[0]
    gate.hold(start)
    assert now[0] >= start + HOLD_SECONDS  # held back, but no longer than that
    gate.answered()
    gate.answered()  # an answer when no mark is left (a scheduled command's) takes none
    assert not gate.busy()
    start = now[0]
    gate.hold(start)
    assert now[0] < start + HOLD_SECONDS  # nothing in flight: no holding back
    gate.routed()
    now[0] += STALE_SECONDS
    assert not gate.busy()  # routed but never answered here: it holds nothing back


hold = threading.Event()


@command(r"^hold$", usage="hold", description="Waits until the test releases it (at most 10 s).")
def hold_command() -> str:
    hold.wait(10)
    return "held"


def test_a_message_holds_the_streams_back_from_the_router_to_its_answer(tmp_path: Path) -> None:
    seen = Seen()

    @stream(name="watcher")
    def watcher(ctx: StreamContext, event: Event) -> None:
        seen.add(event)

    hold.clear()
    bot = TestBot(
        tmp_path / "memory",
        commands=[hold_command],
        streams=[watcher],
        settings={"streams.watcher.mailbox": "10"},
    )
    with bot:
        assert bot.system is not None
        assert bot.system.runtime is not None
        hub = bot.system.runtime.streams
        assert hub is not None
        try:
            asked = bot.send("hold")
            wait_until(hub.gate.busy)
            seen.wait_for("hold")  # held back at most a moment: streams still get it
        finally:
            hold.set()
        assert [e.data for e in bot.replies(asked)] == ["held"]
        wait_until(lambda: not hub.gate.busy())
        bot.send("hello", addressed=False)  # for the streams only: no reply in flight
        seen.wait_for("hello")
        assert not hub.gate.busy()


def test_a_stream_runs_commands_as_itself_under_the_access_rules(tmp_path: Path) -> None:
    answers: list[list[str]] = []
    done = threading.Event()

    @stream(name="runner", pattern="^go$")
    def runner(ctx: StreamContext, event: Event) -> None:
        answers.append(ctx.run("echo from a stream"))
        answers.append(ctx.run("call billing /status"))  # `call` is for the ops group
        answers.append(ctx.run("whoami"))
        done.set()

    with _bot(tmp_path, runner) as bot:
        bot.send("go")
        assert done.wait(15)
    assert answers[0] == ["from a stream"]
    assert "ops" in answers[1][0]
    assert "are in none of them" in answers[1][0]
    assert "runner" in answers[2][0]

    answers.clear()
    done.clear()
    granted = _bot(tmp_path / "granted", runner, **{"inputs.stream.groups.ops": "runner"})
    with granted as bot:
        bot.send("go")
        assert done.wait(15)
    assert "are in none of them" not in answers[1][0]


def test_a_stream_keeps_state_in_its_own_memory_across_a_restart(tmp_path: Path) -> None:
    counted = threading.Semaphore(0)

    @stream(name="counter")
    def counter(ctx: StreamContext, event: Event) -> None:
        ctx.memory.set("count", int(ctx.memory.get("count", 0)) + 1)
        counted.release()

    with _bot(tmp_path, counter) as bot:
        bot.send("echo one")
        assert counted.acquire(timeout=10)
        bot.restart()
        bot.send("echo two")
        assert counted.acquire(timeout=10)
        assert bot.system is not None
        assert bot.system.runtime is not None
        memory = bot.system.runtime.memory
        assert memory.ask(MemoryGet("user", "stream:counter", "count", None), timeout=5) == 2


def test_relay_mirrors_a_room_both_ways_and_never_relays_its_own_posts(tmp_path: Path) -> None:
    settings = {
        "streams.relay.from_room": f"{INPUT_NAME}:room-a",
        "streams.relay.to_room": f"{INPUT_NAME}:room-b",
        "streams.relay.both_ways": "true",
        "streams.relay.replies": "true",  # its own posts come by the hub too
    }
    with TestBot(tmp_path / "memory", settings=settings) as bot:
        heard = bot.event("the build is green", user="bob", channel="room-a", display_name="Bob")
        bot.send_event(Event.from_dict({**heard.to_dict(), "meta": {HEARD: True}}))
        there = bot.wait_for("the build is green")
        assert there.channel == "room-b"
        assert there.data == f"[{INPUT_NAME}] Bob: the build is green"
        back = bot.event("thanks", user="carol", channel="room-b")
        bot.send_event(Event.from_dict({**back.to_dict(), "meta": {HEARD: True}}))
        assert bot.wait_for("thanks").channel == "room-a"
        assert bot.ask("echo end", channel="room-c") == "end"
        with pytest.raises(TimeoutError):
            bot.wait_for(lambda e: "the build is green" in e.data, timeout=0.5)


def test_digest_collects_the_channel_in_memory_and_schedules_its_sending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="actors.streams")
    settings = {
        "streams.digest.channel": f"{INPUT_NAME}:ops",
        "streams.digest.recipient": "oncall@example.org",
        "streams.digest.at": "every day at 18:00",
        "streams.digest.max_messages": "2",
    }
    with TestBot(tmp_path / "memory", settings=settings) as bot:
        for text in ("one", "two", "three"):
            heard = bot.event(text, channel="ops")
            bot.send_event(Event.from_dict({**heard.to_dict(), "meta": {HEARD: True}}))
        assert bot.system is not None
        assert bot.system.runtime is not None
        runtime = bot.system.runtime

        def kept() -> list[str]:
            keys = runtime.memory.ask(MemoryKeys("user", "stream:digest"), timeout=5)
            return [
                runtime.memory.ask(MemoryGet("user", "stream:digest", k, None), timeout=5)["text"]
                for k in sorted(keys)
                if k.startswith("m")
            ]

        wait_until(lambda: kept() == ["two", "three"])
        assert runtime.scheduler is not None
        jobs = runtime.scheduler.ask(ListJobs("stream:digest"), timeout=5)
        assert [job.spec.text for job in jobs] == ["digest-send"]
        # No email input here: the sending is refused and nothing collected is lost.
        bot.clock.advance(hours=25)
        wait_until(lambda: "Could not send the digest" in caplog.text)
        assert "the email input is not started here" in caplog.text
        assert kept() == ["two", "three"]
        bot.restart()
        assert bot.system is not None
        assert bot.system.runtime is not None
        assert bot.system.runtime.scheduler is not None
        again = bot.system.runtime.scheduler.ask(ListJobs("stream:digest"), timeout=5)
        assert [job.id for job in again] == [job.id for job in jobs]  # not scheduled twice


@dataclass(frozen=True, kw_only=True)
class _Options:
    level: int = 3
    target: str = ""


@stream(name="configured", options=_Options)
def _configured(ctx: StreamContext, event: Event) -> None:
    pass


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"streams.nosuch.mailbox": "3"}, "streams.nosuch: there is no stream called 'nosuch'"),
        ({"streams.configured.levle": "4"}, "streams.configured.levle: unknown option"),
        ({"streams.configured.level": "high"}, "streams.configured.level: must be an integer"),
        ({"streams.configured.mailbox": "0"}, "streams.configured.mailbox: must be at least 1"),
        ({"streams.relay.to_room": "irc:#ops"}, "streams.relay.from_room: is needed"),
        (
            {"streams.relay.from_room": "ops", "streams.relay.to_room": "irc:#ops"},
            "streams.relay.from_room: must be <input>:<channel>",
        ),
        (
            {
                "streams.digest.channel": "slack:C1",
                "streams.digest.recipient": "a@b.org",
                "streams.digest.at": "at 18:00",
            },
            "streams.digest.at: must repeat",
        ),
    ],
)
def test_a_bad_stream_section_stops_start_up_naming_the_key(
    tmp_path: Path, overrides: dict[str, str], expected: str
) -> None:
    bot = TestBot(tmp_path / "memory", streams=[_configured], settings=overrides)
    with pytest.raises(StartupError) as refused:
        bot.start()
    assert str(refused.value).startswith(expected)
    assert bot.system is None  # nothing was started


def test_harken_check_shows_the_streams_and_refuses_a_bad_one(tmp_path: Path) -> None:
    config = tmp_path / "harken.toml"
    config.write_text(
        '[streams.relay]\nfrom_room = "xmpp:ops@conference.example.org"\nto_room = "irc:#ops"\n'
    )
    ok = harken("check", "--config", str(config), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr.decode()
    assert '[streams.relay]\nfrom_room = "xmpp:ops@conference.example.org"' in ok.stdout.decode()
    assert "# 2 streams: digest, relay; running: relay" in ok.stdout.decode()
    config.write_text('[streams.relay]\nfrom_room = "xmpp:ops@conference.example.org"\n')
    bad = harken("check", "--config", str(config), cwd=tmp_path)
    assert bad.returncode == 2
    lines = bad.stderr.decode().strip().splitlines()
    assert lines == ["harken: config error: streams.relay.to_room: is needed by the relay stream"]
    run = harken("run", "--config", str(config), "--inputs", "shell", cwd=tmp_path, stdin=b"")
    assert run.returncode == 2
    assert run.stderr.decode().strip().splitlines()[-1] == (
        "harken: streams.relay.to_room: is needed by the relay stream"
    )


def test_an_oversized_message_not_for_the_bot_is_neither_answered_nor_handed_out(
    tmp_path: Path,
) -> None:
    seen = Seen()

    @stream(name="chatter")
    def chatter(ctx: StreamContext, event: Event) -> None:
        seen.add(event)

    with _bot(tmp_path, chatter, **{"bot.max_message_bytes": "1024"}) as bot:
        huge = bot.send("x" * 5000, channel="ops", addressed=False)
        bot.send("small talk", channel="ops", addressed=False)
        seen.wait_for("small talk")
        assert seen.texts() == ["small talk"]
        with pytest.raises(TimeoutError):
            bot.replies(huge, timeout=0.5)  # chatter is never answered, even to refuse it


def test_stream_options_are_typed_from_the_file_and_from_the_command_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "harken.toml"
    config.write_text(
        "[streams.configured]\nlevel = 5\nchannels = ['ops', 'dev']\nreplies = true\n"
    )
    from_file = load_settings(path=config, env={})
    options, subscription, _ = _configured.settings_for(from_file)
    assert options == _Options(level=5)
    assert subscription.channels == ("ops", "dev")
    assert subscription.replies is True
    overrides = {"streams.configured.level": "6", "streams.configured.channels": "ops,dev"}
    from_flags = load_settings(env={}, overrides=overrides)
    options, subscription, _ = _configured.settings_for(from_flags)
    assert options == _Options(level=6)
    assert subscription.channels == ("ops", "dev")


def test_streams_in_command_dirs_are_found_and_run(tmp_path: Path) -> None:
    folder = tmp_path / "mystreams"
    folder.mkdir()
    (folder / "notes.py").write_text(
        "from harken import Event, StreamContext, stream\n\n\n"
        "@stream(channels=('ops',))\n"
        "def notes(ctx: StreamContext, event: Event) -> None:\n"
        "    ctx.send(input=event.input, to='notes', text='noted: ' + event.data)\n"
    )
    settings = {"bot.command_dirs": str(folder), "streams.notes.mailbox": "10"}
    with TestBot(tmp_path / "memory", settings=settings) as bot:
        bot.send("the backup ran", channel="ops", addressed=False)
        assert bot.wait_for("noted: the backup ran").channel == "notes"
