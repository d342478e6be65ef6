"""The checkpoint writer of the TinyDB store: owner files made durable, then segments dropped.

The store's thread seals the journal segment, snapshots the dirty owners and hands them
over as a `Checkpoint`; a `CheckpointWriter` (on a thread of its own) writes each owner
file atomically, syncs the directories, and only then deletes the sealed segments and
creates the next spare one. Keeping the writer's side apart makes plain what it may
touch: its checkpoint, the files, and the shard directories it knows of.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Final

from memory.journal import fsync_directory
from memory.owner_files import TEMP_SUFFIX, Tables, owner_file_bytes, owner_file_path

__all__ = ["WRITER_THREAD_NAME", "Checkpoint", "CheckpointWriter"]

# The store's own logger: these are the store's messages, wherever they are worded.
logger = logging.getLogger("memory.tinydb_store")

WRITER_THREAD_NAME: Final = "memory-checkpoint"


class Checkpoint:
    """One checkpoint: what the writer thread must write, and how it ended.

    Built by the user's thread and not changed by it afterwards; the writer sets
    `error` (if it failed) and then `done`.
    """

    def __init__(
        self, owners: list[tuple[str, Tables]], segments: list[str], spare: str | None
    ) -> None:
        self.owners = owners
        """(owner id, snapshot) for every owner to write; no tables: delete its file."""
        self.segments = segments
        """Sealed journal segments whose every record the snapshot holds."""
        self.spare = spare
        """An empty segment to create, durably, for the next checkpoint to write to."""
        self.spare_created = False
        self.error: BaseException | None = None
        self.done = threading.Event()


class CheckpointWriter:
    """Writes one checkpoint at a time into the store's directory `root`.

    Runs on the writer thread (or on the store's, for checkpoints it runs itself);
    touches only the checkpoint it is given, `shards` and files.
    """

    def __init__(self, root: str, *, fsync: bool) -> None:
        self.root = root
        self.fsync = fsync
        self.shards: set[str] = set()
        """Shard directories known to exist (filled by the store when it opens)."""

    def run(self, checkpoint: Checkpoint) -> None:
        """Make the snapshot durable in the owner files, then drop the sealed segments.

        Runs on the writer thread (or on the user's, for `checkpoint()`); touches only
        `checkpoint`, `shards` and files.
        """
        try:
            self.write_owner_files(checkpoint.owners)
            self.delete_segments(checkpoint)
        except BaseException as exc:  # reported by _collect_checkpoint, on the user's thread
            checkpoint.error = exc
        finally:
            checkpoint.done.set()

    def write_owner_files(self, owners: list[tuple[str, Tables]]) -> None:
        """Replace each owner's file atomically, syncing each directory only once."""
        renames: list[tuple[str, str]] = []
        removals: list[str] = []
        directories: set[str] = set()
        new_shard = False
        renamed = 0
        try:
            for owner_id, tables in owners:
                final = owner_file_path(self.root, owner_id)
                directory = os.path.dirname(final)
                directories.add(directory)
                if not tables:
                    removals.append(final)  # an owner with no data needs no file
                    continue
                shard = os.path.basename(directory)
                if shard not in self.shards:
                    # mkdir, not makedirs: never bring back an owners directory that
                    # was deleted under the store.
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(directory, 0o700)
                    self.shards.add(shard)
                    new_shard = True
                temp = final + TEMP_SUFFIX
                renames.append((temp, final))
                self.write_file(temp, owner_file_bytes(owner_id, tables))
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
        if self.fsync:
            for directory in sorted(directories):
                if os.path.isdir(directory):
                    fsync_directory(directory)
            if new_shard:
                fsync_directory(os.path.join(self.root, "owners"))

    def write_file(self, path: str, data: bytes) -> None:
        """Write a whole new file and sync it (owner files may hold secrets: 0600)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def delete_segments(self, checkpoint: Checkpoint) -> None:
        """Delete sealed segments whose writes are all durable in owner files.

        The root is synced before the checkpoint counts as done: a later checkpoint
        writes newer owner files, and a segment that came back after a power cut would
        be replayed over them. The same sync makes the spare segment durable.
        """
        for path in checkpoint.segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if checkpoint.spare is not None:
            try:
                os.close(os.open(checkpoint.spare, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            except OSError:
                # Not worth failing the checkpoint: the next one creates its segment
                # on the caller's thread instead.
                logger.warning("memory store %s: cannot create a spare journal segment", self.root)
            else:
                checkpoint.spare_created = True
        if self.fsync and (checkpoint.segments or checkpoint.spare_created):
            fsync_directory(self.root)
