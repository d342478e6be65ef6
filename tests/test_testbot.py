"""The `testbot` fixture as command authors configure it: the `harken` mark,
`testbot.configure(...)`, and the clock dialogs expire by; the plugin loads no bot."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config import ConfigError
from harken import Context, command
from harken.testbot import TestBot

pytestmark = pytest.mark.harken(settings={"ops.audit_keep": 10}, timezone="Asia/Tokyo")


@command(r"^audit-keep$")
def audit_keep(ctx: Context) -> str:
    """How many audit entries are kept."""
    return str(ctx.settings.ops.audit_keep)


@pytest.mark.harken(admins=["alice"], groups={"ops": ["bob"]}, timezone="Europe/Paris")
def test_the_mark_sets_admins_groups_and_the_time_zone(testbot: TestBot) -> None:
    assert testbot.ask("whoami").endswith("You are an admin here.")
    assert testbot.ask("timezone", user="carol") == "Your time zone is Europe/Paris."
    # `call` is for the group ops: bob is in it, carol is not.
    assert testbot.ask("call web /x", user="bob").startswith("I know no service `web`.")
    assert testbot.ask("call web /x", user="carol").startswith(
        "Sorry, `call` is only for the group(s) ops and the admins"
    )


def test_a_module_mark_applies_to_every_test_of_the_module(testbot: TestBot) -> None:
    testbot.add(audit_keep)
    assert testbot.ask("audit-keep") == "10"
    assert testbot.ask("timezone") == "Your time zone is Asia/Tokyo."
    assert not testbot.ask("whoami").endswith("You are an admin here.")


@pytest.mark.harken(settings={"scheduler.max_jobs_per_user": 1})
class TestMarksMerge:
    @pytest.mark.harken(settings={"ops.audit_keep": 5})
    def test_the_closest_mark_wins_key_by_key(self, testbot: TestBot) -> None:
        testbot.add(audit_keep)
        assert testbot.ask("audit-keep") == "5"
        assert testbot.settings.scheduler.max_jobs_per_user == 1
        assert testbot.ask("timezone") == "Your time zone is Asia/Tokyo."


def test_configure_before_the_first_message(testbot: TestBot) -> None:
    testbot.configure(admins=["bob"], settings={"ops.audit_keep": 3})
    testbot.configure(timezone="America/New_York")  # what is not given stays
    testbot.add(audit_keep)
    assert testbot.ask("audit-keep") == "3"
    assert testbot.ask("whoami", user="bob").endswith("You are an admin here.")
    assert testbot.ask("timezone") == "Your time zone is America/New_York."
    with pytest.raises(RuntimeError, match="before the first message"):
        testbot.configure(admins=["carol"])


def test_a_wrong_setting_is_named(testbot: TestBot) -> None:
    with pytest.raises(ConfigError, match=r"ops\.audit_kep"):
        testbot.configure(settings={"ops.audit_kep": 3})
    with pytest.raises(TypeError, match="a list of user ids"):
        testbot.configure(groups={"ops": "bob"})


def test_the_clock_lets_a_dialog_expire_without_waiting(testbot: TestBot) -> None:
    assert testbot.ask("profile").startswith("What should I call you?")
    testbot.clock.advance(minutes=29)
    assert testbot.ask("Al").startswith("What is your time zone?")
    testbot.clock.advance(minutes=30, seconds=1)
    assert testbot.ask("ping") == (
        "Your unfinished `profile` expired after 30 minutes without an answer, so I dropped "
        "it; nothing from it was saved.\npong"
    )
    with pytest.raises(ValueError, match="forward only"):
        testbot.clock.advance(-1)


def test_the_plugin_loads_no_bot_until_a_test_uses_it() -> None:
    code = (
        "import sys, harken.testing\n"
        "heavy = ('actors', 'commands', 'apscheduler', 'sqlalchemy', 'pykka')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
        "from harken.testing import call, TestBot\n"
        "print(call.__module__, TestBot.__module__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "harken.unit harken.testbot"]


def test_the_clock_brings_a_reminder_without_waiting(testbot: TestBot) -> None:
    assert testbot.ask("remind me in 10 minutes to check the pager").startswith("OK, I'll remind")
    testbot.clock.advance(minutes=9)
    assert "check the pager" in testbot.ask("reminders")  # still a minute to go
    testbot.clock.advance(minutes=1)
    reminder = testbot.wait_for(lambda event: "pager" in event.data and "jobs" not in event.data)
    assert "check the pager" in reminder.data
    assert "check the pager" not in testbot.ask("reminders")
