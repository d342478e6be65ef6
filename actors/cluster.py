"""The leader lease: which of several Harken processes on one PostgreSQL runs due jobs.

Imported only when a PostgreSQL job store is configured: psycopg is an extra
(`harken[postgresql]`).

Every process of a cluster (`[cluster] enabled`) shares the job store; only the holder
of the lease, a row of `harken_lease`, takes due jobs. Each process runs a `Lease` on a
thread of its own with one dedicated connection (named after the process, as all its
sessions are), on which it, every `renew_seconds`:

* writes its heartbeat into `harken_processes` (for `status` and `/healthz`);
* as the leader, renews the lease (its expiry moves to the database's `now()` plus
  `lease_seconds`), the row matched by holder and epoch;
* as a follower, takes the lease if it has expired, raising its epoch by one.

The leader counts itself leader only until `lease_seconds - renew_seconds` after it
*sent* its last successful renewal, on its own monotonic clock, so it stops taking due
jobs before the database lets anyone else take the lease, whatever its connection does
(`is_leader`). Every firing is also fenced (`fence`): the transaction that records a
run checks, with a share lock on the lease row, that this process still holds an
unexpired lease with its epoch, so a process that lost the lease records nothing.
A leader whose dedicated connection breaks steps down at once, gives the lease back as
soon as it reconnects, and sits out one lease before it competes again. A clean stop
gives the lease back, so another process takes over within `renew_seconds`.

The same connection listens on `harken_jobs`: a job added by any process notifies it,
so the leader's scheduler wakes for a job sooner than the ones it knew of.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import Connection

from actors.job_store import JOBS_CHANNEL, job_store_url
from core.status import ClusterView, ProcessView

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = [
    "CLUSTER_MIGRATIONS",
    "Lease",
    "NotLeader",
    "cluster_problems",
    "connect",
    "describe_error",
    "reach_problem",
    "safe_url",
]

logger = logging.getLogger(__name__)

LEASE_NAME: Final = "scheduler"
STALE_PROCESS_SECONDS: Final = 3600
"""Processes without a heartbeat for this long are removed from the process table."""

CLUSTER_MIGRATIONS: Final = (
    """
    CREATE TABLE harken_lease (
        name text PRIMARY KEY,
        holder text NOT NULL,
        epoch bigint NOT NULL,
        acquired_at timestamptz NOT NULL,
        renewed_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );
    CREATE TABLE harken_processes (
        name text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL
    );
    """,
)
"""The `cluster` component's schema (memory/pg_schema.py)."""

_ACQUIRE = """
INSERT INTO harken_lease AS l (name, holder, epoch, acquired_at, renewed_at, expires_at)
VALUES (%(lease)s, %(me)s, 1, now(), now(), now() + make_interval(secs => %(seconds)s))
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder, epoch = l.epoch + 1, acquired_at = now(), renewed_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE l.expires_at < now()
RETURNING epoch
"""
_RENEW = """
UPDATE harken_lease SET renewed_at = now(), expires_at = now() + make_interval(secs => %(seconds)s)
WHERE name = %(lease)s AND holder = %(me)s AND epoch = %(epoch)s
RETURNING epoch
"""
_RELEASE = """
UPDATE harken_lease SET expires_at = now()
WHERE name = %(lease)s AND holder = %(me)s AND epoch = %(epoch)s AND expires_at > now()
"""
_HEARTBEAT = """
INSERT INTO harken_processes (name, host, pid, started_at, heartbeat_at)
VALUES (%(me)s, %(host)s, %(pid)s, now(), now())
ON CONFLICT (name) DO UPDATE SET heartbeat_at = now(), host = EXCLUDED.host, pid = EXCLUDED.pid
"""
_FORGET_STALE = (
    "DELETE FROM harken_processes WHERE heartbeat_at < now() - make_interval(secs => %(age)s)"
)
_FENCE = text(
    "SELECT 1 FROM harken_lease WHERE name = :lease AND holder = :me AND epoch = :epoch"
    " AND expires_at > now() FOR SHARE"
)
_VIEW_LEASE = """
SELECT holder, epoch, extract(epoch FROM now() - acquired_at),
       extract(epoch FROM now() - renewed_at), extract(epoch FROM expires_at - now())
FROM harken_lease WHERE name = %s
"""
_VIEW_PROCESSES = """
SELECT name, host, pid, extract(epoch FROM now() - started_at),
       extract(epoch FROM now() - heartbeat_at)
FROM harken_processes ORDER BY name
"""


class NotLeader(Exception):
    """This process does not hold the lease: it must not record a firing."""


