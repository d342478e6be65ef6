"""The owner file of the TinyDB store: its name, its bytes, and reading it back whole.

Each owner's data lives in one TinyDB file whose name is the SHA-256 of the owner id,
so any owner string is a safe name. The file carries a CRC-32 of its content in a
fixed place, so that opening a store can check every owner file with a read and a CRC
each, and a file that changed after Harken wrote it is refused, never read as "no
data". The checkpoint writer (`memory.checkpoint`) produces these bytes; the store and
its start-up checks (`memory.recovery`) read them through here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from typing import Any, Final

from tinydb import TinyDB
from tinydb.storages import Storage

from memory.store import StoreError

__all__ = [
    "FORMAT_VERSION",
    "META_TABLE",
    "NAMESPACE_PREFIX",
    "OWNER_SUFFIX",
    "TEMP_SUFFIX",
    "Tables",
    "check_owner_file",
    "owner_file_bytes",
    "owner_file_name",
    "owner_file_path",
    "owner_file_paths",
    "parse_owner_file",
    "read_all",
]

META_TABLE: Final = "_meta"
NAMESPACE_PREFIX: Final = "ns:"
FORMAT_VERSION: Final = 2
"""Owner files of version 2 carry a checksum; version 1 files (no checksum) are read."""
TEMP_SUFFIX: Final = ".tmp"
"""Suffix of a file being written, renamed over the real one once synced."""
OWNER_SUFFIX: Final = ".json"
# Every owner file of version 2 starts with these bytes, then the CRC-32 (8 hex digits)
# of everything after the digits: the rest of `_meta` (owner id, version) and the tables.
_OWNER_HEAD: Final = b'{"_meta":{"1":{"crc32":"'
_CRC_HEX: Final = re.compile(rb"[0-9a-f]{8}")

Tables = dict[str, dict[str, str]]
"""namespace -> key -> the value's JSON text."""


def owner_file_bytes(owner_id: str, tables: Tables) -> bytes:
    """The owner's TinyDB file: table -> document id -> document, with a checksum.

    The values are already JSON text, so they are spliced in rather than parsed and
    serialised again: the writer thread holds the GIL (which the memory actor needs)
    for less time. Every piece is ASCII: `json.dumps` escapes non-ASCII names, and
    values come from `encode_value` or `json.dumps`, which do too. `_meta` is first and
    its `crc32` first in it, so the checksum sits at a fixed place (see `_OWNER_HEAD`).
    """
    parts = ['","owner":', json.dumps(owner_id), ',"version":', str(FORMAT_VERSION), "}}"]
    for namespace, table in tables.items():
        parts += [",", json.dumps(NAMESPACE_PREFIX + namespace), ":{"]
        parts.append(
            ",".join(
                f'"{doc_id}":{{"key":{json.dumps(key)},"value":{text}}}'
                for doc_id, (key, text) in enumerate(table.items(), start=1)
            )
        )
        parts.append("}")
    parts.append("}")
    rest = "".join(parts).encode("ascii")
    return _OWNER_HEAD + b"%08x" % zlib.crc32(rest) + rest


def _checksum_problem(raw: bytes) -> str | None:
    """For a file that starts with `_OWNER_HEAD`: what is wrong with its checksum."""
    start = len(_OWNER_HEAD)
    digits = raw[start : start + 8]
    if not _CRC_HEX.fullmatch(digits):
        return "its checksum is unreadable"
    if zlib.crc32(raw[start + 8 :]) != int(digits, 16):
        return "its checksum does not match its content: it changed after Harken wrote it"
    return None


class _Malformed(ValueError):
    """What `parse_owner_file` found wrong, worded for a report."""


