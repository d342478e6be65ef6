"""One identity per person across inputs: the map account -> person, and what reads it.

An account is `<input>:<user>`. Linked accounts are one person, `person:<id>`, and share
one memory owner: the memory actor, the one reader and writer of the store, keeps the
map (`IdentityMap`, namespace `identity`) and applies it to every read and write of a
person's namespaces (`user`, `profile`, `plugin:*`), so a turn asks nothing more. The
rest of the bot reads an immutable copy (`IdentityIndex`) that the memory actor replaces
after each change: the owner a command sees, admin rights and groups when `[identity]`
shares them, where the person was last active and where their reminders go.
Link codes live in the memory actor's map only: never stored, never logged. When codes
were sent lately is stored (owner `link_codes`, under hashed names), so the `[identity]`
limits hold across restarts and for every process sharing the store.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka

from actors.messages import MemoryGet, MemoryPut
from core.context import PROFILE_NS, REMINDERS_TO, USER_NS, LinkOutcome, TooManyLinkCodes
from memory.store import InvalidWrite, Store, StoreError

if TYPE_CHECKING:
    from actors.supervision import Handle
    from config.settings import Settings
    from core.event import Event
    from core.jobs import JobSpec

__all__ = [
    "IDENTITY_ASKS",
    "IDENTITY_NS",
    "LAST_ACTIVE",
    "ConfirmLink",
    "IdentityIndex",
    "IdentityMap",
    "OfferLink",
    "Unlink",
    "WhoIs",
    "WithdrawLink",
    "account_of",
    "is_person_namespace",
    "redirect",
    "reminder_place",
]

logger = logging.getLogger(__name__)

IDENTITY_NS = "identity"
"""Namespace of the map (owner `aliases`: account -> person), its state (owner `map`:
`version`, `namespaces`), each person's `last_active` (owner: the person) and when
link codes were sent lately (owner `link_codes`)."""
ALIASES = "aliases"
MAP_STATE = "map"
SENT_CODES = "link_codes"
LAST_ACTIVE = "last_active"
PERSON_PREFIX = "person:"
ACTIVE_WRITE_SECONDS = 60.0
"""A person still active in the same place is written down at most this often."""
_ACTIVE_KEPT = 100_000
_ASK_TIMEOUT = 5.0


def account_of(input_name: str, user: str) -> str:
    return f"{input_name}:{user}"


def is_person_namespace(namespace: object) -> bool:
    """The namespaces that belong to a person, shared by their linked accounts (False
    for what is no name at all: the store refuses it)."""
    return isinstance(namespace, str) and (
        namespace in (USER_NS, PROFILE_NS) or namespace.startswith("plugin:")
    )


# --- messages to the memory actor (asks) ---------------------------------------------------


class WhoIs(NamedTuple):
    """Ask: (the person's owner, their accounts sorted) for `account`."""

    account: str


class OfferLink(NamedTuple):
    """Ask: keep `code` as the proof that `account`'s person controls `other`, sent at
    `now` (the bot's clock); answers None, or `TooManyLinkCodes` (nothing kept) when
    that person asked for, or `other` was sent, too many codes lately."""

    account: str
    other: str
    code: str
    expires_at: float
    tries: int
    now: float

    def __repr__(self) -> str:  # never show the code
        return f"OfferLink({self.account!r}, {self.other!r})"


class ConfirmLink(NamedTuple):
    """Ask: link `account` with its pending account if `code` is right; a `LinkOutcome`."""

    account: str
    code: str
    now: float

    def __repr__(self) -> str:
        return f"ConfirmLink({self.account!r})"


class WithdrawLink(NamedTuple):
    """Ask: forget `account`'s pending code, which could not be sent: it does not count
    against the limits."""

    account: str


class Unlink(NamedTuple):
    """Ask: split `account` off the person `asker` is; answers whether it was linked."""

    asker: str
    account: str


IdentityMessage = WhoIs | OfferLink | WithdrawLink | ConfirmLink | Unlink
IDENTITY_ASKS = (WhoIs, OfferLink, WithdrawLink, ConfirmLink, Unlink)


# --- the read-only copy ------------------------------------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    owners: Mapping[str, str]
    accounts: Mapping[str, tuple[str, ...]]


class IdentityIndex:
    """The map as the rest of the bot reads it: replaced whole by the memory actor, never
    changed in place, so any thread reads it without a lock. Also tracks, cheaply, where
    each person was last active (`seen`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._snapshot = _Snapshot({}, {})
        self._clock = clock
        self._active: dict[str, tuple[tuple[str, str, str, str], float]] = {}
        self._active_lock = threading.Lock()

    def publish(self, owners: Mapping[str, str]) -> None:
        accounts: dict[str, list[str]] = {}
        for account, person in owners.items():
            accounts.setdefault(person, []).append(account)
        self._snapshot = _Snapshot(
            dict(owners), {person: tuple(sorted(found)) for person, found in accounts.items()}
        )

    def owner(self, account: str) -> str:
        """The memory owner of `account`: its person, or itself if it is not linked."""
        return self._snapshot.owners.get(account, account)

    def accounts(self, account: str) -> tuple[str, ...]:
        """Every account of `account`'s person (itself alone if it is not linked)."""
        snapshot = self._snapshot
        person = snapshot.owners.get(account)
        return snapshot.accounts.get(person, (account,)) if person else (account,)

    def is_admin(self, settings: Settings, event: Event) -> bool:
        """An admin on the input of `event`, or on a linked account's with `share_admin`."""
        own = settings.inputs.get(event.input)
        if own is not None and event.user in own.admins:
            return True
        if not settings.identity.share_admin:
            return False
        return any(
            _admin(settings, *account.split(":", 1))
            for account in self.accounts(account_of(event.input, event.user))
            if ":" in account
        )

    def shared_accounts(self, settings: Settings, event: Event) -> tuple[tuple[str, str], ...]:
        """The other accounts whose groups this person has (`share_groups`), as
        (input, user) pairs; none unless the config shares groups."""
        if not settings.identity.share_groups:
            return ()
        own = account_of(event.input, event.user)
        return tuple(
            (name, user)
            for name, _, user in (a.partition(":") for a in self.accounts(own))
            if account_of(name, user) != own
        )

    def seen(self, event: Event, memory: Handle) -> None:
        """The linked person of `event` just spoke here: note it, and write it down if the
        place changed or a minute passed (one write a minute at most while they stay
        put). Nothing for an account that is not linked: its reminders stay put."""
        owners = self._snapshot.owners
        if not owners or event.meta.get("scheduled") or event.input == "stream":
            return  # nobody is linked (most bots), or not a person speaking
        owner = owners.get(account_of(event.input, event.user))
        if owner is None:
            return
        place = (event.input, event.channel, event.thread, event.user)
        now = self._clock()
        with self._active_lock:
            last = self._active.get(owner)
            if last is not None and last[0] == place and now - last[1] < ACTIVE_WRITE_SECONDS:
                return
            if len(self._active) >= _ACTIVE_KEPT:
                self._active.clear()  # forgetting costs one more write each, no more
            self._active[owner] = (place, now)
        value = {
            "input": event.input,
            "channel": event.channel,
            "thread": event.thread,
            "user": event.user,
            "at": time.time(),
        }
        try:
            memory.tell(MemoryPut(IDENTITY_NS, owner, LAST_ACTIVE, value))
        except pykka.ActorDeadError:
            logger.debug("memory is down; last activity of %s not written", owner)


def _admin(settings: Settings, input_name: str, user: str) -> bool:
    found = settings.inputs.get(input_name)
    return found is not None and user in found.admins


# --- the memory actor's side ---------------------------------------------------------------


@dataclass
class _Pending:
    other: str
    code: str
    expires_at: float
    tries_left: int
    sent: tuple[tuple[str, str], float] | None = None
    """(the keys it counted against, for the person and the account; when it was
    sent)."""


class _SentCodes:
    """When link codes were sent lately for each person who asked (`by`) or each
    account sent to (`to`): at most `most` within `window` seconds. Kept in the store
    (namespace `identity`, owner `link_codes`) under a hash of the name, so what is
    kept names nobody and every key is short."""

    def __init__(self, kind: str, most: int, window: float) -> None:
        self.kind = kind
        self.most = most
        self.window = window

    def key(self, name: str) -> str:
        return f"{self.kind}:{hashlib.sha256(name.encode()).hexdigest()[:32]}"

    def recent(self, store: Store, key: str, now: float) -> list[float]:
        found = store.get(IDENTITY_NS, SENT_CODES, key, [])
        if not isinstance(found, list):
            return []
        return [t for t in found if isinstance(t, int | float) and now - t < self.window]

    def wait(self, times: list[float], now: float) -> float:
        """Seconds until one more code may be sent (0: now), given the `recent` times."""
        if len(times) < self.most:
            return 0.0
        return min(self.window, sorted(times)[len(times) - self.most] + self.window - now)

    def write(self, store: Store, key: str, times: list[float]) -> None:
        if times:
            store.put(IDENTITY_NS, SENT_CODES, key, times)
        else:
            store.delete(IDENTITY_NS, SENT_CODES, key)

    def sweep(self, store: Store, now: float) -> None:
        """Forget the names whose codes are all older than the window."""
        for key in store.keys(IDENTITY_NS, SENT_CODES):
            if key.startswith(f"{self.kind}:") and not self.recent(store, key, now):
                store.delete(IDENTITY_NS, SENT_CODES, key)


class IdentityMap:
    """The map account -> person, kept by the memory actor and used on its thread only.

    It is stored in namespace `identity` (owner `aliases`, one key per linked account)
    with a `version` that every change bumps; with a store shared by several processes
    (PostgreSQL) the version is read again at most every `reload_seconds` when a
    person's memory is used, and the map reloaded when it changed.
    """

    def __init__(
        self,
        index: IdentityIndex | None = None,
        *,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        codes_per_person: int = 3,
        codes_per_account: int = 3,
        codes_window_seconds: float = 3600.0,
    ) -> None:
        """`codes_per_person`: link codes one person (all their accounts) may have sent
        within `codes_window_seconds`; `codes_per_account`: codes one account may be sent
        in that time, whoever asks."""
        self.index = index if index is not None else IdentityIndex()
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._owners: dict[str, str] = {}
        self._namespaces: set[str] = set()
        self._version = 0
        self._checked = -math.inf
        self._pending: dict[str, _Pending] = {}
        self._by_person = _SentCodes("by", codes_per_person, codes_window_seconds)
        self._to_account = _SentCodes("to", codes_per_account, codes_window_seconds)
        self._swept = -math.inf
        self._warned = False

    # --- loading --------------------------------------------------------------------

    def load(self, store: Store) -> None:
        """Read the map (on start, and when another process changed it)."""
        owners = {
            key: store.get(IDENTITY_NS, ALIASES, key) for key in store.keys(IDENTITY_NS, ALIASES)
        }
        self._owners = {k: v for k, v in owners.items() if isinstance(v, str)}
        spaces = store.get(IDENTITY_NS, MAP_STATE, "namespaces", [])
        self._namespaces = (
            {n for n in spaces if isinstance(n, str)} if isinstance(spaces, list) else set()
        )
        version = store.get(IDENTITY_NS, MAP_STATE, "version", 0)
        self._version = version if isinstance(version, int) else 0
        self._checked = self._clock()
        self.index.publish(self._owners)

    def _refresh(self, store: Store) -> None:
        now = self._clock()
        if now - self._checked < self._reload_seconds:
            return
        self._checked = now
        try:
            if store.get(IDENTITY_NS, MAP_STATE, "version", 0) != self._version:
                self.load(store)
        except StoreError as exc:
            if not self._warned:
                logger.warning("could not read the identity map again (kept the last): %s", exc)
                self._warned = True

    # --- every read and write of a person's memory ------------------------------------

    def owner(self, store: Store, namespace: str, owner: str, *, write: bool) -> str:
        """The owner to use for `owner` in a person's namespace."""
        if self._clock() - self._checked >= self._reload_seconds:
            self._refresh(store)
        if write and namespace.startswith("plugin:") and namespace not in self._namespaces:
            # Remembered so that linking moves this plugin's memory too.
            self._namespaces.add(namespace)
            try:
                store.put(IDENTITY_NS, MAP_STATE, "namespaces", sorted(self._namespaces))
            except (StoreError, InvalidWrite) as exc:
                logger.error("could not note memory namespace %s for linking: %s", namespace, exc)
        return self._owners.get(owner, owner)

    # --- the asks ------------------------------------------------------------------------

    def handle(self, store: Store, message: IdentityMessage) -> Any:
        self._refresh(store)
        match message:
            case WhoIs(account):
                return self._owners.get(account, account), self.index.accounts(account)
            case OfferLink(account, other, code, expires_at, tries, now):
                pending = _Pending(other, code, expires_at, tries)
                return self._offer(store, account, pending, now)
            case WithdrawLink(account):
                self._withdraw(store, account)
                return None
            case ConfirmLink(account, code, now):
                return self._confirm(store, account, code, now)
            case Unlink(asker, account):
                return self._unlink(store, asker, account)
        raise TypeError(type(message).__name__)

    def _offer(
        self, store: Store, account: str, pending: _Pending, now: float
    ) -> TooManyLinkCodes | None:
        """Keep the code unless the asking person or the other account had too many
        sent lately; the send counts against both (a replaced code still counts)."""
        if now - self._swept >= self._by_person.window:
            self._swept = now
            self._by_person.sweep(store, now)
            self._to_account.sweep(store, now)
        person = self._by_person.key(self._owners.get(account, account))
        target = self._to_account.key(self._owners.get(pending.other, pending.other))
        mine = self._by_person.recent(store, person, now)
        theirs = self._to_account.recent(store, target, now)
        for sent, times, to_account in (
            (self._by_person, mine, False),
            (self._to_account, theirs, True),
        ):
            wait = sent.wait(times, now)
            if wait > 0:
                return TooManyLinkCodes(
                    wait, most=sent.most, window_seconds=sent.window, to_account=to_account
                )
        self._by_person.write(store, person, [*mine, now])
        self._to_account.write(store, target, [*theirs, now])
        store.commit()
        pending.sent = ((person, target), now)
        self._pending[account] = pending
        return None

    def _withdraw(self, store: Store, account: str) -> None:
        """Forget `account`'s pending code, and that it was sent."""
        pending = self._pending.pop(account, None)
        if pending is None or pending.sent is None:
            return
        (person, target), at = pending.sent
        for sent, key in ((self._by_person, person), (self._to_account, target)):
            times = sent.recent(store, key, at)
            if at in times:
                times.remove(at)
            sent.write(store, key, times)
        store.commit()

    def _confirm(self, store: Store, account: str, code: str, now: float) -> LinkOutcome:
        pending = self._pending.get(account)
        if pending is None:
            return LinkOutcome("none")
        if now > pending.expires_at:
            del self._pending[account]
            return LinkOutcome("expired", pending.other)
        if not hmac.compare_digest(pending.code.encode(), code.strip().encode()):
            pending.tries_left -= 1
            if pending.tries_left <= 0:
                del self._pending[account]
                return LinkOutcome("spent", pending.other)
            return LinkOutcome("wrong", pending.other, tries_left=pending.tries_left)
        del self._pending[account]  # single use, whatever happens next
        conflicts = self._link(store, account, pending.other)
        return LinkOutcome("linked", pending.other, conflicts=conflicts)

    def _spaces(self) -> list[str]:
        return [USER_NS, PROFILE_NS, *sorted(self._namespaces)]

    def _link(self, store: Store, account: str, other: str) -> tuple[str, ...]:
        """Make `account` and `other` one person; the asking account's values win."""
        mine, theirs = self._owners.get(account), self._owners.get(other)
        if mine is not None and mine == theirs:
            return ()
        person = mine or theirs or f"{PERSON_PREFIX}{secrets.token_hex(8)}"
        keep, merge = mine or account, theirs or other  # the owners holding their memory
        conflicts: list[str] = []
        moves: list[tuple[str, str, str, Any]] = []
        gone: list[tuple[str, str, str]] = []
        for namespace in self._spaces():
            kept = {key: store.get(namespace, keep, key) for key in store.keys(namespace, keep)}
            for key in store.keys(namespace, merge):
                value = store.get(namespace, merge, key)
                if key in kept and kept[key] != value:
                    conflicts.append(f"{namespace}/{key}")
                if merge != person:
                    if key not in kept:
                        moves.append((namespace, person, key, value))
                    gone.append((namespace, merge, key))
            if keep != person:  # (over the other side's values, when it is the person)
                moves.extend((namespace, person, key, value) for key, value in kept.items())
                gone.extend((namespace, keep, key) for key in kept)
        # Copies first, then the map, then the old copies: whatever prefix of these a
        # crash keeps, nobody reads a half-moved memory.
        for namespace, owner, key, value in moves:
            store.put(namespace, owner, key, value)
        owners = dict(self._owners)
        for name, was in self._owners.items():
            if was in (mine, theirs):
                owners[name] = person
        owners[account] = owners[other] = person
        for name, now_of in owners.items():
            if self._owners.get(name) != now_of:
                store.put(IDENTITY_NS, ALIASES, name, now_of)
        self._save(store, owners)
        for namespace, owner, key in gone:
            store.delete(namespace, owner, key)
        store.commit()
        return tuple(conflicts)

    def _unlink(self, store: Store, asker: str, account: str) -> bool:
        """Split `account` off the person; it starts with a copy of their memory."""
        person = self._owners.get(account)
        if person is None or person != self._owners.get(asker):
            return False
        for namespace in self._spaces():
            for key in store.keys(namespace, account):  # left over from before linking
                store.delete(namespace, account, key)
            for key in store.keys(namespace, person):
                store.put(namespace, account, key, store.get(namespace, person, key))
        owners = {name: was for name, was in self._owners.items() if name != account}
        store.delete(IDENTITY_NS, ALIASES, account)
        self._save(store, owners)
        store.commit()
        return True

    def _save(self, store: Store, owners: dict[str, str]) -> None:
        self._version += 1
        store.put(IDENTITY_NS, MAP_STATE, "version", self._version)
        self._owners = owners
        self.index.publish(owners)


# --- where a reminder goes ---------------------------------------------------------------


def reminder_place(
    index: IdentityIndex, memory: Handle, running: Iterable[str], spec: JobSpec
) -> tuple[str, str, str, str] | None:
    """(input, channel, thread, user) where `spec`'s reminder goes instead of where it was
    set, by the person's `reminders go to` choice; None: where it was set."""
    account = account_of(spec.event.input, spec.event.user)
    accounts = index.accounts(account)
    if len(accounts) < 2:  # not linked: nowhere else to go, nothing to ask
        return None
    wanted = memory.ask(MemoryGet(PROFILE_NS, account, REMINDERS_TO), timeout=_ASK_TIMEOUT)
    if not isinstance(wanted, str) or wanted == "here":
        return None
    last = memory.ask(
        MemoryGet(IDENTITY_NS, index.owner(account), LAST_ACTIVE), timeout=_ASK_TIMEOUT
    )
    place: tuple[str, str, str, str] | None = None
    if isinstance(last, dict):
        try:
            place = (
                str(last["input"]),
                str(last["channel"]),
                str(last.get("thread") or ""),
                str(last["user"]),
            )
        except KeyError:
            place = None
    if place is not None and account_of(place[0], place[3]) not in accounts:
        place = None  # an account unlinked since
    live = set(running)
    if wanted == "last active":
        return place if place is not None and place[0] in live else None
    if place is not None and place[0] == wanted and wanted in live:
        return place
    for other in accounts:
        name, _, user = other.partition(":")
        if name == wanted and name in live:
            return name, user, "", user  # directly to the person
    return None


def redirect(event: Event, place: tuple[str, str, str, str]) -> Event:
    """The bot's message `event` sent to `place` instead."""
    name, channel, thread, user = place
    return replace(event, input=name, channel=channel, thread=thread, to=user)
