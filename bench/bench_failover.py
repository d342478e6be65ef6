"""Failover: how long after a `kill -9` of the leader another Harken process leads.

Two `harken shell --linger` processes share a job store on a private PostgreSQL
(tests/support/postgres.py); each round kills the leader with SIGKILL, times until the
other logs that it leads, starts a new process in place of the dead one, and lets the
leader deliver for 0.5 to 3.5 s (seeded) before the next kill. With the
default lease (8 s, renewed every 2 s) the hand-over is bounded by the lease plus one
renewal interval. Also counts reminders delivered twice: one falls due every 3 s
while the leaders are killed.

    .venv/bin/python -m bench.bench_failover [--kills 20] [--lease 8] [--renew 2]

It then measures the one window in which a reminder can be delivered twice: how long a
run's record stays undelivered, from its commit to the delivered mark.
"""

from __future__ import annotations

import argparse
import itertools
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from tests.support.postgres import PrivatePostgres
from tests.support.shell_process import Shell


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", default="8")
    parser.add_argument("--renew", default="2")
    parser.add_argument("--windows", type=int, default=15)
    args = parser.parse_args(argv)
    names = (f"p{n}" for n in itertools.count())
    chance = random.Random(20261204)
    times: list[float] = []
    with PrivatePostgres() as server, tempfile.TemporaryDirectory() as scratch:
        url = server.create_database("failover")

        def start(script: str = "") -> Shell:
            name = next(names)
            directory = Path(scratch) / name
            directory.mkdir()
            env = {
                "HARKEN_SCHEDULER_URL": url,
                "HARKEN_CLUSTER_ENABLED": "true",
                "HARKEN_CLUSTER_NAME": name,
                "HARKEN_CLUSTER_LEASE_SECONDS": args.lease,
                "HARKEN_CLUSTER_RENEW_SECONDS": args.renew,
            }
            return Shell(directory, script, "--linger", "3600", env=env)

        # One every 3 s, as many as one person may have pending (100), covers the kills.
        count = 95
        script = "".join(f"remind me in {5 + 3 * n} seconds to r{n}\n" for n in range(count))
        shells = [start(script)]
        for _ in range(count):
            shells[0].expect("^OK, I'll remind you")
        shells[0].expect_log("is the leader")
        shells.append(start())
        every = list(shells)
        try:
            for _ in range(args.kills):
                leader = next(s for s in shells if any("is the leader" in line for line in s.log))
                follower = next(s for s in shells if s is not leader)
                leader.kill9()
                killed = time.monotonic()
                follower.expect_log("is the leader", timeout=60)
                times.append(time.monotonic() - killed)
                shells = [follower, start()]
                every.append(shells[-1])
                shells[-1].expect_log("scheduler started", timeout=60)
                # The leader delivers for a while; the next kill lands anywhere in that.
                time.sleep(chance.uniform(0.5, 3.5))
            windows = record_windows(url, args.windows)
            for shell in shells:
                shell.kill9()
        finally:
            for shell in shells:
                if shell.proc.poll() is None:
                    shell.proc.kill()
        lines = [
            line
            for shell in every
            for line in shell.printed()
            if line.startswith("Reminder for ann")
        ]
    # "Reminder for ann: r12", maybe followed by a note on how late it is.
    numbers = [int(found[1]) for line in lines if (found := re.search(r": r(\d+)", line))]
    twice = len(numbers) - len(set(numbers))
    print(f"failover after kill -9, lease {args.lease} s, renewed every {args.renew} s:")
    print(
        f"  {len(times)} kills: p50 {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s, min {min(times):.2f} s"
    )
    print(f"  reminders delivered: {len(set(numbers))}, of which {twice} twice")
    missing = sorted(set(range(max(numbers) + 1)) - set(numbers)) if numbers else []
    print(f"  reminders missing among those due: {missing or 'none'}")
    print(
        f"  the window for a second delivery (a run recorded -> its delivery recorded), "
        f"{len(windows)} reminders: p50 {statistics.median(windows) * 1000:.1f} ms, "
        f"max {max(windows) * 1000:.1f} ms"
    )
    return 0


def record_windows(url: str, count: int) -> list[float]:
    """How long each of the next `count` delivery records stays undelivered: from the
    commit that records a run to the one that marks it delivered. A kill -9 of the
    leader within that time makes the next leader send it again. Polled about every
    millisecond, so each figure is short by up to one poll."""
    first_seen: dict[int, float] = {}
    windows: list[float] = []
    with psycopg.connect(url, autocommit=True) as connection:
        backlog = {
            int(row[0])
            for row in connection.execute(
                "SELECT id FROM harken_deliveries WHERE delivered IS NULL"
            ).fetchall()
        }
        while len(windows) < count:
            now = time.monotonic()
            rows = connection.execute(
                "SELECT id FROM harken_deliveries WHERE delivered IS NULL"
            ).fetchall()
            open_now = {int(row[0]) for row in rows} - backlog
            for key in open_now:
                first_seen.setdefault(key, now)
            for key in [k for k in first_seen if k not in open_now]:
                windows.append(now - first_seen.pop(key))
            time.sleep(0.001)  # polls a table other processes write
    return windows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