def safe_url(url: str) -> str:
    """`url` without its password, to name the database in messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url.replace("+psycopg", "", 1))
    except psycopg.ProgrammingError:
        return "(a PostgreSQL URL that cannot be read)"
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    return f"{info.get('user', '')}@{host}:{port}/{info.get('dbname', '')}".lstrip("@")


def describe_error(exc: BaseException, url: str) -> str:
    """An error's text on one line, with no password in it."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    try:
        password = psycopg.conninfo.conninfo_to_dict(url.replace("+psycopg", "", 1)).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        message = message.replace(str(password), "***")
    return message


def connect(url: str, name: str, timeout: float) -> psycopg.Connection[Any]:
    """A connection of this process: named after it, failing within about `timeout`."""
    return psycopg.connect(
        url.replace("+psycopg", "", 1),
        autocommit=True,
        application_name=name,
        connect_timeout=max(1, round(timeout)),
        # A silent network: the kernel gives up on unacknowledged data after this.
        tcp_user_timeout=int(timeout * 1000),
        keepalives=1,
        keepalives_idle=max(1, round(timeout)),
        keepalives_interval=1,
        keepalives_count=max(1, round(timeout)),
    )


def cluster_problems(settings: Settings) -> list[str]:
    """For `harken check`: why this process could not join its cluster (none if off)."""
    if not settings.cluster.enabled:
        return []
    url = job_store_url(settings)
    if url is None:
        return [
            "cluster.enabled: several processes share jobs only on PostgreSQL; set "
            "HARKEN_SCHEDULER_URL (or use the PostgreSQL memory store)"
        ]
    problem = reach_problem(url, settings.cluster.process_name())
    return [problem] if problem else []


def reach_problem(url: str, name: str) -> str | None:
    """Why this process cannot use the cluster's database, or None if it can."""
    try:
        with connect(url, name, 5.0) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        return (
            f"cannot reach the cluster's PostgreSQL at {safe_url(url)}: {describe_error(exc, url)}"
        )
    return None


