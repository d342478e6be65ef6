"""Pooled actors: many pykka actors sharing a few threads (the dispatcher).

A `PooledActor` is a real pykka actor whose messages a few `Dispatcher` threads run,
never two at once, so a bot with an actor per person needs no thread per person.
Handlers must not block. A told actor runs next on the teller's thread when that one
has no more mail (ARCHITECTURE.md, "The actors"). This leans on pykka names kept
private, each marked `pykka private:` where used; hence the pin on pykka's releases
in pyproject.toml, and .ci/run tests the lowest one.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import sys
import threading
import uuid
from collections import deque
from typing import Any

import pykka
from pykka import messages as pykka_messages

# pykka private: `Envelope` is what pykka's refs put in an actor's inbox (the message
# and the future to answer); a pooled actor's inbox stores and runs them itself.
from pykka._envelope import Envelope

logger = logging.getLogger(__name__)

_STOP = object()


class _Start:
    """First message of every pooled actor: run `on_start` on a dispatcher thread."""


class Dispatcher:
    """A few threads that run the messages of many pooled actors."""

    def __init__(
        self, threads: int = 4, *, name: str = "dispatcher", batch: int = 32, locks: int = 32
    ) -> None:
        self._runnable: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batch = batch
        # The inboxes' locks, each shared by many actors (see `_Inbox`).
        self._locks = tuple(threading.Lock() for _ in range(locks))
        self._next_lock = itertools.count()
        self._here = threading.local()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def lock_for_inbox(self) -> threading.Lock:
        """One of the shared inbox locks, each in turn."""
        return self._locks[next(self._next_lock) % len(self._locks)]

    def schedule(self, actor: PooledActor) -> None:
        # Told from a handler whose actor has no more mail: this thread is about to be
        # free, so it takes the told actor next (one per handler; the rest queue up).
        here = self._here
        running = getattr(here, "running", None)
        if running is not None and here.next is None and running.actor_inbox.empty():
            here.next = actor
            return
        self._runnable.put(actor)

    def _work(self) -> None:
        here = self._here
        here.next = None
        while True:
            actor = self._runnable.get()
            while actor is not None:
                if actor is _STOP:
                    return
                here.running = actor
                actor._run_batch(self._batch)
                here.running = None
                actor = here.next
                here.next = None

    def shutdown(self, timeout: float | None = 10.0) -> None:
        """Stop the threads once the actors already scheduled have had their turn."""
        for _ in self._threads:
            self._runnable.put(_STOP)
        for thread in self._threads:
            thread.join(timeout)


class _Inbox(deque[Envelope[Any]]):
    """A pooled actor's mailbox, and whether the actor has stopped.

    Putting mail in schedules the actor if it is not yet. Its lock is one of the
    dispatcher's few, each shared by many actors: it guards a few bytecodes that
    allocate nothing, so sharing it costs next to no waiting, and no code that holds one
    takes another. Once the stopped actor has refused the last of its mail, the inbox
    lets go of it, so a retired conversation is freed at once (its ref, which callers may
    keep, holds only the inbox); later mail is refused on the sender's thread.
    """

    __slots__ = ("_actor", "_gone", "_lock", "_scheduled", "_stopped_event", "stopped")

    def __init__(self, actor: PooledActor, lock: threading.Lock) -> None:
        super().__init__()
        self._actor: PooledActor | None = actor
        self._gone = ""
        """The actor's name once the inbox has let go of it, for refusals."""
        self._lock = lock
        self._scheduled = False
        self.stopped = False
        """Set once, when the actor stops; read by `ActorRef.is_alive`."""
        self._stopped_event: threading.Event | None = None
        """Made for the first caller who waits for the stop (see `_Stopped.wait`)."""

    def put(self, envelope: Envelope[Any], /) -> None:
        with self._lock:
            actor = self._actor
            if actor is not None:
                self.append(envelope)
                if self._scheduled:
                    return
                self._scheduled = True
        if actor is None:
            _refuse(envelope, self._gone)
        else:
            actor._dispatcher.schedule(actor)

    def take(self) -> Envelope[Any] | None:
        """The next envelope, or None after marking the actor as not scheduled (and
        letting go of it if it has stopped)."""
        with self._lock:
            if self:
                return self.popleft()
            self._scheduled = False
            actor = self._actor
            if self.stopped and actor is not None:
                self._gone = f"{type(actor).__name__} ({actor.actor_urn})"
                self._actor = None
            return None

    def get(self) -> Envelope[Any]:
        return self.popleft()

    def empty(self) -> bool:
        return not self


_WAIT_GUARD = threading.Lock()
"""Makes the one event of an actor that someone waits for (any actor: it is rare)."""


