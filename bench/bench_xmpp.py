"""Echo over XMPP through a real Prosody: Harken against a bare slixmpp echo bot.

One private Prosody on 127.0.0.1 (rate limits off), two bots logged in to it, each in a
process of its own: `harken run --inputs xmpp`, and a bare slixmpp bot that answers
`echo <text>` with `<text>` right on its loop thread (the stack's ceiling). The load
comes from this process, through the same server, alternately to each bot:

* closed loop: 20 client connections, each keeping exactly one `echo` in flight and
  sending the next when its reply arrives, 5,000 messages a run;
* sequential: 1,000 strictly sequential round trips from one client (the two bots
  take turns every 100 round trips, so both see the machine alike).

Every reply is checked (exact text, from the right bot); a reply that never comes within
10 s counts as lost, one that takes over 1 s as late. Reported: messages/s, p50 and p99
round trip (median over runs), lost and late replies, and Harken's ratio to the bare
bot. Target: at least 0.8x the bare bot, with zero lost or late replies.

    python -m bench.bench_xmpp [--runs 3] [--messages 5000] [--sequential 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slixmpp import ClientXMPP
from slixmpp.jid import JID

from tests.support.xmpp import PrivateProsody, prosody_missing

CLIENTS = 20
LOST_AFTER = 10.0
LATE_AFTER = 1.0
WARM_UP = 300
SEQUENTIAL_BLOCK = 100
PASSWORD = "bench-pw"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float
    lost: int
    late: int
    cpu_us: float = 0.0
    """CPU time of the bot's process (all its threads) per message, in microseconds."""


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux /proc); 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _plaintext_client(jid: str, loop: asyncio.AbstractEventLoop) -> ClientXMPP:
    client = ClientXMPP(jid, PASSWORD, loop=loop)
    client.enable_plaintext = True
    client.enable_starttls = False
    client.enable_direct_tls = False
    mechanisms = client.plugin["feature_mechanisms"]
    mechanisms.config["unencrypted_plain"] = True
    mechanisms.config["unencrypted_scram"] = True
    return client


# --- the bare bot (run as a child process) -------------------------------------------


