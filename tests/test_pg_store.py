"""The memory store on PostgreSQL (memory/pg_store.py), against a real server.

The first part is the `Store` contract, run on both backends (TinyDB and PostgreSQL):
what a caller of either may rely on. The rest is PostgreSQL's own: durability as another
connection sees it, two stores (two processes) on one database, a server restarted
under load, a session killed, damaged rows, the schema, and the URL's password.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support.postgres import PrivatePostgres

from memory.pg_store import (
    APPLICATION_NAME,
    MIGRATIONS,
    TABLE,
    DatabaseUnavailable,
    PgStore,
    SchemaMismatch,
    migrate_schema,
    schema_state,
    where,
)
from memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    InvalidName,
    InvalidWrite,
    Store,
    StoreClosed,
    StoreCorrupt,
    StoreUnavailable,
    open_store,
)

WAIT = 60.0

# --- the contract, on both backends --------------------------------------------------

Opener = Callable[[], Store]


@pytest.fixture(params=["tinydb", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the store of one backend; each call opens the same data again."""
    if request.param == "tinydb":
        return lambda: open_store("tinydb", str(tmp_path / "memory"))
    url: str = request.getfixturevalue("pg_url")
    return lambda: open_store("postgresql", "", url=url)


@pytest.fixture
def store(opener: Opener) -> Iterator[Store]:
    opened = opener()
    yield opened
    opened.close()


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "ünïcødé ✓ \U0001f600",
        "\ud800 a lone surrogate",
        "nul \x00 inside",
        2**70,
        3.25,
        True,
        None,
        [],
        {"b": 1, "a": [1, "two", [3.0, None], {"four": False}]},
    ],
)
def test_values_round_trip_through_a_reopen(opener: Opener, store: Store, value: Any) -> None:
    store.put("user", "alice", "k", value)
    assert store.get("user", "alice", "k") == value
    store.close()
    reopened = opener()
    try:
        got = reopened.get("user", "alice", "k")
        assert got == value
        if isinstance(value, dict):
            assert list(got) == list(value)  # key order too
    finally:
        reopened.close()


def test_values_read_back_as_json_would_and_as_copies(store: Store) -> None:
    original = {"t": (1, 2), 3: "three", "items": [1]}
    store.put("user", "alice", "k", original)
    original["items"].append(2)
    got = store.get("user", "alice", "k")
    assert got == {"t": [1, 2], "3": "three", "items": [1]}
    got["items"].append(4)
    store.commit()
    assert store.get("user", "alice", "k") == {"t": [1, 2], "3": "three", "items": [1]}


def test_missing_keys_give_the_default(store: Store) -> None:
    assert store.get("user", "nobody", "k") is None
    assert store.get("user", "nobody", "k", default={"d": 1}) == {"d": 1}
    assert store.keys("user", "nobody") == []


@pytest.mark.parametrize("commit_between", [False, True])
def test_owners_namespaces_keys_and_deletes(store: Store, commit_between: bool) -> None:
    for key in ["pear", "apple", "fig", "Zebra"]:
        store.put("user", "alice", key, key.upper())
    store.put("user", "bob", "fig", "bob's")
    store.put("plugin:weather", "alice", "fig", "plugin's")
    if commit_between:
        store.commit()
    assert store.keys("user", "alice") == ["Zebra", "apple", "fig", "pear"]
    assert store.delete("user", "alice", "fig") is True
    assert store.delete("user", "alice", "fig") is False
    assert store.delete("user", "nobody", "fig") is False
    assert store.keys("user", "alice") == ["Zebra", "apple", "pear"]
    assert store.get("user", "alice", "fig") is None
    assert store.get("user", "bob", "fig") == "bob's"
    assert store.get("plugin:weather", "alice", "fig") == "plugin's"
    store.put("user", "alice", "fig", "again")
    assert store.keys("user", "alice") == ["Zebra", "apple", "fig", "pear"]


