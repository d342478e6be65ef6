"""The TinyDB store's owners in memory: a bounded cache, and the owners it must keep.

An owner is held in one of three places (`OwnerCache`):

* `clean`: read from its file and unchanged since, in least-recently-used order; the
  oldest leave once the cache holds more than its bound;
* `dirty`: written since the last checkpoint took its snapshot;
* `flushing`: in the snapshot the running checkpoint is writing.

Dirty and flushing owners are pinned (they count against the bound but never leave)
until their file is durable, so that a read never goes to a file older than memory.
Only the store's user thread touches the cache; the checkpoint writer has its own
snapshot (`Owner.snapshot`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from memory.owner_files import Tables

__all__ = ["Owner", "OwnerCache"]


class Owner:
    """One owner's data in memory: namespace -> key -> the value's JSON text.

    Values are kept as text so that every read hands out a fresh object (callers may
    mutate it) and so that they cost little memory.
    """

    __slots__ = ("id", "tables")

    def __init__(self, owner_id: str) -> None:
        self.id = owner_id
        self.tables: Tables = {}

    def snapshot(self) -> Tables:
        """A copy the writer thread can serialise while this owner keeps changing.

        Shallow is enough: the values are immutable strings.
        """
        return {namespace: dict(table) for namespace, table in self.tables.items()}

    def remove(self, namespace: str, key: str) -> bool:
        """Remove a key; return whether it was there. An emptied namespace goes too."""
        table = self.tables.get(namespace)
        if table is None or key not in table:
            return False
        del table[key]
        if not table:
            del self.tables[namespace]
        return True


class OwnerCache:
    """Owners in memory: clean ones (bounded, LRU), and the pinned dirty and flushing ones.

    `load` reads an owner that is not in memory (from its file); it may raise, and then
    nothing changes.
    """

    def __init__(self, limit: int, load: Callable[[str], Owner]) -> None:
        self._limit = limit
        self._load = load
        self.clean: OrderedDict[str, Owner] = OrderedDict()
        self.dirty: dict[str, Owner] = {}  # written since the last snapshot
        self.flushing: dict[str, Owner] = {}  # in the running checkpoint's snapshot

    def __len__(self) -> int:
        return len(self.clean) + len(self.dirty) + len(self.flushing)

    def get(self, owner_id: str) -> Owner:
        """The owner, from memory or loaded (and then cached)."""
        owner = self.dirty.get(owner_id) or self.flushing.get(owner_id)
        if owner is not None:
            return owner
        owner = self.clean.get(owner_id)
        if owner is not None:
            self.clean.move_to_end(owner_id)
            return owner
        owner = self._load(owner_id)
        self.clean[owner_id] = owner
        self.evict()
        return owner

    def mark_dirty(self, owner: Owner) -> None:
        if owner.id not in self.dirty:
            # From the cache, or from the running checkpoint's snapshot: the writer has
            # its own copy, and this change is in the active segment.
            self.clean.pop(owner.id, None)
            self.flushing.pop(owner.id, None)
            self.dirty[owner.id] = owner

    def evict(self) -> None:
        # Pinned owners count against the bound but cannot leave until written.
        pinned = len(self.dirty) + len(self.flushing)
        while self.clean and len(self.clean) + pinned > self._limit:
            self.clean.popitem(last=False)

    def start_flush(self) -> list[tuple[str, Tables]]:
        """Snapshot every dirty owner for a checkpoint; they are flushing from now on."""
        assert not self.flushing
        owners = [(owner.id, owner.snapshot()) for owner in self.dirty.values()]
        self.flushing, self.dirty = self.dirty, {}
        return owners

    def flushed(self, *, ok: bool) -> None:
        """The checkpoint is over: its owners are clean if it succeeded, else dirty again."""
        if ok:
            for owner_id, owner in self.flushing.items():
                self.clean[owner_id] = owner
            self.flushing.clear()
            self.evict()
        else:
            self.dirty.update(self.flushing)
            self.flushing.clear()

    def clear(self) -> None:
        self.clean.clear()
        self.dirty.clear()
        self.flushing.clear()
