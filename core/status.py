"""The bot's status as `status` shows it: counters since start and what is up or down.

Plain values, filled in by the actors (actors/metrics.py counts, actors/health.py asks
the owners of the gauges) and read by the `status` command through `Context.status()`,
so that a command can show the bot's health without importing the actor system.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "LATENCY_BUCKETS",
    "ClusterView",
    "LatencyCounts",
    "MetricsSnapshot",
    "ProcessView",
    "StatusReport",
]

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
class ProcessView:
    """One process of a cluster, as the process table has it."""

    name: str
    host: str
    pid: int
    up_seconds: float
    heartbeat_seconds_ago: float


@dataclass(frozen=True)
class ClusterView:
    """Several processes on one job store: who they are, who leads, the lease's ages."""

    name: str
    """This process."""
    is_leader: bool
    leader: str | None
    """The holder of an unexpired lease; None while nobody holds one."""
    epoch: int
    lease_age_seconds: float | None
    """Since the holder took the lease (None: never taken)."""
    renewed_seconds_ago: float | None
    expires_in_seconds: float | None
    processes: tuple[ProcessView, ...]

    def lines(self) -> list[str]:
        """The view for people (`status`, `/healthz`)."""
        leader = self.leader or "nobody (the lease is free)"
        lines = [
            f"Cluster: this process is {self.name}"
            f" ({'the leader' if self.is_leader else 'a follower'}); leader: {leader}"
            + (
                f", lease epoch {self.epoch}, held {self.lease_age_seconds:.0f} s, renewed"
                f" {self.renewed_seconds_ago:.1f} s ago, expires in"
                f" {self.expires_in_seconds:.1f} s."
                if self.leader
                and self.lease_age_seconds is not None
                and self.renewed_seconds_ago is not None
                and self.expires_in_seconds is not None
                else "."
            )
        ]
        for process in self.processes:
            lines.append(
                f"  {process.name} on {process.host} (pid {process.pid}): up"
                f" {process.up_seconds:.0f} s, heartbeat {process.heartbeat_seconds_ago:.1f} s"
                " ago" + (" (leader)" if process.name == self.leader else "")
            )
        return lines


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
    cluster: ClusterView | None = None
    """With `[cluster] enabled`: the processes and the lease, as the database has them."""

    @property
    def healthy(self) -> bool:
        return not self.down
