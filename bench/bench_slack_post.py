"""CPU per `chat.postMessage` on the Slack input's loop thread: its own client vs aiohttp.

Every reply the Slack input sends is one `chat.postMessage`, posted from the input's
one asyncio loop thread, which is what limits how many messages it answers a second.
This posts `--posts` replies (50 in flight) to the fake Slack of the tests and reports
the CPU time of the posting thread alone (`time.thread_time`) per post, for the input's
keep-alive client (`actors/inputs/slack_http.py`) and for an aiohttp `ClientSession`
with the same request, taking turns `--rounds` times. The fake Slack runs on a thread
of its own, whose CPU is not counted.

    python -m bench.bench_slack_post [--posts 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp

from actors.inputs.slack_http import HttpClient
from tests.fake_slack import BOT_TOKEN, FakeSlack

IN_FLIGHT = 50
HEADERS = {"Authorization": f"Bearer {BOT_TOKEN}", "Content-Type": "application/json"}


def _bodies(total: int) -> list[bytes]:
    return [json.dumps({"channel": "D0B001", "text": f"reply {i}"}).encode() for i in range(total)]


async def _drive(post: Callable[[bytes], Awaitable[int]], bodies: list[bytes]) -> float:
    """Post every body, IN_FLIGHT at a time; CPU seconds of this thread per post."""
    queue = iter(bodies)

    async def worker() -> None:
        for body in queue:
            status = await post(body)
            if status != 200:
                raise RuntimeError(f"chat.postMessage answered HTTP {status}")

    began = time.thread_time()
    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return (time.thread_time() - began) / len(bodies)


async def own_client(url: str, bodies: list[bytes]) -> float:
    client = HttpClient(timeout=30)
    target = client.target(url, HEADERS)

    async def post(body: bytes) -> int:
        return (await client.post(target, body)).status

    try:
        await _drive(post, bodies[:200])  # warm-up: connections open
        return await _drive(post, bodies)
    finally:
        await client.close()


async def aiohttp_client(url: str, bodies: list[bytes]) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(body: bytes) -> int:
            async with session.post(url, data=body, headers=HEADERS) as response:
                await response.read()
                return response.status

        await _drive(post, bodies[:200])
        return await _drive(post, bodies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--posts", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    fake = FakeSlack().start()
    url = fake.api_url + "chat.postMessage"
    bodies = _bodies(args.posts)
    figures: dict[str, list[float]] = {"Harken's client": [], "aiohttp": []}
    try:
        for _ in range(args.rounds):
            figures["Harken's client"].append(asyncio.run(own_client(url, bodies)))
            figures["aiohttp"].append(asyncio.run(aiohttp_client(url, bodies)))
    finally:
        fake.stop()
    print(
        f"## Slack replies: CPU of the posting thread per chat.postMessage "
        f"({args.posts:,} posts, {IN_FLIGHT} in flight, {args.rounds} rounds)"
    )
    print()
    print("| client | µs per post (median) | rounds (µs) |")
    print("|---|---|---|")
    for name, values in figures.items():
        rounds = ", ".join(f"{v * 1e6:.0f}" for v in values)
        print(f"| {name} | {statistics.median(values) * 1e6:.0f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
