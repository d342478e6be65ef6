"""The interface every memory store implements, its validation rules and a factory.

The memory actor is the only code that talks to a store (see DESIGN.md, Memory). Keeping
the interface this small is what lets a shared server store (`memory.pg_store`, on
PostgreSQL) replace the embedded TinyDB store without touching the actor or its callers.

Values are JSON: whatever `json.dumps` accepts in strict mode (no NaN or infinities,
since a server store would reject them). A store keeps the value as it would read back
after a restart, so a tuple comes back as a list and integer dict keys as strings, both
before and after a reopen.
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol, runtime_checkable

__all__ = [
    "BACKENDS",
    "DEFAULT_MAX_VALUE_BYTES",
    "JSON",
    "MAX_KEY_CHARS",
    "InvalidName",
    "InvalidWrite",
    "Store",
    "StoreClosed",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreUnavailable",
    "check_names",
    "encode_value",
    "open_store",
]

JSON = Any
"""A value that `json.dumps` accepts (strictly: no NaN or infinities)."""

DEFAULT_MAX_VALUE_BYTES: Final = 256 * 1024
"""Largest serialised value a store accepts unless configured otherwise."""

MAX_KEY_CHARS: Final = 200
"""Longest key, in characters; keys are names, not data."""

BACKENDS: Final = ("tinydb", "postgresql")
"""The backends `open_store` knows."""


REPAIR_HINT: Final = (
    "Run `harken check --repair` (with the same options as `harken run`) to move it aside "
    "into the store's damaged/ folder, be told what is lost, and start without it; or stop "
    'and restore the memory store from a backup (README: "Backups, restore and repair")'
)
"""How to proceed from a damaged file: part of every `StoreCorrupt` message."""


class StoreError(Exception):
    """The store cannot do what was asked: corrupt file, locked directory, closed store."""

    for_people = "my memory store cannot be used right now"
    """What a person in chat is told (no file names: those are in the log)."""


class StoreClosed(StoreError):
    """The store was used after `close()`."""


class StoreLocked(StoreError):
    """Another store (in this or another process) already has the directory open."""


class StoreCorrupt(StoreError):
    """A file of the store is not as the store wrote it, so it cannot be read safely.

    Raised instead of treating the file as empty: data that cannot be read is never
    reported as missing. The store changed nothing. `path` names the file; the message
    names it too and says how to proceed.
    """

    for_people = (
        "a file of my memory store is damaged, so I can't use what it holds; nothing was "
        "changed. An operator can repair it with `harken check --repair`"
    )

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"memory store file {path} is damaged ({problem}). {REPAIR_HINT}.")


class StoreUnavailable(StoreError):
    """The store cannot keep writes now: a commit (and reads it cannot answer) fail.

    The TinyDB store raises it once its files went away under it (deleted while open):
    writes acknowledged before are in those files, or lost with them; writes after
    would be lost, so every write, commit, and read of an owner not in memory raises
    this until the store is opened again. A server store raises it while its server
    cannot be reached, and keeps uncommitted writes for the next commit.
    """

    for_people = (
        "the files of my memory store were deleted while I was running, so nothing new "
        "can be kept. An operator must restore them (or remove what is left) and restart me"
    )


class InvalidWrite(ValueError):
    """A write was rejected before it touched the store; the store is unchanged.

    Messages never contain the value (it may be a secret) nor the names, so they are
    safe to log at WARNING.
    """


class InvalidName(InvalidWrite):
    """A namespace, owner or key is not a non-empty string (or the key is too long).

    Reads raise it too. It is an `InvalidWrite` so that the caller of `put` has a single
    exception to catch.
    """


def check_names(namespace: object, owner: object, key: object = "-") -> None:
    """Raise `InvalidName` unless namespace, owner and key are usable names.

    `key` defaults to a valid placeholder for operations that take no key (`keys`).
    """
    for what, name in (("namespace", namespace), ("owner", owner), ("key", key)):
        if not isinstance(name, str):
            raise InvalidName(f"{what} must be a str, not {type(name).__name__}")
        if not name:
            raise InvalidName(f"{what} must not be empty")
    assert isinstance(key, str)
    if len(key) > MAX_KEY_CHARS:
        raise InvalidName(f"key is {len(key)} characters long; the maximum is {MAX_KEY_CHARS}")


def encode_value(value: JSON, max_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> str:
    """Serialise a value to compact, ASCII-only JSON text, or raise `InvalidWrite`.

    The size limit applies to this text (non-ASCII characters count as their `\\uXXXX`
    escapes). ASCII-only text means every backend can store it byte-for-byte, lone
    surrogates included.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        # TypeError and ValueError messages from json name a type or say "circular
        # reference" / "out of range float"; they never echo the data itself.
        raise InvalidWrite(f"value is not JSON-serialisable: {exc}") from None
    except RecursionError:
        raise InvalidWrite("value is nested too deeply to serialise") from None
    if len(text) > max_bytes:
        raise InvalidWrite(f"value is {len(text)} bytes serialised; the maximum is {max_bytes}")
    return text


@runtime_checkable
class Store(Protocol):
    """A namespaced JSON key-value store with explicit group commit.

    Writes are visible to later reads at once; they are durable (they survive kill -9
    of the process) only once `commit()` has returned. Implementations are not
    thread-safe: one owner (the memory actor) uses each store.

    Data a store cannot read is never answered as missing: `get`, `keys`, `put` and
    `delete` raise `StoreCorrupt` (or another `StoreError`) instead of answering the
    default, an empty list or False, and `commit` raises `StoreUnavailable` once the
    store knows its writes can no longer be kept.
    """

    def get(self, namespace: str, owner: str, key: str, default: JSON = None) -> JSON:
        """The value under (namespace, owner, key), or `default` if there is none.

        The value is a fresh copy: mutating it does not change the store.
        """
        ...

    def keys(self, namespace: str, owner: str) -> list[str]:
        """The keys stored for (namespace, owner), sorted; empty if there are none."""
        ...

    def put(self, namespace: str, owner: str, key: str, value: JSON) -> None:
        """Store a JSON value; raise `InvalidWrite` (store unchanged) if it is invalid."""
        ...

    def delete(self, namespace: str, owner: str, key: str) -> bool:
        """Remove a key; return whether it existed."""
        ...

    def commit(self) -> None:
        """Make every earlier put and delete durable, all with one sync.

        On failure it raises (typically `OSError`) and the writes stay pending, so a
        later `commit()` retries them.
        """
        ...

    def close(self) -> None:
        """Commit, release the files and locks; further calls raise `StoreClosed`."""
        ...


def open_store(backend: str, path: str, *, url: str | None = None) -> Store:
    """Open the store `backend` keeps under `path` (a directory, created if missing), or
    for `postgresql` in the database `url` names (a secret: never logged).

    Raises `ValueError` naming the known backends if `backend` is not one of them, or
    if `postgresql` has no URL or its client library is not installed.
    """
    if backend == "tinydb":
        # Imported here because the backend imports this module for its interface.
        from memory.tinydb_store import TinyDBStore

        return TinyDBStore(path)
    if backend == "postgresql":
        if not url:
            raise ValueError("the postgresql memory store needs HARKEN_MEMORY_URL")
        try:
            from memory.pg_store import PgStore
        except ImportError:
            raise ValueError(
                "the postgresql memory store needs psycopg: pip install 'harken[postgresql]'"
            ) from None
        return PgStore(url)
    known = ", ".join(repr(name) for name in BACKENDS)
    raise ValueError(f"unknown memory store backend {backend!r}; known backends: {known}")
