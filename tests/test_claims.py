"""Event claims and room leases between Harken processes, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
import pytest

from actors.claims import Claims
from memory.pg_schema import SchemaError


async def _opened(url: str, *names: str) -> list[Claims]:
    processes = [Claims(url, name) for name in names]
    for process in processes:
        await process.open()
    return processes


def test_each_event_is_claimed_by_exactly_one_process(pg_url: str) -> None:
    async def scenario() -> None:
        processes = await _opened(pg_url, "a", "b", "c")
        try:
            events = [f"Ev{n}" for n in range(200)]
            wins = await asyncio.gather(
                *(p.claim("slack", event) for event in events for p in processes)
            )
            per_event = [sum(wins[i * 3 : i * 3 + 3]) for i in range(len(events))]
            assert per_event == [1] * len(events)
            assert sum(p.conflicts for p in processes) == 2 * len(events)
            # The same id from another input is another event.
            assert await processes[0].claim("xmpp", "Ev1")
        finally:
            for process in processes:
                await process.close()

    asyncio.run(scenario())


def test_a_room_has_one_owner_until_its_lease_ends(pg_url: str) -> None:
    async def scenario() -> None:
        first, second = await _opened(pg_url, "first", "second")
        try:
            lease = timedelta(seconds=30)
            assert await first.hold_room("ops@conference.localhost", lease)
            assert not await second.hold_room("ops@conference.localhost", lease)
            assert await first.hold_room("ops@conference.localhost", lease)  # renewed
            holders = await second.room_holders()
            assert [(room, who) for room, who, _ in holders] == [
                ("ops@conference.localhost", "first")
            ]
            assert 0 < holders[0][2] <= 30
            # An owner that stops cleanly hands the room over at once.
            await first.release_room("ops@conference.localhost")
            assert await second.hold_room("ops@conference.localhost", lease)
            assert not await first.hold_room("ops@conference.localhost", lease)
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


def test_an_expired_lease_passes_to_another_process(pg_url: str) -> None:
    async def scenario() -> None:
        dead, alive = await _opened(pg_url, "dead", "alive")
        try:
            assert await dead.hold_room("room", timedelta(seconds=30))
            # The owner died 31 seconds ago: its lease ran out.
            with psycopg.connect(pg_url, autocommit=True) as connection:
                connection.execute(
                    "UPDATE harken_room_leases SET expires_at = now() - interval '1 second'"
                )
            assert await alive.hold_room("room", timedelta(seconds=30))
            assert not await dead.hold_room("room", timedelta(seconds=30))
        finally:
            await dead.close()
            await alive.close()

    asyncio.run(scenario())


def test_claims_refuse_to_run_on_a_newer_schema(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE harken_schema (component text PRIMARY KEY, version integer NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        connection.execute("INSERT INTO harken_schema VALUES ('claims', 99, now())")
    with pytest.raises(SchemaError, match="version 99, newer than this Harken knows"):
        asyncio.run(Claims(pg_url, "a").open())