def test_the_last_write_wins_across_a_reopen(opener: Opener, store: Store) -> None:
    for n in range(5):
        store.put("user", "alice", "k", n)
        if n % 2:
            store.commit()
    store.put("user", "alice", "gone", 1)
    store.commit()
    store.delete("user", "alice", "gone")
    store.close()
    reopened = opener()
    try:
        assert reopened.get("user", "alice", "k") == 4
        assert reopened.keys("user", "alice") == ["k"]
    finally:
        reopened.close()


@pytest.mark.parametrize(
    "case",
    [
        ("", "alice", "k", 1, InvalidName),
        ("user", 42, "k", 1, InvalidName),
        ("user", "alice", "k" * 201, 1, InvalidName),
        ("user", "alice", "k", {1, 2}, InvalidWrite),
        ("user", "alice", "k", float("nan"), InvalidWrite),
        ("user", "alice", "k", "x" * DEFAULT_MAX_VALUE_BYTES, InvalidWrite),
    ],
)
def test_invalid_writes_are_rejected_and_change_nothing(
    opener: Opener, store: Store, case: tuple[Any, Any, Any, Any, type[Exception]]
) -> None:
    namespace, owner, key, value, error = case
    store.put("user", "alice", "k", "kept")
    store.commit()
    with pytest.raises(error) as raised:
        store.put(namespace, owner, key, value)
    assert "hunter2" not in str(raised.value)
    store.close()
    reopened = opener()
    try:
        assert reopened.get("user", "alice", "k") == "kept"
        assert reopened.keys("user", "alice") == ["k"]
    finally:
        reopened.close()


def test_a_closed_store_refuses_use_and_closing_again_is_harmless(store: Store) -> None:
    store.close()
    store.close()
    for call in (
        lambda: store.get("user", "alice", "k"),
        lambda: store.put("user", "alice", "k", 1),
        store.commit,
    ):
        with pytest.raises(StoreClosed):
            call()


# --- PostgreSQL: durability and sharing ------------------------------------------------


def stored(url: str, namespace: str, owner: str, key: str) -> str | None:
    """The value's text as another connection (another process) sees it now."""
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            f"SELECT value FROM {TABLE} WHERE namespace = %s AND owner = %s AND key = %s",
            (namespace, owner, key),
        ).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def pg(pg_url: str) -> Iterator[PgStore]:
    opened = PgStore(pg_url)
    yield opened
    opened.close()


def test_a_write_is_in_the_database_after_commit_and_not_before(pg: PgStore, pg_url: str) -> None:
    pg.put("user", "alice", "pager", "555-0100")
    pg.put("user", "alice", "old", 1)
    assert stored(pg_url, "user", "alice", "pager") is None
    pg.commit()
    assert stored(pg_url, "user", "alice", "pager") == '"555-0100"'
    pg.delete("user", "alice", "old")
    assert stored(pg_url, "user", "alice", "old") == "1"
    pg.commit()
    assert stored(pg_url, "user", "alice", "old") is None
    assert pg.pending_writes == 0


def test_two_stores_on_one_database_see_each_others_commits(pg: PgStore, pg_url: str) -> None:
    with PgStore(pg_url) as other:
        pg.put("team", "team", "next_id", 1)
        assert other.get("team", "team", "next_id") is None  # pending in the first
        pg.commit()
        assert other.get("team", "team", "next_id") == 1
        other.put("team", "team", "next_id", 2)
        other.put("team", "team", "INC-1", {"title": "db down"})
        other.commit()
        assert pg.get("team", "team", "next_id") == 2
        assert pg.keys("team", "team") == ["INC-1", "next_id"]
        assert pg.delete("team", "team", "INC-1") is True
        pg.commit()
        assert other.keys("team", "team") == ["next_id"]


def test_one_commit_writes_a_burst_of_many_owners(pg: PgStore, pg_url: str) -> None:
    for n in range(2000):
        pg.put("user", f"slack:U{n}", "n", n)
    for n in range(0, 2000, 2):
        pg.delete("user", f"slack:U{n}", "n")
    pg.commit()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        row = connection.execute(f"SELECT count(*), sum(value::int) FROM {TABLE}").fetchone()
    assert row == (1000, sum(range(1, 2000, 2)))


