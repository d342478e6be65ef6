"""Durable `remember` through PostgreSQL with 1 and 3 Harken processes in a cluster.

Two harnesses, both 100 people in a closed loop (one message each in flight), every
reply checked, all on one private PostgreSQL (tests/support/postgres.py: 127.0.0.1
only, `fsync = on`):

* The memory path: N real OS processes, each running the real actor system with the
  in-memory test input (as bench/bench_bot.py does) and its share of the people; the
  runs start together and the latency samples are merged. After each run every
  person's value is read back from the database: the last one acknowledged must be
  there. The embedded default (TinyDB, `[cluster]` off) and PostgreSQL with `[cluster]`
  off run in the same invocation. CPU per message (Harken, PostgreSQL) is reported.
* The whole path: real `harken run --inputs slack` processes with `[cluster] enabled`;
  the fake Slack (tests/support/fake_slack.py) runs in this process with one Socket
  Mode connection per Harken process and sends each envelope to one of them at random,
  as Slack does; it limits nothing (the processes' reply pacing is lifted too). Each
  message is claimed in the database, re-reads the person's dialog state and commits
  its write before the reply; latency is from the envelope sent to the reply's post.
  The fake and its load share the machine's cores with the processes.

    python -m bench.bench_cluster [--runs 3] [--messages 3000] [--warmup 500]
                                  [--path-messages 10000]
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
            results = []
            for run in range(runs):
                before = (_cpu(procs), time.process_time(), _server_cpu(server))
                result = closed_loop(fake, total, (run + 1) * 1_000_000)
                after = (_cpu(procs), time.process_time(), _server_cpu(server))
                for name, used_before, used_after in zip(
                    ("harken_us", "fake_us", "postgres_us"), before, after, strict=True
                ):
                    result[name] = (used_after - used_before) / total * 1e6
                results.append(result)
            return results
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                if proc.poll() is None:
                    proc.kill()
            fake.stop()


# --- the memory path across processes, without Slack ----------------------------------

Config = tuple[str, str, bool, int]
"""(label, memory backend, `[cluster] enabled`, processes)."""

PATH_CONFIGS: tuple[Config, ...] = (
    ("embedded default (TinyDB, `[cluster]` off)", "tinydb", False, 1),
    ("PostgreSQL, `[cluster]` off", "postgresql", False, 1),
    ("PostgreSQL, `[cluster]` on", "postgresql", True, 1),
    ("PostgreSQL, `[cluster]` on", "postgresql", True, 3),
)


PATH_WARMUP = 2_000


def _person(n: int) -> str:
    return f"u{n:03d}"


def _remember(n: int, run: int, j: int) -> tuple[str, str]:
    """(text, value) of person n's message j of a run."""
    value = f"r{run}-{j:05d}-{_person(n)}"
    return f"remember slot is {value}", value


def _path_loop(
    bot: Any, stream: queue.Queue[Any], people: list[int], run: int, total: int
) -> dict[str, Any]:
    """`total` messages from `people`, one each in flight; figures, and the last
    value acknowledged to each person (`last`)."""
    from actors.inputs.testing import Done

    expected: dict[str, tuple[int, int, str, float]] = {}
    last: dict[int, str] = {}
    latencies: list[float] = []
    wrong = 0
    sent = 0

    def send(n: int, j: int) -> None:
        nonlocal sent
        text, value = _remember(n, run, j)
        event = bot.event(text, user=_person(n))
        expected[event.id] = (n, j, value, time.monotonic())
        sent += 1
        bot.send_event(event)

    cpu = time.process_time()
    start = time.monotonic()
    for n in people[:total]:
        send(n, 0)
    while expected:
        item = stream.get(timeout=60)
        if not isinstance(item, Done):
            continue
        now = time.monotonic()
        n, j, value, sent_at = expected.pop(item.event_id)
        latencies.append(now - sent_at)
        if [e.data for e in item.replies] == [f"OK, I'll remember that slot is {value}."]:
            last[n] = value
        else:
            wrong += 1
        if sent < total:
            send(n, j + 1)
    end = time.monotonic()
    return {
        "start": start,
        "end": end,
        "cpu": time.process_time() - cpu,
        "latencies": latencies,
        "wrong": wrong,
        "last": last,
    }


