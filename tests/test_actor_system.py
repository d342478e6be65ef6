"""The actor core: routing, concurrency, supervision, idle conversations, access control."""

from __future__ import annotations

import dataclasses
import gc
import logging
import queue
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.inputs.testing import Done, Reply
from actors.messages import Inbound, MemoryGet
from actors.supervision import SupervisedActor, Supervisor
from actors.system import FULL_COLLECTION_AFTER, freeze_startup_objects
from commands.base import command
from config.settings import Settings
from harken import TestBot
from harken.testbot import wait_until

release = threading.Event()


@command(r"^slow$", usage="slow", description="Waits until the test releases it (at most 10 s).")
def slow() -> str:
    release.wait(10)
    return "slow done"


@command(r"^boom$", usage="boom", description="Always fails.")
def boom() -> str:
    raise RuntimeError("the boom command exploded")


@command(r"^shutdown$", usage="shutdown", description="Admins only.", admin_only=True)
def shutdown() -> str:
    return "shutting down (not really)"


@command(r"^where$", usage="where", description="Which thread runs it.", quick=True)
def where() -> str:
    return threading.current_thread().name


@command(r"^quick-boom$", usage="quick-boom", description="Always fails.", quick=True)
def quick_boom() -> str:
    raise RuntimeError("the quick command exploded")


@command(r"^slow-where$", usage="slow-where", description="Which thread runs it, not quick.")
def slow_where() -> str:
    return threading.current_thread().name


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[TestBot]:
    release.clear()
    testbot = TestBot(
        tmp_path / "memory",
        commands=[slow, boom, shutdown, where, quick_boom, slow_where],
        admins=["root"],
    )
    try:
        yield testbot
    finally:
        release.set()
        testbot.stop()


def test_a_slow_command_does_not_delay_another_persons_ping(bot: TestBot) -> None:
    slow_event = bot.send("slow", user="ann")
    assert bot.ask("ping", user="bob", timeout=2) == "pong"
    release.set()
    assert [e.data for e in bot.replies(slow_event)] == ["slow done"]


def test_the_same_slow_command_runs_for_two_people_at_once(bot: TestBot) -> None:
    first = bot.send("slow", user="ann")
    second = bot.send("slow", user="bob")
    # Both are running: a third person's ping still answers, then both finish on release.
    assert bot.ask("ping", user="carl", timeout=2) == "pong"
    release.set()
    assert [e.data for e in bot.replies(first, timeout=5)] == ["slow done"]
    assert [e.data for e in bot.replies(second, timeout=5)] == ["slow done"]


def test_one_persons_messages_are_answered_in_order(bot: TestBot) -> None:
    events = [bot.send(f"echo {i}", user="ann") for i in range(50)]
    events.insert(0, bot.send("remember n is 1", user="ann"))
    recall = bot.send("recall n", user="ann")
    assert [bot.replies(e)[0].data for e in events[1:]] == [str(i) for i in range(50)]
    assert bot.replies(recall)[0].data == "n is 1"


@pytest.mark.parametrize(
    ("name", "exploded"),
    [("boom", "the boom command exploded"), ("quick-boom", "the quick command exploded")],
)
def test_a_failing_command_names_itself_and_an_error_id_that_is_in_the_log(
    bot: TestBot, caplog: pytest.LogCaptureFixture, name: str, exploded: str
) -> None:
    with caplog.at_level(logging.ERROR):
        reply = bot.ask(name)
    match = re.search(rf"`{name}` failed \(error id ([0-9a-f]{{8}})\)", reply)
    assert match, reply
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged
    assert logged[0].exc_info is not None
    assert exploded in str(logged[0].exc_info[1])
    # The command's actor lives on (a quick command runs on it): it fails the same way.
    assert bot.ask(name).startswith(f"Sorry, `{name}` failed")
    assert bot.ask("ping") == "pong"


def test_a_quick_command_runs_on_its_actor_and_others_on_a_worker(bot: TestBot) -> None:
    assert bot.ask("where").startswith("dispatcher-")
    assert bot.ask("slow-where").startswith("command-worker-")


