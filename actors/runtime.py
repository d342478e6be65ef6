"""What the bot's actors share: read-only after start-up.

The system builds one `Runtime` value while it assembles the actors and hands it to
each of them. Nothing in it changes after start-up except the addresses behind the
handles, which the supervisor updates when it restarts an actor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pykka

from actors.identity import IdentityIndex
from actors.lanes import Lanes
from actors.messages import Answered, Outbound
from actors.metrics import Metrics
from actors.pool import Dispatcher
from actors.workers import WorkerPool
from config.inputs import installed_inputs
from core.context import SendRefused, SendResult
from core.event import Event

if TYPE_CHECKING:
    from actors.streams import StreamHub
    from actors.supervision import Handle
    from commands.base import Registry
    from config.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    registry: Registry
    memory: Handle
    workers: WorkerPool
    """Runs command functions, so a slow command holds a worker, never an actor."""
    dispatcher: Dispatcher
    """Runs the pooled actors (router, conversations, command actors) on a few threads."""
    inputs: dict[str, Handle] = field(default_factory=dict)
    commands: dict[str, Handle] = field(default_factory=dict)
    """Command actors by command name."""
    scheduler: Handle | None = None
    """The scheduler actor (actors/scheduler_actor.py); None until it has started."""
    router: Handle | None = None
    lanes: Lanes = field(init=False)
    """The worker pool, one conversation's turns at a time, in order (actors/lanes.py)."""
    clock: Callable[[], float] = time.time
    """The wall clock dialogs expire by (tests may replace it)."""
    metrics: Metrics = field(default_factory=Metrics)
    """Counters for `/metrics` and `status` (actors/metrics.py); thread-safe."""
    started_at: float = 0.0
    """When the system finished starting (time.time()), for `status`'s uptime."""
    job_answered: Callable[[Event], None] | None = None
    """Set by the scheduler actor: called once the answer to a scheduled command (an
    event with `meta["scheduled"]`) is on its way to the input, so that the job's
    delivery can be recorded (actors/scheduler_actor.py)."""

    streams: StreamHub | None = None
    """Hands events to the streams (actors/streams.py); None when no stream runs."""
    identities: IdentityIndex = field(default_factory=IdentityIndex)
    """Linked accounts, as the memory actor last published them (actors/identity.py)."""

    def __post_init__(self) -> None:
        self.lanes = Lanes(self.workers)

    def hears(self, input_name: str) -> bool:
        """Whether a stream wants the messages on `input_name` not addressed to the bot."""
        return self.streams is not None and self.streams.hears(input_name)

    def is_admin(self, event: Event) -> bool:
        return self.identities.is_admin(self.settings, event)

    def deliver(self, event: Event) -> None:
        """Send a message to the input it belongs to, now."""
        self.metrics.messages_out(event.input, 1)
        self._tell_input(event.input, Outbound(event))
        if self.streams is not None and self.streams.replies:
            self.streams.publish_replies((event,))

    def send(self, event: Event, *, wait: float) -> SendResult:
        """Send a message to the input it names, for a command (`ctx.send`).

        An ask, not a tell, so that the input can refuse it (a recipient it does not
        allow): it answers None once it took the message, or a `Future` that its first
        try settles with a `SendResult` or `SendRefused`, waited for up to `wait`
        seconds. A Future still pending then is cancelled: the input tells the person
        the outcome itself (see actors/inputs/email.py). Raises `SendRefused`.
        """
        name = event.input
        handle = self.inputs.get(name)
        if handle is None:
            running = ", ".join(sorted(self.inputs)) or "none"
            if name in installed_inputs():
                raise SendRefused(
                    f"the {name} input is not started here (running: {running}); "
                    f"add it to bot.inputs"
                )
            raise SendRefused(f"there is no input called {name!r} (running: {running})")
        try:
            answer = handle.ask(Outbound(event), timeout=wait)
        except pykka.ActorDeadError:
            raise SendRefused(f"the {name} input is down right now; nothing was sent") from None
        except pykka.Timeout:
            raise SendRefused(f"the {name} input did not answer within {wait:.0f} s") from None
        self.metrics.messages_out(name, 1)
        if self.streams is not None and self.streams.replies:
            self.streams.publish_replies((event,))
        if not isinstance(answer, Future):
            return SendResult(delivered=True)
        try:
            result: SendResult = answer.result(timeout=wait)
        except TimeoutError:
            if not answer.cancel():  # settled just now
                return answer.result()  # type: ignore[no-any-return]
            return SendResult(
                delivered=False,
                note=f"the {name} server has not answered yet; I'll keep trying and tell "
                "you if it fails",
            )
        return result

    def answer(self, event: Event, replies: list[Event]) -> None:
        """Send the complete answer to a person's message back to its input."""
        self.metrics.messages_out(event.input, len(replies))
        self._tell_input(event.input, Answered(event.id, tuple(replies)))
        self.identities.seen(event, self.memory)
        streams = self.streams
        if streams is not None:
            streams.gate.answered()
            if streams.replies:
                streams.publish_replies(replies)
        if event.meta.get("scheduled"):
            hook = self.job_answered
            if hook is not None:
                hook(event)

    def _tell_input(self, name: str, message: Outbound | Answered) -> None:
        handle = self.inputs.get(name)
        if handle is None:
            logger.warning("no input named %r to deliver to; message dropped", name)
            return
        try:
            handle.tell(message)
        except pykka.ActorDeadError:
            logger.warning("input %r is down; message dropped", name)
