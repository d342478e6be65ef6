"""Durable `remember` through PostgreSQL with 1 and 3 `harken run` processes in a cluster.

The processes are real `harken run --inputs slack` subprocesses with `[cluster]
enabled` and the memory store on one private PostgreSQL (tests/support/postgres.py:
127.0.0.1 only, `fsync = on`). The fake Slack (tests/support/fake_slack.py) runs in
this process and keeps one Socket Mode connection per Harken process, sending each
envelope to one of them at random, as Slack does with an app's connections; it does
not limit posts (the processes' own pacing is lifted too: `replies_per_second` 10,000),
so the figure is Harken's, not Slack's limit.

The load: 100 people, each in their own DM, each with exactly one message in flight;
message i says `remember m<i> is x`, and the next goes out as soon as the fake accepts
the post of the previous reply (checked, exactly). Each message is claimed in the
database (one statement per batch), re-reads the person's dialog state (cluster mode:
another process may have served them) and commits its write before the reply. Latency
is from the envelope sent to that post. Everything (the processes, PostgreSQL, the
fake and its load) shares this machine's cores.

A second table isolates the cost of re-reading the dialog state before each message,
in one process with the in-memory test input (no Slack, no claims): `[cluster]` off
and on.

    python -m bench.bench_cluster [--runs 3] [--messages 3000] [--warmup 500]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

USERS = 100
_REPLY = re.compile(r"OK, I'll remember that m(\d+) is x\.$")


def _user(i: int) -> str:
    return f"U0C{i % USERS:03d}"


def closed_loop(fake: Any, total: int, offset: int) -> dict[str, float]:
    """Run `total` messages, 100 people in flight; rate, p50 and p99."""
    from tests.support.fake_slack import Post

    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    wrong: list[str] = []
    finished = threading.Event()

    def send(i: int) -> None:
        user = _user(i)
        event = fake.message_event(f"remember m{i} is x", user=user, channel="D" + user[1:])
        text = json.dumps(fake.envelope(event))
        sent_at[i] = time.monotonic()
        fake._loop.create_task(fake.send_now(text))

    def on_post(post: Post) -> None:
        found = _REPLY.match(post.text)
        i = int(found.group(1)) if found else -1
        started = sent_at.pop(i, None)
        if started is None or post.channel != "D" + _user(i)[1:]:
            wrong.append(post.text[:80])
            return
        latencies.append(post.at - started)
        if i + USERS < offset + total:
            send(i + USERS)
        if len(latencies) == total:
            finished.set()

    def begin() -> None:
        for i in range(offset, offset + min(USERS, total)):
            send(i)

    fake.on_post = on_post
    start = time.monotonic()
    fake.call_soon(begin)
    if not finished.wait(180):
        raise RuntimeError(f"run stalled: {len(latencies)} of {total} answered; wrong {wrong[:3]}")
    elapsed = time.monotonic() - start
    fake.on_post = None
    latencies.sort()
    return {
        "rate": total / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "wrong": len(wrong),
    }


def bench_processes(
    server: Any, count: int, runs: int, total: int, warmup: int
) -> list[dict[str, float]]:
    """`count` processes against a fresh database and fake Slack; each run's figures."""
    from tests.support.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

    url = server.create_database(f"bench_cluster_{count}")
    fake = FakeSlack(connections=count, seed=count).start()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="harken-bench-cluster-") as tmp:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HARKEN_") and "PROXY" not in k.upper()
        }
        try:
            for n in range(count):
                directory = Path(tmp) / f"p{n}"
                directory.mkdir()
                procs.append(
                    subprocess.Popen(
                        [
                            *(sys.executable, "-m", "harken", "run", "--inputs", "slack"),
                            *("--log-level", "WARNING"),
                            *("--set", f"inputs.slack.api_url={fake.api_url}"),
                            *("--set", "inputs.slack.replies_per_second=10000"),
                            *("--set", "inputs.slack.reply_burst=10000"),
                        ],
                        cwd=directory,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env={
                            **env,
                            "HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN,
                            "HARKEN_SLACK_APP_TOKEN": APP_TOKEN,
                            "HARKEN_MEMORY_BACKEND": "postgresql",
                            "HARKEN_MEMORY_URL": url,
                            "HARKEN_CLUSTER_ENABLED": "true",
                            "HARKEN_CLUSTER_NAME": f"p{n}",
                        },
                    )
                )
                fake.wait_open(n + 1, timeout=60)  # one at a time: n connections, n processes
            closed_loop(fake, warmup, 0)
            return [closed_loop(fake, total, (run + 1) * 1_000_000) for run in range(runs)]
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                if proc.poll() is None:
                    proc.kill()
            fake.stop()


