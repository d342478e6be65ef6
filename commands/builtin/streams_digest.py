"""The `digest` stream: "email me a summary of #ops every weekday at 18:00".

    [streams.digest]
    channel = "slack:C0OPS"          # <input>:<channel> whose messages are collected
    recipient = "oncall@example.org"
    at = "every weekday at 18:00"    # in bot.timezone, as `remind` reads times
    max_messages = 200               # kept until sent; the oldest make way beyond

Each message said in the channel (to the bot or not) is written to the stream's memory
(owner `stream:digest`, one key per message, at most `max_messages`), so a restart
loses nothing written. Sending is a recurring job of the scheduler, set up when the
stream starts (and replaced when `at` changes), which runs the hidden command
`digest-send` as the stream: it checks every service (as `health report` does), mails
the messages and the table through the email input, then forgets what it sent. A job
missed while Harken was down runs once when it is back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from commands.base import command
from commands.builtin.reports import EMAIL_INPUT, service_table
from commands.builtin.streams_relay import room
from commands.ops.checks import DOWN, SLOW, UP, check_all
from commands.ops.registry import SERVICES_NS, ConfiguredRegistry
from commands.streams import StreamContext, Subscription, stream
from commands.when import parse_when
from config.rules import ConfigError
from core.context import Context, SchedulingRefused, SendRefused
from core.event import Event, EventType
from core.timefmt import format_time

SEND_COMMAND = "digest-send"
_MESSAGE_PREFIX = "m"
_DROPPED_KEY = "dropped"
_TEXT_CHARS = 500


@dataclass(frozen=True, kw_only=True)
class DigestOptions:
    channel: str = field(default="", metadata={"required": True})
    """Whose messages: `<input>:<channel>` (`slack:C0OPS`, `irc:#ops`)."""
    recipient: str = field(default="", metadata={"required": True})
    """The email address the digest goes to."""
    at: str = "every weekday at 18:00"
    """When to send, as `remind ... every ...` reads it, in `bot.timezone`."""
    max_messages: int = 200
    """Messages kept for the next digest; beyond, the oldest make way (and are counted)."""


def _subscription(options: DigestOptions) -> Subscription:
    if "@" not in options.recipient:
        raise ConfigError("streams.digest.recipient", "must be an email address")
    if options.max_messages < 1:
        raise ConfigError("streams.digest.max_messages", "must be at least 1")
    try:
        when = parse_when(options.at, datetime.now(ZoneInfo("UTC")))
    except ValueError as exc:
        raise ConfigError("streams.digest.at", str(exc)) from None
    if not when.recurring:
        raise ConfigError("streams.digest.at", "must repeat, e.g. every weekday at 18:00")
    input_name, channel = room("streams.digest.channel", options.channel)
    return Subscription(inputs=(input_name,), channels=(channel,))


class Digest:
    """Collect a channel's messages and email them, with the services' health, daily."""

    def on_start(self, ctx: StreamContext) -> None:
        options: DigestOptions = ctx.options
        now = datetime.now(ctx.timezone())
        try:
            when = parse_when(options.at, now)
        except ValueError as exc:
            raise ConfigError("streams.digest.at", str(exc)) from None
        wanted = f"{when.description} ({getattr(now.tzinfo, 'key', now.tzinfo)})"
        for job in ctx.jobs():
            if job.spec.text != SEND_COMMAND:
                continue
            if job.spec.schedule == wanted:
                return  # already there (the job store kept it across the restart)
            ctx.cancel_job(job.id)
        try:
            ctx.schedule_command(when, SEND_COMMAND)
        except SchedulingRefused as exc:
            raise RuntimeError(f"could not schedule the digest: {exc}") from None

    def on_event(self, ctx: StreamContext, event: Event) -> None:
        if event.type is not EventType.TEXT:
            return
        options: DigestOptions = ctx.options
        key = f"{_MESSAGE_PREFIX}{time.time_ns():020d}{event.id[-6:]}"
        who = event.display_name or event.user
        ctx.memory.set(key, {"at": event.timestamp, "who": who, "text": event.data[:_TEXT_CHARS]})
        names = ctx.memory.keys()
        kept = sorted(k for k in names if k.startswith(_MESSAGE_PREFIX))
        excess = len(kept) - options.max_messages
        if excess > 0:
            for old in kept[:excess]:
                ctx.memory.delete(old)
            ctx.memory.set(_DROPPED_KEY, int(ctx.memory.get(_DROPPED_KEY, 0)) + excess)


digest = stream(Digest, name="digest", options=DigestOptions, subscribe=_subscription)
"""The stream (a class decorated in place would keep its type for mypy)."""


def _digest_text(ctx: Context, options: DigestOptions, messages: list[Any], dropped: int) -> str:
    zone = ctx.timezone()
    bot = ctx.settings.bot.name
    lines = [f"Digest of {options.channel} from {bot}, {format_time(datetime.now(UTC), zone)}", ""]
    if dropped:
        lines.append(
            f"({dropped} earlier messages were not kept: max_messages is {options.max_messages}.)"
        )
    if messages:
        lines.append(f"{len(messages)} messages:")
        for item in messages:
            at = datetime.fromtimestamp(float(item.get("at", 0)), zone).strftime("%a %H:%M")
            lines.append(f"  {at}  {item.get('who', '?')}: {item.get('text', '')}")
    else:
        lines.append("No messages since the last digest.")
    services = ConfiguredRegistry(ctx.settings.services, ctx.team_memory(SERVICES_NS)).list()
    ops = ctx.settings.ops
    results = check_all(
        services,
        timeout=ops.check_timeout_seconds,
        slow=ops.slow_seconds,
        parallel=ops.max_parallel_checks,
    )
    lines.append("")
    if results:
        up = sum(1 for r in results if r.status in (UP, SLOW))
        down = sum(1 for r in results if r.status == DOWN)
        lines += [f"Services: {up} of {len(results)} up, {down} down.", "", *service_table(results)]
    else:
        lines.append("No services are configured or registered.")
    return "\n".join(lines)


@command(rf"^{SEND_COMMAND}$", name=SEND_COMMAND, usage=SEND_COMMAND, hidden=True)
def digest_send(ctx: Context) -> str:
    """Send the digest now (the digest stream's job runs it)."""
    if "digest" not in ctx.settings.streams:
        return "The digest stream is not configured ([streams.digest])."
    options: DigestOptions = digest.settings_for(ctx.settings)[0]
    names = ctx.memory.keys()
    keys = sorted(k for k in names if k.startswith(_MESSAGE_PREFIX))
    messages = [m for m in (ctx.memory.get(k) for k in keys) if isinstance(m, dict)]
    dropped = int(ctx.memory.get(_DROPPED_KEY, 0))
    text = _digest_text(ctx, options, messages, dropped)
    subject = f"{ctx.settings.bot.name} digest of {options.channel}: {len(messages)} messages"
    try:
        sent = ctx.send(input=EMAIL_INPUT, to=options.recipient, subject=subject, text=text)
    except SendRefused as exc:
        return f"Could not send the digest to {options.recipient}: {exc}. Kept for the next one."
    for key in keys:
        ctx.memory.delete(key)
    if dropped:
        ctx.memory.delete(_DROPPED_KEY)
    if sent.delivered:
        return f"Sent the digest ({len(messages)} messages) to {options.recipient}."
    return f"The digest to {options.recipient} is queued: {sent.note}."
