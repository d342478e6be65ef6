"""How Harken says a moment and a delay to a person.

Shared by the commands (`reminders`, `status`, watches) and the actors (the scheduler's
late and missed notes), so both sides say times the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

__all__ = ["format_time", "say_delay"]


def format_time(moment: datetime, zone: tzinfo) -> str:
    """`Thu 15 Jan 2027 10:00 CET`, in `zone`; seconds only when they are not zero."""
    local = moment.astimezone(zone)
    clock = "%H:%M:%S" if local.second else "%H:%M"
    return local.strftime(f"%a %d %b %Y {clock} %Z")


def say_delay(delta: timedelta) -> str:
    """`3 h 2 min`, `45 s`, `1.2 s`: short and exact enough for a person."""
    seconds = delta.total_seconds()
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    days, whole = divmod(whole, 86400)
    hours, whole = divmod(whole, 3600)
    minutes, secs = divmod(whole, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min")]
    shown = [f"{n} {unit}" for n, unit in parts if n]
    if not days and not hours:
        shown.append(f"{secs} s")
    return " ".join(shown[:2])