def bench_reload(server: Any, runs: int, total: int) -> dict[bool, list[Any]]:
    """One process, the test input: `[cluster]` off and on (dialog re-read), in turns."""
    from actors.inputs.testing import Done, Reply
    from bench.bench_bot import run_once
    from config.settings import ClusterSettings, MemorySettings, Secret, Settings
    from harken.testbot import TestBot

    figures: dict[bool, list[Any]] = {False: [], True: []}
    for run in range(runs):
        for cluster in (False, True):
            url = server.create_database(f"bench_reload_{run}_{int(cluster)}")
            stream: queue.Queue[Reply | Done] = queue.Queue()
            settings = Settings(
                memory=MemorySettings(backend="postgresql", url=Secret(url)),
                cluster=ClusterSettings(enabled=cluster, name="bench"),
            )
            with tempfile.TemporaryDirectory(prefix="harken-bench-") as tmp:
                bot = TestBot(Path(tmp) / "memory", settings=settings, sink=stream.put)
                with bot:
                    run_once(bot, stream, "remember", min(total, 1000))  # warm-up
                    figures[cluster].append(run_once(bot, stream, "remember", total))
    return figures


def _row(name: str, results: list[dict[str, float]]) -> str:
    rates = ", ".join(f"{r['rate']:,.0f}" for r in results)
    return (
        f"| {name} | {statistics.median(r['rate'] for r in results):,.0f} "
        f"| {statistics.median(r['p50_ms'] for r in results):.2f} "
        f"| {statistics.median(r['p99_ms'] for r in results):.2f} | {rates} "
        f"| {sum(int(r['wrong']) for r in results)} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=500)
    args = parser.parse_args(argv)
    from tests.support.postgres import PrivatePostgres, postgres_missing

    print(
        f"## Cluster: durable `remember` over Slack, {USERS} users closed loop, "
        f"{args.messages:,} messages a run, {args.runs} runs, 1 and 3 `harken run` processes"
    )
    print()
    missing = postgres_missing()
    if missing is not None:
        print(f"Skipped: {missing}.")
        return 0
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(var, None)
    with PrivatePostgres() as server:
        figures = {
            count: bench_processes(server, count, args.runs, args.messages, args.warmup)
            for count in (1, 3)
        }
        reload = bench_reload(server, args.runs, args.messages)
    print(
        "| processes | messages/s (median) | p50 ms (median) | p99 ms (median) | runs (msg/s) "
        "| wrong |"
    )
    print("|---|---|---|---|---|---|")
    for count, results in figures.items():
        print(_row(str(count), results))
    print()
    print("Re-reading the dialog state before each message (1 process, test input, no claims):")
    print()
    print(
        "| `[cluster]` | messages/s (median) | p50 ms (median) | p99 ms (median) | runs (msg/s) |"
    )
    print("|---|---|---|---|---|")
    for cluster, results in reload.items():
        rates = ", ".join(f"{r.rate:,.0f}" for r in results)
        print(
            f"| {'on (re-read)' if cluster else 'off'} "
            f"| {statistics.median(r.rate for r in results):,.0f} "
            f"| {statistics.median(r.p50_ms for r in results):.2f} "
            f"| {statistics.median(r.p99_ms for r in results):.2f} | {rates} |"
        )
    return 1 if any(r["wrong"] for results in figures.values() for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
