"""Closed-loop throughput and latency of the Slack input, through a fake Slack.

The real bot (the Slack input with slack-sdk's aiohttp clients, the actors, memory on
disk) runs in this process, with its production settings: replies paced per channel
(`replies_per_second` 1, `reply_burst` 4). The fake Slack (tests/support/fake_slack.py: the Web
API over HTTP and Socket Mode over a websocket, on 127.0.0.1) runs in a child process,
so that its own CPU is not charged to the bot on a 2-core machine, and it holds every
bot to Slack's limit on posting: one message a second per channel, with short bursts
(`SLACK_LIMIT`), answering 429 with `Retry-After` beyond it, as Slack does.

The child also drives the load: 100 users `U0B000`..`U0B099`, each in their own DM;
message i comes from user i % 100 and says `echo m000123 from U0B023`; each user keeps
exactly one message in flight and the next envelope goes out as soon as the fake accepts
the `chat.postMessage` with the previous answer (checked, exactly). Latency is from the
envelope sent down the websocket to that post. Every envelope must be acknowledged.

Taking turns with Harken (one run each, each with a fresh fake Slack and warm-up), the
same workload runs against a bare slack-sdk echo bot (`BareEcho`: the SDK's aiohttp
clients, retrying a 429 after `Retry-After` as the SDK offers, and nothing else) in this
same process, against the same fake. Absolute figures move with the machine and the
limit; the ratio Harken / bare much less, so that is the figure to compare.

    python -m bench.bench_slack [--runs 3] [--messages 1000] [--warmup 500] [--bots bare harken]
"""

from __future__ import annotations

import argparse
import asyncio
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
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp

USERS = 100
SLACK_LIMIT = (1.0, 4.0)
"""What the fake allows per channel: messages a second and the burst (Slack: "1 per
second, short bursts >1 allowed")."""


# --- child: the fake Slack and the load -------------------------------------------------


def _user(i: int) -> str:
    return f"U0B{i % USERS:03d}"


def serve(messages: int, runs: int, warmup: int) -> int:  # noqa: PLR0915
    """Child process: run the fake Slack, print its port, drive the runs, print results."""
    from tests.support.fake_slack import FakeSlack, Post

    fake = FakeSlack(
        users={_user(i): f"user{i:03d}" for i in range(USERS)}, channel_limit=SLACK_LIMIT
    )
    fake.start()
    print(f"PORT {fake.port}", flush=True)
    fake.wait_connections(1, timeout=60)

    def run(total: int) -> dict[str, Any]:
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        envelope_ids: list[str] = []
        wrong: list[str] = []
        finished = threading.Event()
        limited_before = fake.rate_limited

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
            "limited": fake.rate_limited - limited_before,
        }

    try:
        run(warmup)
        for _ in range(runs):
            print(json.dumps(run(messages)), flush=True)
        # Stay up until the bot has stopped (the parent closes our stdin then): a fake
        # that went away first would have the bot log a disconnect and reconnect.
        print("DONE", flush=True)
        sys.stdin.read()
    finally:
        fake.stop()
    return 0


# --- parent: the bots ---------------------------------------------------------------------


class _Bot(Protocol):
    def stop(self) -> None: ...


class BareEcho:
    """The baseline: a bare slack-sdk echo bot, the least a Python Slack bot can do.

    slack-sdk's aiohttp `SocketModeClient` and an `AsyncWebClient` with one shared
    `aiohttp.ClientSession` (kept-alive connections), on an asyncio loop on a thread of
    its own, as Harken's input has it. Per envelope: ack, then post the text after
    `echo ` to the same channel; a 429 is retried after `Retry-After` by the SDK's own
    `AsyncRateLimitErrorRetryHandler` (without it the SDK raises, and the answer is
    lost). No actors, no dedupe, no pacing, no names: what is left is slack-sdk and
    aiohttp, so Harken's figure divided by this one is comparable from one machine (or
    one load) to another.
    """

    def __init__(self, api_url: str, bot_token: str, app_token: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="bare-echo", daemon=True
        )
        self._thread.start()
        self._closing: list[Any] = []
        asyncio.run_coroutine_threadsafe(
            self._start(api_url, bot_token, app_token), self._loop
        ).result(30)

    async def _start(self, api_url: str, bot_token: str, app_token: str) -> None:
        from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
        from slack_sdk.socket_mode.aiohttp import SocketModeClient
        from slack_sdk.web.async_client import AsyncWebClient

        session = aiohttp.ClientSession()
        # A logger with a level of its own: with the default (NOTSET) slack-sdk formats
        # a debug line for every call whatever the root level, which no bot should pay
        # (Harken's input does the same).
        quiet = logging.getLogger("bench.bare_echo")
        quiet.setLevel(logging.WARNING)
        web = AsyncWebClient(token=bot_token, base_url=api_url, session=session, logger=quiet)
        web.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=100))
        socket = SocketModeClient(app_token, web_client=web, logger=quiet)

        async def on_frame(client: Any, message: dict[str, Any], raw: str | None) -> None:
            if message.get("type") != "events_api":
                return
            await client.send_socket_mode_response({"envelope_id": message["envelope_id"]})
            event = message["payload"]["event"]
            text = event.get("text", "")
            if event.get("type") == "message" and text.startswith("echo "):
                await web.chat_postMessage(channel=event["channel"], text=text[5:])

        socket.message_listeners.append(on_frame)
        await socket.connect()  # type: ignore[no-untyped-call]
        self._closing = [socket, session]

    def stop(self) -> None:
        async def close() -> None:
            socket, session = self._closing
            await socket.close()
            await session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Harken:
    """The real bot: BotSystem with its Slack input (memory on disk, in a temp dir), with
    the input's production settings (replies paced per channel)."""

    def __init__(self, api_url: str, bot_token: str, app_token: str) -> None:
        from actors.system import BotSystem, freeze_startup_objects
        from config import load_settings

        self._tmp = tempfile.TemporaryDirectory(prefix="harken-bench-slack-")
        settings = load_settings(
            env={"HARKEN_SLACK_BOT_TOKEN": bot_token, "HARKEN_SLACK_APP_TOKEN": app_token},
            overrides={
                "bot.inputs": "slack",
                "log.level": "WARNING",
                "memory.path": str(Path(self._tmp.name) / "memory"),
                "inputs.slack.api_url": api_url,
            },
        )
        self._system = BotSystem(settings)
        try:
            self._system.start()
        except BaseException:
            self._tmp.cleanup()
            raise
        freeze_startup_objects()  # as `harken run` does once the bot is up

    def stop(self) -> None:
        try:
            self._system.stop()
        finally:
            self._tmp.cleanup()


