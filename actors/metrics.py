"""The bot's own counters, for `/metrics`, `/healthz` and the `status` command.

They are prometheus_client metrics on a registry of the bot's own (`Metrics.registry`),
with the process, platform and garbage-collector collectors the library registers on its
global registry by default: several bots in one process (tests, benchmarks) each count
for themselves, and nothing else in the process can clash with their names.

Updated on the message path by whoever already handles the event (the router for
messages in, `Runtime.answer`/`deliver` for messages out, the command worker for calls
and their latency). Each labelled child is looked up once and kept, so an update is the
library's own increment under its lock (BENCHMARKS.md has the cost per message).

Gauges that belong to an actor (active conversations, pending jobs, open dialogs) and
the inputs' states are not kept here as metrics: `actors/health.py` asks their owners
when someone looks.
"""

from __future__ import annotations

import threading
from typing import TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from core.status import LATENCY_BUCKETS, LatencyCounts, MetricsSnapshot

UNKNOWN = "unknown"
UP = "up"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
DOWN = "down"
HEALTHY_STATES = frozenset({UP, CONNECTED, UNKNOWN})
"""Input states `/healthz` counts as up. `unknown`: the input does not report one, and
its actor is alive, which is all that can be known."""


_Child = TypeVar("_Child", Counter, Histogram)


class _Children(dict[str, _Child]):
    """A family's child for each label value, looked up once: `labels()` takes the
    family's lock and builds a key every time, and returns the same child each time, so
    the child is kept (a plain dict read after the first)."""

    def __init__(self, family: _Child) -> None:
        super().__init__()
        self._family: _Child = family

    def __missing__(self, value: str) -> _Child:
        child: _Child = self._family.labels(value)
        self[value] = child
        return child


def _per_label(family: Counter, label: str) -> dict[str, int]:
    return {
        sample.labels[label]: int(sample.value)
        for metric in family.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


class Metrics:
    """Thread-safe counters on a registry of their own; `snapshot()` copies them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        """What `/metrics` exposes: these counters, process, platform and GC metrics,
        and (while the health endpoint runs) the bot's gauges."""
        registry = self.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._in = Counter(
            "harken_messages_in", "Messages received, per input.", ["input"], registry=registry
        )
        self._out = Counter(
            "harken_messages_out", "Messages sent, per input.", ["input"], registry=registry
        )
        self._calls = Counter(
            "harken_commands",
            "Command calls that ran, per command.",
            ["command"],
            registry=registry,
        )
        self._errors = Counter(
            "harken_command_errors",
            "Command calls that raised, per command.",
            ["command"],
            registry=registry,
        )
        self._refusals = Counter(
            "harken_command_refusals",
            "Calls refused by access control, per command.",
            ["command"],
            registry=registry,
        )
        self._latency = Histogram(
            "harken_command_duration_seconds",
            "Time a command's function took.",
            ["command"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._claim_conflicts = Counter(
            "harken_claim_conflicts",
            "Messages another process of the cluster had claimed first, per input.",
            ["input"],
            registry=registry,
        )
        self._claim_failures = Counter(
            "harken_claim_failures",
            "Messages the cluster's database could not be reached to claim, per input:"
            " not answered (Slack: not acknowledged, so Slack delivers them again).",
            ["input"],
            registry=registry,
        )
        self._in_child = _Children(self._in)
        self._out_child = _Children(self._out)
        self._calls_child = _Children(self._calls)
        self._errors_child = _Children(self._errors)
        self._refusals_child = _Children(self._refusals)
        self._latency_child = _Children(self._latency)
        self._states_lock = threading.Lock()
        self._states: dict[str, str] = {}

    def message_in(self, input_name: str) -> None:
        self._in_child[input_name].inc()

    def messages_out(self, input_name: str, count: int) -> None:
        if count:
            self._out_child[input_name].inc(count)

    def command_done(self, name: str, seconds: float, *, failed: bool) -> None:
        self._calls_child[name].inc()
        self._latency_child[name].observe(seconds)
        if failed:
            self._errors_child[name].inc()

    def claim_conflicts(self, input_name: str, count: int) -> None:
        if count:
            self._claim_conflicts.labels(input_name).inc(count)

    def claim_failures(self, input_name: str, count: int) -> None:
        if count:
            self._claim_failures.labels(input_name).inc(count)

    def refused(self, name: str) -> None:
        self._refusals_child[name].inc()

    def set_input_state(self, input_name: str, state: str) -> None:
        with self._states_lock:
            self._states[input_name] = state

    def input_state(self, input_name: str) -> str:
        with self._states_lock:
            return self._states.get(input_name, UNKNOWN)

    def snapshot(self) -> MetricsSnapshot:
        with self._states_lock:
            states = dict(self._states)
        return MetricsSnapshot(
            messages_in=_per_label(self._in, "input"),
            messages_out=_per_label(self._out, "input"),
            calls=_per_label(self._calls, "command"),
            errors=_per_label(self._errors, "command"),
            refusals=_per_label(self._refusals, "command"),
            latency=self._latency_counts(),
            input_states=states,
        )

    def _latency_counts(self) -> dict[str, LatencyCounts]:
        cumulative: dict[str, list[int]] = {}
        totals: dict[str, float] = {}
        for metric in self._latency.collect():
            for sample in metric.samples:
                name = sample.labels["command"]
                if sample.name.endswith("_bucket"):
                    cumulative.setdefault(name, []).append(int(sample.value))
                elif sample.name.endswith("_sum"):
                    totals[name] = sample.value
        return {
            name: LatencyCounts(
                [now - before for before, now in zip([0, *running], running, strict=False)],
                totals.get(name, 0.0),
            )
            for name, running in cumulative.items()
        }
