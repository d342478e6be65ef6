"""The bot's status as `status` shows it: counters since start and what is up or down.

Plain values, filled in by the actors (actors/metrics.py counts, actors/health.py asks
the owners of the gauges) and read by the `status` command through `Context.status()`,
so that a command can show the bot's health without importing the actor system.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["LATENCY_BUCKETS", "LatencyCounts", "MetricsSnapshot", "StatusReport"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the command latency histogram; +Inf is implied."""


@dataclass(frozen=True)
class LatencyCounts:
    """One command's latency histogram: calls per bucket (not cumulative; the last is
    +Inf) and the seconds they took in all."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0


@dataclass(frozen=True)
class MetricsSnapshot:
    messages_in: dict[str, int]
    messages_out: dict[str, int]
    calls: dict[str, int]
    errors: dict[str, int]
    refusals: dict[str, int]
    latency: dict[str, LatencyCounts]
    input_states: dict[str, str]


@dataclass(frozen=True)
class StatusReport:
    uptime_seconds: float
    inputs: dict[str, str]
    """Input name -> state: up, connected, disconnected, down, unknown."""
    down: list[str]
    """What is down, for people: `memory`, `router`, `input slack (disconnected)`."""
    active_conversations: int | None
    open_dialogs: int | None
    pending_jobs: int | None
    metrics: MetricsSnapshot

    @property
    def healthy(self) -> bool:
        return not self.down
