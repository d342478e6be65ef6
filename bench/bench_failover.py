"""Failover: how long after a `kill -9` of the leader another Harken process leads.

Two `harken shell --linger` processes share a job store on a private PostgreSQL
(tests/support/postgres.py); each round kills the leader with SIGKILL, times until the
other logs that it leads, and starts a new process in place of the dead one. With the
default lease (8 s, renewed every 2 s) the hand-over is bounded by the lease plus one
renewal interval. Also counts reminders delivered twice: one falls due every second,
while the leaders are killed.

    .venv/bin/python -m bench.bench_failover [--kills 20] [--lease 8] [--renew 2]

It then measures the one window in which a reminder can be delivered twice: from the
moment the leader prints it until its delivery is recorded.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.postgres import PrivatePostgres
from support.shell_process import Shell


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--lease", default="8")
    parser.add_argument("--renew", default="2")
    parser.add_argument("--windows", type=int, default=20)
    args = parser.parse_args(argv)
    names = (f"p{n}" for n in itertools.count())
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

        total = args.kills * (float(args.lease) + float(args.renew) + 3) + args.windows + 30
        count = int(total)
        script = "".join(f"remind me in {5 + n} seconds to r{n}\n" for n in range(count))
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
            windows = record_windows(shells[0], url, args.windows)
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
    twice = len(lines) - len(set(lines))
    print(f"failover after kill -9, lease {args.lease} s, renewed every {args.renew} s:")
    print(
        f"  {len(times)} kills: p50 {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s, min {min(times):.2f} s"
    )
    print(f"  reminders delivered: {len(set(lines))}, of which {twice} twice")
    print(
        f"  the window for a second delivery (reminder printed -> its delivery recorded), "
        f"{len(windows)} reminders: p50 {statistics.median(windows) * 1000:.1f} ms, "
        f"max {max(windows) * 1000:.1f} ms"
    )
    return 0


def record_windows(leader: Shell, url: str, count: int) -> list[float]:
    """For the next `count` reminders the leader prints: seconds until no delivery is
    left unrecorded (a kill -9 within that time sends the reminder again)."""
    windows = []
    with psycopg.connect(url, autocommit=True) as connection:
        for _ in range(count):
            leader.expect("^Reminder for ann", timeout=60)
            printed = time.monotonic()
            while True:
                row = connection.execute(
                    "SELECT count(*) FROM harken_deliveries WHERE delivered IS NULL"
                ).fetchone()
                if row is not None and row[0] == 0:
                    break
            windows.append(time.monotonic() - printed)
    return windows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
