"""Event claims and room leases between Harken processes, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
from support.postgres import PrivatePostgres

from actors.claim_outcome import Claim
from actors.claims import ClaimQueue, Claims, RoomLeases
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


def test_claim_many_gives_each_event_to_one_process_and_counts_the_rest(pg_url: str) -> None:
    async def scenario() -> None:
        first, second = await _opened(pg_url, "first", "second")
        try:
            assert await first.claim_many("slack", ["a", "b"]) == {"a", "b"}
            assert await second.claim_many("slack", ["b", "c", "c"]) == {"c"}
            assert second.conflicts == 2  # "b" was first's; the second "c" is a copy
            assert await first.claim_many("slack", []) == set()
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


def test_a_claim_queue_hands_over_what_it_won_in_order_and_nothing_when_it_cannot_claim(
    pg_url: str, postgres: PrivatePostgres
) -> None:
    handed: list[str] = []
    conflicts: list[int] = []
    failures: list[int] = []

    async def scenario() -> None:
        (mine,) = await _opened(pg_url, "mine")
        (other,) = await _opened(pg_url, "other")
        queue: ClaimQueue[str] = ClaimQueue(
            mine,
            "slack",
            lambda item: item,
            handed.append,
            on_conflicts=conflicts.append,
            on_failures=failures.append,
        )
        task = asyncio.ensure_future(queue.run())
        try:
            await other.claim("slack", "e2")
            outcomes = [queue.put(item) for item in ("e1", "e2", "e3")]
            assert await _settled(outcomes) == [Claim.WON, Claim.TAKEN, Claim.WON]
            assert handed == ["e1", "e3"]
            assert sum(conflicts) == 1
            # The database ends the claims' sessions: that batch is not handed over.
            postgres.terminate("harken-claims")
            assert await _settled([queue.put("e4")]) == [Claim.FAILED]
            assert failures == [1]
            assert handed == ["e1", "e3"]
            # The next claim is made on a fresh connection.
            assert await _settled([queue.put("e5")]) == [Claim.WON]
            assert handed == ["e1", "e3", "e5"]
        finally:
            task.cancel()
            await mine.close()
            await other.close()

    asyncio.run(scenario())


def test_a_claim_queue_settles_each_item_after_its_batch_is_written_and_handed_over(
    pg_url: str,
) -> None:
    # Many items, one statement: every future settles only once the row is in the
    # table (another session sees it) and the item is with `submit`.
    handed: list[str] = []
    batches: list[int] = []

    async def scenario() -> None:
        (mine,) = await _opened(pg_url, "mine")
        queue: ClaimQueue[str] = ClaimQueue(
            mine,
            "slack",
            lambda item: item,
            handed.append,
            on_conflicts=batches.append,  # once per batch, with how many were lost
            on_failures=lambda count: None,
        )
        task = asyncio.ensure_future(queue.run())
        seen: dict[str, tuple[bool, bool]] = {}
        try:
            with psycopg.connect(pg_url, autocommit=True) as reader:

                def written(item: str) -> bool:
                    row = reader.execute(
                        "SELECT count(*) FROM harken_event_claims WHERE event_id = %s", (item,)
                    ).fetchone()
                    return row == (1,)

                items = [f"m{n}" for n in range(50)]
                outcomes = [queue.put(item) for item in items]
                for item, outcome in zip(items, outcomes, strict=True):
                    outcome.add_done_callback(
                        lambda _, item=item: seen.setdefault(item, (written(item), item in handed))
                    )
                assert not any(outcome.done() for outcome in outcomes)  # nothing claimed yet
                assert await _settled(outcomes) == [Claim.WON] * 50
            assert seen == {item: (True, True) for item in items}
            assert batches == [0]
        finally:
            task.cancel()
            await mine.close()

    asyncio.run(scenario())


async def _settled(outcomes: list[asyncio.Future[Claim]]) -> list[Claim]:
    return list(await asyncio.wait_for(asyncio.gather(*outcomes), timeout=15))


def test_room_leases_give_a_room_to_one_process_and_pass_it_on_a_clean_stop(
    pg_url: str,
) -> None:
    def leases(name: str) -> RoomLeases:
        return RoomLeases(
            pg_url, name, ["xmpp:ops"], lease_seconds=3, renew_seconds=0.5, label="xmpp"
        )

    first, second = leases("first"), leases("second")
    first.start()
    second.start()
    try:
        assert not first.owns("xmpp:ops")  # not connected: holds nothing
        first.set_connected(True)
        _wait(lambda: first.owns("xmpp:ops"), "first to own the room")
        second.set_connected(True)
        # The second stays silent while the first renews (several renewals).
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            assert not second.owns("xmpp:ops")
            assert first.owns("xmpp:ops")
            time.sleep(0.1)  # samples who owns the room over two seconds
        first.stop()
        assert not first.owns("xmpp:ops")
        _wait(lambda: second.owns("xmpp:ops"), "second to take the room")
        # Losing the chat connection gives the room up at once.
        second.set_connected(False)
        assert not second.owns("xmpp:ops")
        with psycopg.connect(pg_url, autocommit=True) as connection:
            _wait(
                lambda: (
                    connection.execute("SELECT count(*) FROM harken_room_leases").fetchone() == (0,)
                ),
                "the room given back",
            )
    finally:
        first.stop()
        second.stop()


def _wait(ready: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)  # polls state another thread changes
