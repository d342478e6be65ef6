"""The embedded default store: one small TinyDB file per owner, plus a journal.

Plain TinyDB rewrites its whole JSON file on every write, so one database for all users
makes a write cost grow with the number of users. Here the cost of a write is bounded
by the size of its own owner instead:

* Layout under the root directory (files 0600: memory may hold secrets)::

      LOCK                      flock()ed while a store has the directory open
      journal.log               write-ahead journal (see memory.journal)
      owners/<hh>/<sha256>.json one TinyDB file per owner

  The file name is the SHA-256 of the owner id, so any owner string is a safe name,
  and `<hh>` (its first two hex digits) spreads owners over 256 directories. Each
  file holds a `_meta` table with the owner id (checked on load) and one table per
  namespace, named `ns:<namespace>` so that no namespace can collide with `_meta`;
  documents are `{"key": k, "value": v}`.

* A write appends a record to the journal buffer and updates the owner's document in
  memory. `commit()` syncs the journal once for all writes since the previous commit
  (group commit). Owner files are rewritten only at a checkpoint: when the journal
  passes `checkpoint_bytes` or `checkpoint_owners` owners are dirty, and on close. A
  checkpoint writes every dirty owner to a temporary file in the same directory, syncs
  it, renames it over the old file, syncs the directories, and only then empties the
  journal. Writing one owner costs about the same whatever the number of owners, and
  bounding the dirty owners bounds how long a checkpoint holds up the memory actor.
  A crash at any moment leaves each owner file either old or new, never partial, and
  replaying the journal on open over either version gives the same result (puts and
  deletes are idempotent).

* Loaded owners are kept in a bounded LRU cache, so a store with 100,000 owners does
  not hold them all in memory; dirty owners are pinned until a checkpoint has written
  them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Final

from tinydb import TinyDB
from tinydb.storages import Storage

from memory.journal import Journal, Put, fsync_directory, read_journal
from memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    JSON,
    StoreClosed,
    StoreError,
    StoreLocked,
    check_names,
    encode_value,
)

__all__ = [
    "DEFAULT_CACHE_OWNERS",
    "DEFAULT_CHECKPOINT_BYTES",
    "DEFAULT_CHECKPOINT_OWNERS",
    "TinyDBStore",
]

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
DEFAULT_CHECKPOINT_OWNERS: Final = 1_000
DEFAULT_CACHE_OWNERS: Final = 10_000

META_TABLE: Final = "_meta"
NAMESPACE_PREFIX: Final = "ns:"
FORMAT_VERSION: Final = 1
_TEMP_SUFFIX: Final = ".tmp"


class _Owner:
    """One owner's data in memory: namespace -> key -> the value's JSON text.

    Values are kept as text so that every read hands out a fresh object (callers may
    mutate it) and so that they cost little memory.
    """

    __slots__ = ("id", "tables")

    def __init__(self, owner_id: str) -> None:
        self.id = owner_id
        self.tables: dict[str, dict[str, str]] = {}

    def to_tinydb(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The owner as TinyDB's storage layout: table -> document id -> document."""
        data: dict[str, dict[str, dict[str, Any]]] = {
            META_TABLE: {"1": {"owner": self.id, "version": FORMAT_VERSION}},
        }
        for namespace, table in self.tables.items():
            data[NAMESPACE_PREFIX + namespace] = {
                str(doc_id): {"key": key, "value": json.loads(text)}
                for doc_id, (key, text) in enumerate(table.items(), start=1)
            }
        return data


class _ReadOnlyFile(Storage):
    """A TinyDB storage that parses its file once, when opened, and refuses writes.

    TinyDB reads its storage again for every table it lists; parsing once keeps loading
    an owner as cheap as one `json.loads`. Writes never go through TinyDB: checkpoints
    write whole files atomically (see `TinyDBStore._write_owners`).
    """

    def __init__(self, path: str) -> None:
        # Raw reads: half the system calls of open().read(), which shows on a write
        # path that has just fsynced.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(fd)
        raw = b"".join(chunks)
        data = json.loads(raw) if raw.strip() else None
        if data is not None and not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        self._data: dict[str, dict[str, Any]] | None = data

    def read(self) -> dict[str, dict[str, Any]] | None:
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        raise StoreError("owner files are written only by checkpoints")


