"""Assembles Harken's actors from the settings, and takes them down again.

Start order: supervisor, memory, command actors, router, inputs, so that by the time an
input hands over its first message everything behind it is up. Stopping first stops
what hands out work (scheduler, router, command actors), lets the commands already
running finish and answer while the inputs are still up, then stops the inputs, and
memory last so every write that was told to it is committed.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from importlib.metadata import entry_points

import pykka

from actors.command_actor import CommandActor
from actors.errors import StartupError
from actors.health import HealthServer
from actors.identity import IdentityIndex, IdentityMap
from actors.inputs.base import InputActor
from actors.job_store import check_store
from actors.memory_actor import MemoryActor
from actors.messages import ConversationIdle, MemoryBarrier, RouterStats
from actors.pool import Dispatcher
from actors.router import Router
from actors.runtime import Runtime
from actors.scheduler_actor import SchedulerActor
from actors.streams import StreamHub, StreamInput
from actors.supervision import Handle, Supervised, Supervisor
from actors.workers import WorkerPool
from commands.base import Registry
from commands.loader import load_commands
from commands.streams import STREAM_INPUT, Stream, load_streams, stream_problems
from config.inputs import INPUTS_GROUP, installed_inputs
from config.settings import InputSettings, Settings
from config.validate import access_problems, unmet_needs
from memory.store import Store, StoreError, open_store

logger = logging.getLogger(__name__)

__all__ = [
    "BotSystem",
    "InputFactory",
    "StartupError",
    "freeze_startup_objects",
    "installed_inputs",
    "load_input",
]

InputFactory = Callable[[InputSettings, Runtime, Handle], InputActor]
INPUT_ENTRY_POINT_GROUP = INPUTS_GROUP
STOP_DRAIN_SECONDS = 6.0
"""On stop, how long commands already running get to finish and send their replies."""
STOP_SYNC_SECONDS = 1.0
"""On stop, how long at least the replies of finished commands may wait for memory."""
MEMORY_STOP_TIMEOUT = 300.0
"""Seconds `stop()` waits for the memory actor's final commit and checkpoint."""
DISPATCHER_THREADS = 4
"""Threads that run the pooled actors: router, conversations and command actors.

They only pass messages on, so a few threads serve them all; a message between two of
them usually finds a dispatcher thread already awake, instead of waking a sleeping one.
"""


def load_input(name: str) -> InputFactory | None:
    """The installed input called `name`, or None; only that one is imported."""
    for ep in entry_points(group=INPUT_ENTRY_POINT_GROUP, name=name):
        try:
            factory: InputFactory = ep.load()
        except Exception as exc:
            raise StartupError(f"input {name!r} is installed but failed to load: {exc}") from exc
        return factory
    return None


FULL_COLLECTION_AFTER = 100
"""Middle-generation collections between two full ones (Python's default is 10)."""


