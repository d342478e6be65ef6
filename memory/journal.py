"""An append-only write-ahead journal with checksummed records and group commit.

Each write is one line, `<crc32 as 8 hex digits> <JSON payload>\\n`, where the payload
is `["put", namespace, owner, key, value]` or `["del", namespace, owner, key]`. JSON
text never contains a raw newline, so a line is a record.

Appending only fills a buffer in memory; `commit()` writes the whole buffer with one
`write` and syncs it with one `fdatasync`, however many records it holds: that is the
group commit. A record is acknowledged only after that sync, so a crash can at worst
leave a torn last line, which `read_journal` detects by its checksum or missing newline
and drops: nobody was told those writes were durable.

A `Journal` is one file; the TinyDB store keeps its journal as a sequence of them
(segments), starting a new one at each checkpoint and deleting the old ones once the
owner files hold their writes.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from typing import NamedTuple

__all__ = ["Delete", "Journal", "JournalContents", "Put", "fsync_directory", "read_journal"]

logger = logging.getLogger(__name__)

_CRC_DIGITS = 8


class Put(NamedTuple):
    """A journalled put; `value` is the value's JSON text."""

    namespace: str
    owner: str
    key: str
    value: str


class Delete(NamedTuple):
    """A journalled delete."""

    namespace: str
    owner: str
    key: str


class JournalContents(NamedTuple):
    """What `read_journal` found."""

    records: list[Put | Delete]
    valid_bytes: int
    """Length of the prefix made of whole, intact records."""
    total_bytes: int
    """Length of the file; more than `valid_bytes` when the tail was torn or corrupt."""


def fsync_directory(path: str) -> None:
    """Sync a directory so that renames, creations and unlinks in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _frame(payload: str) -> bytes:
    data = payload.encode("ascii")
    return b"%08x " % zlib.crc32(data) + data + b"\n"


def _names(namespace: str, owner: str, key: str) -> str:
    # The three names as JSON, without the closing bracket, so that a put can splice
    # in its already-serialised value without parsing it again.
    return json.dumps([namespace, owner, key], separators=(",", ":"))[1:-1]


def _parse(line: bytes) -> Put | Delete | None:
    """Decode one record line (without its newline), or None if it is damaged."""
    if len(line) <= _CRC_DIGITS + 1 or line[_CRC_DIGITS : _CRC_DIGITS + 1] != b" ":
        return None
    try:
        crc = int(line[:_CRC_DIGITS], 16)
    except ValueError:
        return None
    payload = line[_CRC_DIGITS + 1 :]
    if zlib.crc32(payload) != crc:
        return None
    try:
        fields = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(fields, list) or len(fields) < 4:
        return None
    op, namespace, owner, key = fields[:4]
    if not all(isinstance(name, str) and name for name in (namespace, owner, key)):
        return None
    if op == "put" and len(fields) == 5:
        value = json.dumps(fields[4], separators=(",", ":"))
        return Put(namespace, owner, key, value)
    if op == "del" and len(fields) == 4:
        return Delete(namespace, owner, key)
    return None


def read_journal(path: str) -> JournalContents:
    """Read the intact prefix of the journal at `path` (empty if there is no file).

    Reading stops at the first damaged record. Records are only ever appended after a
    successful sync of everything before them, and a failed append is truncated away,
    so damage can only be a tail that was never acknowledged.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return JournalContents([], 0, 0)
    records: list[Put | Delete] = []
    valid = 0
    while valid < len(data):
        end = data.find(b"\n", valid)
        if end < 0:
            break  # the last line never got its newline: torn
        record = _parse(data[valid:end])
        if record is None:
            break
        records.append(record)
        valid = end + 1
    return JournalContents(records, valid, len(data))


class Journal:
    """The open journal file, appended to through an in-memory group-commit buffer.

    Not thread-safe: its store's single user drives it.
    """

    def __init__(self, path: str, *, fsync: bool = True) -> None:
        """Open (creating if needed) the journal at `path` for appending.

        `fsync=False` skips every sync: only for throwaway data such as benchmarks.
        """
        self.path = path
        self._fsync = fsync
        self._fd = self._open()
        self._durable = os.fstat(self._fd).st_size
        self._pending = bytearray()
        # Set when a failed commit may have left part of a record at the end of the
        # file; it must be cut off before anything else is appended after it.
        self._torn = False

    def _open(self) -> int:
        existed = os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not existed and self._fsync:
            fsync_directory(os.path.dirname(self.path) or ".")
        return fd

    @property
    def size(self) -> int:
        """Bytes in the journal, committed or not: what checkpoints are triggered by."""
        return self._durable + len(self._pending)

    @property
    def has_pending(self) -> bool:
        """Whether some records are not yet committed."""
        return bool(self._pending)

    def append_put(self, namespace: str, owner: str, key: str, value: str) -> None:
        """Buffer a put; `value` must be JSON text (as `encode_value` makes it)."""
        self._pending += _frame(f'["put",{_names(namespace, owner, key)},{value}]')

    def append_delete(self, namespace: str, owner: str, key: str) -> None:
        """Buffer a delete."""
        self._pending += _frame(f'["del",{_names(namespace, owner, key)}]')

    def commit(self) -> None:
        """Write and sync every buffered record at once.

        If it fails, whatever part reached the file is truncated away and the records
        stay buffered, so the next `commit()` writes them again.
        """
        if not self._pending and not self._torn:
            return
        if self._torn:
            os.ftruncate(self._fd, self._durable)
            self._torn = False
        data = bytes(self._pending)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self._fsync:
                os.fdatasync(self._fd)
        except OSError:
            self._torn = True
            try:
                os.ftruncate(self._fd, self._durable)
                self._torn = False
            except OSError:
                logger.exception("cannot truncate the journal after a failed commit")
            raise
        self._durable += len(data)
        del self._pending[: len(data)]

    def close(self) -> None:
        """Close the file without committing (the store commits first)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
