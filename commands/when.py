"""Reading times people write: `in 10 minutes`, `at 17:30`, `every weekday at 9:00`.

`parse_when(text, now)` turns one of the accepted forms (`FORMS`) into a `When`: the
APScheduler trigger that will fire it, the first time it fires and a description to
confirm back to the person. Times are wall-clock times in the zone of `now` (the
person's), so a daily 9:00 stays at 9:00 local time across daylight-saving changes:
the cron trigger computes each run in that zone.

Anything else raises `WhenError`, whose message is meant for the person.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

__all__ = ["FORMS", "MAX_AHEAD", "When", "WhenError", "format_time", "parse_when"]

FORMS = (
    "in 10 minutes",
    "in 1 hour 30 minutes",
    "at 17:30",
    "at 9am",
    "tomorrow at 9am",
    "on 2027-01-15 at 10:00",
    "on friday at 16:00",
    "every day at 8:00",
    "every weekday at 9:00",
    "every monday at 9:30",
    "every 2 hours",
)
"""Examples of every accepted form, shown to people whose time could not be read."""

MAX_AHEAD = timedelta(days=3650)
"""How far ahead a job may be scheduled: far enough for anyone, and no date overflow."""

_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "secs": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "mins": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hr": "hours",
    "hrs": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
}
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = {
    **{name: i for i, name in enumerate(_WEEKDAYS)},
    **{
        name: i
        for i, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
    "tues": 1,
    "thur": 3,
    "thurs": 3,
}
_AMOUNT = r"(?P<n>\d{1,9}|(?<![a-z])an?\b)"
_PAIR = re.compile(rf"{_AMOUNT}\s*(?P<unit>[a-z]+)")
_DURATION = re.compile(rf"^(?:{_AMOUNT}\s*[a-z]+)(?:(?:\s*,\s*|\s+and\s+|\s*)\d{{1,9}}\s*[a-z]+)*$")
_TIME = re.compile(
    r"^(?:(?P<word>noon|midday|midnight)|"
    r"(?P<h>\d{1,2})(?:[:.h](?P<m>\d{2}))?\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?)$"
)


class WhenError(ValueError):
    """A time Harken cannot read or will not schedule; the message says why."""


@dataclass(frozen=True)
class When:
    """A time understood: how to fire, when first, and how to say it back."""

    trigger: BaseTrigger
    first: datetime
    """The first run, in the person's zone."""
    recurring: bool
    description: str
    """What was understood, e.g. `every weekday at 09:00`; shown back with `first`."""


def format_time(moment: datetime, zone: tzinfo) -> str:
    """`Thu 15 Jan 2027 10:00 CET`, in `zone`; seconds only when they are not zero."""
    local = moment.astimezone(zone)
    clock = "%H:%M:%S" if local.second else "%H:%M"
    return local.strftime(f"%a %d %b %Y {clock} %Z")


def parse_when(text: str, now: datetime, *, min_interval: float = 60.0) -> When:
    """Read a time expression, relative to `now` (aware, in the person's zone)."""
    if now.tzinfo is None or not isinstance(now.tzinfo, ZoneInfo):
        raise ValueError("now must carry the person's ZoneInfo")
    zone = now.tzinfo
    spec = " ".join(text.lower().split())
    if spec.startswith("in "):
        delta = _duration(spec[3:])
        return _once(_later(now, delta), now, f"in {say_duration(delta)}")
    if spec.startswith("every "):
        return _every(spec[6:], now, zone, min_interval)
    day: date | None = None
    rest = spec
    if spec.startswith("today"):
        day, rest = now.date(), spec[5:].strip()
    elif spec.startswith("tomorrow"):
        day, rest = now.date() + timedelta(days=1), spec[8:].strip()
    elif spec.startswith("on "):
        word, _, rest = spec[3:].partition(" ")
        day = _day(word, now)
    if not rest.startswith("at "):
        if day is not None and not rest:
            raise WhenError("Say at what time, e.g. `tomorrow at 9am`.")
        raise _unreadable(text)
    hour, minute = _clock(rest[3:])
    if day is None:
        moment = _local(now.date(), hour, minute, zone)
        if moment <= now:
            moment = _local(now.date() + timedelta(days=1), hour, minute, zone)
    else:
        moment = _local(day, hour, minute, zone)
    return _once(moment, now, f"at {hour:02d}:{minute:02d}")


def _unreadable(text: str) -> WhenError:
    shown = text if len(text) <= 60 else text[:60] + "…"
    return WhenError(
        f"I can't read the time `{shown}`. Try one of: " + ", ".join(f"`{f}`" for f in FORMS) + "."
    )


