"""Reading times people write: `in 10 minutes`, `at 17:30`, `every weekday at 9:00`.

`parse_when(text, now)` turns one of `FORMS` into a `When`: the APScheduler trigger, its
first firing and a description to confirm. Times are wall-clock times in the zone of
`now` (the person's), so a daily 9:00 stays 9:00 across daylight-saving changes.
Anything else raises `WhenError`, whose message is for the person; `parse_when`
depends on nothing but its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from core.jobs import When
from core.timefmt import format_time

__all__ = ["FORMS", "MAX_AHEAD", "MAX_SPEC_CHARS", "When", "WhenError", "parse_when"]

FORMS = (
    "in 10 minutes",
    "in 1 hour 30 minutes",
    "in half an hour",
    "in 2 weeks",
    "at 17:30",
    "at 9am",
    "tomorrow at 9am",
    "at 17:30 tomorrow",
    "on friday at 16:00",
    "next monday at 9:00",
    "on Jan 15 at 10:00",
    "on 2027-01-15 at 10:00",
    "every day at 8:00",
    "every weekday at 9:00",
    "every monday at 9:30",
    "every 2 hours",
)
"""Examples of every accepted form, shown to people whose time could not be read."""

MAX_AHEAD = timedelta(days=3650)
"""How far ahead a job may be scheduled: far enough for anyone, and no date overflow."""

MAX_SPEC_CHARS = 200
"""Longest time expression read; the longest useful one is far shorter."""

_UNIT_SECONDS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "wk", "wks", "week", "weeks"), 7 * 86400),
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
_MONTHS = {
    **{
        name: i
        for i, name in enumerate(
            ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
            start=1,
        )
    },
    **{
        name: i
        for i, name in enumerate(
            (
                "january",
                "february",
                "march",
                "april",
                "may",
                "june",
                "july",
                "august",
                "september",
                "october",
                "november",
                "december",
            ),
            start=1,
        )
    },
    "sept": 9,
}
# Every pattern here is anchored and has no nested repetition, so matching is linear.
_TOKEN = re.compile(r" ?(\d+(?:\.\d+)?|[a-z]+|,)")
_CLOCK = r"noon|midday|midnight|\d{1,2}(?:[:.h]\d{2})?(?: ?(?:am|pm|a\.m\.|p\.m\.))?"
_TIME = re.compile(
    r"^(?:(?P<word>noon|midday|midnight)|"
    r"(?P<h>\d{1,2})(?:[:.h](?P<m>\d{2}))?\s*(?P<ampm>am|pm|a\.m\.|p\.m\.)?)$"
)
_CLOCK_FIRST = re.compile(rf"^(?P<clock>{_CLOCK})(?: (?P<day>.+))?$")
_ORDINAL = r"(?:st|nd|rd|th)?"
_MONTH_DAY = re.compile(
    rf"^(?:(?P<d1>\d{{1,2}}){_ORDINAL} (?P<m1>[a-z]+)\.?"
    rf"|(?P<m2>[a-z]+)\.? (?P<d2>\d{{1,2}}){_ORDINAL})"
    r"(?:,? (?P<year>\d{4}))?$"
)
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class WhenError(ValueError):
    """A time Harken cannot read or will not schedule; the message says why."""


def parse_when(text: str, now: datetime, *, min_interval: float = 60.0) -> When:
    """Read a time expression, relative to `now` (aware, in the person's zone)."""
    if now.tzinfo is None or not isinstance(now.tzinfo, ZoneInfo):
        raise ValueError("now must carry the person's ZoneInfo")
    zone = now.tzinfo
    spec = " ".join(text.lower().split())
    if len(spec) > MAX_SPEC_CHARS:
        raise _unreadable(text)
    if spec.startswith("in "):
        delta = _duration(spec[3:])
        return _once(_later(now, delta), now, f"in {_say_duration(delta)}")
    if spec.startswith("every "):
        return _every(spec[6:], now, zone, min_interval)
    if spec.startswith("at "):
        found = _CLOCK_FIRST.match(spec[3:])
        if found is None:
            raise _bad_clock(spec[3:])
        clock, day_text = found.group("clock"), found.group("day") or ""
    elif " at " in spec:
        day_text, _, clock = spec.partition(" at ")
        day_text = day_text.removesuffix(",")  # `on monday, at 9:00`
    else:
        if _day_rule(spec, now) is not None:
            raise WhenError(f"Say at what time, e.g. `{spec} at 9am`.")
        raise _unreadable(text)
    hour, minute = _clock(clock)
    rule = _day_rule(day_text, now) if day_text else _today_or_tomorrow(now)
    if rule is None:
        raise _bad_date(day_text)
    return _once(rule(hour, minute), now, f"at {hour:02d}:{minute:02d}")


def _unreadable(text: str) -> WhenError:
    shown = text if len(text) <= 60 else text[:60] + "…"
    return WhenError(
        f"I can't read the time `{shown}`. Try one of: " + ", ".join(f"`{f}`" for f in FORMS) + "."
    )


def _too_far() -> WhenError:
    return WhenError(f"That is too far ahead: I schedule up to {MAX_AHEAD.days} days ahead.")


# --- durations: `in 1 hour 30 minutes`, `in half an hour`, `every 2 hours` ---------------


def _duration(spec: str) -> timedelta:
    tokens = _tokens(spec)
    if tokens is None:
        raise _unreadable("in " + spec)
    seconds = Fraction(0)
    i = 0
    while i < len(tokens):
        if i:  # between terms: `1 hour 30 minutes`, `2 days, 3 hours`, `2 days and 3 hours`
            i += tokens[i] == ","
            i += i < len(tokens) and tokens[i] == "and"
        amount, i = _amount(tokens, i)
        if amount is None:
            raise _unreadable("in " + spec)
        amount, i = _and_a_half(tokens, i, amount)  # `2 and a half hours`
        unit = tokens[i] if i < len(tokens) else ""
        if not unit.isalpha():
            raise _unreadable("in " + spec)
        size = _UNIT_SECONDS.get(unit)
        if size is None:
            raise WhenError(
                f"`{unit[:20]}` is not a unit I know: use seconds, minutes, hours, days or weeks."
            )
        amount, i = _and_a_half(tokens, i + 1, amount)  # `an hour and a half`
        seconds += amount * size
    if seconds > Fraction(int(MAX_AHEAD.total_seconds())):
        raise _too_far()
    whole = round(seconds)
    if whole <= 0:
        raise WhenError("That is no time at all: give a duration of at least one second.")
    return timedelta(seconds=whole)


def _tokens(spec: str) -> list[str] | None:
    """Numbers, words and commas, or None if anything else is in `spec`."""
    tokens, at = [], 0
    while at < len(spec):
        found = _TOKEN.match(spec, at)
        if found is None:
            return None
        tokens.append(found.group(1))
        at = found.end()
    return tokens


def _amount(tokens: list[str], i: int) -> tuple[Fraction | None, int]:
    """The amount at `tokens[i]` (`3`, `1.5`, `an`, `half an`) and the index after it."""
    word = tokens[i] if i < len(tokens) else ""
    if word[:1].isdigit():
        return Fraction(word), i + 1
    if word in ("a", "an"):
        return Fraction(1), i + 1
    if word == "half":
        has_article = i + 1 < len(tokens) and tokens[i + 1] in ("a", "an")
        return Fraction(1, 2), i + 2 if has_article else i + 1
    return None, i


def _and_a_half(tokens: list[str], i: int, amount: Fraction) -> tuple[Fraction, int]:
    if tokens[i : i + 3] in (["and", "a", "half"], ["and", "an", "half"]):
        return amount + Fraction(1, 2), i + 3
    return amount, i


def _say_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    out = []
    for name, size in (
        ("week", 7 * 86400),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
        ("second", 1),
    ):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count} {name}{'s' if count != 1 else ''}")
    return " ".join(out)


