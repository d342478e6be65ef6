"""The memory store on PostgreSQL, for several Harken processes sharing one database.

One table holds every value, one row per (namespace, owner, key), the value as the
compact JSON text `encode_value` makes (text, not jsonb: it reads back byte for byte,
lone surrogates and key order included). The primary key is the lookup, so a read or a
write costs the same with 100 or 100,000 owners.

The promise is the TinyDB store's (`memory.store.Store`):

* A write is kept in this process, pending, and is visible to its later reads at once;
  reads of anything else go to the database, where other processes write too.
* `commit()` writes every pending put and delete in one transaction (one statement for
  the deletes, one for the puts, with arrays), so the memory actor's group commit is
  one round trip and one WAL flush for a burst of writers. The session runs with
  `synchronous_commit = on`: once `commit()` returned, the writes are durable.
* A lost connection (server restarted, session killed, network down) or any other
  database error fails the commit with `DatabaseUnavailable` (a `StoreUnavailable`);
  the writes stay pending and the next commit retries them on a fresh connection. The
  person is told "Sorry, I can't save right now": never an OK for a write not
  committed. If the connection died after the server committed but before it said so,
  the retry writes the same values again (puts and deletes set absolute values).
* A row whose value is not valid JSON raises `RowCorrupt` (a `StoreCorrupt`) naming
  the table, namespace, owner and key: never "not found".
* Names are text, so a namespace, owner or key with a NUL character or an unpaired
  surrogate (which PostgreSQL cannot store) is refused with `InvalidName`.

The schema is versioned with `memory.pg_schema` (component "memory"). Opening creates
it in a database that has none of it yet (first start); a schema older than this
Harken's needs `harken migrate` (`migrate_schema`), and a newer one is refused.

The URL is a secret (it may hold a password): it is never logged; messages name the
database with `where`, which leaves the password out. Every connection calls itself
`harken-memory` (`application_name`) unless the URL says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memory import pg_schema
from memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    JSON,
    InvalidName,
    StoreClosed,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    check_names,
    encode_value,
)

__all__ = [
    "APPLICATION_NAME",
    "COMPONENT",
    "MIGRATIONS",
    "TABLE",
    "DatabaseUnavailable",
    "PgStore",
    "RowCorrupt",
    "SchemaMismatch",
    "migrate_schema",
    "schema_state",
    "where",
]

logger = logging.getLogger(__name__)

COMPONENT: Final = "memory"
TABLE: Final = "harken_memory"
APPLICATION_NAME: Final = "harken-memory"

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: one row per value. COLLATE "C": names compare as bytes, fast and the same on
    # every server whatever its locale.
    f"""
    CREATE TABLE {TABLE} (
        namespace text COLLATE "C" NOT NULL,
        owner text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        value text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (namespace, owner, key)
    )
    """,
)
"""The memory schema's migrations, oldest first (never changed once released)."""

# Connection settings used unless the URL sets them: a dead server or network is noticed
# in seconds, not after the kernel's TCP timeouts (minutes to hours).
_CONNECTION_DEFAULTS: Final = {
    "application_name": APPLICATION_NAME,
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}

_GET = f"SELECT value FROM {TABLE} WHERE namespace = %s AND owner = %s AND key = %s"
_GET_MANY = (
    f"SELECT m.namespace, m.owner, m.key, m.value FROM {TABLE} AS m"
    " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS r(namespace, owner, key)"
    " ON m.namespace = r.namespace AND m.owner = r.owner AND m.key = r.key"
)
_KEYS = f"SELECT key FROM {TABLE} WHERE namespace = %s AND owner = %s"
_DELETE = (
    f"DELETE FROM {TABLE} AS m"
    " USING unnest(%s::text[], %s::text[], %s::text[]) AS d(namespace, owner, key)"
    " WHERE m.namespace = d.namespace AND m.owner = d.owner AND m.key = d.key"
)
_UPSERT = (
    f"INSERT INTO {TABLE} (namespace, owner, key, value)"
    " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
    " ON CONFLICT (namespace, owner, key)"
    " DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
)


