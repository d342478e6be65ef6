"""Closed-loop throughput and latency of the Slack input, through a fake Slack.

The real bot (the Slack input with slack-sdk's aiohttp clients, the actors, memory on
disk) runs in this process; the fake Slack (tests/fake_slack.py: the Web API over HTTP
and Socket Mode over a websocket, on 127.0.0.1) runs in a child process, so that its
own CPU is not charged to the bot on a 2-core machine. The child also drives the load:
100 users `U0B000`..`U0B099`, each in their own DM; message i comes from user i % 100
and says `echo m000123 from U0B023`; each user keeps exactly one message in flight and
the next envelope goes out as soon as the fake receives the `chat.postMessage` with the
previous answer (checked, exactly). Latency is from the envelope sent down the websocket
to that `chat.postMessage` arriving. Every envelope must be acknowledged.

Per-channel pacing is set out of the way (`replies_per_second` very high): it exists
for real Slack's one-message-a-second-per-channel limit, and this measures the bot.

    python -m bench.bench_slack [--runs 3] [--messages 5000] [--warmup 500]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

USERS = 100


# --- child: the fake Slack and the load -------------------------------------------------


def _user(i: int) -> str:
    return f"U0B{i % USERS:03d}"


def serve(messages: int, runs: int, warmup: int) -> int:  # noqa: PLR0915
    """Child process: run the fake Slack, print its port, drive the runs, print results."""
    from tests.fake_slack import FakeSlack, Post

    fake = FakeSlack(users={_user(i): f"user{i:03d}" for i in range(USERS)})
    fake.start()
    print(f"PORT {fake.port}", flush=True)
    fake.wait_connections(1, timeout=60)

    def run(total: int) -> dict[str, Any]:
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        envelope_ids: list[str] = []
        wrong: list[str] = []
        finished = threading.Event()

        def send(i: int) -> None:
            user = _user(i)
            event = fake.message_event(
                f"echo m{i:06d} from {user}", user=user, channel="D" + user[1:]
            )
            envelope = fake.envelope(event)
            envelope_ids.append(envelope["envelope_id"])
            text = json.dumps(envelope)
            sent_at[i] = time.monotonic()
            fake._loop.create_task(fake.send_now(text))

        def on_post(post: Post) -> None:
            word = post.text.split(" ", 1)[0]
            i = int(word[1:]) if word[:1] == "m" and word[1:].isdigit() else -1
            started = sent_at.pop(i, None)
            if started is None or post.text != f"m{i:06d} from {_user(i)}":
                wrong.append(post.text[:80])
                return
            latencies.append(post.at - started)
            if i + USERS < total:
                send(i + USERS)
            if len(latencies) == total:
                finished.set()

        def begin() -> None:
            for i in range(min(USERS, total)):
                send(i)

        fake.on_post = on_post
        start = time.monotonic()
        fake.call_soon(begin)
        if not finished.wait(120):
            raise RuntimeError(f"run stalled: {len(latencies)} of {total} answered")
        elapsed = time.monotonic() - start
        fake.on_post = None
        # Acks travel apart from the answers: wait for the last ones to land.
        with contextlib.suppress(TimeoutError):
            fake._wait(lambda: all(e in fake.acks for e in envelope_ids), 10, "acks")
        with fake._changed:
            unacked = sum(1 for e in envelope_ids if e not in fake.acks)
        latencies.sort()
        return {
            "rate": total / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "unacked": unacked,
            "wrong": len(wrong),
        }

    try:
        run(warmup)
        for _ in range(runs):
            print(json.dumps(run(messages)), flush=True)
    finally:
        fake.stop()
    return 0


# --- parent: the bot ----------------------------------------------------------------------


def bench(messages: int, runs: int, warmup: int) -> list[dict[str, Any]]:
    from actors.system import BotSystem
    from config import load_settings
    from tests.fake_slack import APP_TOKEN, BOT_TOKEN

    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.bench_slack", "--serve"),
            *(f"--messages={messages}", f"--runs={runs}", f"--warmup={warmup}"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    results: list[dict[str, Any]] = []
    system: BotSystem | None = None
    try:
        first = child.stdout.readline().split()
        if first[:1] != ["PORT"]:
            raise RuntimeError(f"fake Slack did not start: {first!r}")
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            os.environ.pop(var, None)
        with tempfile.TemporaryDirectory(prefix="harken-bench-slack-") as tmp:
            settings = load_settings(
                env={"HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN, "HARKEN_SLACK_APP_TOKEN": APP_TOKEN},
                overrides={
                    "bot.inputs": "slack",
                    "log.level": "WARNING",
                    "memory.path": str(Path(tmp) / "memory"),
                    "inputs.slack.api_url": f"http://127.0.0.1:{first[1]}/api/",
                    "inputs.slack.replies_per_second": "1000000",
                    "inputs.slack.reply_burst": "1000000",
                },
            )
            system = BotSystem(settings)
            system.start()
            for line in child.stdout:
                results.append(json.loads(line))
            system.stop()
            system = None
    finally:
        if system is not None:
            system.stop()
        if child.wait(30) != 0:
            raise RuntimeError(f"fake Slack exited with {child.returncode}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.messages, args.runs, args.warmup)
    logging.basicConfig(level=logging.WARNING)
    results = bench(args.messages, args.runs, args.warmup)
    print(
        f"## Slack: closed loop over Socket Mode, {USERS} users, "
        f"{args.messages:,} messages a run, {args.runs} runs"
    )
    print()
    print(
        "| messages/s (median) | p50 ms (median) | p99 ms (median) | runs (msg/s) "
        "| unacked | wrong |"
    )
    print("|---|---|---|---|---|---|")
    rates = ", ".join(f"{r['rate']:,.0f}" for r in results)
    print(
        f"| {statistics.median(r['rate'] for r in results):,.0f} "
        f"| {statistics.median(r['p50_ms'] for r in results):.2f} "
        f"| {statistics.median(r['p99_ms'] for r in results):.2f} | {rates} "
        f"| {sum(r['unacked'] for r in results)} | {sum(r['wrong'] for r in results)} |"
    )
    failed = any(r["unacked"] or r["wrong"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