def test_a_killed_session_fails_the_commit_then_the_next_commit_writes_it(
    pg: PgStore, pg_url: str, postgres: PrivatePostgres
) -> None:
    pg.put("user", "alice", "before", 1)
    pg.commit()
    pg.put("user", "alice", "during", 2)
    assert postgres.terminate(APPLICATION_NAME) >= 1
    with pytest.raises(StoreUnavailable) as failed:
        pg.commit()
    assert isinstance(failed.value, DatabaseUnavailable)
    assert "127.0.0.1" in str(failed.value)
    # Still pending: visible here, not yet in the database, and written by the next commit.
    assert pg.get("user", "alice", "during") == 2
    assert stored(pg_url, "user", "alice", "during") is None
    pg.commit()
    assert stored(pg_url, "user", "alice", "during") == "2"
    assert pg.get("user", "alice", "before") == 1


def test_a_read_on_a_dead_session_is_tried_again_on_a_fresh_one(
    pg: PgStore, postgres: PrivatePostgres
) -> None:
    pg.put("user", "alice", "k", "v")
    pg.commit()
    postgres.terminate(APPLICATION_NAME)
    assert pg.get("user", "alice", "k") == "v"


def test_no_acknowledged_write_is_lost_when_the_server_restarts_under_load(
    pg_url: str, postgres: PrivatePostgres
) -> None:
    acknowledged: list[int] = []
    failures: list[BaseException] = []
    restarted = threading.Event()
    after_restart = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with PgStore(pg_url) as store:
                since_restart = 0
                n = 0
                written: list[int] = []
                while since_restart < 50:
                    store.put("user", "load", f"k{n:05d}", n)
                    written.append(n)
                    n += 1
                    try:
                        store.commit()
                    except StoreUnavailable as exc:
                        failures.append(exc)
                        continue
                    acknowledged.extend(written)
                    written.clear()
                    if n == 100:
                        after_restart.set()  # the main thread restarts the server now
                    if restarted.is_set():
                        since_restart += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert after_restart.wait(WAIT)
        postgres.restart()
        restarted.set()
    finally:
        restarted.set()
        writer.join(WAIT)
    assert not writer.is_alive()
    assert not errors, errors
    assert failures, "the restart should have failed at least one commit"
    with PgStore(pg_url) as reader:
        keys = reader.keys("user", "load")
        for n in acknowledged:
            assert reader.get("user", "load", f"k{n:05d}") == n
    # Writes whose commit failed were retried by the next commit: nothing is missing.
    assert keys == [f"k{n:05d}" for n in range(len(keys))]
    assert len(keys) == len(acknowledged)


def test_a_commit_with_the_server_down_fails_and_keeps_the_writes(
    pg: PgStore, pg_url: str, postgres: PrivatePostgres
) -> None:
    pg.put("user", "alice", "k", 1)
    postgres.stop()
    try:
        with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1"):
            pg.commit()
        with pytest.raises(DatabaseUnavailable):
            pg.get("user", "alice", "other")  # a read it cannot answer is no "not found"
        assert pg.get("user", "alice", "k") == 1  # its own pending write it can
    finally:
        postgres.start()
    pg.commit()
    assert stored(pg_url, "user", "alice", "k") == "1"


# --- PostgreSQL: damage and names --------------------------------------------------------


def test_a_row_that_is_not_json_is_reported_damaged_naming_it(pg: PgStore, pg_url: str) -> None:
    pg.put("user", "slack:U1", "pager", "555-0100")
    pg.commit()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f"UPDATE {TABLE} SET value = '{{not json'")
    with pytest.raises(StoreCorrupt) as damaged:
        pg.get("user", "slack:U1", "pager")
    message = str(damaged.value)
    for part in (TABLE, "'user'", "'slack:U1'", "'pager'", "not valid JSON"):
        assert part in message
    assert pg.keys("user", "slack:U1") == ["pager"]  # the row is there: it is no "not found"
    assert stored(pg_url, "user", "slack:U1", "pager") == "{not json"  # and left alone


