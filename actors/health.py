"""The bot's own health: what `status`, `/healthz` and `/metrics` report.

`collect` gathers a `StatusReport`: the counters of `Services.metrics`, plus the gauges
their owners keep (active conversations from the router, pending jobs from the scheduler,
open dialogs from memory), each asked with a short timeout so that a stuck actor shows
up as "down" instead of hanging the probe.

`HealthServer` serves it over HTTP on a thread of its own (`[health]`): `/healthz`
answers 200 when the actor system and every configured input are up, 503 naming what is
down; `/metrics` is the Prometheus text format (version 0.0.4).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pykka

from actors.messages import JobCount, MemoryKeys, RouterStats
from actors.metrics import HEALTHY_STATES, LATENCY_BUCKETS, MetricsSnapshot
from actors.runner import CONVERSATION_NS, STATE_SHARDS

if TYPE_CHECKING:
    from actors.services import Services
    from actors.supervision import Handle

logger = logging.getLogger(__name__)

_ASK_TIMEOUT = 2.0


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


def collect(services: Services) -> StatusReport:
    """The bot's state now; asks the router, scheduler and memory (blocks up to seconds:
    call it from a worker or the health server's thread, never from a pooled actor)."""
    down: list[str] = []
    stats = _ask(services.router, RouterStats())
    if stats is None:
        down.append("router")
    dialogs = _open_dialogs(services.memory)
    if dialogs is None:
        down.append("memory")
    jobs = _ask(services.scheduler, JobCount())
    if jobs is None and services.scheduler is not None:
        down.append("scheduler")
    metrics = services.metrics.snapshot()
    inputs: dict[str, str] = {}
    for name in services.settings.bot.inputs:
        handle = services.inputs.get(name)
        state = metrics.input_states.get(name, "unknown")
        if handle is None or not handle.is_alive():
            state = "down"
        inputs[name] = state
        if state not in HEALTHY_STATES:
            down.append(f"input {name} ({state})")
    return StatusReport(
        uptime_seconds=max(0.0, time.time() - services.started_at) if services.started_at else 0.0,
        inputs=inputs,
        down=down,
        active_conversations=stats["active_conversations"] if stats else None,
        open_dialogs=dialogs,
        pending_jobs=jobs,
        metrics=metrics,
    )


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(report: StatusReport) -> str:
    """The report in the Prometheus text exposition format."""
    m = report.metrics
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    def per(name: str, label: str, values: dict[str, int]) -> None:
        for key, value in sorted(values.items()):
            out.append(f'{name}{{{label}="{_label(key)}"}} {value}')

    family("harken_up", "gauge", "1 when the actor system and every input are up.")
    out.append(f"harken_up {1 if report.healthy else 0}")
    family("harken_uptime_seconds", "gauge", "Seconds since the bot started.")
    out.append(f"harken_uptime_seconds {report.uptime_seconds:.3f}")
    family("harken_input_up", "gauge", "1 when the input is up (or reports no state).")
    for name, state in sorted(report.inputs.items()):
        up = 1 if state in HEALTHY_STATES else 0
        out.append(f'harken_input_up{{input="{_label(name)}",state="{_label(state)}"}} {up}')
    family("harken_messages_in_total", "counter", "Messages received, per input.")
    per("harken_messages_in_total", "input", m.messages_in)
    family("harken_messages_out_total", "counter", "Messages sent, per input.")
    per("harken_messages_out_total", "input", m.messages_out)
    family("harken_commands_total", "counter", "Command calls that ran, per command.")
    per("harken_commands_total", "command", m.calls)
    family("harken_command_errors_total", "counter", "Command calls that raised, per command.")
    per("harken_command_errors_total", "command", m.errors)
    family("harken_command_refusals_total", "counter", "Calls refused by access control.")
    per("harken_command_refusals_total", "command", m.refusals)
    family("harken_command_duration_seconds", "histogram", "Time a command's function took.")
    for name, hist in sorted(m.latency.items()):
        label = f'command="{_label(name)}"'
        running = 0
        for bound, count in zip((*LATENCY_BUCKETS, None), hist.counts, strict=True):
            running += count
            le = "+Inf" if bound is None else repr(bound)
            out.append(f'harken_command_duration_seconds_bucket{{{label},le="{le}"}} {running}')
        out.append(f"harken_command_duration_seconds_sum{{{label}}} {hist.total:.6f}")
        out.append(f"harken_command_duration_seconds_count{{{label}}} {running}")
    gauges = (
        ("harken_active_conversations", "Conversations with a live actor.", "active"),
        ("harken_open_dialogs", "Dialogs open in memory.", "dialogs"),
        ("harken_pending_jobs", "Reminders, deferred commands and watches pending.", "jobs"),
    )
    values = {
        "active": report.active_conversations,
        "dialogs": report.open_dialogs,
        "jobs": report.pending_jobs,
    }
    for name, help_text, key in gauges:
        value = values[key]
        if value is not None:  # unknown is left out rather than reported as zero
            family(name, "gauge", help_text)
            out.append(f"{name} {value}")
    return "\n".join(out) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            report = collect(self.server.services)
            if report.healthy:
                self._reply(200, "ok\n")
            else:
                self._reply(503, "down: " + ", ".join(report.down) + "\n")
        elif path == "/metrics":
            body = prometheus_text(collect(self.server.services))
            self._reply(200, body, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._reply(404, "not found: try /healthz or /metrics\n")

    def _reply(self, status: int, body: str, kind: str = "text/plain; charset=utf-8") -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # Probes hit this every few seconds; keep them out of the INFO log.
        logger.debug("health endpoint: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    services: Services


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

    def start(self, services: Services) -> None:
        self._server.services = services
        self._thread.start()
        logger.info("health endpoint on http://%s:%d/healthz and /metrics", self.host, self.port)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