BOTS: dict[str, tuple[str, Callable[[str, str, str], _Bot]]] = {
    "bare": ("bare slack-sdk", BareEcho),
    "harken": ("Harken", Harken),
}


def bench(bot: str, messages: int, runs: int, warmup: int) -> list[dict[str, Any]]:
    """Start a fake Slack (child process) and `bot` against it; return each run's figures."""
    from tests.support.fake_slack import APP_TOKEN, BOT_TOKEN

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(var, None)
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "bench.bench_slack", "--serve"),
            *(f"--messages={messages}", f"--runs={runs}", f"--warmup={warmup}"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    results: list[dict[str, Any]] = []
    running: _Bot | None = None
    try:
        first = child.stdout.readline().split()
        if first[:1] != ["PORT"]:
            raise RuntimeError(f"fake Slack did not start: {first!r}")
        running = BOTS[bot][1](f"http://127.0.0.1:{first[1]}/api/", BOT_TOKEN, APP_TOKEN)
        for line in child.stdout:
            if line.strip() == "DONE":
                break
            results.append(json.loads(line))
    finally:
        if running is not None:
            running.stop()
        child.stdin.close()
        if child.wait(30) != 0:
            raise RuntimeError(f"fake Slack exited with {child.returncode}")
    return results


def _row(bot: str, results: list[dict[str, Any]]) -> str:
    rates = ", ".join(f"{r['rate']:,.0f}" for r in results)
    return (
        f"| {BOTS[bot][0]} | {statistics.median(r['rate'] for r in results):,.0f} "
        f"| {statistics.median(r['p50_ms'] for r in results):.2f} "
        f"| {statistics.median(r['p99_ms'] for r in results):.2f} | {rates} "
        f"| {sum(r['limited'] for r in results)} "
        f"| {sum(r['unacked'] for r in results)} | {sum(r['wrong'] for r in results)} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument(
        "--bots",
        nargs="+",
        choices=list(BOTS),
        default=list(BOTS),
        help="which bots to measure (default: the bare baseline, then Harken)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.messages, args.runs, args.warmup)
    logging.basicConfig(level=logging.WARNING)
    # The bots take turns, one run each (a fresh fake and warm-up every time): the load
    # on a shared machine drifts over a minute, and turns expose both to the same drift.
    figures: dict[str, list[dict[str, Any]]] = {bot: [] for bot in args.bots}
    for _ in range(args.runs):
        for bot in args.bots:
            figures[bot].extend(bench(bot, args.messages, 1, args.warmup))
    print(
        f"## Slack: closed loop over Socket Mode, {USERS} users, "
        f"{args.messages:,} messages a run, {args.runs} runs, Slack's limit of "
        f"{SLACK_LIMIT[0]:g}/s per channel (burst {SLACK_LIMIT[1]:g})"
    )
    print()
    print(
        "| bot | messages/s (median) | p50 ms (median) | p99 ms (median) | runs (msg/s) "
        "| 429s | unacked | wrong |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for bot, results in figures.items():
        print(_row(bot, results))
    if len(figures) == len(BOTS):
        ours = statistics.median(r["rate"] for r in figures["harken"])
        bare = statistics.median(r["rate"] for r in figures["bare"])
        print()
        turns = ", ".join(
            f"{h['rate'] / b['rate']:.2f}"
            for h, b in zip(figures["harken"], figures["bare"], strict=True)
        )
        print(f"Harken / bare slack-sdk: {ours / bare:.2f} (messages/s, medians; turns {turns})")
    failed = any(r["unacked"] or r["wrong"] for results in figures.values() for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