class DatabaseUnavailable(StoreUnavailable):
    """The database cannot be reached, or refused what was asked; the message says why.

    Writes not yet committed stay pending: the next commit retries them.
    """

    for_people = "my memory database cannot be reached right now; please try again shortly"


class SchemaMismatch(StoreError):
    """The database's memory schema is not the one this Harken uses (older or newer)."""


class RowCorrupt(StoreCorrupt):
    """A row of the memory table holds a value that is not valid JSON."""

    for_people = (
        "a value in my memory database is damaged, so I can't use it; nothing was changed. "
        "An operator can find which one in my log"
    )

    def __init__(self, namespace: str, owner: str, key: str, problem: str) -> None:
        self.path = f"{TABLE} (namespace {namespace!r}, owner {owner!r}, key {key!r})"
        self.problem = problem
        StoreError.__init__(
            self,
            f"memory database row {self.path} is damaged ({problem}); nothing was changed. "
            "Correct its value (JSON text) or delete the row, then try again",
        )


def _params(url: str) -> dict[str, str]:
    """The connection parameters of `url`, or `DatabaseUnavailable` if it is no URL."""
    try:
        return {k: str(v) for k, v in conninfo_to_dict(url).items()}
    except psycopg.Error:
        # libpq's message may quote the string, password and all.
        raise DatabaseUnavailable(
            "HARKEN_MEMORY_URL is not a PostgreSQL URL (postgresql://user:password@host:5432/db)"
        ) from None


def where(url: str) -> str:
    """The database `url` names, for messages: `host:port/dbname`, never the password."""
    params = _params(url)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user', '')}"


def _reason(exc: BaseException, url: str) -> str:
    """One line saying why a database call failed, without the password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = _params(url).get("password")
    if password:
        text = text.replace(password, "***")
    return text.removeprefix("connection failed: ")


def _connect(url: str) -> psycopg.Connection[Any]:
    """A new autocommit connection; `DatabaseUnavailable` naming the host if none."""
    params = _params(url)
    extra = {k: v for k, v in _CONNECTION_DEFAULTS.items() if k not in params}
    try:
        connection = psycopg.connect(make_conninfo(url, **extra), autocommit=True)
    except psycopg.Error as exc:
        raise DatabaseUnavailable(
            f"cannot reach the memory database at {where(url)}: {_reason(exc, url)}"
        ) from None
    try:
        # Durable once committed, whatever the server's or the role's default says.
        connection.execute("SET synchronous_commit = on")
    except psycopg.Error as exc:
        connection.close()
        raise DatabaseUnavailable(
            f"cannot use the memory database at {where(url)}: {_reason(exc, url)}"
        ) from None
    return connection


def schema_state(url: str, migrations: Sequence[str] = MIGRATIONS) -> pg_schema.SchemaState:
    """Where the memory schema stands in the database `url` names; connects once.

    Raises `DatabaseUnavailable` if the database cannot be reached, `SchemaMismatch` if
    its schema is newer than this Harken knows.
    """
    with _connect(url) as connection:
        try:
            return pg_schema.check(connection, COMPONENT, migrations)
        except pg_schema.SchemaError as exc:
            raise SchemaMismatch(f"memory database at {where(url)}: {exc}") from None
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot read the memory schema at {where(url)}: {_reason(exc, url)}"
            ) from None


def migrate_schema(url: str, migrations: Sequence[str] = MIGRATIONS) -> tuple[int, int]:
    """Create or migrate the memory schema; (version before, version after).

    Raises like `schema_state`; a migration that fails changes nothing.
    """
    with _connect(url) as connection:
        try:
            return pg_schema.migrate(connection, COMPONENT, migrations)
        except pg_schema.SchemaError as exc:
            raise SchemaMismatch(f"memory database at {where(url)}: {exc}") from None
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot migrate the memory schema at {where(url)}: {_reason(exc, url)}"
            ) from None


def _decode(text: str, namespace: str, owner: str, key: str) -> JSON:
    """The value `text` holds; `RowCorrupt` naming the row if it is not valid JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        problem = f"its value is not valid JSON: {type(exc).__name__}"
        raise RowCorrupt(namespace, owner, key, problem) from None


