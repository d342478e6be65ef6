"""The bot's own health: what `status`, `/healthz` and `/metrics` report.

`collect` gathers a `StatusReport`: the counters of `Runtime.metrics`, plus the gauges
their owners keep (active conversations from the router, pending jobs from the scheduler,
open dialogs from memory), each asked with a short timeout so that a stuck actor shows
up as "down" instead of hanging the probe.

`HealthServer` serves it over HTTP on a thread of its own (`[health]`): `/healthz`
answers 200 when the actor system and every configured input are up, 503 naming what is
down; `/metrics` is prometheus_client's exposition of `Metrics.registry` (the counters,
process and GC metrics, and `BotCollector`'s gauges) in the Prometheus text format
0.0.4. HEAD answers both with GET's headers and no body.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pykka
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, Metric, generate_latest
from prometheus_client.core import GaugeMetricFamily

from actors.messages import ClusterStatus, JobCount, MemoryKeys, RouterStats
from actors.metrics import HEALTHY_STATES
from actors.runner import CONVERSATION_NS, STATE_SHARDS
from core.status import StatusReport

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle

logger = logging.getLogger(__name__)

_ASK_TIMEOUT = 2.0


def _ask(handle: Handle | None, message: Any) -> Any:
    if handle is None or not handle.is_alive():
        return None
    try:
        return handle.ask(message, timeout=_ASK_TIMEOUT)
    except (pykka.ActorDeadError, pykka.Timeout):
        return None


def _open_dialogs(memory: Handle) -> int | None:
    total = 0
    for shard in range(STATE_SHARDS):
        keys = _ask(memory, MemoryKeys(CONVERSATION_NS, f"dialogs-{shard:02d}"))
        if keys is None:
            return None
        total += len(keys)
    return total


def collect(runtime: Runtime) -> StatusReport:
    """The bot's state now; asks the router, scheduler and memory (blocks up to seconds:
    call it from a worker or the health server's thread, never from a pooled actor)."""
    down: list[str] = []
    stats = _ask(runtime.router, RouterStats())
    if stats is None:
        down.append("router")
    dialogs = _open_dialogs(runtime.memory)
    if dialogs is None:
        down.append("memory")
    jobs = _ask(runtime.scheduler, JobCount())
    if jobs is None and runtime.scheduler is not None:
        down.append("scheduler")
    cluster = None
    if runtime.settings.cluster.enabled:
        cluster = _ask(runtime.scheduler, ClusterStatus())
        if cluster is None:
            down.append("cluster (its database cannot be read)")
    metrics = runtime.metrics.snapshot()
    inputs: dict[str, str] = {}
    for name in runtime.settings.bot.inputs:
        handle = runtime.inputs.get(name)
        state = metrics.input_states.get(name, "unknown")
        if handle is None or not handle.is_alive():
            state = "down"
        inputs[name] = state
        if state not in HEALTHY_STATES:
            down.append(f"input {name} ({state})")
    return StatusReport(
        uptime_seconds=max(0.0, time.time() - runtime.started_at) if runtime.started_at else 0.0,
        inputs=inputs,
        down=down,
        active_conversations=stats["active_conversations"] if stats else None,
        open_dialogs=dialogs,
        pending_jobs=jobs,
        metrics=metrics,
        cluster=cluster,
    )


class BotCollector:
    """The bot's gauges for `/metrics`, read from `collect` at each scrape (a
    prometheus_client collector, registered on `Metrics.registry` while the health
    endpoint runs). Gauges whose owner did not answer are left out, not reported as 0."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        report = collect(self.runtime)
        yield GaugeMetricFamily(
            "harken_up",
            "1 when the actor system and every input are up.",
            value=1 if report.healthy else 0,
        )
        yield GaugeMetricFamily(
            "harken_uptime_seconds", "Seconds since the bot started.", value=report.uptime_seconds
        )
        inputs = GaugeMetricFamily(
            "harken_input_up", "1 when the input is up (or reports no state).", labels=["input"]
        )
        for name, state in sorted(report.inputs.items()):
            inputs.add_metric([name], 1 if state in HEALTHY_STATES else 0)
        yield inputs
        gauges = (
            (
                "harken_active_conversations",
                "Conversations with a live actor.",
                report.active_conversations,
            ),
            ("harken_open_dialogs", "Dialogs open in memory.", report.open_dialogs),
            (
                "harken_pending_jobs",
                "Reminders, deferred commands and watches pending.",
                report.pending_jobs,
            ),
        )
        for name, help_text, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
        if report.cluster is not None:
            yield GaugeMetricFamily(
                "harken_is_leader",
                "1 when this process holds the cluster's lease and runs due jobs.",
                value=1 if report.cluster.is_leader else 0,
            )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        # What GET would answer, headers only: status, type and length included.
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        runtime = self.server.runtime
        if path == "/healthz":
            report = collect(runtime)
            cluster = (
                "".join(f"{line}\n" for line in report.cluster.lines()) if report.cluster else ""
            )
            if report.healthy:
                self._reply(200, f"ok\n{cluster}".encode(), with_body=with_body)
            else:
                down = "down: " + ", ".join(report.down) + "\n"
                self._reply(503, (down + cluster).encode(), with_body=with_body)
        elif path == "/metrics":
            data = generate_latest(runtime.metrics.registry)
            self._reply(200, data, CONTENT_TYPE_PLAIN_0_0_4, with_body=with_body)
        else:
            self._reply(404, b"not found: try /healthz or /metrics\n", with_body=with_body)

    def _reply(
        self,
        status: int,
        data: bytes,
        kind: str = "text/plain; charset=utf-8",
        *,
        with_body: bool,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit this every few seconds; keep them out of the INFO log.
        logger.debug("health endpoint: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    runtime: Runtime


class HealthServer:
    """`/healthz` and `/metrics` on a thread of its own; `port` is the one bound.

    The port is bound when this is built, before any actor starts, so a port in use
    stops start-up with one clear line instead of leaving a half-started bot.
    """

    def __init__(self, host: str, port: int) -> None:
        self._server = _Server((host, port), _Handler)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )
        self._collector: BotCollector | None = None

    def start(self, runtime: Runtime) -> None:
        self._server.runtime = runtime
        self._collector = BotCollector(runtime)
        runtime.metrics.registry.register(self._collector)
        self._thread.start()
        logger.info("health endpoint on http://%s:%d/healthz and /metrics", self.host, self.port)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        if self._collector is not None:
            self._server.runtime.metrics.registry.unregister(self._collector)
            self._collector = None