def freeze_startup_objects() -> None:
    """Take everything allocated so far out of the garbage collector's way.

    Every message allocates short-lived objects, which now and then triggers a full
    collection; each one walked every object built at start-up (modules, settings, the
    registry, actors) while every message in flight waited. `gc.freeze` moves those to a
    permanent generation, which lowers the slowest replies (BENCHMARKS.md). The
    CLI calls this once the bot is up, and so do benchmarks that run the bot in-process;
    `TestBot` does not, since a test process starts many bots and frozen objects are
    never collected.

    It also makes full collections ten times rarer (`FULL_COLLECTION_AFTER`). What the
    bot allocates per message is freed by reference counting as soon as it is done
    with (a stopped pooled actor included), so a full pass finds next to nothing to free
    but still pauses every reply in flight, and with many dialogs open those pauses set
    the slowest replies (BENCHMARKS.md, dialogs). The young generations keep their
    thresholds, so cycles that die young are still collected as before.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


class BotSystem:
    """The running bot: one per process (tests may run several side by side)."""

    def __init__(
        self,
        settings: Settings,
        *,
        inputs: Mapping[str, InputFactory] | None = None,
        registry: Registry | None = None,
        streams: Mapping[str, Stream] | None = None,
    ) -> None:
        self.settings = settings
        self._input_factories = dict(inputs) if inputs is not None else {}
        self._registry = registry
        self._streams = dict(streams) if streams is not None else None
        self.problems: list[str] = []
        self._supervisor_ref: pykka.ActorRef[Supervisor] | None = None
        self._ticker_stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self.runtime: Runtime | None = None
        self.router: Handle | None = None
        self.started_at = 0.0
        self.health_server: HealthServer | None = None

    def _factory_for(self, name: str) -> InputFactory:
        if name in self._input_factories:
            return self._input_factories[name]
        factory = load_input(name)
        if factory is not None:
            return factory
        known = sorted(set(self._input_factories) | set(installed_inputs()))
        raise StartupError(
            f"input {name!r} is not available here (available: {', '.join(known) or 'none'})"
        )

    def start(self) -> None:
        settings = self.settings
        # Fail on a missing input or an unusable store before starting any thread.
        factories = {name: self._factory_for(name) for name in settings.bot.inputs}
        for name, factory in factories.items():
            preflight = getattr(factory, "preflight", None)
            if preflight is not None:
                preflight(settings.inputs.get(name) or InputSettings(name=name))
        # What an input declares it needs and its own preflight did not already refuse.
        for name in factories:
            for problem in unmet_needs(settings, name):
                raise StartupError(f"{problem.key}: {problem.problem}")
        check_store(settings)
        store_factory = self._store_factory()
        if self._registry is None:
            loaded = load_commands(settings.bot.command_dirs)
            self._registry = loaded.registry
            self.problems = loaded.problems
        registry = self._registry
        # A rule for a command that does not exist (`wach`) leaves the one meant open.
        for problem in access_problems(settings, registry.names()):
            raise StartupError(f"{problem.key}: {problem.problem}")
        if self._streams is None:
            found = load_streams(settings.bot.command_dirs)
            self._streams = found.streams
            self.problems += found.problems
        for problem in stream_problems(settings, self._streams):
            raise StartupError(f"{problem.key}: {problem.problem}")
        if settings.health.enabled:
            try:
                self.health_server = HealthServer(settings.health.host, settings.health.port)
            except OSError as exc:
                raise StartupError(
                    f"cannot serve the health endpoint on {settings.health.host}:"
                    f"{settings.health.port} (health.port): {exc.strerror or exc}"
                ) from exc

        supervisor_ref = Supervisor.start()
        self._supervisor_ref = supervisor_ref
        supervisor = supervisor_ref.proxy()

        def child(name: str, factory: Callable[[], Supervised]) -> Handle:
            handle: Handle = supervisor.start_child(name, factory).get()
            return handle

        # The store opens in the factory, on the supervisor's thread, so a store that
        # fails to open after a crash is retried with backoff like any failed restart.
        identities = IdentityIndex()
        memory = child("memory", partial(self._memory_actor, store_factory, identities))
        runtime = Runtime(
            settings=settings,
            registry=registry,
            memory=memory,
            workers=WorkerPool(settings.bot.workers),
            dispatcher=Dispatcher(DISPATCHER_THREADS, name="dispatcher"),
            identities=identities,
        )
        self.runtime = runtime
        for cmd in registry.commands():
            runtime.commands[cmd.name] = child(
                f"command:{cmd.name}", partial(CommandActor, runtime.dispatcher, cmd, runtime)
            )
        router = child("router", partial(Router, runtime.dispatcher, runtime))
        self.router = router
        runtime.router = router
        self._start_streams(runtime, router, child)
        for name, factory in factories.items():
            input_settings = settings.inputs.get(name) or InputSettings(name=name)
            runtime.inputs[name] = child(
                f"input:{name}", partial(factory, input_settings, runtime, router)
            )
        # Last, so that a job which fell due while Harken was down finds the inputs up.
        runtime.scheduler = child("scheduler", partial(SchedulerActor, runtime, router))
        self._start_ticker(router)
        if runtime.streams is not None:
            runtime.streams.begin()
        self.started_at = time.time()
        runtime.started_at = self.started_at
        if self.health_server is not None:
            self.health_server.start(runtime)
        logger.info(
            "Harken is up: inputs %s, %d commands, memory %s%s",
            ", ".join(factories),
            len(registry),
            settings.memory.backend,
            f" at {settings.memory.path}" if settings.memory.backend == "tinydb" else "",
        )

    def _start_streams(
        self,
        runtime: Runtime,
        router: Handle,
        child: Callable[[str, Callable[[], Supervised]], Handle],
    ) -> None:
        """Start the streams with a section in the config (before the inputs, so none
        misses a message), and the `stream` input their commands' answers come to."""
        settings, streams = self.settings, self._streams or {}
        if not settings.streams:
            return
        hub = StreamHub(runtime)
        for name in settings.streams:
            options, subscription, mailbox = streams[name].settings_for(settings)
            hub.add(streams[name], options, subscription, mailbox)
        runtime.streams = hub
        hub.start()
        own = settings.inputs.get(STREAM_INPUT) or InputSettings(name=STREAM_INPUT)
        runtime.inputs[STREAM_INPUT] = child(
            f"input:{STREAM_INPUT}", partial(StreamInput, own, runtime, router)
        )

    def _memory_actor(
        self, store_factory: Callable[[], Store], identities: IdentityIndex
    ) -> MemoryActor:
        """A memory actor on a freshly opened store, publishing linked accounts to
        `identities` (which the rest of the bot reads)."""
        own = self.settings.identity
        # Only a store other processes write (PostgreSQL) can change under this one.
        shared = self.settings.memory.backend == "postgresql"
        identity_map = IdentityMap(
            identities,
            reload_seconds=own.reload_seconds if shared else math.inf,
            codes_per_person=own.link_codes_per_person,
            codes_per_account=own.link_codes_per_account,
            codes_window_seconds=own.link_codes_window_seconds,
        )
        return MemoryActor(store_factory(), identities=identity_map)

    def _store_factory(self) -> Callable[[], Store]:
        """Open the store now, so a store that cannot open stops start-up with a clear
        error; the memory actor takes this one, and opens a fresh one after a crash."""
        backend, path = self.settings.memory.backend, self.settings.memory.path
        secret = self.settings.memory.url
        url = secret.reveal() if secret is not None else None
        place = f"at {path}" if backend == "tinydb" else f"in {backend}"
        try:
            opened = [open_store(backend, path, url=url)]
        except (StoreError, OSError, ValueError) as exc:
            raise StartupError(f"cannot open the memory store {place}: {exc}") from exc

        def factory() -> Store:
            return opened.pop() if opened else open_store(backend, path, url=url)

        return factory

    def _start_ticker(self, router: Handle) -> None:
        interval = max(0.05, min(5.0, self.settings.bot.conversation_idle_seconds / 4))

        def tick() -> None:
            while not self._ticker_stop.wait(interval):
                try:
                    router.tell(ConversationIdle(time.monotonic()))
                except pykka.ActorDeadError:
                    return

        self._ticker = threading.Thread(target=tick, name="conversation-ticker", daemon=True)
        self._ticker.start()

    def input(self, name: str) -> Handle:
        if self.runtime is None:
            raise RuntimeError("the bot is not started")
        return self.runtime.inputs[name]

    def router_stats(self) -> dict[str, int]:
        """The router's figures (for `status`, tests and benchmarks)."""
        if self.router is None:
            raise RuntimeError("the bot is not started")
        stats: dict[str, int] = self.router.ask(RouterStats(), timeout=5)
        return stats

    def stop(self) -> None:
        """Stop taking work, let what runs finish and answer, then take everything down.

        The scheduler stops first, then the router (and the conversations, which drop,
        with a warning, what still waited in them) and the command actors, so no new
        command starts. Commands already running get `STOP_DRAIN_SECONDS` to finish; their
        replies go out once their writes are durable, while the inputs are still up to
        send them. Then the inputs send what they were given and close, and memory,
        last, commits and checkpoints everything it was told.
        """
        self._ticker_stop.set()
        if self.health_server is not None:
            self.health_server.stop()
            self.health_server = None
        if self._supervisor_ref is None:
            return
        supervisor = self._supervisor_ref.proxy()
        runtime = self.runtime
        supervisor.stop_children(["scheduler"]).get()
        commands = [f"command:{name}" for name in (runtime.commands if runtime else {})]
        supervisor.stop_children(["router", *commands]).get()
        if runtime is not None:
            self._drain(runtime)
            if runtime.streams is not None:
                runtime.streams.stop()
        supervisor.stop_children(
            [f"input:{name}" for name in (runtime.inputs if runtime else {})]
        ).get()
        # Memory last, and with time to finish: its final checkpoint writes every owner
        # still dirty, and whoever called stop() may delete the directory afterwards.
        supervisor.stop_children(None, MEMORY_STOP_TIMEOUT).get()
        self._supervisor_ref.stop()
        self._supervisor_ref = None
        logger.info("Harken stopped")

    @staticmethod
    def _drain(runtime: Runtime) -> None:
        """Wait (a while) for running commands to finish and their replies to be told."""
        deadline = time.monotonic() + STOP_DRAIN_SECONDS
        if not runtime.workers.shutdown(STOP_DRAIN_SECONDS):
            logger.warning(
                "stopping with commands still running after %.0f s; their replies are lost",
                STOP_DRAIN_SECONDS,
            )
        # A reply waits for its command's writes to be durable (a MemoryBarrier): once a
        # barrier told now fires, every reply of a finished command has gone to its input.
        synced = threading.Event()
        try:
            runtime.memory.tell(MemoryBarrier(lambda error: synced.set()))
        except pykka.ActorDeadError:
            logger.warning("memory is down; replies waiting for it are lost")
        else:
            synced.wait(max(STOP_SYNC_SECONDS, deadline - time.monotonic()))
        runtime.dispatcher.shutdown()