def _check_text(*names: str) -> None:
    """`InvalidName` for a name PostgreSQL's text cannot hold (NUL, unpaired surrogate)."""
    for name in names:
        if "\x00" in name:
            raise InvalidName("names must not contain NUL characters in the postgresql store")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidName(
                "names must be valid Unicode text (no unpaired surrogates) in the postgresql store"
            ) from None


class PgStore:
    """A `memory.store.Store` kept in one PostgreSQL table (see the module docstring).

    Not thread-safe: one thread at a time (the memory actor's) may call it; it holds one
    connection, opened again after a failure.
    """

    def __init__(
        self,
        url: str,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        migrations: Sequence[str] = MIGRATIONS,
    ) -> None:
        """Connect, and make sure the schema is the one this Harken uses.

        A database without the memory schema gets it (first start); one with an older
        schema raises `SchemaMismatch` saying to run `harken migrate`, as does a newer
        one. An unreachable database raises `DatabaseUnavailable`.
        """
        if max_value_bytes < 1:
            raise ValueError("max_value_bytes must be positive")
        self.where = where(url)
        self._url = url
        self._max_value_bytes = max_value_bytes
        # (namespace, owner) -> key -> the value's JSON text, or None for a delete.
        self._pending: dict[tuple[str, str], dict[str, str | None]] = {}
        self._closed = False
        self._connection: psycopg.Connection[Any] | None = _connect(url)
        try:
            self._prepare_schema(self._connection, migrations)
        except BaseException:
            self._drop_connection()
            raise

    def _prepare_schema(
        self, connection: psycopg.Connection[Any], migrations: Sequence[str]
    ) -> None:
        try:
            state = pg_schema.check(connection, COMPONENT, migrations)
            if state.version == 0:
                before, after = pg_schema.migrate(connection, COMPONENT, migrations)
                if before == 0:
                    logger.info(
                        "memory database at %s: created the memory schema (version %d)",
                        self.where,
                        after,
                    )
                return
        except pg_schema.SchemaError as exc:
            raise SchemaMismatch(f"memory database at {self.where}: {exc}") from None
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot prepare the memory schema at {self.where}: {_reason(exc, self._url)}"
            ) from None
        if not state.current:
            raise SchemaMismatch(
                f"the memory schema in the database at {self.where} is at version "
                f"{state.version}; this Harken uses version {state.known}: run `harken migrate` "
                "(with the same options as `harken run`) first"
            )

    # --- the connection ------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None:
            self._connection = _connect(self._url)
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):  # it is gone either way
                connection.close()

    def _unavailable(self, exc: psycopg.Error, doing: str) -> DatabaseUnavailable:
        self._drop_connection()
        return DatabaseUnavailable(
            f"memory database at {self.where}: {doing} failed: {_reason(exc, self._url)}"
        )

    def _read(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of a read; a connection found dead is replaced and the read tried once more."""
        for attempt in (1, 2):
            stale = self._connection is not None
            connection = self._connect()
            try:
                return connection.execute(query, params).fetchall()
            except psycopg.Error as exc:
                error = self._unavailable(exc, "a read")
                if not stale or attempt == 2:
                    raise error from None
        raise AssertionError("unreachable")

    # --- the Store interface -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"memory store at {self.where} is closed")

    def _names(self, namespace: str, owner: str, key: str = "-") -> None:
        self._check_open()
        check_names(namespace, owner, key)
        _check_text(namespace, owner, key)

    def get(self, namespace: str, owner: str, key: str, default: JSON = None) -> JSON:
        """The value under (namespace, owner, key) as a fresh object, or `default`."""
        self._names(namespace, owner, key)
        pending = self._pending.get((namespace, owner), {})
        if key in pending:
            text = pending[key]
        else:
            rows = self._read(_GET, (namespace, owner, key))
            text = rows[0][0] if rows else None
        if text is None:
            return default
        return _decode(text, namespace, owner, key)

    def get_many(self, addresses: Sequence[tuple[str, str, str]]) -> list[JSON | Exception]:
        """The values under several (namespace, owner, key), in order, with one query.

        Each answer is the value (None if there is none) or the error reading it alone
        would raise (`InvalidName`, `RowCorrupt`); pending writes are seen as by
        `get`. A database that cannot answer raises `DatabaseUnavailable` for them all.
        """
        self._check_open()
        answers: list[JSON | Exception] = [None] * len(addresses)
        texts: dict[tuple[str, str, str], str | None] = {}
        wanted: tuple[list[str], list[str], list[str]] = ([], [], [])
        for i, address in enumerate(addresses):
            namespace, owner, key = address
            try:
                self._names(namespace, owner, key)
            except InvalidName as exc:
                answers[i] = exc
                continue
            pending = self._pending.get((namespace, owner), {})
            if key in pending:
                texts[address] = pending[key]
            elif address not in texts:
                texts[address] = None
                for column, name in zip(wanted, address, strict=True):
                    column.append(name)
        if wanted[0]:
            for namespace, owner, key, text in self._read(_GET_MANY, wanted):
                texts[namespace, owner, key] = text
        for i, address in enumerate(addresses):
            text = texts.get(address)
            if text is not None and answers[i] is None:
                try:
                    answers[i] = _decode(text, *address)
                except RowCorrupt as exc:
                    answers[i] = exc
        return answers

    def keys(self, namespace: str, owner: str) -> list[str]:
        """The keys stored for (namespace, owner), sorted."""
        self._names(namespace, owner)
        found = {row[0] for row in self._read(_KEYS, (namespace, owner))}
        for key, text in self._pending.get((namespace, owner), {}).items():
            if text is None:
                found.discard(key)
            else:
                found.add(key)
        return sorted(found)

    def put(self, namespace: str, owner: str, key: str, value: JSON) -> None:
        """Keep a value pending (durable after the next `commit()`); `InvalidWrite` if invalid."""
        self._names(namespace, owner, key)
        text = encode_value(value, self._max_value_bytes)
        self._pending.setdefault((namespace, owner), {})[key] = text

    def delete(self, namespace: str, owner: str, key: str) -> bool:
        """Remove a key (durable after the next `commit()`); return whether it existed."""
        self._names(namespace, owner, key)
        pending = self._pending.get((namespace, owner), {})
        if key in pending:
            existed = pending[key] is not None
        else:
            existed = bool(self._read(_GET, (namespace, owner, key)))
        if existed:
            self._pending.setdefault((namespace, owner), {})[key] = None
        return existed

    @property
    def pending_writes(self) -> int:
        """Puts and deletes not yet committed."""
        return sum(len(keys) for keys in self._pending.values())

    def commit(self) -> None:
        """Write every pending put and delete in one transaction (group commit).

        On failure raises `DatabaseUnavailable` and keeps the writes pending, so that
        the next commit retries them on a fresh connection.
        """
        self._check_open()
        if not self._pending:
            return
        columns: tuple[list[str], list[str], list[str], list[str]] = ([], [], [], [])
        deleted: tuple[list[str], list[str], list[str]] = ([], [], [])
        for (namespace, owner), keys in self._pending.items():
            for key, text in keys.items():
                target = deleted if text is None else columns
                target[0].append(namespace)
                target[1].append(owner)
                target[2].append(key)
                if text is not None:
                    columns[3].append(text)
        connection = self._connect()
        try:
            with connection.transaction():
                if deleted[0]:
                    connection.execute(_DELETE, deleted)
                if columns[0]:
                    connection.execute(_UPSERT, columns)
        except psycopg.Error as exc:
            raise self._unavailable(exc, "a commit") from None
        self._pending.clear()

    def close(self) -> None:
        """Commit what is pending and close the connection. Idempotent.

        If the final commit fails the error is raised, but the connection is closed.
        """
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._closed = True
            self._drop_connection()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
