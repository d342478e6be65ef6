"""`harken.testing.call`: one command, one message, no bot, the bot's rules.

Built-in commands and small commands of the tests' own run through `call`; where the
bot's answer is the point (refusals, what memory refuses), the same message goes
through the real bot (`testbot`) too and the two answers must be the same.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from commands.base import CommandError
from commands.builtin.basic import help, ping, timezone, whoami
from commands.builtin.memory import forget, recall, remember
from commands.builtin.ops import call as call_service
from commands.builtin.ops import status
from commands.builtin.profile import profile
from commands.builtin.reminders import remind, run_later
from config import ConfigError
from core.jobs import JobKind
from harken import Context, MemoryView, command
from harken.testbot import TestBot
from harken.testing import CallResult, call


@command(r"^drain\s+(?P<node>\S+)$", admin_only=True)
def drain(node: str) -> str:
    """Take a node out of service (admins only)."""
    return f"draining {node}"


@command(r"^page\s+(?P<who>\S+)$")
def page(ctx: Context, who: str) -> str:
    """Page someone: progress first, then the answer; the team keeps a count."""
    ctx.say(f"paging {who}...")
    pages = ctx.team_memory("oncall")
    pages.set("pages", pages.get("pages", 0) + 1)
    ctx.memory_for("plugin:page").set("last", who)
    return f"paged {who}"


@command(r"^keep\s+(?P<size>\d+)$")
def keep(memory: MemoryView, size: str) -> str:
    """Keep a value of `size` characters, and a tuple."""
    memory.set("blob", "x" * int(size))
    memory.set("pair", (1, 2))
    return "kept"


@command(r"^fetch\s+(?P<key>\S+)$")
async def fetch(memory: MemoryView, key: str) -> str:
    """An async command: awaits, then reads memory."""
    await asyncio.sleep(0)
    return f"{key}: {memory.get(key, 'none')}"


@command(r"^boom$")
def boom() -> str:
    """Fails."""
    raise RuntimeError("the command failed")


# --- memory --------------------------------------------------------------------------


def test_remember_recall_and_forget_see_and_change_the_persons_memory() -> None:
    remembered = call(remember, "remember  Pager is 555-0100", memory={"desk": "4F"})
    assert remembered.replies == ["OK, I'll remember that pager is 555-0100."]
    assert remembered.memory == {"desk": "4F", "pager": "555-0100"}

    assert call(recall, "recall PAGER", memory=remembered.memory).text == "pager is 555-0100"
    assert call(recall, "recall pager").text.startswith("I don't know pager.")

    forgotten = call(forget, "forget pager", memory=remembered.memory)
    assert forgotten.replies == ["OK, I forgot pager."]
    assert forgotten.memory == {"desk": "4F"}


def test_values_come_back_as_json_as_in_the_bot() -> None:
    result = call(keep, "keep 3")
    assert result.memory == {"blob": "xxx", "pair": [1, 2]}  # the tuple is a list again


def test_a_value_too_big_for_the_bot_is_refused_with_the_bots_words(testbot: TestBot) -> None:
    too_big = 33 * 1024
    result = call(keep, f"keep {too_big}", memory={"old": 1})
    assert result.replies == [
        f"Sorry, I can't store that: value is {too_big + 2} bytes serialised; the maximum is 32768."
    ]
    assert result.memory == {"old": 1}
    testbot.add(keep)
    assert testbot.ask(f"keep {too_big}") == result.text


def test_memory_the_bot_could_not_hold_cannot_be_given_either() -> None:
    with pytest.raises(ValueError, match=r"memory\['k'\]: .* not JSON-serialisable"):
        call(recall, "recall k", memory={"k": {1, 2}})
    with pytest.raises(ValueError, match=r"a key must be 1 to 200 characters long"):
        call(recall, "recall k", memory={"k" * 201: 1})


def test_team_memory_other_namespaces_and_say() -> None:
    result = call(page, "page bob", team_memory={"oncall": {"pages": 2}}, user="carol")
    assert result.said == ["paging bob..."]
    assert result.replies == ["paged bob"]
    assert result.team_memory("oncall") == {"pages": 3}
    assert result.memory_for("plugin:page") == {"last": "bob"}
    assert result.memory == {}
    assert result.owner == "testing:carol"


# --- time zones, who you are ---------------------------------------------------------------


def test_timezone_shows_the_default_and_stores_the_persons_own() -> None:
    assert call(timezone, "timezone").text == "Your time zone is UTC."
    assert call(timezone, "tz", timezone="Europe/Paris").text == "Your time zone is Europe/Paris."
    mine = {"profile": {"timezone": "Asia/Tokyo"}}
    assert call(timezone, "timezone", memory_for=mine).text == "Your time zone is Asia/Tokyo."

    changed = call(timezone, "timezone America/New_York")
    assert changed.text == "Your time zone is now America/New_York."
    assert changed.memory_for("profile") == {"timezone": "America/New_York"}
    assert changed.memory == {}


def test_whoami_says_who_where_which_zone_and_whether_an_admin() -> None:
    result = call(
        whoami,
        "whoami",
        user="bob",
        display_name="Bob B.",
        channel="C1",
        thread="T9",
        admin=True,
        timezone="Europe/Berlin",
    )
    assert result.text == (
        "You are bob (Bob B.).\n"
        "Input: testing\n"
        "Channel: C1, thread T9\n"
        "Time zone: Europe/Berlin (the default; set yours with `timezone <Area/City>`)\n"
        "You are an admin here."
    )
    assert "admin" not in call(whoami, "whoami").text


# --- access ---------------------------------------------------------------------------------


def test_a_command_for_a_group_refuses_others_and_runs_for_its_members() -> None:
    refused = call(call_service, "call web /v1/x")
    assert refused.refused
    assert refused.replies == [
        "Sorry, `call` is only for the group(s) ops and the admins, and you (alice on "
        "testing) are in none of them. An admin can add you to `groups` in the "
        "[inputs.testing] section of Harken's config."
    ]
    for allowed in (call(call_service, "call web /v1/x", groups=["ops"]),
                    call(call_service, "call web /v1/x", admin=True)):  # fmt: skip
        assert not allowed.refused
        assert allowed.text.startswith("I know no service `web`.")


def test_access_rules_of_the_settings_apply_to_any_command() -> None:
    rule = {"access.commands.page": ["oncall"]}
    refused = call(page, "page bob", settings=rule, groups=["db"])
    assert refused.refused
    assert "only for the group(s) oncall" in refused.text
    assert refused.said == []
    assert refused.team_memory("oncall") == {}
    assert call(page, "page bob", settings=rule, groups=["oncall"]).text == "paged bob"


def test_an_admin_only_command_refuses_others() -> None:
    refused = call(drain, "drain db1")
    assert refused.refused
    assert refused.text == (
        "Sorry, `drain` is for admins only, and you are not an admin on testing."
    )
    assert call(drain, "drain db1", admin=True).replies == ["draining db1"]


@pytest.mark.harken(admins=["root"], groups={"ops": ["olga"]})
def test_refusals_are_the_bots_own(testbot: TestBot) -> None:
    testbot.add(drain)
    cases = [
        (drain, "drain db1", {}, "bob"),
        (drain, "drain db1", {"admin": True}, "root"),
        (call_service, "call web /v1/x", {}, "bob"),
        (call_service, "call web /v1/x", {"groups": ["ops"]}, "olga"),
    ]
    for cmd, text, who, user in cases:
        in_unit = call(cmd, text, user=user, **who)
        assert testbot.ask(text, user=user) == in_unit.text, (text, user)


# --- other kinds of commands ------------------------------------------------------------------


def test_an_async_command_is_awaited() -> None:
    assert call(fetch, "fetch pager", memory={"pager": 555}).replies == ["pager: 555"]


def test_an_async_command_runs_from_async_code_too() -> None:
    async def from_a_coroutine() -> CallResult:
        return call(fetch, "fetch pager", memory={"pager": 555})

    assert asyncio.run(from_a_coroutine()).replies == ["pager: 555"]


def test_a_quick_command_runs_as_the_bot_runs_it() -> None:
    assert call(ping, "PING").replies == ["pong"]


def test_help_sees_the_built_ins_and_the_commands_under_test() -> None:
    listed = call(help, "help", commands=[drain]).text
    assert "  ping - Check that Harken is alive: it answers pong." in listed
    assert "  drain - Take a node out of service (admins only). (admins only)" in listed
    assert call(help, "help drain", commands=[drain]).text.startswith("drain (admins only)")
    assert call(help, "help drain").text.startswith("There is no command called `drain`.")


def test_status_has_no_running_bot_to_report_on() -> None:
    assert call(status, "status").replies == ["Status is not available here."]


# --- scheduling -------------------------------------------------------------------------------


def test_a_reminder_is_recorded_not_scheduled() -> None:
    before = datetime.now(UTC)
    result = call(remind, "remind me in 10 minutes to stretch", timezone="Europe/Paris")
    after = datetime.now(UTC)
    [job] = result.scheduled
    assert job.spec.kind is JobKind.REMIND
    assert job.spec.text == "stretch"
    assert job.spec.owner == "testing:alice"
    assert job.next_run is not None
    assert before + timedelta(minutes=10) - timedelta(seconds=1) <= job.next_run
    assert job.next_run <= after + timedelta(minutes=10)
    assert result.text.startswith("OK, I'll remind you on ")
    assert f"Job id {job.id}: `cancel {job.id}` cancels it" in result.text


def test_a_deferred_command_is_recorded_with_its_schedule() -> None:
    result = call(run_later, "every day at 8:00 run time", timezone="Asia/Tokyo")
    [job] = result.scheduled
    assert job.spec.kind is JobKind.RUN
    assert job.spec.text == "time"
    assert job.spec.schedule == "every day at 08:00 (Asia/Tokyo)"


# --- what call refuses to do ------------------------------------------------------------------


def test_a_dialog_is_for_the_testbot() -> None:
    with pytest.raises(TypeError, match=r"`profile` is a dialog.*testbot fixture"):
        call(profile, "profile")


def test_text_the_pattern_does_not_match_is_a_mistake_in_the_test() -> None:
    with pytest.raises(ValueError, match=r"'recal x' does not match the pattern of `recall`"):
        call(recall, "recal x")
    with pytest.raises(ValueError, match=r"messages of up to 500 characters"):
        call(page, "page " + "b" * 500)


def test_what_the_command_raises_is_raised() -> None:
    with pytest.raises(RuntimeError, match="the command failed"):
        call(boom, "boom")


def test_a_command_the_bot_would_not_load_is_refused_as_the_bot_refuses_it() -> None:
    @command(r"^pong$", name="ping")
    def other_ping() -> str:
        return "ping"

    with pytest.raises(CommandError, match=r"command name 'ping' .* is already taken"):
        call(other_ping, "pong")


def test_settings_are_checked_as_the_command_line_checks_them() -> None:
    with pytest.raises(ConfigError, match=r"ops\.audit_kep"):
        call(ping, "ping", settings={"ops.audit_kep": 10})
    with pytest.raises(ConfigError, match=r"ops\.audit_keep"):
        call(ping, "ping", settings={"ops.audit_keep": 0})
    with pytest.raises(ConfigError, match=r"bot\.timezone"):
        call(ping, "ping", timezone="Mars/Olympus")
    settings: dict[str, Any] = {"ops.audit_keep": 10, "access.commands.ping": ["a", "b"]}
    assert call(ping, "ping", settings=settings, groups=["b"]).replies == ["pong"]


def test_no_thread_outlives_a_call() -> None:
    before = set(threading.enumerate())
    call(remember, "remember a is b")
    with pytest.raises(RuntimeError):
        call(boom, "boom")
    assert set(threading.enumerate()) <= before
