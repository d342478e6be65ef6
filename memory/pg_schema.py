"""Versioned schema migrations for Harken's tables on PostgreSQL.

Several parts of Harken keep tables in one shared PostgreSQL database (the memory store,
the job store, the cluster's leases and claims). Each part is a *component* with an
ordered list of migrations: migration N (1-based) moves the component's schema from
version N-1 to N. The version each component is at is kept in one table:

    harken_schema(component text PRIMARY KEY, version integer, applied_at timestamptz)

`migrate` applies the missing migrations of a component in one transaction, under a
transaction-scoped advisory lock, so that several processes starting at once migrate
once and the others wait and find the work done. `check` only reads: it says whether a
component needs migrating, and refuses a schema newer than this Harken knows (a newer
release ran `harken migrate`), since writing to tables one does not understand could
lose data.

Migrations never change once released; a change of schema is a new migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg

__all__ = ["SchemaError", "SchemaState", "check", "current_version", "migrate"]

_LOCK_KEY: Final = 0x4861726B656E  # "Harken": the advisory lock migrations take.

_CREATE = """
CREATE TABLE IF NOT EXISTS harken_schema (
    component text PRIMARY KEY,
    version integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class SchemaError(RuntimeError):
    """The database's schema cannot be used by this Harken; the message says why."""


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where one component's schema stands against what this Harken knows."""

    component: str
    version: int
    known: int

    @property
    def current(self) -> bool:
        return self.version == self.known


def current_version(connection: psycopg.Connection[Any], component: str) -> int:
    """The version `component` is at in this database; 0 if it has no tables yet."""
    exists = connection.execute("SELECT to_regclass('harken_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = connection.execute(
        "SELECT version FROM harken_schema WHERE component = %s", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


def check(
    connection: psycopg.Connection[Any], component: str, migrations: Sequence[str]
) -> SchemaState:
    """Where `component` stands; raise `SchemaError` if it is newer than `migrations`."""
    state = SchemaState(component, current_version(connection, component), len(migrations))
    if state.version > state.known:
        raise SchemaError(
            f"the {component} schema in the database is at version {state.version}, "
            f"newer than this Harken knows ({state.known}): a newer Harken migrated it; "
            "run that release, or restore the database from before the migration"
        )
    return state


def migrate(
    connection: psycopg.Connection[Any], component: str, migrations: Sequence[str]
) -> tuple[int, int]:
    """Apply the missing migrations of `component`; return (version before, after).

    Runs in one transaction of its own (the connection must not be in one), so a
    failed migration leaves the schema at the version it had.
    """
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        connection.execute(_CREATE)
        before = check(connection, component, migrations).version
        for number in range(before + 1, len(migrations) + 1):
            connection.execute(migrations[number - 1].encode())
        if len(migrations) > before:
            connection.execute(
                "INSERT INTO harken_schema (component, version) VALUES (%s, %s)"
                " ON CONFLICT (component) DO UPDATE"
                " SET version = EXCLUDED.version, applied_at = now()",
                (component, len(migrations)),
            )
    return before, len(migrations)