def _lost(url: str, last: dict[int, str]) -> int:
    """People whose `slot` in the database is not the value last acknowledged to them."""
    import psycopg

    from harken.testbot import INPUT_NAME

    owners = {f"{INPUT_NAME}:{_person(n)}": value for n, value in last.items()}
    with psycopg.connect(url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT owner, value FROM harken_memory"
            " WHERE namespace = 'user' AND key = 'slot' AND owner = ANY(%s)",
            (list(owners),),
        ).fetchall()
    durable = {owner: json.loads(value) for owner, value in rows}
    return sum(1 for owner, value in owners.items() if durable.get(owner) != value)


def path_worker(argv: list[str]) -> int:
    """One process of the memory-path harness: a real bot, the test input, its people.

    Prints `ready` when it may start a run and waits for a line on stdin; then runs its
    share of the closed loop and prints one JSON line with the run's figures. With
    PostgreSQL it then reads every person's `slot` straight from the database: each
    must hold the value whose reply came last (a reply goes out only once committed).
    """
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--url", default="")
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--people", required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    args = parser.parse_args(argv)

    from actors.system import freeze_startup_objects
    from config.settings import ClusterSettings, MemorySettings, Secret, Settings
    from harken.testbot import TestBot

    people = [int(n) for n in args.people.split(",")]
    memory = MemorySettings(backend=args.backend, url=Secret(args.url) if args.url else None)
    settings = Settings(
        memory=memory, cluster=ClusterSettings(enabled=args.cluster, name=args.name)
    )
    stream: queue.Queue[Any] = queue.Queue()
    share = round(args.messages * len(people) / USERS)
    with tempfile.TemporaryDirectory(prefix="harken-bench-path-") as tmp:
        bot = TestBot(Path(tmp) / "memory", settings=settings, sink=stream.put)
        with bot:
            freeze_startup_objects()  # as `harken run` does once the bot is up
            _path_loop(bot, stream, people, 0, round(args.warmup * len(people) / USERS))
            for run in range(1, args.runs + 1):
                print("ready", flush=True)
                if not sys.stdin.readline():
                    return 1
                figures = _path_loop(bot, stream, people, run, share)
                last = figures.pop("last")
                figures["lost"] = _lost(args.url, last) if args.backend == "postgresql" else 0
                print(json.dumps(figures), flush=True)
    return 0