@pytest.mark.parametrize("name", ["nul\x00byte", "\udcff"])
def test_names_postgresql_cannot_hold_are_refused_and_change_nothing(
    pg: PgStore, name: str
) -> None:
    pg.put("user", "alice", "k", "kept")
    for call in (
        lambda: pg.put("user", name, "k", 1),
        lambda: pg.put(name, "alice", "k", 1),
        lambda: pg.put("user", "alice", name, 1),
        lambda: pg.get("user", "alice", name),
        lambda: pg.keys("user", name),
        lambda: pg.delete("user", "alice", name),
    ):
        with pytest.raises(InvalidName):
            call()
    pg.commit()
    assert pg.keys("user", "alice") == ["k"]


# --- PostgreSQL: the schema --------------------------------------------------------------


def test_the_first_start_creates_the_schema(pg_url: str) -> None:
    assert schema_state(pg_url).version == 0
    PgStore(pg_url).close()
    assert schema_state(pg_url).current
    assert migrate_schema(pg_url) == (len(MIGRATIONS), len(MIGRATIONS))


def test_a_schema_older_than_this_harken_uses_is_not_migrated_by_a_start(pg_url: str) -> None:
    PgStore(pg_url).close()
    newer = [*MIGRATIONS, f"CREATE INDEX harken_memory_updated ON {TABLE} (updated_at)"]
    with pytest.raises(SchemaMismatch, match="run `harken migrate`"):
        PgStore(pg_url, migrations=newer)
    assert schema_state(pg_url).version == len(MIGRATIONS)
    assert migrate_schema(pg_url, newer) == (len(MIGRATIONS), len(newer))
    PgStore(pg_url, migrations=newer).close()


def test_a_schema_newer_than_known_is_refused(pg_url: str) -> None:
    PgStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("UPDATE harken_schema SET version = 99 WHERE component = 'memory'")
    for call in (
        lambda: PgStore(pg_url),
        lambda: schema_state(pg_url),
        lambda: migrate_schema(pg_url),
    ):
        with pytest.raises(SchemaMismatch, match="version 99, newer than this Harken knows"):
            call()


# --- PostgreSQL: the URL ----------------------------------------------------------------


def with_password(url: str, password: str) -> str:
    # The private server trusts local connections: any password is accepted.
    return url.replace("://harken@", f"://harken:{password}@")


def test_connections_name_themselves_and_the_password_is_never_shown(
    pg_url: str, postgres: PrivatePostgres
) -> None:
    url = with_password(pg_url, "s3cret-pw")
    with PgStore(url) as store, psycopg.connect(pg_url, autocommit=True) as connection:
        store.put("user", "alice", "k", 1)
        store.commit()
        names = connection.execute(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchall()
        assert (APPLICATION_NAME,) in names
        assert "s3cret-pw" not in store.where
        postgres.terminate(APPLICATION_NAME)
        store.put("user", "alice", "k", 2)
        with pytest.raises(DatabaseUnavailable) as failed:
            store.commit()
        assert "s3cret-pw" not in str(failed.value)
    assert where(url) == f"127.0.0.1:{postgres.port}/{pg_url.rsplit('/', 1)[1]}"


def test_an_unreachable_database_is_named_by_host_with_the_reason_and_no_password() -> None:
    url = "postgresql://harken:s3cret-pw@127.0.0.1:1/harken"
    with pytest.raises(DatabaseUnavailable) as failed:
        PgStore(url)
    message = str(failed.value)
    assert "127.0.0.1:1/harken" in message
    assert "refused" in message.lower()
    assert "s3cret-pw" not in message
    assert "\n" not in message


def test_a_url_that_is_no_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(DatabaseUnavailable) as failed:
        PgStore("host=db password=s3cret-pw bogus")
    assert "s3cret-pw" not in str(failed.value)
