"""Who handles an inbound event when several Harken processes share one PostgreSQL.

Slack's Socket Mode may deliver one event to any of the app's connections, and every
XMPP process in a room sees every message of the room, so with N processes each event
reaches up to N of them. Exactly one must answer:

* **Event claims** (Slack): the first process to insert (source, event id) into
  `harken_event_claims` handles the event; the others find the row and drop their
  copy. Insert-if-absent is one statement, atomic in PostgreSQL. Claims are kept a day
  (Slack retries an event for minutes, not days) and pruned by whoever claims.
* **Room leases** (XMPP rooms): one process owns a room at a time, for a lease it
  renews; the others stay joined and silent. A lease row names its holder and when it
  expires; taking it is one upsert that succeeds only for the holder or once the lease
  has expired, so a dead owner's rooms pass to another process within one lease.

The tables are the "claims" component of the schema (memory/pg_schema.py).
`RoomLeases` keeps an input's rooms held (renewed every `renew_seconds`) on a thread and
loop of its own, so the inputs' loops only read whether they own a room, never wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from actors.claim_outcome import Claim
from memory.pg_schema import migrate

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["MIGRATIONS", "ClaimQueue", "Claims", "Complaints", "RoomLeases", "claims_url"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS: Final = [
    """
    CREATE TABLE harken_event_claims (
        source text NOT NULL,
        event_id text NOT NULL,
        process text NOT NULL,
        claimed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source, event_id)
    );
    CREATE INDEX harken_event_claims_age ON harken_event_claims (claimed_at);
    CREATE TABLE harken_room_leases (
        room text PRIMARY KEY,
        process text NOT NULL,
        expires_at timestamptz NOT NULL
    );
    """,
]
"""The "claims" component's schema migrations; never edit one, add the next."""

_CLAIM = (
    "INSERT INTO harken_event_claims (source, event_id, process) VALUES (%s, %s, %s)"
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING 1"
)
_CLAIM_MANY = (
    "INSERT INTO harken_event_claims (source, event_id, process)"
    " SELECT %s, id, %s FROM unnest(%s::text[]) AS id"
    " ON CONFLICT (source, event_id) DO NOTHING RETURNING event_id"
)
_PRUNE = "DELETE FROM harken_event_claims WHERE claimed_at < now() - %s"
_HOLD = (
    "INSERT INTO harken_room_leases AS lease (room, process, expires_at)"
    " VALUES (%s, %s, now() + %s)"
    " ON CONFLICT (room) DO UPDATE SET process = EXCLUDED.process,"
    " expires_at = EXCLUDED.expires_at"
    " WHERE lease.process = EXCLUDED.process OR lease.expires_at < now()"
    " RETURNING 1"
)
_RELEASE = "DELETE FROM harken_room_leases WHERE room = %s AND process = %s"
_HOLDERS = (
    "SELECT room, process, extract(epoch FROM expires_at - now())"
    " FROM harken_room_leases ORDER BY room"
)
POOL_TIMEOUT: Final = 3.0
"""Seconds a claim waits for a connection before it counts as failed."""
_PRUNE_EVERY: Final = 1000
"""Claims between two prunes of the old ones."""


def claims_url(settings: Settings) -> str | None:
    """The database the cluster claims in (the job store's), or None without a cluster."""
    if not settings.cluster.enabled:
        return None
    from actors.job_store import job_store_url

    url = job_store_url(settings)
    return url.replace("+psycopg", "", 1) if url else None


