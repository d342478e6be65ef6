"""The embedded default store: one small TinyDB file per owner, plus a journal.

Plain TinyDB rewrites its whole JSON file on every write, so one database for all users
makes a write cost grow with the number of users. Here the cost of a write is bounded
by the size of its own owner instead:

* Layout under the root directory (files 0600: memory may hold secrets)::

      LOCK                      flock()ed while a store has the directory open
      journal-<n>.log           write-ahead journal segments, oldest first (see
                                memory.journal); the newest is often an empty spare
      owners/<hh>/<sha256>.json one TinyDB file per owner
      damaged/<UTC time>/       files that could not be read, kept (never deleted)

  The file name is the SHA-256 of the owner id, so any owner string is a safe name,
  and `<hh>` (its first two hex digits) spreads owners over 256 directories. Each
  file holds a `_meta` table with a CRC-32 of the rest of the file, the owner id
  (checked on load) and the format version, then one table per namespace, named
  `ns:<namespace>` so that no namespace can collide with `_meta`; documents are
  `{"key": k, "value": v}`. (A `journal.log` left by an older version is replayed as
  the oldest segment; owner files of version 1, without a checksum, are read.)

* A write appends a record to the active journal segment's buffer and updates the
  owner's document in memory. `commit()` syncs the segment once for all writes since
  the previous commit (group commit).

* Owner files are rewritten at checkpoints, in the background. A checkpoint falls due
  when the active segment passes `checkpoint_bytes` or `checkpoint_owners` owners are
  dirty. The caller's thread then commits the active segment, seals it, switches to
  a spare segment made in advance, takes a snapshot (a shallow copy) of every dirty
  owner and hands it to a writer thread, and returns: that costs one journal sync,
  not one per owner. The writer writes each owner to a temporary file in the same
  directory, syncs it, renames it over the old file, syncs the directories, and only
  then deletes the sealed segments, creates the next spare and syncs the root (so
  that a deleted segment can never come back after a newer checkpoint, and the spare
  is durable before anyone writes to it). While it runs, the next checkpoint does not
  start: the active segment keeps growing, and only if it passes `journal_max_bytes`
  does a write wait for the running checkpoint.

* Correctness on a crash at any moment: each owner file is either old or new, never
  partial (rename). A file never holds a write that is not durable in a segment, and
  a segment is deleted only once every file holding its writes is durable. Opening
  replays every remaining segment in order over the
  files; puts and deletes set a key to an absolute value, so replaying a record
  whose effect a file already holds changes nothing, and a newer segment's record
  always wins over an older segment's. A segment's torn tail holds only
  unacknowledged writes and is ignored (and the segment kept in `damaged/`). Sealed
  segments are complete (the caller committed them before sealing), so only the
  newest with records can be torn by a crash.

* Damage no crash can cause is never read as "no data": an owner file whose checksum
  or shape is wrong, or that is empty, damage to journal records that were
  acknowledged (see `memory.recovery.find_journal_damage`), or an owners directory
  deleted under a journal: opening raises `StoreCorrupt` naming the file and changes
  nothing. Opening therefore reads every owner file once (a read and a CRC each).
  `memory.repair` sets damaged files aside. A file damaged while the store is open fails every read
  and write of its owner the same way. If the journal or the owners directory is
  deleted while open (checked with `fstat` at each commit), the store stops taking
  writes (`StoreUnavailable`) rather than acknowledge writes no file holds.

* Loaded owners are kept in a bounded cache (`memory.owner_cache`): 100,000 owners
  are not all held in memory, and owners not yet in a durable file are pinned.

* Threads. The store's user (the memory actor) calls every public method from one
  thread at a time; the writer thread runs one checkpoint at a time. The writer
  touches only its `Checkpoint` (the snapshot, segment list and spare name, immutable
  once handed over; `spare_created`, `error` and `done`, which it sets last), the
  owner files and shard directories on disk, the sealed segment files of its
  checkpoint, its spare segment file, and its `CheckpointWriter.shards`. The user's
  thread touches everything else (`_owners`, `memory.segments`, ...) and looks
  at the checkpoint only after `done` is set, which orders
  the writer's work before it. `shards` is shared in time, not at once: a
  checkpoint that runs on the user's thread (at open, `checkpoint()`, close) first
  waits for the writer's.

The owner file format is in `memory.owner_files`, the owners in memory in
`memory.owner_cache`, the journal's segments and the store's side of checkpoints in
`memory.segments`, the writer's side in `memory.checkpoint`, and
the directory lock, checks and recovery done at opening in `memory.recovery`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Final

from memory.checkpoint import CheckpointWriter
from memory.journal import Journal, Put
from memory.owner_cache import Owner, OwnerCache
from memory.owner_files import owner_file_path, parse_owner_file, read_all
from memory.recovery import (
    check_owners_directory,
    lock_directory,
    read_segments,
    tidy_owner_files,
)
from memory.segments import JournalSegments
from memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    JSON,
    StoreClosed,
    StoreCorrupt,
    StoreUnavailable,
    check_names,
    encode_value,
)

__all__ = [
    "DEFAULT_CACHE_OWNERS",
    "DEFAULT_CHECKPOINT_BYTES",
    "DEFAULT_CHECKPOINT_OWNERS",
    "DEFAULT_JOURNAL_MAX_BYTES",
    "TinyDBStore",
    "lock_directory",
]

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_BYTES: Final = 4 * 1024 * 1024
DEFAULT_CHECKPOINT_OWNERS: Final = 1_000
DEFAULT_CACHE_OWNERS: Final = 10_000
DEFAULT_JOURNAL_MAX_BYTES: Final = 64 * 1024 * 1024


class TinyDBStore:
    """A `memory.store.Store` kept in per-owner TinyDB files under one directory.

    Not thread-safe: one thread at a time (the memory actor's) may call it. The store
    runs its checkpoints on a thread of its own (see the module's docstring for who
    touches what). Only one store may have a directory open at a time (enforced with
    `flock`, so a second bot process fails with `StoreLocked` instead of corrupting
    the files).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        checkpoint_owners: int = DEFAULT_CHECKPOINT_OWNERS,
        journal_max_bytes: int = DEFAULT_JOURNAL_MAX_BYTES,
        cache_owners: int = DEFAULT_CACHE_OWNERS,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        fsync: bool = True,
    ) -> None:
        """Open (creating if needed) the store under `path`.

        Opening removes temporary files left by an interrupted checkpoint, checks every
        owner file (checksum) and journal segment, replays the journal (a torn end holds
        only unacknowledged writes: it is ignored, and a copy of its segment is kept in
        `damaged/`) and then checkpoints, on this thread, so that only an empty segment
        is left. A damaged file raises `StoreCorrupt` naming it, and nothing is changed.

        `checkpoint_bytes` and `checkpoint_owners` make a checkpoint due (active
        segment size, dirty owners); `journal_max_bytes` (at least `checkpoint_bytes`)
        is the active segment size at which a write waits for a checkpoint still
        running rather than let the journal grow; `cache_owners` bounds the clean
        owners kept in memory; `max_value_bytes` bounds one serialised value.
        `fsync=False` skips every sync, which makes bulk loads fast but gives up crash
        safety: use it only for throwaway data such as benchmarks.
        """
        limits = (checkpoint_bytes, checkpoint_owners, journal_max_bytes, max_value_bytes)
        if min(limits) < 1 or cache_owners < 0:
            raise ValueError("store limits must be positive (cache_owners may be 0)")
        self.root = os.path.abspath(os.fspath(path))
        self._max_value_bytes = max_value_bytes
        self._fsync = fsync
        self._owners = OwnerCache(cache_owners, self._load)
        # Writes the owner files and drops sealed segments, on the writer thread.
        self._checkpointer = CheckpointWriter(self.root, fsync=fsync)
        self._segments = JournalSegments(
            self.root,
            self._owners,
            self._checkpointer,
            fsync=fsync,
            checkpoint_bytes=checkpoint_bytes,
            checkpoint_owners=checkpoint_owners,
            journal_max_bytes=journal_max_bytes,
        )
        self._closed = False
        # Set once the store's files were found deleted under it: it takes no more writes.
        self._unavailable: str | None = None
        self._owners_fd = -1
        self._lock_fd = lock_directory(self.root)
        try:
            self._prepare_directories()
            self._recover()
        except BaseException:
            if self._owners_fd >= 0:
                os.close(self._owners_fd)
            os.close(self._lock_fd)
            raise

    # --- opening -------------------------------------------------------------------

    def _prepare_directories(self) -> None:
        """Find the shard directories, delete leftover temporary files, check owner files.

        Shards are created when a checkpoint first needs them: creating directories
        is slow on some file systems, and a small store needs only a few of the 256.
        Every owner file is checked now, not when first read, so that a damaged one
        stops the store from opening instead of surfacing as an error (or, worse, an
        empty owner) in the middle of a conversation.
        """
        owners = check_owners_directory(self.root, fsync=self._fsync)
        self._owners_fd = os.open(owners, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        removed = tidy_owner_files(self.root, owners, self._checkpointer.shards)
        if removed:
            logger.info("memory store %s: removed %d leftover temporary files", self.root, removed)

    def _recover(self) -> None:
        segments = read_segments(self.root, self._segments.on_disk())
        replayed = 0
        for _, contents in segments:
            # In order: a newer segment's writes came after, so they must win.
            for record in contents.records:
                owner = self._owners.get(record.owner)
                if isinstance(record, Put):
                    owner.tables.setdefault(record.namespace, {})[record.key] = record.value
                else:
                    owner.remove(record.namespace, record.key)
                self._owners.mark_dirty(owner)
            replayed += len(contents.records)
        journal = self._segments.begin([path for path, _ in segments])
        if replayed:
            logger.info("memory store %s: replayed %d journal records", self.root, replayed)
        try:
            if self._owners.dirty or self._segments.sealed:
                # Empty segments included: a checkpoint with nothing to write deletes them.
                self.checkpoint()
            self._segments.make_spare()
        except BaseException:
            journal.close()
            raise

    # --- owners and the cache ------------------------------------------------------

    def _path(self, owner_id: str) -> str:
        return owner_file_path(self.root, owner_id)

    def _load(self, owner_id: str) -> Owner:
        """Read an owner's file through TinyDB (an owner without a file is empty).

        Raises `StoreCorrupt` if the file cannot be read back whole: never an empty
        owner for a file that exists. Never called for an owner a checkpoint is
        writing: those are pinned.
        """
        if self._unavailable is not None:
            raise StoreUnavailable(self._unavailable)
        path = self._path(owner_id)
        owner = Owner(owner_id)
        try:
            raw = read_all(path)
        except FileNotFoundError:
            # No file is no data, unless the owner files went away under us.
            if os.fstat(self._owners_fd).st_nlink == 0:
                self._fail("the owners directory was deleted while the store was open")
            return owner
        except OSError as exc:
            raise StoreCorrupt(path, f"it cannot be read: {exc.strerror or exc}") from None
        try:
            file_owner, owner.tables = parse_owner_file(raw)
        except ValueError as exc:
            raise StoreCorrupt(path, str(exc)) from None
        if file_owner != owner_id:
            raise StoreCorrupt(path, "it is not this owner's file: it holds another owner's data")
        return owner

    # --- the Store interface -------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"memory store {self.root} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._unavailable is not None:
            raise StoreUnavailable(self._unavailable)

    def _check_files(self) -> None:
        """Raise `StoreUnavailable` if the journal or the owner files were deleted.

        Two `fstat` calls, once per commit: a deleted file keeps taking writes (and
        syncs) without complaint, so without this a store whose directory was removed
        would go on acknowledging writes that no file holds.
        """
        journal = self._journal
        if journal.deleted():
            self._fail(f"its journal {journal.path} was deleted while the store was open")
        if os.fstat(self._owners_fd).st_nlink == 0:
            self._fail("the owners directory was deleted while the store was open")

    def _fail(self, what: str) -> None:
        """Stop taking writes for good (until reopened), log it at ERROR once, and raise."""
        if self._unavailable is None:
            self._unavailable = (
                f"memory store {self.root}: {what}; writes since are lost and no more are "
                "accepted until Harken is restarted"
            )
            logger.error("%s", self._unavailable)
        raise StoreUnavailable(self._unavailable)

    def get(self, namespace: str, owner: str, key: str, default: JSON = None) -> JSON:
        """The value under (namespace, owner, key) as a fresh object, or `default`."""
        self._check_open()
        check_names(namespace, owner, key)
        text = self._owners.get(owner).tables.get(namespace, {}).get(key)
        return default if text is None else json.loads(text)

    def keys(self, namespace: str, owner: str) -> list[str]:
        """The keys stored for (namespace, owner), sorted."""
        self._check_open()
        check_names(namespace, owner)
        return sorted(self._owners.get(owner).tables.get(namespace, ()))

    def put(self, namespace: str, owner: str, key: str, value: JSON) -> None:
        """Store a value (durable after the next `commit()`); `InvalidWrite` if invalid."""
        self._check_writable()
        check_names(namespace, owner, key)
        text = encode_value(value, self._max_value_bytes)
        record = self._owners.get(owner)  # may raise (unreadable file): nothing changed yet
        self._journal.append_put(namespace, owner, key, text)
        record.tables.setdefault(namespace, {})[key] = text
        self._owners.mark_dirty(record)
        self._maybe_checkpoint()

    def delete(self, namespace: str, owner: str, key: str) -> bool:
        """Remove a key (durable after the next `commit()`); return whether it existed."""
        self._check_writable()
        check_names(namespace, owner, key)
        record = self._owners.get(owner)
        if key not in record.tables.get(namespace, {}):
            return False  # nothing changes, so there is nothing to journal
        self._journal.append_delete(namespace, owner, key)
        record.remove(namespace, key)
        self._owners.mark_dirty(record)
        self._maybe_checkpoint()
        return True

    def commit(self) -> None:
        """Make every earlier write durable with one journal sync (group commit).

        It never waits for a checkpoint running in the background. Raises
        `StoreUnavailable` if the store's files were deleted under it (checked after
        the sync, so that a deletion during it is seen too).
        """
        self._check_writable()
        self._journal.commit()
        self._check_files()
        self._maybe_checkpoint()

    def close(self) -> None:
        """Checkpoint (so the next open has nothing to replay) and release the directory.

        Waits for a checkpoint running in the background first. Idempotent. If the
        final checkpoint fails the error is raised, but the files are still released;
        whatever was committed is safe in the journal.
        """
        if self._closed:
            return
        try:
            if self._unavailable is None:
                # (Else a checkpoint would only write owner files into whatever is
                # left of a deleted directory.)
                self.checkpoint()
        finally:
            # (Waits for a running checkpoint: the lock is released only after it.)
            self._segments.close()
            self._closed = True
            os.close(self._owners_fd)
            os.close(self._lock_fd)
            self._owners.clear()

    def __enter__(self) -> TinyDBStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- checkpoints: the user's side ----------------------------------------------

    @property
    def loaded_owners(self) -> int:
        """How many owners are in memory (cached clean ones plus pinned ones)."""
        return len(self._owners)

    @property
    def dirty_owners(self) -> int:
        """How many owners were written since the last checkpoint took its snapshot."""
        return len(self._owners.dirty)

    @property
    def flushing_owners(self) -> int:
        """How many owners the checkpoint running in the background is writing."""
        return len(self._owners.flushing)

    @property
    def checkpoint_running(self) -> bool:
        """Whether a background checkpoint has started and not yet been collected.

        A finished one is collected by the next call to the store (or by
        `wait_for_checkpoint`).
        """
        return self._segments.running is not None

    @property
    def journal_bytes(self) -> int:
        """Size of the active journal segment, committed or not: what triggers checkpoints."""
        return self._journal.size

    @property
    def _journal(self) -> Journal:
        """The active journal segment."""
        journal = self._segments.journal
        assert journal is not None, "opened in __init__"
        return journal

    def wait_for_checkpoint(self, timeout: float | None = None) -> bool:
        """Wait for the background checkpoint, if one runs, and collect its outcome.

        A failure is logged (the writes are safe in the journal) and its owners are
        dirty again. Returns False if it was still running after `timeout` seconds.
        """
        self._check_open()
        return self._segments.wait(timeout)

    def _maybe_checkpoint(self) -> None:
        """Start a background checkpoint if one is due (`JournalSegments.maybe_checkpoint`);
        none once the store's files are gone."""
        if self._unavailable is None:
            self._segments.maybe_checkpoint()
        else:
            self._segments.collect()

    def checkpoint(self) -> None:
        """Write every dirty owner's file and delete the journal's sealed segments.

        Waits for a background checkpoint first, then checkpoints on this thread and
        raises if that fails.
        """
        self._check_writable()
        self._segments.checkpoint()
