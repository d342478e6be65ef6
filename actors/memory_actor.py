"""The memory actor: the one owner of the memory store, with group commit.

Reads are asks, writes are tells applied in arrival order, and a `MemoryBarrier` fires
once every write before it is durable. When the inbox is empty and something waits,
the actor commits (one sync) and notifies the barriers, so a burst costs one sync.
A `MemoryFetch` (a read told, answered by a callback) waits the same way: the fetches
of a burst are served together by one query (`get_many`, where the store has it), just
before the commit, or earlier if a write to a key one of them reads comes first.
Failures never stop it: a failed read raises to its asker (an unreadable key is never
"missing"); a failed write or commit is logged and the next barrier gets the error.
Values may be secrets and are never logged (ARCHITECTURE.md, "Memory: who owns what").
Linked accounts share a person's memory: the identity map (actors/identity.py) turns the
owner of every read and write of a person's namespaces into the person's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from actors.identity import IDENTITY_ASKS, IdentityMap, is_person_namespace
from actors.messages import (
    MemoryBarrier,
    MemoryDelete,
    MemoryFetch,
    MemoryGet,
    MemoryKeys,
    MemoryPut,
)
from actors.supervision import SupervisedActor
from memory.store import InvalidWrite, Store, StoreError, StoreUnavailable

__all__ = ["MemoryActor"]

_PERSONAL = (MemoryGet, MemoryKeys, MemoryPut, MemoryDelete, MemoryFetch)
"""Messages about one owner's memory: a linked account's go to its person's owner."""

logger = logging.getLogger(__name__)

Notify = Callable[[BaseException | None], None]
Address = tuple[str, str, str]
"""(namespace, owner, key)."""