def parse_owner_file(raw: bytes) -> tuple[str, Tables]:
    """The owner id and tables in an owner file's bytes, read through TinyDB.

    Raises `ValueError` saying what is wrong unless the file is exactly as a checkpoint
    wrote it: checksum (version 2), `_meta`, only `ns:` tables, `{"key", "value"}`
    documents. A version 1 file, which has no checksum, is checked for its shape only.
    An empty file is damage, not an empty owner: checkpoints write no file for those.
    """
    if not raw.strip():
        raise ValueError("it is empty")
    checked = raw.startswith(_OWNER_HEAD)
    if checked and (problem := _checksum_problem(raw)) is not None:
        raise ValueError(problem)
    try:
        db = TinyDB(raw, storage=_ReadOnlyFile)
    except ValueError as exc:
        raise ValueError(f"it is not valid JSON: {exc}") from None
    tables: Tables = {}
    try:
        meta = db.table(META_TABLE, cache_size=0).all()
        fields = {"crc32", "owner", "version"} if checked else {"owner", "version"}
        version = FORMAT_VERSION if checked else 1
        if len(meta) != 1 or set(meta[0]) != fields or meta[0]["version"] != version:
            raise _Malformed("its _meta table is missing or not as Harken writes it")
        owner_id = meta[0]["owner"]
        if not isinstance(owner_id, str):
            raise _Malformed("its _meta table names no owner")
        for name in db.tables():
            if name == META_TABLE:
                continue
            if not name.startswith(NAMESPACE_PREFIX) or name == NAMESPACE_PREFIX:
                raise _Malformed("it has a table that Harken never writes")
            table: dict[str, str] = {}
            for doc in db.table(name, cache_size=0).all():
                key = doc.get("key")
                if set(doc) != {"key", "value"} or not isinstance(key, str) or key in table:
                    raise _Malformed("it has a malformed document")
                table[key] = json.dumps(doc["value"], separators=(",", ":"))
            if not table:
                raise _Malformed("it has an empty table, which Harken never writes")
            tables[name[len(NAMESPACE_PREFIX) :]] = table
    except _Malformed:
        raise
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        # The JSON parsed but is not shaped like a TinyDB database.
        raise _Malformed(f"it is not a valid TinyDB file: {exc!r}") from None
    finally:
        db.close()
    return owner_id, tables


def check_owner_file(path: str) -> str | None:
    """What is wrong with the owner file at `path`, or None if it reads back whole.

    A version 2 file with a matching checksum is accepted without parsing it, so that
    checking every owner file when the store opens costs a read and a CRC per file.
    """
    try:
        raw = read_all(path)
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"
    if raw.startswith(_OWNER_HEAD) and _checksum_problem(raw) is None:
        return None
    try:
        parse_owner_file(raw)
    except ValueError as exc:
        return str(exc)
    return None


def read_all(path: str) -> bytes:
    # Raw reads: half the system calls of open().read(), which shows on a write path
    # that has just fsynced.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def owner_file_name(owner_id: str) -> str:
    """The owner's file name (in the shard named by its first two characters)."""
    return hashlib.sha256(owner_id.encode("utf-8", "surrogatepass")).hexdigest() + OWNER_SUFFIX


def owner_file_paths(root: str) -> list[str]:
    """Every owner file under the store's directory `root`, in a stable order."""
    owners = os.path.join(root, "owners")
    found: list[str] = []
    if not os.path.isdir(owners):
        return found
    with os.scandir(owners) as shards:
        for shard in shards:
            if shard.is_dir():
                with os.scandir(shard.path) as entries:
                    found += [e.path for e in entries if e.name.endswith(OWNER_SUFFIX)]
    return sorted(found)


def owner_file_path(root: str, owner_id: str) -> str:
    """Where the owner's file lives under the store's directory `root`."""
    name = owner_file_name(owner_id)
    return os.path.join(root, "owners", name[:2], name)


class _ReadOnlyFile(Storage):
    """A TinyDB storage over bytes already read, parsed once, that refuses writes.

    TinyDB reads its storage again for every table it lists; parsing once keeps loading
    an owner as cheap as one `json.loads`. Writes never go through TinyDB: checkpoints
    write whole files atomically (see `memory.checkpoint.CheckpointWriter.write_owner_files`).
    """

    def __init__(self, raw: bytes) -> None:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        self._data: dict[str, dict[str, Any]] = data

    def read(self) -> dict[str, dict[str, Any]] | None:
        return self._data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        raise StoreError("owner files are written only by checkpoints")