class Claims:
    """One process's side of the event claims and room leases, on an asyncio loop.

    `open()` migrates the schema (safe when several processes start together) and
    opens a small connection pool; the other calls are coroutines for the inputs'
    loops. A database error propagates: an input that cannot claim does not answer,
    since another process may have claimed the event.
    """

    def __init__(self, url: str, process: str, *, keep: timedelta = timedelta(days=1)) -> None:
        self._url = url
        self.process = process
        self._keep = keep
        self._pool: AsyncConnectionPool[Any] | None = None
        self._since_prune = 0
        self.conflicts = 0
        """Events another process had claimed first (for /metrics)."""

    async def open(self) -> None:
        with psycopg.connect(self._url, autocommit=True, application_name="harken-claims") as c:
            migrate(c, "claims", MIGRATIONS)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self._url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "application_name": "harken-claims"},
            open=False,
            # A claim waits this long for a connection while the database is away,
            # then fails: the event is not answered here (another process may).
            timeout=POOL_TIMEOUT,
        )
        try:
            await pool.open(wait=True, timeout=30)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _connection(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the claims are not open")
        return self._pool.connection()

    async def claim(self, source: str, event_id: str) -> bool:
        """Whether this process is the one to handle event `event_id` of `source`."""
        async with self._connection() as connection:
            cursor = await connection.execute(_CLAIM, (source, event_id, self.process))
            won = await cursor.fetchone() is not None
            self._since_prune += 1
            if self._since_prune >= _PRUNE_EVERY:
                self._since_prune = 0
                await connection.execute(_PRUNE, (self._keep,))
        if not won:
            self.conflicts += 1
        return won

    async def claim_many(self, source: str, event_ids: list[str]) -> set[str]:
        """Claim several events in one statement; the ids this process won."""
        if not event_ids:
            return set()
        async with self._connection() as connection:
            cursor = await connection.execute(_CLAIM_MANY, (source, self.process, event_ids))
            won = {str(row[0]) for row in await cursor.fetchall()}
            self._since_prune += len(event_ids)
            if self._since_prune >= _PRUNE_EVERY:
                self._since_prune = 0
                await connection.execute(_PRUNE, (self._keep,))
        self.conflicts += len(event_ids) - len(won)
        return won

    async def hold_room(self, room: str, lease: timedelta) -> bool:
        """Take or renew the lease on `room`; whether this process now owns it."""
        async with self._connection() as connection:
            cursor = await connection.execute(_HOLD, (room, self.process, lease))
            return await cursor.fetchone() is not None

    async def release_room(self, room: str) -> None:
        """Give up `room` at once (a clean stop), so another process takes it over."""
        async with self._connection() as connection:
            await connection.execute(_RELEASE, (room, self.process))

    async def room_holders(self) -> list[tuple[str, str, float]]:
        """(room, holding process, seconds until its lease ends) for every room."""
        async with self._connection() as connection:
            cursor = await connection.execute(_HOLDERS)
            rows = await cursor.fetchall()
        return [(str(room), str(process), float(left)) for room, process, left in rows]


class Complaints:
    """Logs a repeated failure at most once per `every` seconds, with how many there were."""

    def __init__(self, what: str, every: float = 30.0) -> None:
        self._what = what
        self._every = every
        self._next = 0.0
        self._quiet = 0

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._quiet += 1
            return
        more = f" ({self._quiet} more since the last report)" if self._quiet else ""
        logger.warning("%s: %s%s", self._what, reason, more)
        self._quiet = 0
        self._next = now + self._every


class ClaimQueue(Generic[T]):
    """Items handed over only if this process claims them, in the order they came.

    `put` (on the loop, never waiting) queues an item and returns a future of what
    became of it (`Claim`); one task claims everything queued in one statement
    (`Claims.claim_many`), hands the items it won to `submit` in order, counts the
    others, and then settles the batch's futures, so a caller that awaits one learns
    the outcome once its item is with `submit`. A claim that fails (the database away)
    hands nothing over: another process may have claimed those items; they are counted
    and logged, rate limited, and their futures say `Claim.FAILED`. `unclaimed` says in
    that log line what becomes of them. Open `claims` first; `run` is the task.
    """

    def __init__(
        self,
        claims: Claims,
        source: str,
        key: Callable[[T], str],
        submit: Callable[[T], None],
        *,
        on_conflicts: Callable[[int], None],
        on_failures: Callable[[int], None],
        unclaimed: str = "not answered",
    ) -> None:
        self._claims = claims
        self._source = source
        self._key = key
        self._submit = submit
        self._on_conflicts = on_conflicts
        self._on_failures = on_failures
        self._queue: deque[tuple[T, asyncio.Future[Claim]]] = deque()
        self._ready = asyncio.Event()
        self._complaints = Complaints(
            f"{source}: messages {unclaimed}, as they could not be claimed"
        )

    def put(self, item: T) -> asyncio.Future[Claim]:
        """Queue `item` for the next batch; the future settles when its batch is done."""
        outcome: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()
        self._queue.append((item, outcome))
        self._ready.set()
        return outcome

    async def run(self) -> None:
        queue = self._queue
        while True:
            await self._ready.wait()
            self._ready.clear()
            while queue:
                batch = list(queue)
                queue.clear()
                keys = [self._key(item) for item, _ in batch]
                try:
                    won = await self._claims.claim_many(self._source, keys)
                except Exception as exc:  # psycopg's, the pool's timeout
                    self._on_failures(len(batch))
                    self._complaints.failed(
                        f"{len(batch)} not claimed ({str(exc).strip() or type(exc).__name__})"
                    )
                    for _, outcome in batch:
                        _settle(outcome, Claim.FAILED)
                    continue
                lost = 0
                for (item, outcome), key in zip(batch, keys, strict=True):
                    if key in won:
                        won.discard(key)  # a key twice in one batch: the first only
                        self._submit(item)
                        _settle(outcome, Claim.WON)
                    else:
                        lost += 1
                        _settle(outcome, Claim.TAKEN)
                self._on_conflicts(lost)


def _settle(outcome: asyncio.Future[Claim], claim: Claim) -> None:
    if not outcome.done():  # a caller that gave up waiting cancelled it
        outcome.set_result(claim)


class RoomLeases:
    """Which of an input's rooms this process answers in, when several share them.

    A thread of its own runs an asyncio loop with a `Claims`: every `renew_seconds` it
    takes or renews the lease of each room (`lease_seconds` long) while the input is
    connected (`set_connected`), and gives them all back when it is not or stops. The
    process counts a room as its own until `lease_seconds - renew_seconds` after it sent
    its last successful renewal, on its own clock, so it falls silent before the lease
    can pass to another process, whatever the database does. `owns` is a dictionary
    read: safe and cheap from any thread.
    """

    def __init__(
        self,
        url: str,
        process: str,
        rooms: Iterable[str],
        *,
        lease_seconds: float,
        renew_seconds: float,
        label: str,
    ) -> None:
        self.rooms = tuple(rooms)
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.label = label
        self._claims = Claims(url, process)
        self._until: dict[str, float] = {}
        self._held: set[str] = set()
        """Rooms whose lease row names this process, as far as it knows."""
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._complaints = Complaints(f"{label}: cannot hold my rooms in the database")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"rooms:{label}", daemon=True)
        self._wake: asyncio.Event | None = None

    def owns(self, room: str) -> bool:
        """Whether this process answers in `room` now."""
        return time.monotonic() < self._until.get(room, 0.0)

    def set_connected(self, connected: bool) -> None:
        """The input's connection is up (rooms joined) or down: hold the rooms or not."""
        if connected == self._connected.is_set():
            return
        if connected:
            self._connected.set()
        else:
            self._connected.clear()
            self._until.clear()  # silent at once: it hears nothing anyway
        self._poke()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Give every room back (another process takes them within `renew_seconds`)."""
        self._stop.set()
        self._until.clear()
        self._poke()
        self._thread.join(timeout=self.renew_seconds + 10)

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(wake.set)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._keep())
        finally:
            self._loop.close()

    async def _keep(self) -> None:
        self._wake = asyncio.Event()
        while not self._stop.is_set():
            try:
                await self._claims.open()
                break
            except (psycopg.Error, OSError, TimeoutError) as exc:
                self._complaints.failed(str(exc).strip() or type(exc).__name__)
                await self._pause(self.renew_seconds)
        try:
            while not self._stop.is_set():
                if self._connected.is_set():
                    await self._round()
                else:
                    await self._give_back()
                await self._pause(self.renew_seconds)
        finally:
            await self._give_back()
            await self._claims.close()

    async def _pause(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _round(self) -> None:
        lease = timedelta(seconds=self.lease_seconds)
        for room in self.rooms:
            sent = time.monotonic()
            try:
                held = await self._claims.hold_room(room, lease)
            except Exception as exc:  # psycopg's, the pool's timeout: the room is not held
                self._until.pop(room, None)
                self._complaints.failed(str(exc).strip() or type(exc).__name__)
                continue
            had = self.owns(room)
            if held:
                self._held.add(room)
            else:
                self._held.discard(room)
            if held and self._connected.is_set() and not self._stop.is_set():
                self._until[room] = sent + self.lease_seconds - self.renew_seconds
                if not had:
                    logger.info("%s: this process now answers in %s", self.label, room)
            else:
                self._until.pop(room, None)
                if had:
                    logger.info("%s: another process answers in %s now", self.label, room)

    async def _give_back(self) -> None:
        for room in sorted(self._held):
            try:
                await self._claims.release_room(room)
            except Exception:  # not open, or the database is away: the lease runs out
                return
            self._held.discard(room)
            logger.info("%s: gave back %s", self.label, room)
