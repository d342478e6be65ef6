"""The TinyDB store's journal segments, and the checkpoints that retire them.

The store thread's side of checkpoints (the writer's is `memory.checkpoint`): which
segment is active, which are sealed, the spare made in advance, when a checkpoint is
due, starting one (sealing the active segment and snapshotting the dirty owners) and
taking in how it ended. `memory.tinydb_store` says why it works this way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from memory.checkpoint import WRITER_THREAD_NAME, Checkpoint, CheckpointWriter
from memory.journal import Journal
from memory.owner_cache import OwnerCache
from memory.recovery import numbered_segments, segment_name
from memory.store import StoreError

__all__ = ["JournalSegments"]

# The store's own logger: these are the store's messages, wherever they are worded.
logger = logging.getLogger("memory.tinydb_store")


class JournalSegments:
    """The segments under `root`; used by the store's thread only (one at a time)."""

    def __init__(
        self,
        root: str,
        owners: OwnerCache,
        checkpointer: CheckpointWriter,
        *,
        fsync: bool,
        checkpoint_bytes: int,
        checkpoint_owners: int,
        journal_max_bytes: int,
    ) -> None:
        self.root = root
        self._owners = owners
        self._checkpointer = checkpointer
        self._fsync = fsync
        self._checkpoint_bytes = checkpoint_bytes
        self._checkpoint_owners = checkpoint_owners
        # Below the checkpoint threshold the cap could never apply: no checkpoint would
        # be due, so none would be waited for.
        self._journal_max_bytes = max(journal_max_bytes, checkpoint_bytes)
        self.journal: Journal | None = None
        """The active segment, once `begin` opened it."""
        self.sealed: list[str] = []  # segments before the active one, oldest first
        # A durable, empty segment made by the last checkpoint: the next one starts
        # writing to it without syncing the root directory on the caller's thread.
        self._spare: str | None = None
        self._next_segment = 1
        self.running: Checkpoint | None = None
        self._writer: threading.Thread | None = None
        # After a failed checkpoint, wait until the active segment reaches this size
        # before trying again, so that a full disk does not make every write retry it.
        self._retry_checkpoint_at = 0

    # --- opening -------------------------------------------------------------------

    def on_disk(self) -> list[str]:
        """Every journal segment in the root, oldest first (a legacy journal first)."""
        numbered = numbered_segments(self.root)
        if numbered:
            self._next_segment = numbered[-1][0] + 1
        return [os.path.join(self.root, name) for _, name in numbered]

    def begin(self, sealed: list[str]) -> Journal:
        """Take the segments found (replayed) as sealed, and open a new active one."""
        self.sealed = sealed
        self.journal = self._open_segment()
        return self.journal

    def make_spare(self) -> None:
        """Create the spare segment, durably, for the next checkpoint to write to."""
        self._spare = self._new_segment_path()
        Journal(self._spare, fsync=self._fsync).close()

    def _new_segment_path(self) -> str:
        # Numbered before it exists: if creating it fails half-way, a retry takes a
        # fresh name instead of reusing a file whose directory entry was never synced.
        number, self._next_segment = self._next_segment, self._next_segment + 1
        return os.path.join(self.root, segment_name(number))

    def _open_segment(self) -> Journal:
        """Open the spare segment, or create the next one (syncing the root directory)."""
        if self._spare is not None:
            path, self._spare = self._spare, None
            if os.path.exists(path):  # else Journal creates it again, and syncs
                return Journal(path, fsync=self._fsync)
        return Journal(self._new_segment_path(), fsync=self._fsync)

    def close(self) -> None:
        """Wait for a running checkpoint, close the active segment, drop the spare."""
        # Never let the directory go while the writer may still touch the files: the
        # next store to open it would race it.
        if self.running is not None:
            self.running.done.wait()
        if self.journal is not None:
            self.journal.close()
        if self._spare is not None:
            # Unused; empty, so there is no need to sync its removal.
            with contextlib.suppress(OSError):
                os.unlink(self._spare)

    # --- checkpoints ---------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background checkpoint, if one runs, and collect its outcome."""
        running = self.running
        if running is not None and not running.done.wait(timeout):
            return False
        self.collect()
        return True

    def collect(self, *, report: bool = True) -> BaseException | None:
        """Take in the outcome of a finished checkpoint; return its error.

        `report` logs a failure: for checkpoints whose caller does not raise it.
        """
        running = self.running
        if running is None or not running.done.is_set():
            return None
        self.running = None
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        if running.error is not None:
            # (A spare it may have created is not known to be durable: left unused, it
            # is an empty segment, deleted by the next open.)
            # Its owners go back to the dirty set; their writes are still in the sealed
            # segments, which stay until a checkpoint writes those owners successfully.
            self._owners.flushed(ok=False)
            self._retry_later()
            if report:
                logger.error(
                    "memory store %s: checkpoint failed; will retry later",
                    self.root,
                    exc_info=running.error,
                )
            return running.error
        deleted = len(running.segments)
        assert self.sealed[:deleted] == running.segments
        del self.sealed[:deleted]
        if running.spare_created:
            self._spare = running.spare
        self._retry_checkpoint_at = 0
        self._owners.flushed(ok=True)
        logger.debug("memory store %s: checkpointed %d owners", self.root, len(running.owners))
        return None

    def _retry_later(self) -> None:
        assert self.journal is not None
        self._retry_checkpoint_at = self.journal.size + max(self._checkpoint_bytes // 16, 1)

    def maybe_checkpoint(self) -> None:
        """Start a background checkpoint if one is due; never fail the caller.

        Callers are a put or a commit that has already succeeded: failing them because
        the owner files could not be rewritten would report a lost write that is not
        lost. The journal keeps everything until a later checkpoint succeeds.
        """
        self.collect()
        assert self.journal is not None
        size = self.journal.size
        if size < self._retry_checkpoint_at or (
            size < self._checkpoint_bytes and len(self._owners.dirty) < self._checkpoint_owners
        ):
            return
        if self.running is not None:
            if size < self._journal_max_bytes:
                return  # one at a time: the active segment keeps everything meanwhile
            # The writer cannot keep up; stop the journal (and the pinned owners) from
            # growing without bound by waiting for it.
            logger.warning(
                "memory store %s: the journal passed %d bytes during a checkpoint; waiting for it",
                self.root,
                self._journal_max_bytes,
            )
            self.running.done.wait()
            if self.collect() is not None:
                return  # it failed and set the retry threshold
        try:
            self._start(background=True)
        except (OSError, StoreError):
            self._retry_later()
            logger.exception("memory store %s: checkpoint failed; will retry later", self.root)

    def checkpoint(self) -> None:
        """Checkpoint on this thread, after any background one, and raise if it fails."""
        if self.running is not None:
            self.running.done.wait()
            self.collect()  # a failure is logged; this one retries it
        self._start(background=False)
        error = self.collect(report=False)
        if error is not None:
            raise error
        self._retry_checkpoint_at = 0  # also when there was nothing to write

    def _start(self, *, background: bool) -> None:
        """Seal the active segment, snapshot the dirty owners and write them.

        With `background`, the writing is handed to a new writer thread, which also
        makes a spare segment for the next checkpoint if there is none; otherwise it
        is done here (the outcome is collected by `collect` either way). Raises,
        changing nothing, if the active segment cannot be committed or the new one
        created.
        """
        assert self.running is None
        assert self.journal is not None
        if self.journal.has_records:
            # Sealed segments must be complete: every write in a snapshot is then
            # durable in a segment before any owner file can hold it. (An active
            # segment without records needs no sealing: after a failed checkpoint, the
            # dirty owners' writes are all in the sealed segments.)
            self.journal.commit()
            old, self.journal = self.journal, self._open_segment()
            # Written with the new segment's first commit: no sync of its own.
            self.journal.append_seal(os.path.basename(old.path), old.size, old.crc)
            self.sealed.append(old.path)
            old.close()
        if not self._owners.dirty and not self.sealed:
            return
        owners = self._owners.start_flush()
        make_spare = background and self._spare is None
        running = Checkpoint(
            owners, list(self.sealed), self._new_segment_path() if make_spare else None
        )
        self.running = running
        if background:
            # A daemon: a process that exits without closing the store loses nothing
            # that a kill -9 at the same moment would not (and that loses nothing).
            writer = threading.Thread(
                target=self._checkpointer.run, args=(running,), name=WRITER_THREAD_NAME, daemon=True
            )
            try:
                writer.start()
            except RuntimeError:  # no thread to be had: do the work here, late but done
                logger.warning("memory store %s: cannot start the checkpoint writer", self.root)
            else:
                self._writer = writer
                return
        self._checkpointer.run(running)
