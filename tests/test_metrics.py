"""`/metrics` from prometheus_client: a running `harken shell` asked over real HTTP (GET
and HEAD), and the counters' own registry, so several bots in one process count apart."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import pytest
from support.cli import ShellSession

from actors.metrics import Metrics
from core.status import LATENCY_BUCKETS

HEALTH_LINE = re.compile(r"health endpoint on http://127\.0\.0\.1:(\d+)/healthz")


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value from the Prometheus text format; fails on any other line."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            continue
        sample = re.fullmatch(r'([a-z_]+(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})?) (\S+)', line)
        assert sample, f"not a Prometheus sample line: {line!r}"
        found[sample.group(1)] = float(sample.group(2))
    return found


def raw_request(port: int, method: str, path: str) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.0 request over a plain socket: status line, headers, and every byte
    after the headers (for HEAD there must be none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


class RunningShell(ShellSession):
    """`harken shell` with the health endpoint on a free port; stdin stays open."""

    def __init__(self, cwd: Path) -> None:
        health = {"HARKEN_HEALTH_ENABLED": "true", "HARKEN_HEALTH_PORT": "0"}
        super().__init__("--user", "ann", cwd=cwd, env={**health, "PYTHONUNBUFFERED": "1"})
        try:
            self.port = int(self.wait_stderr(HEALTH_LINE).group(1))
        except AssertionError:
            self.stop()
            raise


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[RunningShell]:
    running = RunningShell(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.e2e
def test_get_and_head_metrics_on_a_running_harken_shell(shell: RunningShell) -> None:
    assert shell.say("ping") == "pong"
    assert shell.say("nosuchcommand").startswith("I don't know")
    url = f"http://127.0.0.1:{shell.port}"

    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        assert response.status == 200
        kind = response.headers["Content-Type"]
        body = response.read()
    assert kind == "text/plain; version=0.0.4; charset=utf-8"
    got = samples(body.decode())
    assert got['harken_messages_in_total{input="shell"}'] == 2
    assert got['harken_messages_out_total{input="shell"}'] == 2
    assert got['harken_commands_total{command="ping"}'] == 1
    assert got['harken_command_duration_seconds_count{command="ping"}'] == 1
    assert got['harken_command_duration_seconds_bucket{command="ping",le="+Inf"}'] == 1
    assert got["harken_up"] == 1
    assert got['harken_input_up{input="shell"}'] == 1
    assert not [name for name in got if name.startswith("harken_input_up{") and "state=" in name]
    # What prometheus_client's default collectors add: the process, and the collector.
    assert got["process_resident_memory_bytes"] > 0
    assert got["process_cpu_seconds_total"] > 0
    assert got['python_gc_collections_total{generation="0"}'] >= 0
    assert any(name.startswith("python_info{") for name in got)

    status, headers, rest = raw_request(shell.port, "HEAD", "/metrics")
    assert status.split()[1] == "200"
    assert headers["content-type"] == kind
    assert int(headers["content-length"]) > 0
    assert rest == b""

    status, headers, rest = raw_request(shell.port, "HEAD", "/healthz")
    assert (status.split()[1], headers["content-length"], rest) == ("200", "3", b"")
    status, _, rest = raw_request(shell.port, "GET", "/healthz")
    assert (status.split()[1], rest) == ("200", b"ok\n")

    assert shell.stop() == 0


def test_each_bot_counts_on_a_registry_of_its_own() -> None:
    first, second = Metrics(), Metrics()  # the global registry would refuse the second
    first.message_in("slack")
    first.message_in("slack")
    first.command_done("ping", 0.003, failed=False)
    first.command_done("ping", 0.2, failed=True)
    first.refused("call")
    first.messages_out("slack", 3)
    second.message_in("xmpp")

    seen = first.snapshot()
    assert seen.messages_in == {"slack": 2}
    assert seen.messages_out == {"slack": 3}
    assert (seen.calls, seen.errors, seen.refusals) == ({"ping": 2}, {"ping": 1}, {"call": 1})
    latency = seen.latency["ping"]
    assert latency.counts[LATENCY_BUCKETS.index(0.005)] == 1
    assert latency.counts[LATENCY_BUCKETS.index(0.25)] == 1
    assert sum(latency.counts) == 2
    assert latency.total == pytest.approx(0.203)
    assert second.snapshot().messages_in == {"xmpp": 1}

    value = first.registry.get_sample_value
    assert value("harken_messages_in_total", {"input": "slack"}) == 2
    assert second.registry.get_sample_value("harken_messages_in_total", {"input": "slack"}) is None
    assert prometheus_client.REGISTRY.get_sample_value("harken_messages_in_total") is None
    assert value("process_open_fds") is not None
