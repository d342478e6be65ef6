"""Reminders and deferred commands through the real bot (TestBot): the scheduler actor,
its SQLite job store, the commands, restarts and jobs that fell due while it was down."""

from __future__ import annotations

import dataclasses
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from support.past_jobs import spec, store_job

from actors.errors import StartupError
from config import ConfigError, load_settings
from config.settings import BotSettings, SchedulerSettings, Settings
from core.jobs import JobKind
from harken import Context, command, parse_when
from harken.testbot import TestBot

# `root` is an admin for the `bot` fixture (tests/conftest.py).
pytestmark = pytest.mark.harken(admins=["root"])

ID = re.compile(r"Job id (\w+):")


def settings(**scheduler: object) -> Settings:
    return Settings(scheduler=SchedulerSettings(**scheduler))  # type: ignore[arg-type]


def job_id(confirmation: str) -> str:
    found = ID.search(confirmation)
    assert found, confirmation
    return found.group(1)


def job_store(bot: TestBot) -> Path:
    return Path(bot.settings.scheduler.job_store(bot.settings.memory.path))


# --- reminders ---------------------------------------------------------------------------


def test_a_reminder_arrives_where_it_was_set_addressed_to_the_person(bot: TestBot) -> None:
    reply = bot.ask(
        "remind me in 1 second to check the backups", user="bob", channel="C1", thread="T1"
    )
    assert reply.startswith("OK, I'll remind you on ")
    reminder = bot.wait_for("Reminder for bob: check the backups")
    assert (reminder.to, reminder.input, reminder.channel, reminder.thread) == (
        "bob",
        "testing",
        "C1",
        "T1",
    )
    assert "late" not in reminder.data


def test_the_confirmation_gives_the_exact_time_in_the_persons_zone(bot: TestBot) -> None:
    bot.ask("timezone Asia/Tokyo")
    reply = bot.ask("remind me on 2030-01-15 at 10:00 to renew the domain")
    assert "on Tue 15 Jan 2030 10:00 JST (Asia/Tokyo)." in reply
    listed = bot.ask("reminders")
    assert "times in Asia/Tokyo" in listed
    assert "Tue 15 Jan 2030 10:00 JST  renew the domain" in listed


def test_without_a_zone_of_their_own_people_get_the_configured_default(tmp_path: Path) -> None:
    base = Settings(bot=BotSettings(timezone="Europe/Paris"))
    with TestBot(tmp_path / "memory", settings=base) as bot:
        reply = bot.ask("remind me every weekday at 9:00 to stand up")
    assert "every weekday at 09:00, first on" in reply
    assert "09:00 CET (Europe/Paris)" in reply or "09:00 CEST (Europe/Paris)" in reply


def test_a_recurring_reminder_says_it_keeps_the_zone_it_was_set_in(bot: TestBot) -> None:
    bot.ask("timezone Asia/Tokyo")
    reply = bot.ask("remind me every day at 8:00 to drink water")
    assert "Its times stay in Asia/Tokyo, also if you change your time zone." in reply
    bot.ask("timezone Europe/Paris")
    assert "[every day at 08:00 (Asia/Tokyo)]" in bot.ask("reminders")
    one_off = bot.ask("remind me in 1 hour to stretch")
    assert "also if you change your time zone" not in one_off


@pytest.mark.parametrize("when", ["on 0001-01-01 at 00:00", "at 00:00 on 0001-01-01"])
def test_a_date_before_any_calendar_can_hold_is_answered_as_in_the_past(
    bot: TestBot, when: str
) -> None:
    bot.ask("timezone Asia/Tokyo")  # east of UTC: the first day of year 1 has no UTC instant
    reply = bot.ask(f"remind me {when} to x")
    assert reply == "That time is in the past: it was 0001-01-01 00:00."
    assert bot.ask("reminders").startswith("You have no pending")