# --- times of day and days -----------------------------------------------------------


def _bad_clock(spec: str) -> WhenError:
    return WhenError(
        f"I can't read the time of day `{spec.strip()[:40]}`: use 17:30, 9am or 9:30pm."
    )


def _clock(spec: str) -> tuple[int, int]:
    match = _TIME.match(spec.strip())
    if match is None:
        raise _bad_clock(spec)
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


def _bad_date(word: str) -> WhenError:
    return WhenError(
        f"I can't read the date `{word[:40]}`: use 2027-01-15, Jan 15, tomorrow or a weekday name."
    )


DayRule = Callable[[int, int], datetime]
"""Given a time of day (hour, minute), the moment it means on the day a person named."""


def _day_rule(text: str, now: datetime) -> DayRule | None:
    """How to place a time on the day `text` names; None if `text` names no day at all.

    Raises `WhenError` for what looks like a date but is none (`Feb 30`, `2027-13-01`).
    """
    words = text.removeprefix("on ")
    if words == "today":
        return _on(now.date(), now)
    if words == "tomorrow":
        return _on(now.date() + timedelta(days=1), now)
    first, _, rest = words.partition(" ")
    if first in ("next", "this") and rest in _WEEKDAY_NAMES:
        return _weekday(_WEEKDAY_NAMES[rest], now, after_today=first == "next")
    if words in _WEEKDAY_NAMES:
        return _weekday(_WEEKDAY_NAMES[words], now, after_today=False)
    if _ISO_DATE.match(words):
        try:
            return _on(date.fromisoformat(words), now)
        except ValueError:
            raise _bad_date(words) from None
    found = _MONTH_DAY.match(words)
    if found is not None:
        month = _MONTHS.get(found.group("m1") or found.group("m2"))
        day = int(found.group("d1") or found.group("d2"))
        year = found.group("year")
        try:
            if month is None:
                raise ValueError("not a month")
            # A leap year, so that Feb 29 is a date; its year comes later.
            day_in_year = date(int(year) if year else 2000, month, day)
        except ValueError:
            raise _bad_date(words) from None
        return _on(day_in_year, now) if year else _yearly(month, day, now)
    if words != text or any(c.isdigit() for c in words):
        raise _bad_date(words)
    return None


