"""An append-only write-ahead journal with checksummed records and group commit.

Each write is one line, `<crc32 as 8 hex digits> <JSON payload>\\n`, where the payload
is `["put", namespace, owner, key, value]` or `["del", namespace, owner, key]`. JSON
text never contains a raw newline, so a line is a record. A segment made active by a
checkpoint starts with `["sealed", segment, size, crc32]`: the name, final size and
checksum of the segment sealed just before it, so that opening can tell a sealed
segment that lost its end (which no crash can do) from one that is whole.

Appending only fills a buffer in memory; `commit()` writes the whole buffer with one
`write` and syncs it with one `fdatasync`, however many records it holds: that is the
group commit. A record is acknowledged only after that sync, so a crash can at worst
leave a torn end: a last line cut short, or (after a power cut) blocks of zero bytes.
`read_journal` reads the intact records, and when something after them is damaged it
reads on past the damage, so that its caller can tell a torn end (nothing intact after
it, and cut short or zero-filled: never acknowledged) from damage to acknowledged
records (a flipped byte, garbage, intact records after it), which must not pass
unnoticed.

A `Journal` is one file; the TinyDB store keeps its journal as a sequence of them
(segments), starting a new one at each checkpoint and deleting the old ones once the
owner files hold their writes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from typing import NamedTuple

__all__ = [
    "DamagedRange",
    "Delete",
    "Journal",
    "JournalContents",
    "Put",
    "SealMark",
    "fsync_directory",
    "read_journal",
]

logger = logging.getLogger(__name__)

_CRC_DIGITS = 8
# What the part of a record line that a cut-short write left can look like: hex digits,
# a space, then printable ASCII (every payload is ASCII-only JSON).
_CUT_RECORD = re.compile(rb"[0-9a-f]{0,7}|[0-9a-f]{8}(?: [\x20-\x7e]*)?")
_JSON_STRING = rb'"((?:[^"\\]|\\.)*)"'
_NAMES_GUESS = re.compile(rb'\["(put|del)",' + b",".join([_JSON_STRING] * 3))


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


class SealMark(NamedTuple):
    """The first record of a segment: what the segment sealed before it held."""

    segment: str
    """Its file name (no directory)."""
    size: int
    crc: int
    """CRC-32 of its whole content."""


class DamagedRange(NamedTuple):
    """A stretch of a segment that holds no intact record."""

    offset: int
    length: int
    guesses: tuple[str, ...]
    """What the damaged lines seem to have been (`put <namespace> <owner> <key>`), for
    the report of a repair; unverified, and never a value."""


class JournalContents(NamedTuple):
    """What `read_journal` found."""

    records: list[Put | Delete]
    """The intact records before any damage, in order."""
    valid_bytes: int
    """Length of the prefix made of whole, intact records."""
    total_bytes: int
    """Length of the file; more than `valid_bytes` when something after them is damaged."""
    crc: int
    """CRC-32 of the whole file, to compare with the next segment's `SealMark`."""
    seal: SealMark | None
    """The segment's first record, if it is a seal mark."""
    damaged: list[DamagedRange]
    """Every damaged stretch after `valid_bytes`, in order."""
    after: list[Put | Delete]
    """Intact records found after the first damaged stretch (read on at each newline)."""
    torn: bool
    """Whether the damage is what a crash during a commit leaves: a last line cut short,
    maybe followed by zero bytes to the end. Those writes were never acknowledged."""


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


def _parse(line: bytes) -> Put | Delete | SealMark | None:
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
    if fields[0] == "sealed":
        return _parse_seal(fields)
    op, namespace, owner, key = fields[:4]
    if not all(isinstance(name, str) and name for name in (namespace, owner, key)):
        return None
    if op == "put" and len(fields) == 5:
        value = json.dumps(fields[4], separators=(",", ":"))
        return Put(namespace, owner, key, value)
    if op == "del" and len(fields) == 4:
        return Delete(namespace, owner, key)
    return None


def _parse_seal(fields: list[object]) -> SealMark | None:
    if len(fields) != 4:
        return None
    _, segment, size, crc = fields
    if not (isinstance(segment, str) and isinstance(size, int) and isinstance(crc, str)):
        return None
    try:
        return SealMark(segment, size, int(crc, 16))
    except ValueError:
        return None


