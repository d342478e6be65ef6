"""Supervision: actors that crash are restarted, with backoff, behind a stable address.

pykka has no supervision tree, so Harken adds the part it needs: each long-lived actor
is started by the `Supervisor` from a factory and reached through a `Handle`. A crash
tells the supervisor, which starts a fresh one after a backoff and points the handle at
it; a message told meanwhile waits for the new one. Pooled actors are
`SupervisedPooledActor`s, the others `SupervisedActor`s. Conversations are not
supervised: the router starts a dead one again on the next message.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import pykka

from actors.actor import Actor
from actors.messages import ActorCrashed
from actors.pool import PooledActor

logger = logging.getLogger(__name__)

_REPLACEMENT_WAIT = 5.0


class Handle:
    """A stable address for a supervised actor, valid across its restarts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ref: pykka.ActorRef[Any] | None = None
        self._changed = threading.Condition()
        self._closed = False

    def _set(self, ref: pykka.ActorRef[Any] | None) -> None:
        with self._changed:
            self._ref = ref
            self._changed.notify_all()

    def _close(self) -> None:
        with self._changed:
            self._closed = True
            self._ref = None
            self._changed.notify_all()

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        return self._ref

    def is_alive(self) -> bool:
        ref = self._ref
        return ref is not None and ref.is_alive()

    def _live_ref(self, stale: pykka.ActorRef[Any] | None) -> pykka.ActorRef[Any]:
        """The current actor, waiting a little for a replacement of `stale`."""
        deadline = time.monotonic() + _REPLACEMENT_WAIT
        with self._changed:
            while True:
                ref = self._ref
                if ref is not None and ref is not stale and ref.is_alive():
                    return ref
                if self._closed:
                    raise pykka.ActorDeadError(f"{self.name} has been stopped")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise pykka.ActorDeadError(f"{self.name} is down and was not restarted")
                self._changed.wait(remaining)

    def tell(self, message: Any) -> None:
        ref = self._ref
        if ref is not None:
            try:
                ref.tell(message)
                return
            except pykka.ActorDeadError:
                pass
        self._live_ref(ref).tell(message)

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        ref = self._ref
        if ref is not None:
            try:
                return ref.ask(message, timeout=timeout)
            except pykka.ActorDeadError:
                pass
        return self._live_ref(ref).ask(message, timeout=timeout)


class Supervised(pykka.Actor):
    """What makes an actor supervisable: its crash is told to the supervisor.

    An actor that holds something its successor needs (a connection, a store's lock,
    child actors) gives it up in `release`, which runs once however the actor ends:
    when it stops, or when it crashes, before the supervisor hears of the crash and
    starts the successor.
    """

    supervisor: pykka.ActorRef[Any] | None = None
    supervised_name: str = ""

    def release(self) -> None:
        """Give up what this actor holds; nothing by default. Must not raise."""

    def on_stop(self) -> None:
        self.release()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
        supervisor = self.supervisor
        if supervisor is not None:
            with contextlib.suppress(pykka.ActorDeadError):
                supervisor.tell(ActorCrashed(self.supervised_name, repr(exception_value)))


class SupervisedActor(Supervised, Actor):
    """A supervised actor with a thread of its own: for actors that may block (I/O)."""


class SupervisedPooledActor(Supervised, PooledActor):
    """A supervised actor run by a `Dispatcher`: for actors that only pass messages on."""


@dataclass
class _Child:
    factory: Callable[[], Supervised]
    handle: Handle
    restarts: list[float] = field(default_factory=list)


class _Restart:
    """Supervisor's own timer message: start the named child again."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Supervisor(Actor):
    """Starts children from factories and restarts them with exponential backoff.

    The delay doubles with each crash inside `window` seconds, from `base_delay` up to
    `max_delay`; an actor that has stayed up for a whole window starts over from the
    base delay. A bot that runs for months must keep trying, so it never gives up.
    """

    def __init__(
        self, base_delay: float = 0.05, max_delay: float = 30.0, window: float = 60.0
    ) -> None:
        super().__init__()
        self._children: dict[str, _Child] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._window = window
        self._timers: set[threading.Timer] = set()
        self._stopping = False

    def start_child(self, name: str, factory: Callable[[], Supervised]) -> Handle:
        """Start an actor under supervision; return its handle (call through `proxy()`)."""
        child = _Child(factory, Handle(name))
        self._children[name] = child
        self._spawn(name, child)
        return child.handle

    def _spawn(self, name: str, child: _Child) -> None:
        actor = child.factory()
        actor.supervisor = self.actor_ref
        actor.supervised_name = name
        ref = actor.actor_ref
        # Do what pykka's `start()` does, by hand: `start()` builds the instance itself,
        # and the supervisor's fields must be set before the actor's thread runs.
        pykka.ActorRegistry.register(ref)
        actor._start_actor_loop()
        child.handle._set(ref)

    def restart_count(self, name: str) -> int:
        child = self._children.get(name)
        return len(child.restarts) if child else 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ActorCrashed):
            self._on_crash(message)
        elif isinstance(message, _Restart):
            self._on_restart(message.name)
        return None

    def _on_crash(self, message: ActorCrashed) -> None:
        child = self._children.get(message.name)
        if child is None or self._stopping:
            return
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < self._window]
        child.restarts.append(now)
        delay = min(self._max_delay, self._base_delay * 2 ** (len(child.restarts) - 1))
        logger.error(
            "%s crashed (%s); restarting it in %.2f s (crash %d in the last %.0f s)",
            message.name,
            message.error,
            delay,
            len(child.restarts),
            self._window,
        )
        timer = threading.Timer(delay, self._tell_restart, args=(message.name,))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _tell_restart(self, name: str) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Restart(name))

    def _on_restart(self, name: str) -> None:
        self._timers = {t for t in self._timers if t.is_alive()}
        child = self._children.get(name)
        if child is None or self._stopping:
            return
        try:
            self._spawn(name, child)
        except Exception:
            logger.exception("could not restart %s; trying again", name)
            self._on_crash(ActorCrashed(name, "restart failed"))
            return
        logger.info("%s restarted", name)

    def stop_children(self, names: list[str] | None = None, timeout: float = 10.0) -> None:
        """Stop the named children in that order (all that are left when None).

        Each stops after the messages already in its inbox are handled. Crashes heard
        from now on are not restarted: the bot is going down.
        """
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        if names is None:
            names = list(reversed(self._children))
        for name in names:
            child = self._children.pop(name, None)
            if child is None:
                continue
            ref = child.handle.ref
            child.handle._close()
            if ref is not None and ref.is_alive():
                try:
                    ref.stop(block=True, timeout=timeout)
                except pykka.Timeout:
                    logger.warning("%s did not stop within %.0f s", name, timeout)
