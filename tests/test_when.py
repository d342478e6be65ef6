"""Reading time expressions (`commands.when`), in the person's zone, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from commands.when import FORMS, MAX_AHEAD, WhenError, parse_when
from core.timefmt import format_time

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
# A Wednesday afternoon in Paris, in winter time.
NOW = datetime(2027, 1, 13, 15, 20, 5, tzinfo=PARIS)


def fires(text: str, now: datetime = NOW) -> datetime:
    return parse_when(text, now).first


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("in 10 minutes", timedelta(minutes=10)),
        ("in 10 mins", timedelta(minutes=10)),
        ("in 45 seconds", timedelta(seconds=45)),
        ("in 30s", timedelta(seconds=30)),
        ("in 2 hours", timedelta(hours=2)),
        ("in an hour", timedelta(hours=1)),
        ("in a minute", timedelta(minutes=1)),
        ("in 3 days", timedelta(days=3)),
        ("in 1 hour 30 minutes", timedelta(minutes=90)),
        ("in 1h30m", timedelta(minutes=90)),
        ("in 2 days and 3 hours", timedelta(days=2, hours=3)),
        ("in 2 days, 3 hours", timedelta(days=2, hours=3)),
        ("IN 10   Minutes", timedelta(minutes=10)),
        ("in 2 weeks", timedelta(weeks=2)),
        ("in a week", timedelta(weeks=1)),
        ("in 1 week 2 days", timedelta(days=9)),
        ("in half an hour", timedelta(minutes=30)),
        ("in half a minute", timedelta(seconds=30)),
        ("in an hour and a half", timedelta(minutes=90)),
        ("in 2 and a half hours", timedelta(minutes=150)),
        ("in 1.5 hours", timedelta(minutes=90)),
    ],
)
def test_durations_count_from_now_in_seconds_minutes_hours_days(
    text: str, delta: timedelta
) -> None:
    when = parse_when(text, NOW)
    assert when.first == NOW + delta
    assert not when.recurring


def test_a_duration_across_a_dst_change_is_real_time_not_wall_clock() -> None:
    # 01:55 on the night Paris springs forward (02:00 -> 03:00): ten minutes later is 03:05.
    before = datetime(2027, 3, 28, 1, 55, tzinfo=PARIS)
    first = fires("in 10 minutes", before)
    assert first.astimezone(UTC) - before.astimezone(UTC) == timedelta(minutes=10)
    assert (first.hour, first.minute) == (3, 5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("at 17:30", datetime(2027, 1, 13, 17, 30, tzinfo=PARIS)),
        ("at 9am", datetime(2027, 1, 14, 9, 0, tzinfo=PARIS)),  # 9:00 has passed today
        ("at 9:30pm", datetime(2027, 1, 13, 21, 30, tzinfo=PARIS)),
        ("at 12am", datetime(2027, 1, 14, 0, 0, tzinfo=PARIS)),
        ("at 12pm", datetime(2027, 1, 14, 12, 0, tzinfo=PARIS)),
        ("at noon", datetime(2027, 1, 14, 12, 0, tzinfo=PARIS)),
        ("at 17.45", datetime(2027, 1, 13, 17, 45, tzinfo=PARIS)),
        ("today at 23:00", datetime(2027, 1, 13, 23, 0, tzinfo=PARIS)),
        ("tomorrow at 9am", datetime(2027, 1, 14, 9, 0, tzinfo=PARIS)),
        ("tomorrow at 08:15", datetime(2027, 1, 14, 8, 15, tzinfo=PARIS)),
        ("on 2027-01-15 at 10:00", datetime(2027, 1, 15, 10, 0, tzinfo=PARIS)),
        ("on friday at 16:00", datetime(2027, 1, 15, 16, 0, tzinfo=PARIS)),
        ("on wednesday at 9:00", datetime(2027, 1, 20, 9, 0, tzinfo=PARIS)),  # next week's
        ("on wednesday at 18:00", datetime(2027, 1, 13, 18, 0, tzinfo=PARIS)),  # today's
        ("friday at 16:00", datetime(2027, 1, 15, 16, 0, tzinfo=PARIS)),
        ("next monday at 9:00", datetime(2027, 1, 18, 9, 0, tzinfo=PARIS)),
        ("on monday, at 9:00", datetime(2027, 1, 18, 9, 0, tzinfo=PARIS)),
        ("next wednesday at 18:00", datetime(2027, 1, 20, 18, 0, tzinfo=PARIS)),  # not today
        ("at 17:30 tomorrow", datetime(2027, 1, 14, 17, 30, tzinfo=PARIS)),
        ("tomorrow at 17:30", datetime(2027, 1, 14, 17, 30, tzinfo=PARIS)),
        ("at 9am on friday", datetime(2027, 1, 15, 9, 0, tzinfo=PARIS)),
        ("at 9 am next monday", datetime(2027, 1, 18, 9, 0, tzinfo=PARIS)),
        ("at noon tomorrow", datetime(2027, 1, 14, 12, 0, tzinfo=PARIS)),
        ("at 10:00 on 2027-01-15", datetime(2027, 1, 15, 10, 0, tzinfo=PARIS)),
        ("on Jan 15 at 10:00", datetime(2027, 1, 15, 10, 0, tzinfo=PARIS)),
        ("on 15 Jan at 10:00", datetime(2027, 1, 15, 10, 0, tzinfo=PARIS)),
        ("on January 15 at 9:00", datetime(2027, 1, 15, 9, 0, tzinfo=PARIS)),
        ("on 15th january at 9:00", datetime(2027, 1, 15, 9, 0, tzinfo=PARIS)),
        ("on sept 1 at 9:00", datetime(2027, 9, 1, 9, 0, tzinfo=PARIS)),
        ("on Jan 15, 2028 at 9:00", datetime(2028, 1, 15, 9, 0, tzinfo=PARIS)),
        ("on 15 jan 2028 at 9:00", datetime(2028, 1, 15, 9, 0, tzinfo=PARIS)),
        ("on jan 13 at 16:00", datetime(2027, 1, 13, 16, 0, tzinfo=PARIS)),  # later today
        ("on jan 13 at 9:00", datetime(2028, 1, 13, 9, 0, tzinfo=PARIS)),  # passed: next year
        ("on feb 29 at 9:00", datetime(2028, 2, 29, 9, 0, tzinfo=PARIS)),  # next leap year
    ],
)
def test_times_of_day_are_read_in_the_persons_zone(text: str, expected: datetime) -> None:
    assert fires(text) == expected


FRIDAY_MORNING = datetime(2027, 1, 15, 10, 0, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on friday at 16:00", datetime(2027, 1, 15, 16, 0, tzinfo=PARIS)),  # today
        ("friday at 16:00", datetime(2027, 1, 15, 16, 0, tzinfo=PARIS)),
        ("at 16:00 on friday", datetime(2027, 1, 15, 16, 0, tzinfo=PARIS)),
        ("on friday at 9:00", datetime(2027, 1, 22, 9, 0, tzinfo=PARIS)),  # passed: next week
        ("next friday at 16:00", datetime(2027, 1, 22, 16, 0, tzinfo=PARIS)),
    ],
)
def test_a_weekday_said_on_that_day_is_today_while_the_time_is_ahead(
    text: str, expected: datetime
) -> None:
    assert fires(text, FRIDAY_MORNING) == expected


def test_the_same_words_mean_different_instants_in_different_zones() -> None:
    in_paris = fires("on 2027-01-15 at 10:00", NOW)
    in_new_york = fires("on 2027-01-15 at 10:00", NOW.astimezone(NEW_YORK))
    assert in_new_york - in_paris == timedelta(hours=6)


def test_a_time_skipped_by_spring_forward_is_moved_to_the_real_time_it_falls_on() -> None:
    first = fires("on 2027-03-28 at 02:30")
    assert first.astimezone(UTC) == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
    assert (first.hour, first.minute) == (3, 30)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "I can't read the time"),
        ("in five minutes", "I can't read the time"),
        ("in 5 parsecs", "`parsecs` is not a unit"),
        ("in 0 minutes", "no time at all"),
        ("in 99999999 days", "too far ahead"),
        ("in 999999999 hours", "too far ahead"),
        ("at 25:00", "not a time of day"),
        ("at 13pm", "with am/pm the hour is 1 to 12"),
        ("at teatime", "can't read the time of day"),
        ("tomorrow", "Say at what time"),
        ("on 2027-02-30 at 10:00", "can't read the date"),
        ("on 2020-01-01 at 10:00", "That time is in the past"),
        ("today at 9:00", "That time is in the past"),
        ("on 0001-01-01 at 00:00", "That time is in the past: it was 0001-01-01 00:00"),
        ("on 2999-01-01 at 10:00", "too far ahead"),
        ("on 9999-12-31 at 23:59", "too far ahead"),
        ("next monday", "Say at what time, e.g. `next monday at 9am`"),
        ("on jan 15", "Say at what time"),
        ("on feb 30 at 10:00", "can't read the date"),
        ("on smarch 3 at 10:00", "can't read the date"),
        ("at 17:30 yesterday", "can't read the date"),
        ("next week at 10:00", "can't read the date"),
        ("in 2 months", "`months` is not a unit"),
        ("in 5", "I can't read the time"),
        ("in 1.5.5 hours", "I can't read the time"),
        ("in 2 weeks and", "I can't read the time"),
        ("in " + "1 minute " * 100, "I can't read the time"),
        ("every weekday", "Say at what time"),
        ("every day", "Say at what time"),
        ("every 10 seconds", "too often"),
        ("every fortnight at 9:00", "I can't read the time"),
    ],
)
def test_unreadable_or_refused_times_say_why(text: str, message: str) -> None:
    with pytest.raises(WhenError, match=message):
        parse_when(text, NOW)


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/New_York", "UTC"])
def test_dates_at_the_ends_of_the_calendar_are_answered_in_every_zone(zone: str) -> None:
    now = NOW.astimezone(ZoneInfo(zone))
    with pytest.raises(WhenError, match="That time is in the past"):
        parse_when("on 0001-01-01 at 00:00", now)
    with pytest.raises(WhenError, match="too far ahead"):
        parse_when("on 9999-12-31 at 23:59", now)
    with pytest.raises(WhenError, match="too far ahead"):
        parse_when("at 23:59 on dec 31 9999", now)


def test_an_unreadable_time_lists_every_accepted_form() -> None:
    with pytest.raises(WhenError) as caught:
        parse_when("sometime soon", NOW)
    for form in FORMS:
        assert f"`{form}`" in str(caught.value)


def test_every_example_form_is_accepted() -> None:
    for form in FORMS:
        parse_when(form, NOW)


def test_max_ahead_is_accepted_to_the_day() -> None:
    assert parse_when(f"in {MAX_AHEAD.days} days", NOW).first == NOW + MAX_AHEAD


@pytest.mark.parametrize(
    ("text", "days", "description"),
    [
        ("every day at 8:00", "*", "every day at 08:00"),
        ("every weekday at 9:00", "mon-fri", "every weekday at 09:00"),
        ("every monday at 9:30", "mon", "every Mon at 09:30"),
        ("every fridays at 17:00", "fri", "every Fri at 17:00"),
        ("every weekend at 10am", "sat,sun", "every weekend day at 10:00"),
    ],
)
def test_recurring_times_of_day_are_cron_triggers_in_the_persons_zone(
    text: str, days: str, description: str
) -> None:
    when = parse_when(text, NOW)
    assert isinstance(when.trigger, CronTrigger)
    assert when.trigger.timezone == PARIS
    assert f"day_of_week='{days}'" in str(when.trigger)
    assert when.recurring
    assert when.description == description


def test_every_weekday_skips_the_weekend() -> None:
    friday_evening = datetime(2027, 1, 15, 18, 0, tzinfo=PARIS)
    when = parse_when("every weekday at 9:00", friday_evening)
    assert when.first == datetime(2027, 1, 18, 9, 0, tzinfo=PARIS)  # Monday


def test_every_n_hours_is_an_interval_starting_one_interval_from_now() -> None:
    when = parse_when("every 2 hours", NOW)
    assert isinstance(when.trigger, IntervalTrigger)
    assert when.first == NOW + timedelta(hours=2)
    nxt = when.trigger.get_next_fire_time(when.first, when.first)
    assert nxt - when.first == timedelta(hours=2)
    assert when.description == "every 2 hours"


def test_the_shortest_recurring_interval_is_configurable() -> None:
    assert parse_when("every 5 seconds", NOW, min_interval=1).description == "every 5 seconds"


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [
        ("Europe/Paris", datetime(2027, 3, 28), datetime(2027, 10, 31)),
        ("America/New_York", datetime(2027, 3, 14), datetime(2027, 11, 7)),
    ],
)
def test_a_daily_9am_reminder_stays_at_9am_local_across_both_dst_switches(
    zone: str, spring: datetime, autumn: datetime
) -> None:
    tz = ZoneInfo(zone)
    for switch in (spring, autumn):
        now = (switch - timedelta(days=3)).replace(hour=12, tzinfo=tz)
        trigger = parse_when("every day at 9:00", now).trigger
        runs = []
        previous = None
        moment = now
        for _ in range(6):
            previous = trigger.get_next_fire_time(previous, moment)
            runs.append(previous)
            moment = previous
        assert [(r.hour, r.minute) for r in runs] == [(9, 0)] * 6
        # The UTC offset changed in the middle: the same wall clock, a different instant.
        assert runs[0].utcoffset() != runs[-1].utcoffset()
        gaps = {runs[i + 1].astimezone(UTC) - runs[i].astimezone(UTC) for i in range(5)}
        assert gaps == {timedelta(hours=24), timedelta(hours=23 if switch is spring else 25)}


def test_format_time_shows_seconds_only_when_there_are_some() -> None:
    assert (
        format_time(datetime(2027, 1, 15, 9, 0, tzinfo=UTC), PARIS) == "Fri 15 Jan 2027 10:00 CET"
    )
    assert format_time(datetime(2027, 7, 15, 9, 0, 7, tzinfo=UTC), PARIS) == (
        "Thu 15 Jul 2027 11:00:07 CEST"
    )


def test_now_must_carry_a_zone() -> None:
    with pytest.raises(ValueError, match="ZoneInfo"):
        parse_when("in 1 minute", datetime(2027, 1, 1))