class TinyDBStore:
    """A `memory.store.Store` kept in per-owner TinyDB files under one directory.

    Not thread-safe: the memory actor is its only user. Only one store may have a
    directory open at a time (enforced with `flock`, so a second bot process fails
    with `StoreLocked` instead of corrupting the files).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        checkpoint_owners: int = DEFAULT_CHECKPOINT_OWNERS,
        cache_owners: int = DEFAULT_CACHE_OWNERS,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        fsync: bool = True,
    ) -> None:
        """Open (creating if needed) the store under `path`.

        Opening removes temporary files left by an interrupted checkpoint, replays the
        intact prefix of the journal (a torn tail holds only unacknowledged writes and
        is dropped) and then checkpoints, so the journal starts empty.

        `checkpoint_bytes` and `checkpoint_owners` trigger a checkpoint (journal size,
        dirty owners); `cache_owners` bounds the clean owners kept in memory;
        `max_value_bytes` bounds one serialised value. `fsync=False` skips every sync,
        which makes bulk loads fast but gives up crash safety: use it only for
        throwaway data such as benchmarks.
        """
        if min(checkpoint_bytes, checkpoint_owners, max_value_bytes) < 1 or cache_owners < 0:
            raise ValueError("store limits must be positive (cache_owners may be 0)")
        self.root = os.path.abspath(os.fspath(path))
        self._checkpoint_bytes = checkpoint_bytes
        self._checkpoint_owners = checkpoint_owners
        self._cache_owners = cache_owners
        self._max_value_bytes = max_value_bytes
        self._fsync = fsync
        self._clean: OrderedDict[str, _Owner] = OrderedDict()
        self._dirty: dict[str, _Owner] = {}
        self._shards: set[str] = set()  # shard directories known to exist
        # After a failed checkpoint, wait until the journal reaches this size before
        # trying again, so that a full disk does not make every write retry it.
        self._retry_checkpoint_at = 0
        self._closed = False
        self._lock_fd = self._lock()
        try:
            self._prepare_directories()
            self._journal = self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # --- opening -------------------------------------------------------------------

    def _lock(self) -> int:
        os.makedirs(self.root, 0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(f"memory store {self.root} is already open") from None
        return fd

    def _prepare_directories(self) -> None:
        """Find the shard directories and delete leftover temporary files.

        Shards are created when a checkpoint first needs them: creating directories
        is slow on some file systems, and a small store needs only a few of the 256.
        """
        owners = os.path.join(self.root, "owners")
        if not os.path.isdir(owners):
            os.mkdir(owners, 0o700)
            if self._fsync:
                fsync_directory(self.root)
        removed = 0
        with os.scandir(owners) as shards:
            for shard in shards:
                if not shard.is_dir():
                    continue
                self._shards.add(shard.name)
                with os.scandir(shard.path) as entries:
                    for entry in entries:
                        if entry.name.endswith(_TEMP_SUFFIX):
                            # A checkpoint died before renaming it: the journal, which
                            # was not reset, still holds every write it contained.
                            os.unlink(entry.path)
                            removed += 1
        journal_temp = os.path.join(self.root, "journal.log" + _TEMP_SUFFIX)
        if os.path.exists(journal_temp):
            os.unlink(journal_temp)
            removed += 1
        if removed:
            logger.info("memory store %s: removed %d leftover temporary files", self.root, removed)

    def _recover(self) -> Journal:
        path = os.path.join(self.root, "journal.log")
        contents = read_journal(path)
        for record in contents.records:
            owner = self._owner(record.owner)
            if isinstance(record, Put):
                owner.tables.setdefault(record.namespace, {})[record.key] = record.value
            else:
                self._remove(owner, record.namespace, record.key)
            self._mark_dirty(owner)
        journal = Journal(path, fsync=self._fsync)
        torn = contents.total_bytes - contents.valid_bytes
        if torn:
            logger.warning(
                "memory store %s: ignored a torn or corrupt journal tail of %d bytes "
                "(writes that were never acknowledged)",
                self.root,
                torn,
            )
        if contents.records or torn:
            logger.info(
                "memory store %s: replayed %d journal records", self.root, len(contents.records)
            )
            self._journal = journal
            try:
                self.checkpoint()
            except BaseException:
                journal.close()
                raise
        return journal

    # --- owners and the cache ------------------------------------------------------

    def _path(self, owner_id: str) -> str:
        digest = hashlib.sha256(owner_id.encode("utf-8", "surrogatepass")).hexdigest()
        return os.path.join(self.root, "owners", digest[:2], digest + ".json")

    def _load(self, owner_id: str) -> _Owner:
        """Read an owner's file through TinyDB (an owner without a file is empty)."""
        path = self._path(owner_id)
        owner = _Owner(owner_id)
        try:
            db = TinyDB(path, storage=_ReadOnlyFile)
        except FileNotFoundError:
            return owner
        except ValueError as exc:
            raise StoreError(f"owner file {path} is not valid JSON: {exc}") from None
        try:
            names = db.tables()
            if not names:
                return owner  # an empty file: TinyDB's own idea of an empty database
            meta = db.table(META_TABLE, cache_size=0).all()
            if len(meta) != 1 or meta[0].get("owner") != owner_id:
                raise StoreError(f"owner file {path} is not this owner's (wrong or missing _meta)")
            for name in names:
                if not name.startswith(NAMESPACE_PREFIX):
                    continue
                table: dict[str, str] = {}
                for doc in db.table(name, cache_size=0).all():
                    key = doc.get("key")
                    if not isinstance(key, str) or "value" not in doc:
                        raise StoreError(f"owner file {path} has a malformed document")
                    table[key] = json.dumps(doc["value"], separators=(",", ":"))
                if table:
                    owner.tables[name[len(NAMESPACE_PREFIX) :]] = table
        except (ValueError, AttributeError, TypeError) as exc:
            # The JSON parsed but is not shaped like a TinyDB database.
            raise StoreError(f"owner file {path} is not a valid TinyDB file: {exc}") from None
        finally:
            db.close()
        return owner

    def _owner(self, owner_id: str) -> _Owner:
        owner = self._dirty.get(owner_id)
        if owner is not None:
            return owner
        owner = self._clean.get(owner_id)
        if owner is not None:
            self._clean.move_to_end(owner_id)
            return owner
        owner = self._load(owner_id)
        self._clean[owner_id] = owner
        self._evict()
        return owner

    def _mark_dirty(self, owner: _Owner) -> None:
        if owner.id not in self._dirty:
            self._clean.pop(owner.id, None)
            self._dirty[owner.id] = owner

    def _evict(self) -> None:
        # Dirty owners count against the bound but cannot leave until written.
        while self._clean and len(self._clean) + len(self._dirty) > self._cache_owners:
            self._clean.popitem(last=False)

    @staticmethod
    def _remove(owner: _Owner, namespace: str, key: str) -> bool:
        table = owner.tables.get(namespace)
        if table is None or key not in table:
            return False
        del table[key]
        if not table:
            del owner.tables[namespace]
        return True

    # --- the Store interface -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"memory store {self.root} is closed")

    def get(self, namespace: str, owner: str, key: str, default: JSON = None) -> JSON:
        """The value under (namespace, owner, key) as a fresh object, or `default`."""
        self._check_open()
        check_names(namespace, owner, key)
        text = self._owner(owner).tables.get(namespace, {}).get(key)
        return default if text is None else json.loads(text)

    def keys(self, namespace: str, owner: str) -> list[str]:
        """The keys stored for (namespace, owner), sorted."""
        self._check_open()
        check_names(namespace, owner)
        return sorted(self._owner(owner).tables.get(namespace, ()))

    def put(self, namespace: str, owner: str, key: str, value: JSON) -> None:
        """Store a value (durable after the next `commit()`); `InvalidWrite` if invalid."""
        self._check_open()
        check_names(namespace, owner, key)
        text = encode_value(value, self._max_value_bytes)
        record = self._owner(owner)  # may raise (unreadable file): nothing changed yet
        self._journal.append_put(namespace, owner, key, text)
        record.tables.setdefault(namespace, {})[key] = text
        self._mark_dirty(record)
        self._maybe_checkpoint()

    def delete(self, namespace: str, owner: str, key: str) -> bool:
        """Remove a key (durable after the next `commit()`); return whether it existed."""
        self._check_open()
        check_names(namespace, owner, key)
        record = self._owner(owner)
        if key not in record.tables.get(namespace, {}):
            return False  # nothing changes, so there is nothing to journal
        self._journal.append_delete(namespace, owner, key)
        self._remove(record, namespace, key)
        self._mark_dirty(record)
        self._maybe_checkpoint()
        return True

    def commit(self) -> None:
        """Make every earlier write durable with one journal sync (group commit)."""
        self._check_open()
        self._journal.commit()
        self._maybe_checkpoint()

    def close(self) -> None:
        """Checkpoint (so the next open has nothing to replay) and release the directory.

        Idempotent. If the checkpoint fails the error is raised, but the files are still
        released; whatever was committed is safe in the journal.
        """
        if self._closed:
            return
        try:
            self.checkpoint()
        finally:
            self._closed = True
            self._journal.close()
            os.close(self._lock_fd)
            self._clean.clear()
            self._dirty.clear()

    def __enter__(self) -> TinyDBStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- checkpoints ---------------------------------------------------------------

    @property
    def loaded_owners(self) -> int:
        """How many owners are in memory (cached clean ones plus pinned dirty ones)."""
        return len(self._clean) + len(self._dirty)

    @property
    def dirty_owners(self) -> int:
        """How many owners have writes not yet in their files."""
        return len(self._dirty)

    @property
    def journal_bytes(self) -> int:
        """Size of the journal, committed or not."""
        return self._journal.size

    def _maybe_checkpoint(self) -> None:
        """Checkpoint if the journal or the dirty set is big enough; log a failure.

        Callers are a put or a commit that has already succeeded: failing them because
        the owner files could not be rewritten would report a lost write that is not
        lost. The journal keeps everything until a later checkpoint succeeds.
        """
        size = self._journal.size
        if size < self._retry_checkpoint_at or (
            size < self._checkpoint_bytes and len(self._dirty) < self._checkpoint_owners
        ):
            return
        try:
            self.checkpoint()
        except (OSError, StoreError):
            self._retry_checkpoint_at = size + max(self._checkpoint_bytes // 16, 1)
            logger.exception("memory store %s: checkpoint failed; will retry later", self.root)

    def checkpoint(self) -> None:
        """Commit, write every dirty owner's file atomically, then empty the journal."""
        self._check_open()
        self._journal.commit()
        dirty = list(self._dirty.values())
        if dirty:
            self._write_owners(dirty)
        self._journal.reset()
        self._retry_checkpoint_at = 0
        self._clean.update(self._dirty)
        self._dirty.clear()
        self._evict()
        logger.debug("memory store %s: checkpointed %d owners", self.root, len(dirty))

    def _write_owners(self, owners: list[_Owner]) -> None:
        """Replace each owner's file atomically, syncing each directory only once."""
        renames: list[tuple[str, str]] = []
        removals: list[str] = []
        directories: set[str] = set()
        new_shard = False
        renamed = 0
        try:
            for owner in owners:
                final = self._path(owner.id)
                directory = os.path.dirname(final)
                directories.add(directory)
                if not owner.tables:
                    removals.append(final)  # an owner with no data needs no file
                    continue
                shard = os.path.basename(directory)
                if shard not in self._shards:
                    os.makedirs(directory, 0o700, exist_ok=True)
                    self._shards.add(shard)
                    new_shard = True
                temp = final + _TEMP_SUFFIX
                renames.append((temp, final))
                self._write_file(temp, json.dumps(owner.to_tinydb()).encode("ascii"))
            while renamed < len(renames):
                os.replace(*renames[renamed])
                renamed += 1
        finally:
            for temp, _ in renames[renamed:]:
                try:
                    os.unlink(temp)
                except FileNotFoundError:
                    pass
                except OSError:
                    logger.exception("cannot remove temporary file %s", temp)
        for final in removals:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final)
        if self._fsync:
            for directory in sorted(directories):
                if os.path.isdir(directory):
                    fsync_directory(directory)
            if new_shard:
                fsync_directory(os.path.join(self.root, "owners"))

    def _write_file(self, path: str, data: bytes) -> None:
        """Write a whole new file and sync it (owner files may hold secrets: 0600)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
