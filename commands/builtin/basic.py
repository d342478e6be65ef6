"""Built-in commands: ping, echo, help, time, whoami, timezone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commands.base import command
from core.context import REMINDERS_TO, Context
from core.event import Event


@command(
    r"^ping$", usage="ping", description="Check that Harken is alive: it answers pong.", quick=True
)
def ping() -> str:
    return "pong"


@command(
    r"^echo(?:\s+(?P<text>.*))?$", usage="echo <text>", description="Say <text> back.", quick=True
)
def echo(text: str | None) -> str:
    return text if text else "echo what?"


@command(
    r"^help(?:\s+(?P<name>\S+))?$",
    usage="help [<command>]",
    description="List every command, or show how to use one.",
)
def help(ctx: Context, name: str | None) -> str:
    registry = ctx.registry
    if name:
        cmd = registry.by_name(name)
        if cmd is None:
            return f"There is no command called `{name}`. Say `help` to list them all."
        admin = " (admins only)" if cmd.admin_only else ""
        return f"{cmd.usage}{admin}\n{cmd.description}"
    lines = ["Commands:"]
    for cmd in sorted(registry.commands(), key=lambda c: c.name):
        if cmd.hidden:
            continue
        admin = " (admins only)" if cmd.admin_only else ""
        lines.append(f"  {cmd.usage} - {cmd.description}{admin}")
    lines.append("Say `help <command>` for one of them.")
    return "\n".join(lines)


@command(r"^time$", usage="time", description="The current date and time in your time zone.")
def time(ctx: Context) -> str:
    zone = ctx.timezone()
    now = datetime.now(zone)
    return f"It is {now:%A %d %B %Y, %H:%M:%S} in {zone.key} ({now:%Z}, UTC{now:%z})."


@command(
    r"^whoami$",
    usage="whoami",
    description="What Harken knows about you: id, name, input, channel, time zone, "
    "linked accounts.",
)
def whoami(ctx: Context, event: Event) -> str:
    stored_zone = ctx.profile.get("timezone")
    zone = (
        f"{stored_zone}"
        if stored_zone
        else f"{ctx.settings.bot.timezone} (the default; set yours with `timezone <Area/City>`)"
    )
    # What the person asked to be called (`profile`) wins over what the input says.
    name = ctx.profile.get("display_name") or event.display_name or event.user
    accounts = ctx.identity.accounts()
    goes = ctx.profile.get(REMINDERS_TO)
    return "\n".join(
        line
        for line in [
            f"You are {event.user} ({name}).",
            f"Input: {event.input}",
            f"Channel: {event.channel or '(direct)'}"
            + (f", thread {event.thread}" if event.thread else ""),
            f"Time zone: {zone}",
            f"Linked accounts: {', '.join(accounts)} (one person: {ctx.identity.owner})"
            if len(accounts) > 1
            else "",
            f"Reminders go to: {goes}" if isinstance(goes, str) and goes != "here" else "",
            "You are an admin here." if ctx.is_admin else "",
        ]
        if line
    )


@command(
    r"^(?:timezone|tz)(?:\s+(?P<zone>\S+))?$",
    name="timezone",
    usage="timezone [<Area/City>]",
    description="Show your time zone, or set it (an IANA name such as Europe/Paris).",
)
def timezone(ctx: Context, zone: str | None) -> str:
    if not zone:
        return f"Your time zone is {ctx.timezone().key}."
    try:
        resolved = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return (
            f"`{zone}` is not a time zone I know. Use an IANA name such as "
            "Europe/Paris, America/New_York or UTC."
        )
    ctx.profile.set("timezone", resolved.key)
    return f"Your time zone is now {resolved.key}."