def _duration(spec: str) -> timedelta:
    spec = spec.strip()
    if not _DURATION.match(spec):
        raise _unreadable("in " + spec)
    parts: dict[str, int] = {}
    for match in _PAIR.finditer(spec):
        unit = _UNITS.get(match.group("unit"))
        if unit is None:
            raise WhenError(
                f"`{match.group('unit')}` is not a unit I know: use seconds, minutes, hours "
                "or days."
            )
        amount = 1 if match.group("n") in ("a", "an") else int(match.group("n"))
        parts[unit] = parts.get(unit, 0) + amount
    try:
        delta = timedelta(**parts)
    except OverflowError:
        delta = MAX_AHEAD * 2
    if delta > MAX_AHEAD:
        raise WhenError(f"That is too far ahead: I schedule up to {MAX_AHEAD.days} days ahead.")
    if delta <= timedelta(0):
        raise WhenError("That is no time at all: give a duration of at least one second.")
    return delta


def say_duration(delta: timedelta) -> str:
    """`1 hour 30 minutes`: every unit, spelt out (whole seconds)."""
    seconds = int(delta.total_seconds())
    out = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count} {name}{'s' if count != 1 else ''}")
    return " ".join(out)


def _clock(spec: str) -> tuple[int, int]:
    match = _TIME.match(spec.strip())
    if match is None:
        raise WhenError(
            f"I can't read the time of day `{spec.strip()[:40]}`: use 17:30, 9am or 9:30pm."
        )
    word = match.group("word")
    if word:
        return (0, 0) if word == "midnight" else (12, 0)
    hour, minute = int(match.group("h")), int(match.group("m") or 0)
    ampm = (match.group("ampm") or "").replace(".", "")
    if ampm:
        if not 1 <= hour <= 12:
            raise WhenError(f"{hour}{ampm} is not a time: with am/pm the hour is 1 to 12.")
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59:
        raise WhenError(f"{spec.strip()} is not a time of day.")
    return hour, minute


def _day(word: str, now: datetime) -> date:
    if word in _WEEKDAY_NAMES:
        ahead = (_WEEKDAY_NAMES[word] - now.weekday()) % 7 or 7
        return now.date() + timedelta(days=ahead)
    try:
        return date.fromisoformat(word)
    except ValueError:
        raise WhenError(
            f"I can't read the date `{word[:40]}`: use 2027-01-15 (year-month-day) or a "
            "weekday name."
        ) from None


def _local(day: date, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    # A wall-clock time skipped by a daylight-saving change (02:30 on the spring-forward
    # night) is read with the offset before the change; the round trip through UTC turns
    # it into the real time it falls on (03:30), which is what the reply then shows.
    naive = datetime(day.year, day.month, day.day, hour, minute)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)


def _once(moment: datetime, now: datetime, said: str) -> When:
    if moment <= now:
        raise WhenError(f"That time has passed: it was {format_time(moment, _zone(now))}.")
    if moment - now > MAX_AHEAD:
        raise WhenError(f"That is too far ahead: I schedule up to {MAX_AHEAD.days} days ahead.")
    trigger = DateTrigger(run_date=moment, timezone=_zone(now))
    return When(trigger, moment, recurring=False, description=said)


def _every(spec: str, now: datetime, zone: ZoneInfo, min_interval: float) -> When:
    days, _, at = spec.partition(" at ")
    days = days.strip()
    if not at and days.rstrip("s") in ("day", "weekday", "weekend", *_WEEKDAY_NAMES):
        raise WhenError(f"Say at what time, e.g. `every {days} at 9:00`.")
    if at:
        hour, minute = _clock(at)
        if days == "day":
            day_of_week, said = "*", "every day"
        elif days in ("weekday", "weekdays"):
            day_of_week, said = "mon-fri", "every weekday"
        elif days in ("weekend", "weekends", "weekend day"):
            day_of_week, said = "sat,sun", "every weekend day"
        elif days.rstrip("s") in _WEEKDAY_NAMES:
            index = _WEEKDAY_NAMES[days.rstrip("s")]
            day_of_week, said = _WEEKDAYS[index], f"every {_WEEKDAYS[index].title()}"
        else:
            raise _unreadable("every " + spec)
        trigger: BaseTrigger = CronTrigger(
            day_of_week=day_of_week, hour=hour, minute=minute, timezone=zone
        )
        first = trigger.get_next_fire_time(None, now)
        assert first is not None  # a cron without an end date always has a next run
        return When(
            trigger, first, recurring=True, description=f"{said} at {hour:02d}:{minute:02d}"
        )
    amount = spec if spec[:1].isdigit() or spec.startswith(("a ", "an ")) else f"1 {spec}"
    delta = _duration(amount)
    if delta.total_seconds() < min_interval:
        shortest = say_duration(timedelta(seconds=min_interval))
        raise WhenError(f"That is too often: the shortest interval is {shortest}.")
    first = _later(now, delta)
    trigger = IntervalTrigger(seconds=int(delta.total_seconds()), start_date=first, timezone=zone)
    return When(trigger, first, recurring=True, description=f"every {say_duration(delta)}")


def _later(now: datetime, delta: timedelta) -> datetime:
    # Python adds a timedelta to an aware datetime on the wall clock; "in 10 minutes" means
    # ten real minutes, also across a daylight-saving change, so add in UTC.
    return (now.astimezone(UTC) + delta).astimezone(_zone(now))


def _zone(now: datetime) -> ZoneInfo:
    assert isinstance(now.tzinfo, ZoneInfo)
    return now.tzinfo
