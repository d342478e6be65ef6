"""Health checks: an HTTP GET or a TCP connect, each with a timeout, run in parallel.

A check never raises: it returns a `CheckResult` saying up, slow or down, with the
latency and, when down, why. `check_all` runs many on a small pool of its own threads
(`ops.max_parallel_checks`), with an overall deadline, so a `health` of 200 services
holds one command worker and a few threads for a bounded time, and a dead service costs
its timeout and no more.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from urllib.parse import urlsplit

from commands.ops.registry import STATUS_NS, Service
from config.ops_config import split_host_port
from core.context import Context

UP = "up"
SLOW = "slow"
DOWN = "down"
UNCHECKED = "unchecked"

_BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class CheckResult:
    service: str
    status: str
    """up, slow, down or unchecked (nothing to check)."""
    latency: float
    """Seconds the check took."""
    detail: str = ""
    """Why it is down (`HTTP 500`, `timed out after 1.0 s`, `connection refused`)."""

    def to_json(self) -> dict[str, object]:
        return {
            "status": self.status,
            "latency_ms": round(self.latency * 1000, 1),
            "detail": self.detail,
            "at": time.time(),
        }


@dataclass(frozen=True)
class HttpResponse:
    status: int
    reason: str
    content_type: str
    body: bytes
    truncated: bool


def http_request(
    url: str, *, method: str = "GET", body: bytes | None = None, timeout: float
) -> HttpResponse:
    """One HTTP request with `timeout` on connect and on each read; no proxies, no
    redirects followed (a check wants the service's own answer). Raises OSError or
    http.client.HTTPException."""
    parts = urlsplit(url)
    conn_type = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_type(parts.hostname or "", parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    headers = {"User-Agent": "harken", "Accept": "*/*"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read(_BODY_LIMIT + 1)
        return HttpResponse(
            status=response.status,
            reason=response.reason,
            content_type=response.getheader("Content-Type", ""),
            body=data[:_BODY_LIMIT],
            truncated=len(data) > _BODY_LIMIT,
        )
    finally:
        conn.close()


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    text = str(exc) or type(exc).__name__
    return text[:200]


def check(service: Service, *, timeout: float, slow: float) -> CheckResult:
    """Check one service now; never raises."""
    started = time.monotonic()

    def result(status: str, detail: str = "") -> CheckResult:
        return CheckResult(service.name, status, time.monotonic() - started, detail)

    try:
        if service.tcp:
            address = split_host_port(service.tcp)
            if address is None:
                return result(DOWN, f"bad tcp address {service.tcp!r}")
            socket.create_connection(address, timeout=timeout).close()
        elif service.health:
            response = http_request(service.url + service.health, timeout=timeout)
            if response.status >= 400:
                return result(DOWN, f"HTTP {response.status} {response.reason}".strip())
        else:
            return result(UNCHECKED, "no health path or tcp address to check")
    except (OSError, http.client.HTTPException) as exc:
        return result(DOWN, _describe(exc, timeout))
    done = result(UP)
    if done.latency > slow:
        return CheckResult(done.service, SLOW, done.latency, f"took {done.latency:.1f} s")
    return done


def check_all(
    services: Iterable[Service],
    *,
    timeout: float,
    slow: float,
    parallel: int,
) -> list[CheckResult]:
    """Check every service, at most `parallel` at once; results in the given order.

    Each check has its own timeout; on top, nothing waits past the time the checks
    could take at worst, so a check stuck beyond its socket timeouts (a server dripping
    one byte a second) is reported as timed out, and its thread left to finish alone.
    """
    services = list(services)
    if not services:
        return []
    rounds = -(-len(services) // parallel)
    deadline = time.monotonic() + rounds * timeout + 1.0
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(services)), thread_name_prefix="check")
    try:
        futures: dict[Future[CheckResult], Service] = {
            pool.submit(check, service, timeout=timeout, slow=slow): service for service in services
        }
        pending = set(futures)
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            _, pending = wait(pending, timeout=remaining, return_when=FIRST_COMPLETED)
        results = {}
        for future, service in futures.items():
            if future.done():
                results[service.name] = future.result()
            else:
                results[service.name] = CheckResult(
                    service.name, DOWN, timeout, f"timed out after {timeout:g} s"
                )
        return [results[service.name] for service in services]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def record_status(ctx: Context, result: CheckResult) -> None:
    """Keep `result` as its service's last status (`ops:status`), unless not checked."""
    if result.status != UNCHECKED:
        ctx.team_memory(STATUS_NS).set(result.service, result.to_json())


def check_and_record(ctx: Context, services: Iterable[Service]) -> list[CheckResult]:
    """`check_all` within the `[ops]` limits, recording each service's status."""
    ops = ctx.settings.ops
    results = check_all(
        services,
        timeout=ops.check_timeout_seconds,
        slow=ops.slow_seconds,
        parallel=ops.max_parallel_checks,
    )
    for result in results:
        record_status(ctx, result)
    return results
