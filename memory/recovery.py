"""Opening a TinyDB store's directory: check every file, tell a crash from damage.

A crash can leave only temporary files and a torn end of the newest journal segment,
which hold nothing acknowledged: opening removes the first and keeps a copy of the
second aside. Anything else (a damaged owner file, damage to acknowledged journal
records, a broken chain of sealed segments, an owners directory deleted under its
journal) would lose acknowledged writes if it were read as "no data", so opening
refuses with `StoreCorrupt` naming the file instead. Also here: how journal segments
are named, and where damaged files are kept (`memory.repair` uses both).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
from typing import Final, NamedTuple

from memory.journal import JournalContents, fsync_directory, read_journal
from memory.owner_files import OWNER_SUFFIX, TEMP_SUFFIX, check_owner_file
from memory.store import StoreCorrupt, StoreError, StoreLocked

__all__ = [
    "DAMAGED_DIR",
    "JournalDamage",
    "aside_directory",
    "check_owners_directory",
    "find_journal_damage",
    "keep_copy",
    "lock_directory",
    "numbered_segments",
    "read_segments",
    "segment_name",
    "segment_paths",
    "tidy_owner_files",
]

# The store's own logger: these are the store's messages, wherever they are worded.
logger = logging.getLogger("memory.tinydb_store")

DAMAGED_DIR: Final = "damaged"
"""Where damaged files are kept (in dated folders), never deleted."""
LEGACY_JOURNAL: Final = "journal.log"
_SEGMENT: Final = re.compile(r"journal-(\d+)\.log")


def segment_name(number: int) -> str:
    return f"journal-{number:010d}.log"


def segment_paths(root: str) -> list[str]:
    """Every journal segment in `root`, oldest first (a legacy `journal.log` first)."""
    return [os.path.join(root, name) for _, name in numbered_segments(root)]


def numbered_segments(root: str) -> list[tuple[int, str]]:
    numbered: list[tuple[int, str]] = []
    for name in os.listdir(root):
        if name == LEGACY_JOURNAL:
            numbered.append((0, name))
        elif match := _SEGMENT.fullmatch(name):
            numbered.append((int(match.group(1)), name))
    numbered.sort()
    return numbered


class JournalDamage(NamedTuple):
    """What `find_journal_damage` found wrong with the segments."""

    corrupt: list[tuple[str, str]]
    """(segment path, what is wrong): damage to acknowledged writes."""
    torn: list[tuple[str, int]]
    """(segment path, bytes ignored): a torn end a crash left; nothing acknowledged."""


def find_journal_damage(segments: list[tuple[str, JournalContents]]) -> JournalDamage:
    """Tell the torn end a crash leaves from damage to acknowledged writes.

    A crash can only tear the end of the newest segment holding anything: sealed
    segments were committed whole before the next one got a record. Any other damage
    (damage in a sealed segment, intact records after a damaged one, a changed byte in
    a complete line, a sealed segment whose size or checksum is not what the next
    segment's seal mark recorded, a sealed segment missing between two others) means
    acknowledged writes cannot be read.
    """
    corrupt: list[tuple[str, str]] = []
    torn: list[tuple[str, int]] = []
    newest = max((i for i, (_, c) in enumerate(segments) if c.total_bytes), default=-1)
    index = {os.path.basename(path): i for i, (path, _) in enumerate(segments)}
    for i, (path, contents) in enumerate(segments):
        if contents.damaged:
            ignored = contents.total_bytes - contents.valid_bytes
            if i == newest and contents.torn:
                torn.append((path, ignored))
            else:
                corrupt.append((path, _damage_problem(contents, sealed=i != newest)))
        seal = contents.seal
        if seal is None:
            continue
        j = index.get(seal.segment)
        if j is not None:
            sealed = segments[j][1]
            if sealed.total_bytes < seal.size:
                corrupt.append(
                    (
                        segments[j][0],
                        f"it is {sealed.total_bytes} bytes long, but it was sealed at "
                        f"{seal.size} bytes (as {os.path.basename(path)} records): the "
                        "acknowledged writes in its missing end are lost",
                    )
                )
            elif sealed.total_bytes != seal.size or sealed.crc != seal.crc:
                corrupt.append(
                    (segments[j][0], "its content changed after it was sealed (checksum)")
                )
        else:
            match = _SEGMENT.fullmatch(seal.segment)
            number = int(match.group(1)) if match else 0
            older = [p for p, _ in segments[:i] if _segment_number(p) < number]
            if older:
                root = os.path.dirname(path)
                corrupt.append(
                    (
                        os.path.join(root, seal.segment),
                        f"it is missing, but the older {os.path.basename(older[-1])} and "
                        f"the newer {os.path.basename(path)} are there: its writes are lost",
                    )
                )
    return JournalDamage(corrupt, torn)


def _segment_number(path: str) -> int:
    match = _SEGMENT.fullmatch(os.path.basename(path))
    return int(match.group(1)) if match else 0


def _damage_problem(contents: JournalContents, *, sealed: bool) -> str:
    first = contents.damaged[0]
    where = f"{first.length} damaged bytes at byte {first.offset}"
    if len(contents.damaged) > 1:
        where += f" (and {len(contents.damaged) - 1} more damaged stretches)"
    if sealed:
        return f"{where} of a sealed segment, which no crash can leave"
    if contents.after:
        return f"{where}, followed by {len(contents.after)} intact records"
    return f"{where}, not a write cut short by a crash (a changed byte or garbage)"


def aside_directory(root: str) -> str:
    """Make a new, dated folder under `root`/damaged/ to keep damaged files in."""
    damaged = os.path.join(root, DAMAGED_DIR)
    os.makedirs(damaged, 0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1, 1000):
        path = os.path.join(damaged, stamp if n == 1 else f"{stamp}-{n}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        fsync_directory(damaged)
        fsync_directory(root)
        return path
    raise StoreError(f"cannot make a new folder in {damaged}")


def keep_copy(path: str, folder: str) -> str:
    """Keep the file at `path` in `folder` too (a hard link, else a synced copy)."""
    dest = os.path.join(folder, os.path.basename(path))
    try:
        os.link(path, dest)
    except OSError:
        shutil.copyfile(path, dest)
        fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_directory(folder)
    return dest


def check_owners_directory(root: str, *, fsync: bool) -> str:
    """The owners directory under `root`, created if the store is new.

    Raises `StoreCorrupt` if it is missing but journal segments are there: the owner
    files were deleted, and an empty store would report their data as "not found".
    """
    owners = os.path.join(root, "owners")
    if not os.path.isdir(owners):
        if any(number for number, _ in numbered_segments(root)):
            # A store is created with owners/ before its first segment.
            raise StoreCorrupt(
                owners,
                "the directory is missing but the journal is there: the owner files were deleted",
            )
        os.mkdir(owners, 0o700)
        if fsync:
            fsync_directory(root)
    return owners


def tidy_owner_files(root: str, owners: str, known_shards: set[str]) -> int:
    """Delete leftover temporary files, check every owner file; return how many went.

    Adds every shard directory found to `known_shards`. Raises `StoreCorrupt` naming the
    first damaged owner file (and how many others are).
    """
    removed = 0
    damaged: list[tuple[str, str]] = []
    with os.scandir(owners) as shards:
        for shard in shards:
            if not shard.is_dir():
                continue
            known_shards.add(shard.name)
            with os.scandir(shard.path) as entries:
                for entry in entries:
                    if entry.name.endswith(TEMP_SUFFIX):
                        # A checkpoint died before renaming it: the segments it
                        # would have deleted still hold every write it contained.
                        os.unlink(entry.path)
                        removed += 1
                    elif entry.name.endswith(OWNER_SUFFIX):
                        problem = check_owner_file(entry.path)
                        if problem is not None:
                            damaged.append((entry.path, problem))
    if damaged:
        path, problem = min(damaged)
        if len(damaged) > 1:
            problem += f"; {len(damaged) - 1} other owner files are damaged too"
        raise StoreCorrupt(path, problem)
    # Left by older versions, which replaced the journal through a temporary file.
    journal_temp = os.path.join(root, LEGACY_JOURNAL + TEMP_SUFFIX)
    if os.path.exists(journal_temp):
        os.unlink(journal_temp)
        removed += 1
    return removed


def read_segments(root: str, paths: list[str]) -> list[tuple[str, JournalContents]]:
    """Read the journal segments at `paths` (oldest first) and check them as a chain.

    Raises `StoreCorrupt` for damage to acknowledged writes; a torn end a crash left
    is logged and a copy of its segment kept in `damaged/` (the caller's checkpoint
    deletes the segment).
    """
    segments = [(path, read_journal(path)) for path in paths]
    damage = find_journal_damage(segments)
    if damage.corrupt:
        path, problem = damage.corrupt[0]
        raise StoreCorrupt(path, problem)
    if damage.torn:
        # Never delete what could not be read: the checkpoint below deletes the
        # segment, so keep a copy aside first.
        folder = aside_directory(root)
        for path, ignored in damage.torn:
            kept = keep_copy(path, folder)
            logger.warning(
                "memory store %s: %s ends in %d bytes a crash left half-written (writes "
                "that were never acknowledged); ignored them, and kept a copy in %s",
                root,
                os.path.basename(path),
                ignored,
                kept,
            )
    return segments


def lock_directory(root: str) -> int:
    """Create `root` if needed and lock it for this process; raise `StoreLocked` if taken.

    Returns the lock's file descriptor: closing it releases the lock.
    """
    os.makedirs(root, 0o700, exist_ok=True)
    fd = os.open(os.path.join(root, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"memory store {root} is already open") from None
    return fd