def _guesses(data: bytes) -> tuple[str, ...]:
    """The names damaged record lines seem to hold (never their values)."""
    found = []
    for match in _NAMES_GUESS.finditer(data):
        try:
            names = [json.loads(b'"' + part + b'"') for part in match.groups()[1:]]
        except ValueError:
            continue
        found.append(" ".join([match.group(1).decode("ascii"), *names]))
    return tuple(found)


def _looks_torn(rest: bytes) -> bool:
    """Whether `rest`, everything after the intact records, is what a crash can leave.

    A write cut short leaves the start of a record and no newline; after a power cut,
    blocks the file had grown into but that were never written read back as zeros, to
    the end of the file. Anything else (a complete line with a bad checksum, a record
    whose newline was replaced by another byte, zeros with data after them) is damage
    to written data.
    """
    body = rest.rstrip(b"\0")
    if b"\0" in body or b"\n" in body or not _CUT_RECORD.fullmatch(body):
        return False
    return len(body) < 2 or _parse(body[:-1]) is None


def read_journal(path: str) -> JournalContents:
    """Read the segment at `path` (empty if there is no file), past any damage.

    Records are only ever appended after a successful sync of everything before them,
    and a failed append is truncated away, so the only damage a crash can leave is a
    torn end (see `JournalContents.torn`); the caller decides what other damage means.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return JournalContents([], 0, 0, 0, None, [], [], False)
    records: list[Put | Delete] = []
    seal: SealMark | None = None
    valid = 0
    while valid < len(data):
        end = data.find(b"\n", valid)
        if end < 0:
            break  # the last line never got its newline
        record = _parse(data[valid:end])
        if record is None or (isinstance(record, SealMark) and valid):
            break
        if isinstance(record, SealMark):
            seal = record
        else:
            records.append(record)
        valid = end + 1
    damaged: list[DamagedRange] = []
    after: list[Put | Delete] = []
    torn = False
    if valid < len(data):
        start: int | None = None
        position = valid
        while position < len(data):
            end = data.find(b"\n", position)
            line_end = len(data) if end < 0 else end
            record = _parse(data[position:line_end]) if end >= 0 else None
            if record is None or isinstance(record, SealMark):
                if start is None:
                    start = position
            else:
                if start is not None:
                    stretch = data[start:position]
                    damaged.append(DamagedRange(start, len(stretch), _guesses(stretch)))
                    start = None
                after.append(record)
            position = line_end + 1
        if start is not None:
            damaged.append(DamagedRange(start, len(data) - start, _guesses(data[start:])))
        torn = not after and _looks_torn(data[valid:])
    return JournalContents(records, valid, len(data), zlib.crc32(data), seal, damaged, after, torn)


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
        # CRC-32 of the durable content, for the seal mark of the segment after this one.
        self._crc = 0
        if self._durable:
            with open(path, "rb") as file:
                self._crc = zlib.crc32(file.read(self._durable))
        self._pending = bytearray()
        self._seal_bytes = 0
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

    @property
    def has_records(self) -> bool:
        """Whether it holds (or will hold, once committed) more than its seal mark."""
        return self.size > self._seal_bytes

    @property
    def crc(self) -> int:
        """CRC-32 of the committed content (all of it after a successful `commit()`)."""
        return self._crc

    def deleted(self) -> bool:
        """Whether the file was unlinked while open: commits then go to no file at all."""
        return os.fstat(self._fd).st_nlink == 0

    def append_seal(self, segment: str, size: int, crc: int) -> None:
        """Buffer the seal mark of the segment sealed before this one (the first record)."""
        if self.size:
            raise ValueError("a seal mark must be a segment's first record")
        frame = _frame(json.dumps(["sealed", segment, size, f"{crc:08x}"], separators=(",", ":")))
        self._pending += frame
        self._seal_bytes = len(frame)

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
        self._crc = zlib.crc32(data, self._crc)
        del self._pending[: len(data)]

    def close(self) -> None:
        """Close the file without committing (the store commits first)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