class _Stopped:
    """A pooled actor's `actor_stopped`: what pykka uses of its `threading.Event`
    (`is_set`, `set`, `wait`), kept in the actor's inbox.

    Made afresh on each access and gone after it, so it costs the collector nothing.
    Only `wait` needs a real event; it is made for the first waiter, and `set` sets it
    if it exists. Whichever of the two comes second sees the other's write (the flag
    is written before the event is looked for, the event stored before the flag is
    read again), so a waiter is never left waiting for a stop that has happened.
    """

    __slots__ = ("_inbox",)

    def __init__(self, inbox: _Inbox) -> None:
        self._inbox = inbox

    def is_set(self) -> bool:
        return self._inbox.stopped

    def set(self) -> None:
        inbox = self._inbox
        inbox.stopped = True
        event = inbox._stopped_event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        inbox = self._inbox
        if inbox.stopped:
            return True
        with _WAIT_GUARD:
            event = inbox._stopped_event
            if event is None:
                event = inbox._stopped_event = threading.Event()
        if inbox.stopped:
            return True
        return event.wait(timeout)


class _PooledRef(pykka.ActorRef[Any]):
    """pykka's `ActorRef`, minus the two objects a pooled actor's ref does not need.

    pykka's ref keeps a weakref to the actor, so that a ref alone does not keep a
    stopped actor in memory, and shares the actor's `threading.Event`. A pooled
    actor's inbox holds the actor, so the ref (which holds the inbox) keeps it in
    memory anyway: the weakref is replaced by a method that returns the actor, and
    `actor_stopped` reads the flag in the inbox.
    """

    actor_inbox: _Inbox

    def __init__(self, actor: PooledActor) -> None:  # pykka's would make the weakref
        self.actor_class = type(actor)
        self.actor_urn = actor.actor_urn
        self.actor_inbox = actor.actor_inbox

    @property
    def actor_stopped(self) -> _Stopped:  # type: ignore[override]
        return _Stopped(self.actor_inbox)

    def is_alive(self) -> bool:
        return not self.actor_inbox.stopped

    # pykka private: `ActorRef._actor_weakref` (a `weakref.ref` in pykka, since 4.4.2) is
    # how pykka's `ActorProxy` reaches the actor behind a ref.
    def _actor_weakref(self) -> PooledActor | None:  # type: ignore[override]
        """The actor (None once stopped and done with); pykka's proxy calls this."""
        return self.actor_inbox._actor


class PooledActor(pykka.Actor):
    """A pykka actor whose messages run on a `Dispatcher` instead of its own thread.

    Start one with `spawn(dispatcher, ...)`. Pooled actors are not entered in pykka's
    `ActorRegistry`: there can be very many, and whoever spawns them keeps their refs.
    Every full collection walks them all, so each costs the collector three objects
    (actor, ref, inbox): `__init__` does pykka's work without its `threading.Event` and
    weakref, and `actor_stopped` is a view of the inbox's flag.
    """

    actor_inbox: _Inbox

    def __init__(self, dispatcher: Dispatcher) -> None:
        # Not pykka.Actor.__init__, which would make the event and the weakref; a test
        # checks that a pooled actor has every attribute that one sets.
        self._dispatcher = dispatcher
        # pykka's URN, from the process's pseudo-random generator: uuid4 reads the
        # system's random source, a system call for every conversation started.
        self.actor_urn = uuid.UUID(int=random.getrandbits(128), version=4).urn
        self.actor_inbox = self._create_actor_inbox()
        # pykka private: `Actor._actor_ref` is where `Actor.actor_ref` reads the ref from.
        self._actor_ref = _PooledRef(self)

    @property
    def actor_stopped(self) -> _Stopped:  # type: ignore[override]
        return _Stopped(self.actor_inbox)

    @classmethod
    def spawn(cls, dispatcher: Dispatcher, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        actor = cls(dispatcher, *args, **kwargs)
        actor._start_actor_loop()
        return actor.actor_ref

    # pykka private: `_create_actor_inbox`, `_create_future` and `_start_actor_loop` are
    # the hooks pykka's own `ThreadingActor` implements (documented for new actor kinds).
    def _create_actor_inbox(self) -> _Inbox:  # type: ignore[override]
        return _Inbox(self, self._dispatcher.lock_for_inbox())

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self.actor_inbox.put(Envelope(_Start()))

    def _run_batch(self, limit: int) -> None:
        inbox = self.actor_inbox
        for _ in range(limit):
            envelope = inbox.take()
            if envelope is None:
                return
            if inbox.stopped:
                _refuse(envelope, str(self.actor_ref))
            else:
                self._handle(envelope)
        # Still mail after a full batch: go to the back of the line, let others run.
        self._dispatcher.schedule(self)

    def _handle(self, envelope: Envelope[Any]) -> None:
        if isinstance(envelope.message, _Start):
            try:
                self.on_start()
            except Exception:
                self._handle_failure(*sys.exc_info())
            return
        try:
            # pykka private: `_handle_receive` runs pykka's own messages (stop, proxy calls)
            # and hands the rest to `on_receive`; `_handle_failure` logs an unhandled
            # exception and stops the actor. Both as pykka's own actor loop calls them.
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())


def _refuse(envelope: Envelope[Any], actor: str) -> None:
    """What pykka does with mail left in a stopped actor's inbox."""
    if envelope.reply_to is None:
        return
    # pykka private: `messages._ActorStop` is the message `ActorRef.stop` sends.
    if isinstance(envelope.message, pykka_messages._ActorStop):
        envelope.reply_to.set(None)
    else:
        error = pykka.ActorDeadError(f"{actor} stopped before handling the message")
        envelope.reply_to.set_exception(exc_info=(type(error), error, None))
