"""Incidents: declare one in a dialog, list the open ones, resolve one.

Incidents belong to the team: namespace `incidents`, owner `team`, so everyone sees one
list from any input. Keys: `next_id` (the next `INC-<n>`), `open` (open ids, oldest
first, so listing reads one key) and `INC-<n>` (the incident).
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from typing import Any

from commands.base import command
from commands.builtin.profile import one_line
from commands.dialogs import Answers, Ask, Confirm, Invalid, dialog
from core.context import Context, MemoryView

INCIDENTS_NS = "incidents"
MAX_SERVICE_CHARS = 100
MAX_SUMMARY_CHARS = 200
MAX_OPEN = 1000
"""Open incidents at most: the `open` list stays one small value (well under 32 KiB)."""
_SEVERITY = re.compile(r"^(?:sev(?:erity)?\s*|s|p)?([1-3])$", re.IGNORECASE)
_ID = re.compile(r"^(?:inc-?)?(\d{1,9})$", re.IGNORECASE)

# Numbering and the `open` list are read-modify-write on team-wide keys, and two people
# may confirm an incident at the same moment on two worker threads: this lock keeps
# them from taking the same number or dropping each other's id. (One bot process owns
# the store, so a process-wide lock is enough.)
_BOOK = threading.Lock()


def severity(text: str) -> int:
    found = _SEVERITY.match(text.strip())
    if found is None:
        raise Invalid("Severity is 1, 2 or 3 (1 is the worst).")
    return int(found.group(1))


def _summary(answers: Answers) -> str:
    return (
        f"Severity {answers['severity']}, {answers['service']}: {answers['summary']}\n"
        "Record this incident?"
    )


def _when(ctx: Context, timestamp: float) -> str:
    return f"{datetime.fromtimestamp(timestamp, ctx.timezone()):%Y-%m-%d %H:%M %Z}"


def _book(ctx: Context) -> MemoryView:
    return ctx.team_memory(INCIDENTS_NS)


@dialog(
    r"^incident$",
    usage="incident",
    steps=[
        Ask("severity", "How severe is it: 1 (critical), 2 (major) or 3 (minor)?", parse=severity),
        Ask(
            "service",
            "Which service is affected?",
            parse=one_line,
            max_chars=MAX_SERVICE_CHARS,
        ),
        Ask(
            "summary",
            "What is happening, in one line?",
            parse=one_line,
            max_chars=MAX_SUMMARY_CHARS,
        ),
        Confirm("confirmed", _summary, on_no="OK, I did not record it."),
    ],
)
def incident(ctx: Context, answers: Answers) -> str:
    """Declare an incident: I ask its severity, service and summary, then record it."""
    book = _book(ctx)
    event = ctx.event
    with _BOOK:
        still_open = book.get("open", [])
        if len(still_open) >= MAX_OPEN:
            return (
                f"There are already {len(still_open):,} open incidents, so I did not record "
                "this one. Resolve some first (`incidents` lists them)."
            )
        number = int(book.get("next_id", 1))
        incident_id = f"INC-{number}"
        book.set("next_id", number + 1)
        book.set(
            incident_id,
            {
                "id": incident_id,
                "severity": answers["severity"],
                "service": answers["service"],
                "summary": answers["summary"],
                "status": "open",
                "opened_by": f"{event.input}:{event.user}",
                "opened_at": event.timestamp,
                "channel": event.channel,
            },
        )
        book.set("open", [*still_open, incident_id])
    return (
        f"Recorded {incident_id}: severity {answers['severity']}, {answers['service']}: "
        f"{answers['summary']}\nSay `resolve {incident_id}` when it is over."
    )


def _line(ctx: Context, record: dict[str, Any]) -> str:
    who = str(record.get("opened_by", "")).partition(":")[2] or "?"
    return (
        f"{record['id']} (sev {record['severity']}) {record['service']}: {record['summary']} "
        f"- opened by {who}, {_when(ctx, float(record['opened_at']))}"
    )


@command(r"^incidents$", usage="incidents", description="List the open incidents.")
def incidents(ctx: Context) -> str:
    book = _book(ctx)
    ids = book.get("open", [])
    records = [book.get(incident_id) for incident_id in ids]
    lines = [_line(ctx, record) for record in records if isinstance(record, dict)]
    if not lines:
        return "No open incidents. Say `incident` to declare one."
    return "\n".join([f"Open incidents ({len(lines)}):", *lines])


@command(
    r"^resolve(?:\s+(?P<ref>.*))?$",
    usage="resolve <id>",
    description="Close an open incident, e.g. `resolve INC-3`.",
)
def resolve(ctx: Context, ref: str | None) -> str:
    found = _ID.match((ref or "").strip())
    if found is None:
        return "Usage: resolve <id>, for example `resolve INC-3`. Say `incidents` for the list."
    incident_id = f"INC-{int(found.group(1))}"
    book = _book(ctx)
    event = ctx.event
    with _BOOK:
        record = book.get(incident_id)
        if not isinstance(record, dict):
            return f"There is no incident {incident_id}. Say `incidents` for the open ones."
        if record.get("status") == "resolved":
            who = str(record.get("resolved_by", "")).partition(":")[2] or "?"
            when = _when(ctx, float(record.get("resolved_at", 0)))
            return f"{incident_id} is already resolved (by {who}, {when})."
        record.update(
            status="resolved",
            resolved_by=f"{event.input}:{event.user}",
            resolved_at=event.timestamp,
        )
        book.set(incident_id, record)
        book.set("open", [i for i in book.get("open", []) if i != incident_id])
    return f"Resolved {incident_id} ({record['service']}: {record['summary']})."
