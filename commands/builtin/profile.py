"""The `profile` dialog: what to call you, and your time zone.

Both go to the person's `profile` memory (`display_name`, `timezone`), which `whoami`,
`time` and reminders read.
"""

from __future__ import annotations

import threading
import zoneinfo

from commands.dialogs import Answers, Ask, Invalid, dialog
from core.context import Context

MAX_NAME_CHARS = 80


def one_line(text: str) -> str:
    if "\n" in text:
        raise Invalid("Please keep it to one line.")
    return " ".join(text.split())


_ZONE_NAMES_LOCK = threading.Lock()
_zone_table: dict[str, str] | None = None


def _zone_names() -> dict[str, str]:
    """Lower-case name -> canonical name of every IANA time zone.

    Read once under a lock (listing the zone files is slow: first callers wait for one
    read), then without one, as every `profile` answer passes here.
    """
    global _zone_table  # noqa: PLW0603
    table = _zone_table
    if table is None:
        with _ZONE_NAMES_LOCK:
            if _zone_table is None:
                _zone_table = {name.lower(): name for name in zoneinfo.available_timezones()}
            table = _zone_table
    return table


def time_zone(text: str) -> str:
    """An IANA time zone name, in its canonical spelling; anything else is refused."""
    name = text.strip()
    canonical = _zone_names().get(name.lower())
    if canonical is not None:
        return canonical
    shown = name if len(name) <= 60 else name[:60] + "…"
    raise Invalid(
        f"`{shown}` is not a time zone. Please give an IANA time zone name such as "
        "Europe/Paris, America/New_York, Asia/Tokyo or UTC."
    )


@dialog(
    r"^profile$",
    usage="profile",
    steps=[
        Ask("name", "What should I call you?", parse=one_line, max_chars=MAX_NAME_CHARS),
        Ask(
            "timezone",
            "What is your time zone? An IANA name such as Europe/Paris or America/New_York.",
            parse=time_zone,
        ),
    ],
)
def profile(ctx: Context, answers: Answers) -> str:
    """Tell me what to call you and your time zone (I ask, you answer)."""
    ctx.profile.set("display_name", answers["name"])
    ctx.profile.set("timezone", answers["timezone"])
    return (
        f"Thanks, {answers['name']}. I'll give you times in {answers['timezone']}. "
        "Say `whoami` to check."
    )
