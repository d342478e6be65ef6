"""The audit trail: who did what privileged thing, when, and how it went.

Entries live in team memory (namespace `ops:audit`), keyed by time; beyond
`ops.audit_keep` the oldest are deleted, so the trail never grows without bound. They
are written with the command's other writes, so the person's reply goes
out only once the entry is on disk.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from core.context import Context

AUDIT_NS = "ops:audit"
_MAX_TEXT = 300


@dataclass(frozen=True)
class AuditEntry:
    at: float
    who: str
    """`<input>:<user>`."""
    action: str
    target: str
    outcome: str

    @classmethod
    def from_json(cls, raw: Any) -> AuditEntry | None:
        if not isinstance(raw, dict):
            return None
        try:
            return cls(
                float(raw["at"]),
                str(raw["who"]),
                str(raw["action"]),
                str(raw["target"]),
                str(raw["outcome"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def record(ctx: Context, action: str, target: str, outcome: str) -> None:
    """Write an entry for what the person in `ctx` just did."""
    memory = ctx.team_memory(AUDIT_NS)
    now = time.time()
    # Keys sort by time, and two workers writing at once never pick the same key.
    key = f"{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"
    memory.set(
        key,
        {
            "at": now,
            "who": ctx.owner,
            "action": action,
            "target": target[:_MAX_TEXT],
            "outcome": outcome[:_MAX_TEXT],
        },
    )
    keys = memory.keys()
    for old in keys[: max(0, len(keys) - ctx.settings.ops.audit_keep)]:
        memory.delete(old)


def latest(ctx: Context, count: int) -> list[AuditEntry]:
    """The newest `count` entries, newest first."""
    memory = ctx.team_memory(AUDIT_NS)
    found = []
    for key in reversed(memory.keys()[-count:]):
        entry = AuditEntry.from_json(memory.get(key))
        if entry is not None:
            found.append(entry)
    return found