def test_the_newer_time_forms_schedule_reminders_and_commands(bot: TestBot) -> None:
    for when in ("next monday at 9:00", "in 2 weeks", "in half an hour", "at 17:30 tomorrow"):
        assert bot.ask(f"remind me {when} to x").startswith("OK, I'll remind you on "), when
    assert re.match(
        r"OK, I'll remind you on \w{3} 15 Jan \d{4} 09:00 UTC\.",
        bot.ask("remind me on Jan 15 at 9:00 to y"),
    )
    assert bot.ask("next monday at 9:00 run ping").startswith("OK, I'll run `ping` on Mon ")
    assert bot.ask("reminders").startswith("Your jobs (6)")


def test_an_unreadable_time_is_answered_with_the_accepted_forms(bot: TestBot) -> None:
    reply = bot.ask("remind me next blue moon to dance")
    assert reply.startswith("I can't read the time `next blue moon`")
    assert "`every weekday at 9:00`" in reply
    assert bot.ask("reminders").startswith("You have no pending")


def test_a_reminder_without_text_gets_the_usage(bot: TestBot) -> None:
    assert bot.ask("remind me in 5 minutes").startswith("Usage: remind me <when> to <text>")
    assert bot.ask("remind me").startswith("Usage: remind me <when> to <text>")


def test_an_over_long_reminder_is_refused_and_nothing_is_scheduled(bot: TestBot) -> None:
    reply = bot.ask("remind me in 5 minutes to " + "x" * 5000)
    assert "I keep up to 1,000" in reply
    assert bot.ask("jobs").startswith("You have no pending")


# --- deferred commands --------------------------------------------------------------------


def test_a_deferred_command_runs_as_the_person_and_answers_in_the_same_place(
    bot: TestBot,
) -> None:
    reply = bot.ask("in 1 second run whoami", user="carol", channel="C2", thread="T2")
    assert reply.startswith("OK, I'll run `whoami` on ")
    answer = bot.wait_for("You are carol")
    assert (answer.to, answer.channel, answer.thread) == ("carol", "C2", "T2")
    assert "thread T2" in answer.data


def test_a_deferred_command_must_be_one_harken_knows(bot: TestBot) -> None:
    reply = bot.ask("at 18:00 run frobnicate the widgets")
    assert reply == "I don't know the command `frobnicate the widgets`, so I won't schedule it."


def test_every_day_at_runs_a_command_on_a_daily_schedule(bot: TestBot) -> None:
    reply = bot.ask("every day at 8:00 run time")
    assert "every day at 08:00, first on" in reply
    assert "run `time` [every day at 08:00 (UTC)]" in bot.ask("reminders")


# --- listing and cancelling ---------------------------------------------------------------


def test_reminders_lists_your_jobs_soonest_first_with_id_next_run_and_text(bot: TestBot) -> None:
    later = job_id(bot.ask("remind me in 3 hours to deploy"))
    sooner = job_id(bot.ask("in 2 hours run ping"))
    bot.ask("remind me in 1 hour to not mine", user="bob")
    lines = bot.ask("jobs").splitlines()
    assert lines[0] == "Your jobs (2), times in UTC:"
    assert lines[1].startswith(f"  {sooner}  ")
    assert lines[1].endswith("run `ping`")
    assert lines[2].startswith(f"  {later}  ")
    assert lines[2].endswith("deploy")
    assert bot.ask("reminders") == "\n".join(lines)


def test_you_can_cancel_your_own_job(bot: TestBot) -> None:
    first = job_id(bot.ask("remind me in 1 hour to stretch"))
    assert bot.ask(f"cancel {first.upper()}").startswith(
        f"Cancelled job {first}: reminder `stretch`, "
    )
    assert bot.ask("reminders").startswith("You have no pending")
    assert bot.ask(f"cancel {first}") == (
        f"There is no pending job {first}. Say `reminders` to see yours."
    )