def bare_bot(jid: str, port: int) -> int:
    """A minimal slixmpp echo bot: replies on the loop thread, nothing in between."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = _plaintext_client(jid, loop)

    def on_message(message: Any) -> None:
        if message["type"] in ("chat", "normal"):
            body: str = message["body"]
            message.reply(body[5:] if body.startswith("echo ") else body).send()

    def on_session(_: Any) -> None:
        client.send_presence()
        print("ready", flush=True)

    client.add_event_handler("message", on_message)
    client.add_event_handler("session_start", on_session)
    client.connect("127.0.0.1", port)
    loop.run_forever()
    return 0


# --- the bots under test --------------------------------------------------------------


class BotProcess:
    """A bot in a child process; ready once it printed its readiness line."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], ready: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=env.get("BENCH_CWD"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._ready = threading.Event()
        self.output: list[str] = []
        threading.Thread(target=self._drain, args=(ready,), daemon=True).start()
        if not self._ready.wait(30):
            self.stop()
            raise RuntimeError(f"{name} did not come online: {''.join(self.output[-10:])}")

    def _drain(self, ready: str) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if ready in line:
                self._ready.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start_bots(server: PrivateProsody, work: Path) -> dict[str, BotProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
    port = str(server.port)
    bare = BotProcess(
        "bare slixmpp",
        [
            sys.executable,
            "-m",
            "bench.bench_xmpp",
            "--bare-bot",
            server.jid("bare"),
            "--port",
            port,
        ],
        {**env, "PYTHONPATH": str(REPO), "BENCH_CWD": str(REPO)},
        "ready",
    )
    harken_env = {
        **env,
        "BENCH_CWD": str(work),
        "HARKEN_XMPP_JID": server.jid("harken"),
        "HARKEN_XMPP_PASSWORD": PASSWORD,
        "HARKEN_XMPP_HOST": "127.0.0.1",
        "HARKEN_XMPP_PORT": str(server.port),
        "HARKEN_XMPP_ALLOW_PLAINTEXT": "true",
    }
    harken = BotProcess(
        "Harken",
        [sys.executable, "-m", "harken", "run", "--inputs", "xmpp", "--log-level", "INFO"],
        harken_env,
        "XMPP: online as",
    )
    return {"bare": bare, "harken": harken}


# --- the load -------------------------------------------------------------------------


class Load:
    """The people: CLIENTS connections on one asyncio loop in this process."""

    def __init__(self, server: PrivateProsody) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.clients = [
            _plaintext_client(server.jid(f"c{i:02d}"), self.loop) for i in range(CLIENTS)
        ]
        self.waiting: dict[str, tuple[str, str, float, asyncio.Future[float]]] = {}
        self.wrong: list[str] = []
        for client in self.clients:
            client.add_event_handler("message", self._on_message)
        self.port = server.port

    def _on_message(self, message: Any) -> None:
        now = time.perf_counter()
        body: str = message["body"]
        tag = body.split(" ", 1)[0]
        entry = self.waiting.pop(tag, None)
        if entry is None:
            self.wrong.append(body[:80])
            return
        expected, bot, sent, done = entry
        if body != expected or str(message["from"].bare) != bot:
            self.wrong.append(f"{body[:80]!r} from {message['from']}")
        if not done.done():
            done.set_result(now - sent)

    def connect(self) -> None:
        async def log_in(client: ClientXMPP) -> None:
            started = asyncio.ensure_future(client.wait_until("session_start", 30))
            client.connect("127.0.0.1", self.port)
            await started
            client.send_presence()

        self.loop.run_until_complete(asyncio.gather(*(log_in(c) for c in self.clients)))

    def close(self) -> None:
        async def leave() -> None:
            await asyncio.gather(
                *(c.disconnect(wait=1.0) for c in self.clients), return_exceptions=True
            )
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.loop.run_until_complete(leave())
        self.loop.close()

    async def _round_trip(self, client: ClientXMPP, bot: str, i: int) -> float | None:
        tag = f"m{i:06d}"
        text = f"{tag} hello from {client.boundjid.user}"
        done: asyncio.Future[float] = self.loop.create_future()
        self.waiting[tag] = (text, bot, time.perf_counter(), done)
        client.send_message(mto=JID(bot), mbody=f"echo {text}", mtype="chat")
        try:
            return await asyncio.wait_for(done, LOST_AFTER)
        except TimeoutError:
            self.waiting.pop(tag, None)
            return None

    async def _closed_loop(self, bot: str, total: int, offset: int) -> tuple[list[float], int]:
        latencies: list[float] = []
        lost = 0
        next_i = iter(range(offset, offset + total))

        async def person(client: ClientXMPP) -> None:
            nonlocal lost
            for i in next_i:
                took = await self._round_trip(client, bot, i)
                if took is None:
                    lost += 1
                else:
                    latencies.append(took)

        await asyncio.gather(*(person(c) for c in self.clients))
        return latencies, lost

    async def _sequential(self, bot: str, total: int, offset: int) -> tuple[list[float], int]:
        latencies: list[float] = []
        lost = 0
        for i in range(offset, offset + total):
            took = await self._round_trip(self.clients[0], bot, i)
            if took is None:
                lost += 1
            else:
                latencies.append(took)
        return latencies, lost

    def run(self, mode: str, bot: str, total: int, offset: int) -> Sample:
        job = self._closed_loop if mode == "closed" else self._sequential
        start = time.perf_counter()
        latencies, lost = self.loop.run_until_complete(job(bot, total, offset))
        return Sample(latencies, lost, time.perf_counter() - start)


@dataclass
class Sample:
    """What one stretch of load measured for one bot: sums up into a `Result`."""

    latencies: list[float]
    lost: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0

    def add(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.lost += other.lost
        self.elapsed += other.elapsed
        self.cpu += other.cpu

    def result(self) -> Result:
        latencies = sorted(self.latencies)
        total = len(latencies) + self.lost
        if not latencies:
            return Result(0.0, 0.0, 0.0, self.lost, 0)
        return Result(
            rate=len(latencies) / self.elapsed,
            p50_ms=latencies[len(latencies) // 2] * 1000,
            p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            lost=self.lost,
            late=sum(1 for t in latencies if t > LATE_AFTER),
            cpu_us=self.cpu / total * 1e6,
        )


def _median(results: list[Result]) -> Result:
    return Result(
        rate=statistics.median(r.rate for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        lost=sum(r.lost for r in results),
        late=sum(r.late for r in results),
        cpu_us=statistics.median(r.cpu_us for r in results),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--sequential", type=int, default=1_000)
    parser.add_argument("--bare-bot", metavar="JID", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_bot:
        return bare_bot(args.bare_bot, args.port)
    missing = prosody_missing()
    if missing:
        print(f"## XMPP: skipped, {missing}")
        return 0

    with tempfile.TemporaryDirectory(prefix="harken-bench-xmpp-") as tmp:
        server = PrivateProsody(Path(tmp) / "prosody", offline_storage=False)
        for user in ["bare", "harken", *(f"c{i:02d}" for i in range(CLIENTS))]:
            server.register(user, PASSWORD)
        with server:
            bots = _start_bots(server, Path(tmp))
            load = Load(server)
            try:
                load.connect()
                results = _measure(load, server, bots, args)
            finally:
                load.close()
                for bot in bots.values():
                    bot.stop()
    _report(results, args)
    if load.wrong:
        print(f"\nWrong or unexpected replies: {len(load.wrong)}, e.g. {load.wrong[:3]}")
        return 1
    return 0


def _measure(
    load: Load, server: PrivateProsody, bots: dict[str, BotProcess], args: argparse.Namespace
) -> dict[tuple[str, str], list[Result]]:
    jids = {"bare": server.jid("bare"), "harken": server.jid("harken")}
    pids = {name: bot.process.pid for name, bot in bots.items()}
    offset = 0
    results: dict[tuple[str, str], list[Result]] = {}
    for jid in jids.values():
        load.run("closed", jid, WARM_UP, offset)
        offset += WARM_UP
    # Alternate the bots run by run, so drift on a shared machine hits both alike. The
    # sequential runs are short and one slow second would decide them, so there the bots
    # take turns every SEQUENTIAL_BLOCK round trips and each run sums its bot's turns.
    for _ in range(args.runs):
        for mode, total in (("closed", args.messages), ("sequential", args.sequential)):
            block = total if mode == "closed" else SEQUENTIAL_BLOCK
            samples = {name: Sample([]) for name in jids}
            for start in range(0, total, block):
                size = min(block, total - start)
                for name, jid in jids.items():
                    before = cpu_seconds(pids[name])
                    sample = load.run(mode, jid, size, offset)
                    sample.cpu = cpu_seconds(pids[name]) - before
                    samples[name].add(sample)
                    offset += size
            for name, sample in samples.items():
                results.setdefault((name, mode), []).append(sample.result())
    return results


def _report(results: dict[tuple[str, str], list[Result]], args: argparse.Namespace) -> None:
    print(
        f"## XMPP echo through Prosody: {CLIENTS} connections closed loop "
        f"({args.messages:,} messages a run), then {args.sequential:,} sequential round "
        f"trips; {args.runs} runs"
    )
    print()
    print(
        "| bot | workload | messages/s | p50 ms | p99 ms | lost | late (> 1 s) | bot CPU µs/msg |"
    )
    print("|---|---|---|---|---|---|---|---|")
    medians = {key: _median(runs) for key, runs in results.items()}
    for (name, mode), m in medians.items():
        label = "bare slixmpp" if name == "bare" else "Harken"
        print(
            f"| {label} | {mode} | {m.rate:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} "
            f"| {m.lost} | {m.late} | {m.cpu_us:,.0f} |"
        )
    print()
    for mode in ("closed", "sequential"):
        # Each Harken run follows its bare run directly, so the pair saw the same
        # machine; the median of the pairs' ratios is steadier than a ratio of medians.
        pairs = zip(results[("harken", mode)], results[("bare", mode)], strict=True)
        ratios = [h.rate / max(b.rate, 1e-9) for h, b in pairs]
        runs = ", ".join(f"{r.rate:,.0f}" for r in results[("harken", mode)])
        bare = ", ".join(f"{r.rate:,.0f}" for r in results[("bare", mode)])
        print(
            f"- {mode}: Harken / bare = **{statistics.median(ratios):.2f}x** (median of "
            f"per-run ratios {', '.join(f'{r:.2f}' for r in ratios)}; msg/s Harken {runs}; "
            f"bare {bare})"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