class MemoryActor(SupervisedActor):
    """Serialises every access to one `Store` and commits writes in groups."""

    def __init__(
        self,
        store: Store | Callable[[], Store],
        *,
        max_batch: int = 1000,
        identities: IdentityMap | None = None,
    ) -> None:
        """Own `store`, or call `store()` in `on_start` if it is a factory.

        A factory opens the store on the actor's own thread, so that a slow open (it may
        replay a journal) does not hold up whoever starts the actor. `max_batch` is the
        most messages handled between commits while the inbox never empties.
        `identities` is the map of linked accounts (a new one if None), read at start.
        """
        super().__init__()
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._store: Store | None = None
        self._factory: Callable[[], Store] | None = None
        if isinstance(store, Store) and not isinstance(store, type):
            self._store = store
        elif callable(store):
            self._factory = store
        else:
            raise TypeError("MemoryActor needs a Store or a zero-argument factory of one")
        self._max_batch = max_batch
        self._uncommitted = False
        # Barriers waiting for the next commit, each with the first write error seen
        # between the previous barrier and it (None if every write was applied).
        self._barriers: list[tuple[Notify, BaseException | None]] = []
        self._write_error: BaseException | None = None
        self._handled_since_commit = 0
        # Fetches not served yet, in arrival order, and the addresses they read.
        self._fetches: list[MemoryFetch] = []
        self._fetched: set[Address] = set()
        self._identities = identities if identities is not None else IdentityMap()

    # --- lifecycle -----------------------------------------------------------------

    def on_start(self) -> None:
        if self._factory is not None:
            self._store = self._factory()
        # Unreadable, it stops the actor: memory answered without the map would be wrong.
        self._identities.load(self.store)
        logger.debug("memory actor started")

    def release(self) -> None:
        # On a crash too: keep whatever can be kept and free the store's directory lock
        # before the supervisor hears of it, so that the restarted actor can open the
        # store again.
        self._serve_fetches()
        self._commit()
        self._close_store()

    def _close_store(self) -> None:
        if self._store is None:
            return
        try:
            self._store.close()
        except Exception:
            logger.exception("closing the memory store failed")

    @property
    def store(self) -> Store:
        """The store, once opened (after `on_start`)."""
        if self._store is None:
            raise RuntimeError("the memory store is not open")
        return self._store

    # --- messages ------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        finally:
            self._handled_since_commit += 1
            if self._fetches and (
                self.actor_inbox.empty() or len(self._fetches) >= self._max_batch
            ):
                self._serve_fetches()
            if (self._uncommitted or self._barriers) and (
                self.actor_inbox.empty() or self._handled_since_commit >= self._max_batch
            ):
                self._commit()

    def _handle(self, message: Any) -> Any:
        if isinstance(message, _PERSONAL):
            if is_person_namespace(message.namespace) and isinstance(message.owner, str):
                owner = self._identities.owner(
                    self.store,
                    message.namespace,
                    message.owner,
                    write=isinstance(message, MemoryPut),
                )
                if owner != message.owner:  # a linked account: its person's memory
                    message = message._replace(owner=owner)
            if isinstance(message, MemoryFetch):
                self._fetches.append(message)
                self._fetched.add((message.namespace, message.owner, message.key))
                return None
            # A fetch told before a write must not see it.
            if (
                self._fetched
                and isinstance(message, (MemoryPut, MemoryDelete))
                and ((message.namespace, message.owner, message.key) in self._fetched)
            ):
                self._serve_fetches()
        elif isinstance(message, IDENTITY_ASKS):
            self._serve_fetches()  # linking may move what they read
            return self._identities.handle(self.store, message)
        if isinstance(message, MemoryGet):
            logger.debug("get %s/%s/%s", message.namespace, message.owner, message.key)
            # An ask: errors (InvalidName, an unreadable owner file) go to the asker.
            return self.store.get(message.namespace, message.owner, message.key, message.default)
        if isinstance(message, MemoryKeys):
            logger.debug("keys %s/%s", message.namespace, message.owner)
            return self.store.keys(message.namespace, message.owner)
        if isinstance(message, MemoryPut):
            self._put(message)
            return None
        if isinstance(message, MemoryDelete):
            return self._delete(message)
        if isinstance(message, MemoryBarrier):
            self._barriers.append((message.notify, self._write_error))
            self._write_error = None
            return None
        # Not pykka's default, which would log the whole message (values included).
        logger.warning("memory actor ignored an unexpected %s", type(message).__name__)
        return None

    def _put(self, message: MemoryPut) -> None:
        logger.debug("put %s/%s/%s", message.namespace, message.owner, message.key)
        try:
            self.store.put(message.namespace, message.owner, message.key, message.value)
        except InvalidWrite as exc:
            logger.warning("dropped an invalid MemoryPut: %s", exc)
            self._note_write_error(exc)
        except StoreError as exc:
            # Says what and which file; a traceback would add nothing.
            logger.error("a MemoryPut failed and was dropped: %s", exc)
            self._note_write_error(exc)
        except Exception as exc:
            # A tell has nobody to raise to, and the actor must survive I/O errors.
            logger.exception("a MemoryPut failed and was dropped")
            self._note_write_error(exc)
        else:
            self._uncommitted = True

    def _delete(self, message: MemoryDelete) -> bool:
        logger.debug("delete %s/%s/%s", message.namespace, message.owner, message.key)
        try:
            existed = self.store.delete(message.namespace, message.owner, message.key)
        except InvalidWrite as exc:
            # The message may have been told, so raising could kill the actor; a key
            # that is not a valid name cannot exist, so nothing was to be deleted and
            # nothing failed: no barrier hears of it (another caller's barrier could).
            logger.warning("ignored an invalid MemoryDelete: %s", exc)
            return False
        except StoreError as exc:
            logger.error("a MemoryDelete failed and was dropped: %s", exc)
            self._note_write_error(exc)
            return False
        except Exception as exc:
            logger.exception("a MemoryDelete failed and was dropped")
            self._note_write_error(exc)
            return False
        if existed:
            self._uncommitted = True
        return existed

    def _note_write_error(self, exc: BaseException) -> None:
        if self._write_error is None:
            self._write_error = exc

    # --- batched reads -------------------------------------------------------------

    def _serve_fetches(self) -> None:
        """Answer every waiting `MemoryFetch`, with one query if the store can."""
        fetches, self._fetches = self._fetches, []
        self._fetched.clear()
        if not fetches:
            return
        results: list[Any]
        try:
            store = self.store
            get_many = getattr(store, "get_many", None)
            addresses = [(f.namespace, f.owner, f.key) for f in fetches]
            if get_many is not None:
                results = get_many(addresses)
            else:
                results = [_get_one(store, address) for address in addresses]
        except Exception as exc:
            if not isinstance(exc, StoreError):
                logger.exception("a batch of memory reads failed")
            results = [exc] * len(fetches)
        for fetch, result in zip(fetches, results, strict=True):
            try:
                if isinstance(result, BaseException):
                    fetch.notify(None, result)
                else:
                    fetch.notify(result, None)
            except Exception:
                logger.exception("a MemoryFetch notify callback raised")

    # --- group commit --------------------------------------------------------------

    def _commit(self) -> None:
        """Commit pending writes, then notify every queued barrier of the outcome.

        A failed commit is logged and its writes stay pending in the store, so the next
        commit retries them; the barriers waiting now are told about the failure.
        """
        self._handled_since_commit = 0
        barriers, self._barriers = self._barriers, []
        error: BaseException | None = None
        if self._store is None:
            if self._uncommitted or barriers:
                error = RuntimeError("the memory store is not open")
        else:
            try:
                self._store.commit()
            except StoreUnavailable as exc:
                logger.error("memory commit failed: %s", exc)
                error = exc
                # Not retried on every message: a store that can keep them retries them
                # at the commit after the next write or barrier.
                self._uncommitted = False
            except StoreError as exc:
                logger.error("memory commit failed: %s", exc)
                error = exc
            except Exception as exc:
                logger.exception("memory commit failed; the writes stay pending")
                error = exc
            else:
                self._uncommitted = False
        for notify, write_error in barriers:
            try:
                notify(error if error is not None else write_error)
            except Exception:
                logger.exception("a MemoryBarrier notify callback raised")


def _get_one(store: Store, address: Address) -> Any:
    """`store.get(*address)`, or the exception it raised."""
    try:
        return store.get(*address)
    except Exception as exc:
        return exc