def test_admin_only_command_is_refused_clearly_and_logged(
    bot: TestBot, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        reply = bot.ask("shutdown", user="mallory")
    assert "`shutdown` is for admins only" in reply
    assert any("refused shutdown for mallory" in r.getMessage() for r in caplog.records)
    assert bot.ask("shutdown", user="root") == "shutting down (not really)"


def test_a_crashed_router_is_restarted_and_the_bot_keeps_answering(bot: TestBot) -> None:
    assert bot.ask("ping") == "pong"
    assert bot.system is not None
    assert bot.system.router is not None
    router = bot.system.router
    old = router.ref
    assert old is not None
    old.tell(Inbound(None))  # type: ignore[arg-type]  # a malformed message kills it
    wait_until(lambda: router.ref is not old and router.is_alive())
    assert bot.ask("ping", user="bob") == "pong"


def test_idle_conversations_stop_and_come_back_on_demand(tmp_path: Path) -> None:
    base = Settings()
    settings = dataclasses.replace(
        base, bot=dataclasses.replace(base.bot, conversation_idle_seconds=0.1)
    )
    with TestBot(tmp_path / "memory", settings=settings) as bot:
        bot.ask("remember x is 1", user="ann")
        assert bot.system is not None
        system = bot.system
        wait_until(lambda: system.router_stats()["active_conversations"] == 0)
        assert system.router_stats()["retired"] == 1
        assert bot.ask("recall x", user="ann") == "x is 1"


def test_a_conversation_busy_past_the_idle_time_is_not_retired_under_its_messages(
    tmp_path: Path,
) -> None:
    # Ann's `slow` runs longer than the idle time with another message of hers waiting
    # behind it: her conversation must stay, so that the second answer comes after the
    # first, not from a successor while `slow` still runs.
    done: queue.SimpleQueue[str] = queue.SimpleQueue()

    def sink(item: Reply | Done) -> None:
        if isinstance(item, Done):
            done.put(item.event_id)

    base = Settings()
    settings = dataclasses.replace(
        base, bot=dataclasses.replace(base.bot, conversation_idle_seconds=0.1)
    )
    release.clear()
    with TestBot(tmp_path / "memory", settings=settings, commands=[slow], sink=sink) as bot:
        assert bot.system is not None
        system = bot.system
        first = bot.send("slow", user="ann")
        second = bot.send("echo after", user="ann")
        # Bob's conversation went quiet after Ann's: once it is retired, Ann's has been
        # quiet for longer than the idle time too.
        bob = bot.send("ping", user="bob")
        assert done.get(timeout=10) == bob.id
        wait_until(lambda: system.router_stats()["retired"] >= 1)
        assert system.router_stats()["active_conversations"] == 1  # Ann's, still busy
        release.set()
        assert [done.get(timeout=10), done.get(timeout=10)] == [first.id, second.id]
        # Once idle, hers is retired as well.
        wait_until(lambda: system.router_stats()["active_conversations"] == 0)


def test_an_idle_conversation_costs_the_garbage_collector_three_objects(
    tmp_path: Path,
) -> None:
    # Its actor, ref and inbox: no key, queue or event of its own. Full collections
    # walk every conversation's objects while every message in flight waits. (The
    # bot's other threads make a few hundred objects meanwhile, hence many people and
    # half an object each to spare: one object more per conversation is caught.)
    answered: queue.SimpleQueue[str] = queue.SimpleQueue()

    def sink(item: Reply | Done) -> None:
        if isinstance(item, Done):
            answered.put(item.event_id)

    def talk(users: list[str]) -> None:
        for user in users:
            bot.send("hello there", user=user)
        for _ in users:
            answered.get(timeout=10)

    # The bot's other threads fill caches of their own now and then (the job store's
    # SQL, the scheduler's): two batches of new people, and the smaller growth counts,
    # since objects every conversation keeps show in both.
    grown = []
    with TestBot(tmp_path / "memory", sink=sink) as bot:
        talk([f"early {n}" for n in range(50)])  # the worker threads start meanwhile
        for batch in range(2):
            people = [f"person {batch}.{n}" for n in range(1000)]
            gc.collect()
            before = len(gc.get_objects())
            talk(people)
            gc.collect()
            grown.append(len(gc.get_objects()) - before)
        assert bot.system is not None
        assert bot.system.router_stats()["active_conversations"] == 2050
    assert min(grown) < 3.5 * len(people), grown


class Fragile(SupervisedActor):
    starts = 0

    def on_start(self) -> None:
        Fragile.starts += 1

    def on_receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("fragile actor broke")
        return f"alive {Fragile.starts}"


def test_supervisor_restarts_a_crashed_actor_behind_the_same_handle() -> None:
    supervisor = Supervisor.start(base_delay=0.01)
    try:
        handle = supervisor.proxy().start_child("fragile", Fragile).get()
        assert handle.ask("hi", timeout=2) == f"alive {Fragile.starts}"
        before = Fragile.starts
        handle.tell("boom")
        # The handle waits for the replacement instead of failing.
        assert handle.ask("hi", timeout=5) == f"alive {before + 1}"
        assert supervisor.proxy().restart_count("fragile").get() == 1
    finally:
        supervisor.proxy().stop_children().get()
        supervisor.stop()


def test_supervisor_keeps_restarting_an_actor_that_crashes_repeatedly() -> None:
    supervisor = Supervisor.start(base_delay=0.01, max_delay=0.04)
    try:
        handle = supervisor.proxy().start_child("fragile", Fragile).get()
        for _ in range(4):
            handle.tell("boom")
            handle.ask("hi", timeout=5)
        assert supervisor.proxy().restart_count("fragile").get() == 4
    finally:
        supervisor.proxy().stop_children().get()
        supervisor.stop()
    assert not pykka.ActorRegistry.get_by_class(Fragile)


def test_a_command_that_is_down_gets_a_clear_reply(bot: TestBot) -> None:
    bot.start()
    assert bot.system is not None
    supervisor = bot.system._supervisor_ref
    assert supervisor is not None
    supervisor.proxy().stop_children(["command:ping"]).get(timeout=5)
    assert bot.ask("ping") == "Sorry, `ping` is not available right now. Please try again soon."
    assert bot.ask("echo still here") == "still here"


def test_a_crashed_memory_actor_is_restarted_on_the_same_store_and_loses_nothing(
    bot: TestBot,
) -> None:
    assert bot.ask("remember pager is 555-0100") == "OK, I'll remember that pager is 555-0100."
    assert bot.system is not None
    assert bot.system.runtime is not None
    memory = bot.system.runtime.memory
    old = memory.ref
    assert old is not None
    old.tell(MemoryGet("", "", ""))  # an invalid read told, not asked: the actor dies of it
    wait_until(lambda: memory.ref is not old and memory.is_alive())
    assert bot.ask("recall pager") == "pager is 555-0100"
    assert bot.ask("remember shift is nights") == "OK, I'll remember that shift is nights."


def test_freezing_start_up_objects_also_makes_full_collections_rarer() -> None:
    thresholds = gc.get_threshold()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        young, middle, full = gc.get_threshold()
        assert (young, middle) == thresholds[:2]
        assert full == FULL_COLLECTION_AFTER > thresholds[2]
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