def bench_path(
    server: Any, config: Config, runs: int, total: int, warmup: int
) -> list[dict[str, float]]:
    """`config` in real processes; each run's aggregate: rate, merged p50/p99, wrong."""
    label, backend, cluster, count = config
    url = ""
    if backend == "postgresql":
        url = server.create_database(f"bench_path_{int(cluster)}_{count}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.bench_cluster", "--path-worker"),
                *("--backend", backend, "--url", url, "--name", f"p{p}"),
                *(["--cluster"] if cluster else []),
                "--people",
                ",".join(str(n) for n in range(p, USERS, count)),
                *("--runs", str(runs), "--messages", str(total), "--warmup", str(warmup)),
            ],
            cwd=Path(__file__).resolve().parent.parent,  # the repository: `-m bench...`
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for p in range(count)
    ]
    results: list[dict[str, float]] = []
    try:
        for _ in range(runs):
            for proc in procs:
                _expect(proc, "ready")
            server_cpu = _server_cpu(server)
            for proc in procs:  # all at once: they start within a few hundred µs
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            parts = [json.loads(_expect(proc, "{")) for proc in procs]
            server_cpu = _server_cpu(server) - server_cpu
            latencies = sorted(x for part in parts for x in part["latencies"])
            elapsed = max(part["end"] for part in parts) - min(part["start"] for part in parts)
            results.append(
                {
                    "rate": len(latencies) / elapsed,
                    "p50_ms": latencies[len(latencies) // 2] * 1000,
                    "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                    "wrong": sum(part["wrong"] + part["lost"] for part in parts),
                    "harken_us": sum(part["cpu"] for part in parts) / len(latencies) * 1e6,
                    "postgres_us": server_cpu / len(latencies) * 1e6,
                }
            )
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            if proc.wait(60) != 0:
                raise RuntimeError(f"{label}: a process ended with {proc.returncode}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _server_cpu(server: Any) -> float:
    """CPU seconds used so far by the PostgreSQL server: the postmaster, its children
    that ended (its cutime, cstime) and those that run (Linux /proc)."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # ended meanwhile
        if int(entry.name) == postmaster:
            total += sum(int(field) for field in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def _cpu(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds used so far by `procs`, every thread (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def _expect(proc: subprocess.Popen[str], prefix: str) -> str:
    """The next line `proc` prints, which must start with `prefix`."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise RuntimeError(f"a bench process said {line[:200]!r}, not {prefix!r}...")
    return line


def _median(results: list[dict[str, float]], name: str) -> float:
    return statistics.median(r[name] for r in results)


def _row(name: str, results: list[dict[str, float]], cpu: tuple[str, ...]) -> str:
    rates = ", ".join(f"{r['rate']:,.0f}" for r in results)
    used = " | ".join(f"{_median(results, key):,.0f}" for key in cpu)
    return (
        f"| {name} | {_median(results, 'rate'):,.0f} | {_median(results, 'p50_ms'):.2f} "
        f"| {_median(results, 'p99_ms'):.2f} | {rates} "
        f"| {sum(int(r['wrong']) for r in results)} | {used} |"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--path-worker"]:
        return path_worker(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--path-messages", type=int, default=10_000)
    args = parser.parse_args(argv)
    from tests.support.postgres import PrivatePostgres, postgres_missing

    missing = postgres_missing()
    if missing is not None:
        print(f"## Cluster: skipped: {missing}.")
        return 0
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(var, None)
    with PrivatePostgres() as server:
        path = {
            config: bench_path(server, config, args.runs, args.path_messages, PATH_WARMUP)
            for config in PATH_CONFIGS
        }
        slack = {
            count: bench_processes(server, count, args.runs, args.messages, args.warmup)
            for count in (1, 3)
        }
    print(f"## Cluster: durable `remember`, {USERS} users closed loop, {args.runs} runs")
    print()
    print(
        f"The memory path ({args.path_messages:,} messages a run): real processes, the test "
        "input, no Slack; the people split among the processes."
    )
    print()
    print(
        "| memory | processes | messages/s (median) | p50 ms (median) | p99 ms (median) "
        "| runs (msg/s) | wrong | CPU µs/msg: Harken | PostgreSQL |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (label, _, _, count), results in path.items():
        print(_row(f"{label} | {count}", results, ("harken_us", "postgres_us")))
    print()
    print(
        f"The whole path ({args.messages:,} messages a run): `harken run --inputs slack` "
        "processes, the fake Slack and its load in the benchmark's process."
    )
    print()
    print(
        "| processes | messages/s (median) | p50 ms (median) | p99 ms (median) | runs (msg/s) "
        "| wrong | CPU µs/msg: Harken | fake Slack | PostgreSQL |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for count, results in slack.items():
        print(_row(str(count), results, ("harken_us", "fake_us", "postgres_us")))
    print()
    one, three = path[PATH_CONFIGS[2]], path[PATH_CONFIGS[3]]
    print(
        "3 processes / 1 (messages/s, medians): memory path "
        f"{_median(three, 'rate') / _median(one, 'rate'):.2f}, whole path "
        f"{_median(slack[3], 'rate') / _median(slack[1], 'rate'):.2f}."
    )
    wrong = [r["wrong"] for results in (*path.values(), *slack.values()) for r in results]
    return 1 if any(wrong) else 0


if __name__ == "__main__":
    raise SystemExit(main())
