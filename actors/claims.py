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
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Final

import psycopg
from psycopg_pool import AsyncConnectionPool

from memory.pg_schema import migrate

__all__ = ["MIGRATIONS", "Claims"]

logger = logging.getLogger(__name__)

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
_PRUNE_EVERY: Final = 1000
"""Claims between two prunes of the old ones."""


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
        )
        await pool.open(wait=True, timeout=30)
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