def test_only_the_owner_or_an_admin_can_cancel_a_job(bot: TestBot) -> None:
    first = job_id(bot.ask("remind me in 1 hour to stretch", user="alice"))
    refused = bot.ask(f"cancel {first}", user="mallory")
    assert refused == f"Job {first} is not yours; only its owner or an admin can cancel it."
    assert first in bot.ask("reminders", user="alice")
    assert bot.ask(f"cancel {first}", user="root").startswith(f"Cancelled job {first} (of alice)")
    assert bot.ask("reminders", user="alice").startswith("You have no pending")


def test_a_bare_cancel_with_no_dialog_open_says_how_to_cancel_a_job(bot: TestBot) -> None:
    assert "`cancel <id>`" in bot.ask("cancel")


def test_a_person_cannot_pile_up_more_jobs_than_the_limit(tmp_path: Path) -> None:
    with TestBot(tmp_path / "memory", settings=settings(max_jobs_per_user=2)) as bot:
        bot.ask("remind me in 1 hour to a")
        bot.ask("remind me in 2 hours to b")
        refused = bot.ask("remind me in 3 hours to c")
        assert refused.startswith("You have 2 pending jobs, the most I keep for one person.")
        assert bot.ask("remind me in 3 hours to c", user="bob").startswith("OK")


# --- persistence, late and missed runs ----------------------------------------------------


def test_a_job_survives_a_restart_between_scheduling_and_delivery(bot: TestBot) -> None:
    bot.ask("remind me in 2 seconds to still be here", channel="C7")
    bot.ask("remind me in 1 hour to later")
    bot.restart()
    reminder = bot.wait_for("Reminder for alice: still be here")
    assert reminder.channel == "C7"
    assert "later" in bot.ask("reminders")


def test_a_reminder_due_while_down_is_delivered_on_start_marked_late(bot: TestBot) -> None:
    bot.start()
    bot.stop()
    ten_minutes_ago = datetime.now(UTC) - timedelta(minutes=10)
    job = spec(JobKind.REMIND, "water the plants", channel="C3")
    store_job(job_store(bot), job, DateTrigger(ten_minutes_ago), ten_minutes_ago)
    bot.start()
    reminder = bot.wait_for("water the plants")
    assert reminder.data.startswith("Reminder for alice: water the plants (late by 10 min ")
    assert "while I was not running" in reminder.data
    assert reminder.channel == "C3"
    assert bot.ask("reminders").startswith("You have no pending")


def test_beyond_the_grace_time_the_person_is_told_what_was_missed(tmp_path: Path) -> None:
    bot = TestBot(tmp_path / "memory", settings=settings(grace_seconds=600))
    three_hours_ago = datetime.now(UTC) - timedelta(hours=3)
    store_job(
        job_store(bot),
        spec(JobKind.REMIND, "call the vendor"),
        DateTrigger(three_hours_ago),
        three_hours_ago,
        "rem001",
    )
    store_job(
        job_store(bot),
        spec(JobKind.RUN, "echo restarted the web tier"),
        DateTrigger(three_hours_ago),
        three_hours_ago,
        "run001",
    )
    with bot:
        missed = bot.wait_for("Missed reminder for alice")
        assert "which is more than the 10 min 0 s I may be late" in missed.data
        assert missed.data.endswith(": call the vendor")
        not_run = bot.wait_for("I did not run `echo restarted the web tier`")
        assert "Say it again if you still want it." in not_run.data
        # The command itself was not run: its echo never comes.
        assert bot.ask("ping") == "pong"
        with pytest.raises(TimeoutError):
            bot.wait_for(lambda e: e.data == "restarted the web tier", timeout=0.2)


def test_a_late_deferred_command_still_runs_within_the_grace_time(bot: TestBot) -> None:
    five_minutes_ago = datetime.now(UTC) - timedelta(minutes=5)
    store_job(
        job_store(bot),
        spec(JobKind.RUN, "echo rotated"),
        DateTrigger(five_minutes_ago),
        five_minutes_ago,
    )
    bot.start()
    note = bot.wait_for("Running `echo rotated` for alice (late by 5 min")
    assert "while I was not running" in note.data
    assert bot.wait_for(lambda e: e.data == "rotated").to == "alice"


