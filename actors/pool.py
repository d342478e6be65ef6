"""Pooled actors: many pykka actors sharing a few threads.

A `pykka.ThreadingActor` is a thread. That suits the few long-lived actors (router,
memory, inputs), but Harken has one conversation actor per person and channel: tens of
thousands on a busy bot, most of them idle. A thread each would cost memory, and every
message would wake a sleeping thread on the busiest path.

A `PooledActor` is a real pykka actor (`ActorRef`, `tell`, `ask`, `proxy`, `stop`,
`on_start`/`on_stop`/`on_failure` behave as pykka documents them), but its messages are
run by a `Dispatcher`: a few threads that take whichever actor has mail and handle a
batch of its messages. An actor is never run by two threads at once, so its state needs
no locks, exactly as with a thread of its own. Handlers must not block for long: they
hold a dispatcher thread while they run (conversations only tell other actors).

When a handler tells another pooled actor and the actor running it has no more mail,
the thread that ran the handler runs the told actor next itself rather than waking
another thread for it: a person's message passes router, conversation and command actor
on one thread instead of three, which is most of what a reply costs on a quiet bot.

pykka leaves room for this: `_create_actor_inbox`, `_create_future` and
`_start_actor_loop` are its documented points for new kinds of actor.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections import deque
from typing import Any

import pykka
from pykka import messages as pykka_messages
from pykka._envelope import Envelope

logger = logging.getLogger(__name__)

_STOP = object()


class _Start:
    """First message of every pooled actor: run `on_start` on a dispatcher thread."""


class Dispatcher:
    """A few threads that run the messages of many pooled actors."""

    def __init__(self, threads: int = 4, *, name: str = "dispatcher", batch: int = 32) -> None:
        self._runnable: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._batch = batch
        self._here = threading.local()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

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


class _Inbox:
    """A pooled actor's mailbox: putting mail in schedules the actor if it is not yet."""

    __slots__ = ("_actor", "_items", "_lock", "_scheduled")

    def __init__(self, actor: PooledActor) -> None:
        self._actor = actor
        self._items: deque[Envelope[Any]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, envelope: Envelope[Any], /) -> None:
        with self._lock:
            self._items.append(envelope)
            if self._scheduled:
                return
            self._scheduled = True
        self._actor._dispatcher.schedule(self._actor)

    def take(self) -> Envelope[Any] | None:
        """The next envelope, or None after marking the actor as not scheduled."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._scheduled = False
            return None

    def get(self) -> Envelope[Any]:
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items


class PooledActor(pykka.Actor):
    """A pykka actor whose messages run on a `Dispatcher` instead of its own thread.

    Start one with `spawn(dispatcher, ...)`. Pooled actors are not entered in pykka's
    `ActorRegistry`: there can be very many, and whoever spawns them keeps their refs.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        super().__init__()

    @classmethod
    def spawn(cls, dispatcher: Dispatcher, *args: Any, **kwargs: Any) -> pykka.ActorRef[Any]:
        actor = cls(dispatcher, *args, **kwargs)
        actor._start_actor_loop()
        return actor.actor_ref

    def _create_actor_inbox(self) -> Any:  # type: ignore[override]
        return _Inbox(self)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        self.actor_inbox.put(Envelope(_Start()))

    def _run_batch(self, limit: int) -> None:
        inbox: _Inbox = self.actor_inbox  # type: ignore[assignment]
        for _ in range(limit):
            envelope = inbox.take()
            if envelope is None:
                return
            if self.actor_stopped.is_set():
                self._refuse(envelope)
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

    def _refuse(self, envelope: Envelope[Any]) -> None:
        """What pykka does with mail left in a stopped actor's inbox."""
        if envelope.reply_to is None:
            return
        if isinstance(envelope.message, pykka_messages._ActorStop):
            envelope.reply_to.set(None)
        else:
            error = pykka.ActorDeadError(f"{self.actor_ref} stopped before handling the message")
            envelope.reply_to.set_exception(exc_info=(type(error), error, None))
