"""Built-in commands for later: reminders, deferred commands, listing and cancelling.

    remind me in 10 minutes to check the backups      every day at 8:00 run time
    reminders (alias: jobs)                             cancel k3x9pq

Times are read and shown in the person's time zone, else `bot.timezone` (the forms:
`commands.when.FORMS`). The jobs themselves live in the scheduler actor.
"""

from __future__ import annotations

from datetime import datetime

from commands.base import command
from commands.ops import audit
from commands.when import FORMS, When, WhenError, parse_when
from core.context import Context, SchedulingRefused
from core.jobs import JobKind
from core.timefmt import format_time

MAX_TEXT_CHARS = 1000
"""Longest reminder text or command kept, so `reminders` stays readable."""
_SHOWN_CHARS = 60


def _when(ctx: Context, spec: str) -> When:
    zone = ctx.timezone()
    return parse_when(
        spec, datetime.now(zone), min_interval=ctx.settings.scheduler.min_interval_seconds
    )


def _confirm(ctx: Context, what: str, when: When, job_id: str) -> str:
    zone = ctx.timezone()
    first = format_time(when.first, zone)
    if zone.key != when.first.astimezone(zone).tzname():
        first += f" ({zone.key})"
    timing = f"{when.description}, first on {first}" if when.recurring else f"on {first}"
    # A recurring job keeps the zone it was set in (its trigger computes every run there);
    # a one-off is one instant, whatever zone it is shown in.
    keeps = (
        f" Its times stay in {zone.key}, also if you change your time zone."
        if when.recurring
        else ""
    )
    return (
        f"OK, {what} {timing}.{keeps} "
        f"Job id {job_id}: `cancel {job_id}` cancels it, `reminders` lists your jobs."
    )


def _too_long(text: str, what: str) -> str | None:
    if len(text) > MAX_TEXT_CHARS:
        return f"That {what} is {len(text):,} characters; I keep up to {MAX_TEXT_CHARS:,}."
    return None


def _forms() -> str:
    return ", ".join(f"`{form}`" for form in FORMS)


@command(
    r"^remind\s+me\b(?:\s+(?P<spec>.*))?$",
    usage="remind me <when> to <text>",
    description="Remind you of something later, or every day, weekday, N hours...",
)
def remind(ctx: Context, spec: str | None) -> str:
    when_text, sep, text = (spec or "").partition(" to ")
    text = text.strip()
    if not sep or not text or not when_text.strip():
        return (
            "Usage: remind me <when> to <text>, e.g. `remind me in 10 minutes to check the "
            f"backups`. <when> is one of: {_forms()}."
        )
    if problem := _too_long(text, "reminder"):
        return problem
    try:
        when = _when(ctx, when_text)
        job = ctx.schedule_reminder(when, text)
    except (WhenError, SchedulingRefused) as exc:
        return str(exc)
    return _confirm(ctx, "I'll remind you", when, job.id)


@command(
    r"^(?P<spec>(?:in|at|on|today|tomorrow|every|next)(?:\s+\S+)+?)\s+run\s+(?P<text>.+)$",
    name="run-later",
    usage="<when> run <command>",
    description="Run a command later, as you (`in 5 minutes run ping`).",
)
def run_later(ctx: Context, spec: str, text: str) -> str:
    text = text.strip()
    if problem := _too_long(text, "command"):
        return problem
    if ctx.registry.find(text) is None:
        return f"I don't know the command `{text[:_SHOWN_CHARS]}`, so I won't schedule it."
    try:
        when = _when(ctx, spec)
        job = ctx.schedule_command(when, text)
    except (WhenError, SchedulingRefused) as exc:
        return str(exc)
    return _confirm(ctx, f"I'll run `{text[:_SHOWN_CHARS]}`", when, job.id)


@command(
    r"^(?:reminders|jobs)$",
    name="reminders",
    usage="reminders (or jobs)",
    description="List your pending reminders and deferred commands.",
)
def reminders(ctx: Context) -> str:
    try:
        jobs = ctx.jobs()
    except SchedulingRefused as exc:
        return str(exc)
    if not jobs:
        return "You have no pending reminders or jobs. Try `remind me in 10 minutes to stretch`."
    zone = ctx.timezone()
    lines = [f"Your jobs ({len(jobs)}), times in {zone.key}:"]
    for job in jobs:
        spec = job.spec
        shown = spec.text if len(spec.text) <= _SHOWN_CHARS else spec.text[:_SHOWN_CHARS] + "…"
        what = shown if spec.kind is JobKind.REMIND else f"run `{shown}`"
        nxt = format_time(job.next_run, zone) if job.next_run else "now"
        repeat = f" [{spec.schedule}]" if spec.schedule.startswith("every") else ""
        lines.append(f"  {job.id}  {nxt}  {what}{repeat}")
    lines.append("`cancel <id>` cancels one.")
    return "\n".join(lines)


@command(
    r"^cancel(?:\s+(?P<job_id>\S+))?$",
    name="cancel",
    usage="cancel <id>",
    description="Cancel one of your reminders or jobs by its id (admins: anyone's on this input).",
)
def cancel(ctx: Context, job_id: str | None) -> str:
    if not job_id:
        return (
            "No dialog is open, so there is nothing to stop. To cancel a reminder or job: "
            "`cancel <id>` (`reminders` lists your jobs and their ids)."
        )
    try:
        result = ctx.cancel_job(job_id)
    except SchedulingRefused as exc:
        return str(exc)
    shown = job_id[:20]
    if result.outcome == "refused":
        audit.record(ctx, "cancel", f"job {shown}", "refused: not theirs")
        return f"Job {shown} is not yours; only its owner or an admin can cancel it."
    if result.job is None:
        return f"There is no pending job {shown}. Say `reminders` to see yours."
    spec = result.job.spec
    shown = spec.text[:_SHOWN_CHARS]
    what = f"reminder `{shown}`" if spec.kind is JobKind.REMIND else f"`{shown}`"
    whose = "" if spec.owner == ctx.owner else f" (of {spec.event.user})"
    if whose:  # an admin cancelling someone else's job is a privileged action
        audit.record(ctx, "cancel", f"job {result.job.id} of {spec.owner}", "cancelled")
    return f"Cancelled job {result.job.id}{whose}: {what}, {spec.schedule}."