def _on(day: date, now: datetime) -> DayRule:
    return lambda hour, minute: _local(day, hour, minute, now)


def _today_or_tomorrow(now: datetime) -> DayRule:
    def rule(hour: int, minute: int) -> datetime:
        moment = _local(now.date(), hour, minute, now)
        if moment <= now:
            moment = _local(now.date() + timedelta(days=1), hour, minute, now)
        return moment

    return rule


def _weekday(index: int, now: datetime, *, after_today: bool) -> DayRule:
    """The next such weekday whose time is still ahead: today included unless
    `after_today` (`next friday`)."""

    def rule(hour: int, minute: int) -> datetime:
        ahead = (index - now.weekday()) % 7 or (7 if after_today else 0)
        moment = _local(now.date() + timedelta(days=ahead), hour, minute, now)
        if moment <= now:
            moment = _local(now.date() + timedelta(days=ahead + 7), hour, minute, now)
        return moment

    return rule


def _yearly(month: int, day: int, now: datetime) -> DayRule:
    """The next time a date without a year comes round (Feb 29: the next leap year's)."""

    def rule(hour: int, minute: int) -> datetime:
        for year in range(now.year, now.year + 9):
            try:
                moment = _local(date(year, month, day), hour, minute, now)
            except ValueError:
                continue  # Feb 29 in a common year
            if moment > now:
                return moment
        raise _too_far()

    return rule


def _local(day: date, hour: int, minute: int, now: datetime) -> datetime:
    # A day far outside what can be scheduled is refused before it meets a time zone:
    # 0001-01-01 00:00 in a zone east of UTC is before the first datetime Python has.
    ahead = (day - now.date()).days
    if ahead < -1:
        raise WhenError(
            f"That time is in the past: it was {day.isoformat()} {hour:02d}:{minute:02d}."
        )
    if ahead > MAX_AHEAD.days + 1:
        raise _too_far()
    # A wall-clock time skipped by a daylight-saving change (02:30 on the spring-forward
    # night) is read with the offset before the change; the round trip through UTC turns
    # it into the real time it falls on (03:30), which is what the reply then shows.
    zone = _zone(now)
    naive = datetime(day.year, day.month, day.day, hour, minute)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)


def _once(moment: datetime, now: datetime, said: str) -> When:
    if moment <= now:
        raise WhenError(f"That time is in the past: it was {format_time(moment, _zone(now))}.")
    if moment - now > MAX_AHEAD:
        raise _too_far()
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
    counted = spec[:1].isdigit() or spec.startswith(("a ", "an ", "half "))
    delta = _duration(spec if counted else f"1 {spec}")
    if delta.total_seconds() < min_interval:
        shortest = _say_duration(timedelta(seconds=min_interval))
        raise WhenError(f"That is too often: the shortest interval is {shortest}.")
    first = _later(now, delta)
    trigger = IntervalTrigger(seconds=int(delta.total_seconds()), start_date=first, timezone=zone)
    return When(trigger, first, recurring=True, description=f"every {_say_duration(delta)}")


def _later(now: datetime, delta: timedelta) -> datetime:
    # Python adds a timedelta to an aware datetime on the wall clock; "in 10 minutes" means
    # ten real minutes, also across a daylight-saving change, so add in UTC.
    return (now.astimezone(UTC) + delta).astimezone(_zone(now))


def _zone(now: datetime) -> ZoneInfo:
    assert isinstance(now.tzinfo, ZoneInfo)
    return now.tzinfo
