"""Schema migrations on PostgreSQL (memory/pg_schema.py), against a real server."""

from __future__ import annotations

import threading

import psycopg
import pytest

from memory.pg_schema import SchemaError, check, current_version, migrate

V1 = ["CREATE TABLE t_items (id int PRIMARY KEY)"]
V2 = [*V1, "ALTER TABLE t_items ADD COLUMN name text"]


def test_migrations_are_applied_in_order_and_once(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        assert current_version(connection, "items") == 0
        assert migrate(connection, "items", V1) == (0, 1)
        assert migrate(connection, "items", V2) == (1, 2)
        assert migrate(connection, "items", V2) == (2, 2)
        connection.execute("INSERT INTO t_items VALUES (1, 'one')")
        assert check(connection, "items", V2).current


def test_components_have_versions_of_their_own(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        migrate(connection, "items", V2)
        assert current_version(connection, "other") == 0
        assert not check(connection, "other", ["CREATE TABLE t_other (id int)"]).current


def test_a_schema_newer_than_known_is_refused_and_left_alone(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        migrate(connection, "items", V2)
        with pytest.raises(SchemaError, match="version 2, newer than this Harken knows"):
            check(connection, "items", V1)
        with pytest.raises(SchemaError):
            migrate(connection, "items", V1)
        assert current_version(connection, "items") == 2


def test_a_failing_migration_leaves_the_schema_as_it_was(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        migrate(connection, "items", V1)
        with pytest.raises(psycopg.errors.UndefinedTable):
            migrate(connection, "items", [*V1, "ALTER TABLE t_missing ADD COLUMN x int"])
        assert current_version(connection, "items") == 1


def test_processes_starting_together_migrate_once(pg_url: str) -> None:
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with psycopg.connect(pg_url, autocommit=True) as connection:
                results.append(migrate(connection, "items", V2))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert sorted(results) == [(0, 2), (2, 2), (2, 2), (2, 2)]
