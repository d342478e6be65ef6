"""The memory store's part of `harken migrate` and `harken check`.

Both speak to the database of the `postgresql` backend only (the TinyDB store has no
schema to migrate); both name it by host, port and database, never with its password.
Each returns the lines for standard output and the problems, one line each, that the
CLI prints as `harken: ...` and that make it exit 2.
"""

from __future__ import annotations

from config.settings import Settings
from memory.store import StoreError

__all__ = ["check_memory", "migrate_memory"]

_NO_PSYCOPG = "memory.backend: postgresql needs psycopg: pip install 'harken[postgresql]'"


def _url(settings: Settings) -> str | None:
    memory = settings.memory
    if memory.backend != "postgresql" or memory.url is None:
        return None
    return memory.url.reveal()


def migrate_memory(settings: Settings) -> tuple[list[str], list[str]]:
    """Create or migrate the memory schema: what was done, and the problems."""
    url = _url(settings)
    if url is None:
        return [f"memory: the {settings.memory.backend} backend has no schema to migrate"], []
    try:
        from memory.pg_store import migrate_schema, where
    except ImportError:
        return [], [_NO_PSYCOPG]
    try:
        before, after = migrate_schema(url)
    except StoreError as exc:
        return [], [f"memory: {exc}"]
    if before == after:
        return [f"memory: schema at version {after} in {where(url)}, already current"], []
    return [f"memory: schema migrated from version {before} to {after} in {where(url)}"], []


def check_memory(settings: Settings) -> tuple[list[str], list[str]]:
    """Reach the memory database and read its schema version: a comment, or problems."""
    url = _url(settings)
    if url is None:
        return [], []
    try:
        from memory.pg_store import schema_state, where
    except ImportError:
        return [], [_NO_PSYCOPG]
    try:
        state = schema_state(url)
    except StoreError as exc:
        return [], [f"memory: {exc}"]
    if state.current:
        status = "current"
    elif state.version == 0:
        status = "not created yet: `harken run` creates it, or run `harken migrate`"
    else:
        status = f"older than this Harken's {state.known}: run `harken migrate` before `run`"
        line = f"# memory: PostgreSQL at {where(url)}, schema version {state.version} ({status})"
        return [line], [f"memory: the schema is at version {state.version}; {status}"]
    return [f"# memory: PostgreSQL at {where(url)}, schema version {state.version} ({status})"], []
