"""Repair a damaged TinyDB memory store: keep what can be read, set the rest aside.

A store that finds a damaged file refuses to open (`memory.store.StoreCorrupt`), so
that nobody is told a key "does not exist" when it only cannot be read. This is the way
on (`harken check --repair`): with the bot stopped, every damaged file is moved into a
new dated folder, `damaged/<UTC time>/`, under the store's directory (never deleted),
and the report says, per file, which owner and which keys are lost, as far as the
damaged bytes and the journal tell:

* a damaged owner file is moved aside; its owner keeps only what the journal still
  holds for it (the writes since the last checkpoint), which the report lists;
* a journal segment with damaged records is moved aside, and every intact record of
  every segment (those after the damage included) is written, in order, to one new
  segment that replaces them; the report names what the damaged records seem to
  have held (unverified: their checksums failed) and how many intact ones were kept.

The store is then opened, replayed and checkpointed as usual, which checks the result.
The report is printed and also saved as `REPORT.txt` in the dated folder.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field

from memory.journal import Delete, Journal, JournalContents, Put, fsync_directory, read_journal
from memory.owner_files import check_owner_file, owner_file_name, owner_file_paths
from memory.recovery import aside_directory, find_journal_damage, segment_paths
from memory.store import StoreError, StoreLocked
from memory.tinydb_store import TinyDBStore, lock_directory

__all__ = ["RepairReport", "repair_command", "repair_store"]

_OWNER_FIELD = re.compile(rb'"owner": ?("(?:[^"\\]|\\.)*")')
_SEGMENT = re.compile(r".*/journal-(\d+)\.log")
_SHOWN_KEYS = 50


@dataclass
class RepairReport:
    """What a repair found and did."""

    root: str
    folder: str | None = None
    """The dated folder the damaged files were moved to, if any were."""
    findings: list[str] = field(default_factory=list)
    """One line per damaged file: what was wrong, what is lost, where it went."""

    def text(self) -> str:
        if not self.findings:
            return f"memory store {self.root}: no damaged file found; nothing to repair."
        lines = [
            f"memory store {self.root}: repaired. Damaged files were moved to {self.folder}:",
            *(f"- {finding}" for finding in self.findings),
            "Harken can start now. To undo, stop Harken and restore the store from a backup.",
        ]
        return "\n".join(lines)


class _Aside:
    """The dated folder damaged files go to, made when the first one needs it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.folder: str | None = None

    def move(self, path: str) -> str:
        """Move `path` (under the store's directory) to the same place in the folder."""
        if self.folder is None:
            self.folder = aside_directory(self.root)
        relative = os.path.relpath(path, self.root)
        dest = os.path.join(self.folder, relative)
        parent = os.path.dirname(dest)
        os.makedirs(parent, 0o700, exist_ok=True)
        os.rename(path, dest)
        fsync_directory(parent)
        fsync_directory(os.path.dirname(path))
        return dest


def _final_keys(records: list[Put | Delete], owner: str) -> list[str]:
    """`namespace/key` for every key the journal's records leave `owner` with."""
    keys: dict[tuple[str, str], bool] = {}
    for record in records:
        if record.owner == owner:
            keys[record.namespace, record.key] = isinstance(record, Put)
    return sorted(f"{ns}/{key}" for (ns, key), present in keys.items() if present)


def _shown(names: list[str]) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:_SHOWN_KEYS])
    if len(names) > _SHOWN_KEYS:
        shown += f" and {len(names) - _SHOWN_KEYS} more"
    return shown


def _owner_of(raw: bytes, name: str, journal_owners: dict[str, str]) -> str | None:
    """The owner id of a damaged file: from the journal, or from the bytes if they match
    the file's name (which is the SHA-256 of the owner id)."""
    if name in journal_owners:
        return journal_owners[name]
    match = _OWNER_FIELD.search(raw)
    if match is None:
        return None
    try:
        owner = json.loads(match.group(1))
    except ValueError:
        return None
    if isinstance(owner, str) and owner_file_name(owner) == name:
        return owner
    return None


def _listed_keys(raw: bytes) -> list[str]:
    """`namespace/key` as the damaged bytes list them, if they still parse as JSON."""
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    found = []
    if isinstance(data, dict):
        for table, docs in data.items():
            if isinstance(table, str) and table.startswith("ns:") and isinstance(docs, dict):
                for doc in docs.values():
                    if isinstance(doc, dict) and isinstance(doc.get("key"), str):
                        found.append(f"{table[3:]}/{doc['key']}")
    return sorted(found)