class Lease:
    """This process's side of the leader lease, on a thread and connection of its own.

    `on_gain` and `on_loss` run on the lease's thread when this process becomes leader
    and when it stops being one; `on_notify` when a job was added anywhere.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        lease_seconds: float,
        renew_seconds: float,
        on_gain: Callable[[], None],
        on_loss: Callable[[str], None],
        on_notify: Callable[[], None],
    ) -> None:
        self.url = url
        self.name = name
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._on_gain = on_gain
        self._on_loss = on_loss
        self._on_notify = on_notify
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._valid_until = 0.0
        self._lost_epoch: int | None = None
        """The epoch held when the connection broke: given back once reconnected."""
        self._sit_out_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cluster-lease", daemon=True)
        self._watch_thread = threading.Thread(
            target=self._watch, name="cluster-lease-watch", daemon=True
        )

    # --- from any thread -------------------------------------------------------------

    def is_leader(self) -> bool:
        """Whether this process may take due jobs now (its own clock; see the module)."""
        with self._lock:
            return self._epoch is not None and time.monotonic() < self._valid_until

    def fence(self, connection: Connection) -> None:
        """In a job store transaction: raise `NotLeader` unless this process holds the
        lease; the row stays share-locked until the transaction ends."""
        with self._lock:
            epoch = self._epoch if time.monotonic() < self._valid_until else None
        if epoch is None:
            raise NotLeader(self.name)
        held = connection.execute(
            _FENCE, {"lease": LEASE_NAME, "me": self.name, "epoch": epoch}
        ).first()
        if held is None:
            raise NotLeader(self.name)

    def start(self) -> None:
        self._thread.start()
        self._watch_thread.start()

    def stop(self) -> None:
        """Stop leading, give the lease back, leave the process table."""
        self._stop.set()
        epoch = self._step_down("this process is stopping")
        # Wakes the thread from its wait for notifications; the lease is given back
        # here too, on a connection of its own, in case the thread's is stuck.
        with (
            contextlib.suppress(psycopg.Error),
            connect(self.url, self.name, self.renew_seconds) as connection,
        ):
            if epoch is not None:
                connection.execute(_RELEASE, self._params(epoch))
            connection.execute("DELETE FROM harken_processes WHERE name = %s", (self.name,))
            connection.execute("SELECT pg_notify(%s, %s)", (JOBS_CHANNEL, f"stopping {self.name}"))
        self._thread.join(timeout=self.renew_seconds * 2 + 5)
        self._watch_thread.join(timeout=self.renew_seconds + 5)

    def view(self) -> ClusterView:
        """The cluster as the database has it now (raises `psycopg.Error`)."""
        with connect(self.url, self.name, 2.0) as connection:
            lease = connection.execute(_VIEW_LEASE, (LEASE_NAME,)).fetchone()
            rows = connection.execute(_VIEW_PROCESSES).fetchall()
        leader = None
        if lease is not None and float(lease[4]) > 0:
            leader = str(lease[0])
        return ClusterView(
            name=self.name,
            is_leader=self.is_leader(),
            leader=leader,
            epoch=int(lease[1]) if lease else 0,
            lease_age_seconds=float(lease[2]) if lease else None,
            renewed_seconds_ago=float(lease[3]) if lease else None,
            expires_in_seconds=float(lease[4]) if lease else None,
            processes=tuple(
                ProcessView(
                    name=str(row[0]),
                    host=str(row[1]),
                    pid=int(row[2]),
                    up_seconds=float(row[3]),
                    heartbeat_seconds_ago=float(row[4]),
                )
                for row in rows
            ),
        )

    # --- on the lease's thread -----------------------------------------------------------

    def _params(self, epoch: int | None = None) -> dict[str, Any]:
        return {
            "lease": LEASE_NAME,
            "me": self.name,
            "epoch": epoch,
            "seconds": self.lease_seconds,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "age": STALE_PROCESS_SECONDS,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self.url, self.name, self.renew_seconds) as connection:
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(JOBS_CHANNEL)))
                    self._give_back(connection)
                    while not self._stop.is_set():
                        self._round(connection)
                        self._listen(connection)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                epoch = self._step_down(f"its connection to PostgreSQL failed ({exc})")
                if epoch is not None:
                    self._lost_epoch = epoch
                    self._sit_out_until = time.monotonic() + self.lease_seconds
                logger.warning(
                    "cluster: %s lost its connection to PostgreSQL (%s); retrying",
                    self.name,
                    describe_error(exc, self.url),
                )
                self._stop.wait(min(1.0, self.renew_seconds))

    def _watch(self) -> None:
        """Step down when the renewal deadline passes, even while a renewal hangs (the
        database unreachable): `is_leader` already says no from then on."""
        while not self._stop.is_set():
            with self._lock:
                until = self._valid_until if self._epoch is not None else None
            now = time.monotonic()
            if until is not None and now >= until:
                self._step_down("its lease could not be renewed in time")
                continue
            self._stop.wait(
                self.renew_seconds if until is None else min(self.renew_seconds, until - now)
            )

    def _give_back(self, connection: psycopg.Connection[Any]) -> None:
        """After a broken connection: the lease this process held goes back at once."""
        if self._lost_epoch is not None:
            connection.execute(_RELEASE, self._params(self._lost_epoch))
            logger.info("cluster: %s gave back the lease it held before", self.name)
            self._lost_epoch = None

    def _round(self, connection: psycopg.Connection[Any]) -> None:
        params = self._params()
        sent = time.monotonic()
        connection.execute(_HEARTBEAT, params)
        with self._lock:
            epoch = self._epoch
        if epoch is not None:
            params["epoch"] = epoch
            renewed = connection.execute(_RENEW, params).fetchone()
            if renewed is None:
                self._step_down("another process holds the lease")
                return
            with self._lock:
                if self._epoch == epoch:  # not stepped down while the renewal waited
                    self._valid_until = sent + self.lease_seconds - self.renew_seconds
            connection.execute(_FORGET_STALE, params)
            return
        if sent < self._sit_out_until:
            return
        taken = connection.execute(_ACQUIRE, params).fetchone()
        if taken is None:
            return
        with self._lock:
            self._epoch = int(taken[0])
            self._valid_until = sent + self.lease_seconds - self.renew_seconds
        logger.info("cluster: %s is the leader (epoch %d)", self.name, int(taken[0]))
        self._on_gain()

    def _listen(self, connection: psycopg.Connection[Any]) -> None:
        """Wait for the next round, passing on notifications of added jobs."""
        deadline = time.monotonic() + self.renew_seconds
        while not self._stop.is_set():
            wait = deadline - time.monotonic()
            if wait <= 0:
                return
            for _ in connection.notifies(timeout=wait, stop_after=1):
                self._on_notify()

    def _step_down(self, why: str) -> int | None:
        """Stop leading (if leading); the epoch that was held."""
        with self._lock:
            epoch, self._epoch = self._epoch, None
            self._valid_until = 0.0
        if epoch is not None:
            level = logging.INFO if self._stop.is_set() else logging.WARNING
            logger.log(level, "cluster: %s stopped leading: %s", self.name, why)
            self._on_loss(why)
        return epoch