def test_a_recurring_job_that_missed_several_runs_fires_once_and_keeps_its_schedule(
    bot: TestBot,
) -> None:
    now = datetime.now(UTC)
    start = now - timedelta(minutes=5, seconds=30)
    trigger = IntervalTrigger(minutes=1, start_date=start, timezone=UTC)
    job = spec(JobKind.REMIND, "drink water", schedule="every 1 minute (UTC)")
    store_job(job_store(bot), job, trigger, start, "every1")
    bot.start()
    reminder = bot.wait_for("drink water")
    assert "(6 runs were due; this is one for all of them)" in reminder.data
    with pytest.raises(TimeoutError):
        bot.wait_for("drink water", timeout=0.3)  # once, not six times
    listed = bot.ask("reminders")
    assert "every1" in listed
    assert "drink water [every 1 minute (UTC)]" in listed


def test_a_damaged_stored_job_is_logged_and_skipped_and_the_others_still_fire(
    bot: TestBot, caplog: pytest.LogCaptureFixture
) -> None:
    past = datetime.now(UTC) - timedelta(seconds=5)
    store_job(job_store(bot), "not json at all", DateTrigger(past), past, "broken")
    store_job(
        job_store(bot), spec(JobKind.REMIND, "still works"), DateTrigger(past), past, "fine01"
    )
    with caplog.at_level(logging.ERROR, logger="actors.scheduler_actor"):
        bot.start()
        assert "still works" in bot.wait_for("still works").data
    assert any("broken" in r.getMessage() for r in caplog.records)


def test_a_job_store_that_cannot_be_opened_stops_start_up_with_one_clear_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "jobs-dir").mkdir()
    base = settings(path=str(tmp_path / "jobs-dir"))
    bot = TestBot(tmp_path / "memory", settings=base)
    bot.settings = dataclasses.replace(bot.settings, scheduler=base.scheduler)
    with pytest.raises(StartupError, match=r"cannot open the job store at .*jobs-dir"):
        bot.start()


def test_scheduler_settings_come_from_the_environment_and_bad_ones_name_the_key() -> None:
    settings = load_settings(
        env={"HARKEN_SCHEDULER_GRACE_SECONDS": "120", "HARKEN_SCHEDULER_MAX_JOBS_PER_USER": "5"}
    )
    assert settings.scheduler.grace_seconds == 120.0
    assert settings.scheduler.max_jobs_per_user == 5
    assert settings.scheduler.job_store("./var/memory") == "var/jobs.sqlite"
    with pytest.raises(ConfigError, match=r"scheduler\.grace_seconds .*must be a number > 0"):
        load_settings(env={"HARKEN_SCHEDULER_GRACE_SECONDS": "-1"})


def test_a_plugin_command_can_schedule_list_and_cancel_through_the_context(
    tmp_path: Path,
) -> None:
    @command(r"^nag$")
    def nag(ctx: Context) -> str:
        when = parse_when("in 1 second", datetime.now(ctx.timezone()))
        job = ctx.schedule_reminder(when, "nagging")
        spare = ctx.schedule_command(
            parse_when("in 1 hour", datetime.now(when.first.tzinfo)), "ping"
        )
        assert [j.id for j in ctx.jobs()] == [job.id, spare.id]
        assert ctx.cancel_job(spare.id).outcome == "cancelled"
        return f"scheduled {job.id}"

    with TestBot(tmp_path / "memory", commands=[nag]) as bot:
        assert bot.ask("nag", user="dan").startswith("scheduled ")
        assert bot.wait_for("nagging").data == "Reminder for dan: nagging"
        assert bot.ask("reminders", user="dan").startswith("You have no pending")