def _repair_owner_file(
    path: str, problem: str, aside: _Aside, records: list[Put | Delete], owners: dict[str, str]
) -> str:
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError:
        raw = b""
    name = os.path.basename(path)
    owner = _owner_of(raw, name, owners)
    dest = aside.move(path)
    where = os.path.relpath(path, aside.root)
    if owner is None:
        return (
            f"{where}: {problem}. Its owner cannot be told (no readable owner id, and no "
            "journal record names it): all of that owner's data is lost. "
            f"Keys the damaged file lists (unverified): {_shown(_listed_keys(raw))}. "
            f"Moved to {dest}."
        )
    return (
        f"{where}: {problem}. Owner {owner!r}: its data is lost except what the journal "
        f"holds. Keys the damaged file lists (unverified): {_shown(_listed_keys(raw))}. "
        f"Kept from the journal: {_shown(_final_keys(records, owner))}. Moved to {dest}."
    )


def _describe_segment(path: str, problem: str, contents: JournalContents | None) -> str:
    name = os.path.basename(path)
    if contents is None or not contents.damaged:
        return f"{name}: {problem}."
    guesses = [guess for damaged in contents.damaged for guess in damaged.guesses]
    lost = (
        f"the damaged records seem to have been (unverified): {_shown(guesses)}"
        if guesses
        else "which keys the damaged records held cannot be read"
    )
    return (
        f"{name}: {problem}. Lost: {lost}. Kept: {len(contents.records)} intact records "
        f"before the damage and {len(contents.after)} after it"
    )


def _write_segment(root: str, segments: list[tuple[str, JournalContents]]) -> None:
    """Write every intact record of `segments`, in order, to one new, newer segment.

    It is durable before any old segment goes; if the repair is cut short, replaying it
    after the old ones changes nothing (they hold the same records, in the same order).
    """
    records = [r for _, contents in segments for r in (*contents.records, *contents.after)]
    last = max((int(m.group(1)) for p, _ in segments if (m := _SEGMENT.fullmatch(p))), default=0)
    journal = Journal(os.path.join(root, f"journal-{last + 1:010d}.log"))
    try:
        for record in records:
            if isinstance(record, Put):
                journal.append_put(record.namespace, record.owner, record.key, record.value)
            else:
                journal.append_delete(record.namespace, record.owner, record.key)
        journal.commit()
    finally:
        journal.close()


def repair_store(path: str) -> RepairReport:
    """Repair the TinyDB memory store at `path` (see the module's docstring).

    Raises `StoreLocked` if a running Harken has it open, and `StoreError` or `OSError`
    if it cannot be repaired (the message says why).
    """
    root = os.path.abspath(path)
    report = RepairReport(root)
    if not os.path.isdir(root):
        return report
    lock = lock_directory(root)
    aside = _Aside(root)
    try:
        segments = [(p, read_journal(p)) for p in segment_paths(root)]
        records = [r for _, c in segments for r in (*c.records, *c.after)]
        owners = {owner_file_name(r.owner): r.owner for r in records}
        owners_dir = os.path.join(root, "owners")
        if not os.path.isdir(owners_dir) and any(_SEGMENT.fullmatch(p) for p, _ in segments):
            os.mkdir(owners_dir, 0o700)
            fsync_directory(root)
            report.findings.append(
                "owners/: the directory was missing (its files were deleted): every "
                f"owner's data that is not in the journal is lost; the journal's "
                f"{len(records)} intact records were kept"
            )
        for owner_path in owner_file_paths(root):
            problem = check_owner_file(owner_path)
            if problem is not None:
                report.findings.append(
                    _repair_owner_file(owner_path, problem, aside, records, owners)
                )
        damage = find_journal_damage(segments)
        if damage.corrupt:
            by_path = dict(segments)
            _write_segment(root, segments)
            for segment, problem in damage.corrupt:
                finding = _describe_segment(segment, problem, by_path.get(segment))
                if os.path.exists(segment):
                    finding += f". Moved to {aside.move(segment)}."
                report.findings.append(finding)
            for segment, contents in segments:
                if not os.path.exists(segment):
                    continue
                if contents.damaged:  # a torn end: kept too, never deleted
                    aside.move(segment)
                else:  # every record it held is in the new segment
                    os.unlink(segment)
            fsync_directory(root)
    finally:
        os.close(lock)
    report.folder = aside.folder
    if report.folder is not None:
        with open(os.path.join(report.folder, "REPORT.txt"), "w", encoding="utf-8") as file:
            file.write(report.text() + "\n")
    # Opening checks everything again, replays and checkpoints.
    TinyDBStore(root).close()
    return report


def repair_command(path: str) -> int:
    """`harken check --repair`: repair, print the report; exit status 0, or 1 on failure."""
    try:
        report = repair_store(path)
    except StoreLocked:
        print(
            f"harken: the memory store at {path} is open in a running Harken; stop it, "
            "then run `harken check --repair` again",
            file=sys.stderr,
        )
        return 1
    except (StoreError, OSError) as exc:
        print(f"harken: cannot repair the memory store at {path}: {exc}", file=sys.stderr)
        return 1
    print(report.text())
    return 0
