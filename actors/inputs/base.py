"""What every input actor shares.

An input actor owns one chat connection: it turns what arrives into `Event`s for the
router (`Inbound`) and sends what it is told (`Outbound`, now; `Answered`, the complete
answer to one of its events). A new input is a subclass registered under the
`harken.inputs` entry point group; its options are a dataclass (`options_class`, see
`config.inputs`) from which the config loader checks `[inputs.<name>]`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from actors.messages import Answered, Inbound, Outbound
from actors.metrics import CONNECTED, DISCONNECTED, DOWN, UP
from actors.supervision import SupervisedActor
from core.event import Event

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings


HEARD = "heard"
"""`meta` key of a message not addressed to the bot, handed over only because a stream
wants every message of its input (`InputActor.hears_all`): the router gives it to the
streams and to no conversation."""


class InputActor(SupervisedActor):
    """Base class: subclasses implement `send`, and may implement `processed`.

    A subclass may also override the class method `preflight`, which `BotSystem.start`
    calls before any actor starts: raise `StartupError` there (a missing token, a
    credential the server refuses) and Harken stops with that one line and exit 2.
    """

    options_class: ClassVar[type[Any] | None] = None
    """The dataclass declaring this input's options and secrets (`config.inputs`), or
    None for an input without any. The loader reads it through the `harken.inputs` entry
    point, which imports the input's module: an input whose module is heavy also
    registers the dataclass alone under `harken.input_options`."""

    @classmethod
    def preflight(cls, settings: InputSettings) -> None:
        """Check the settings (and, if need be, the credentials) before start-up."""

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        super().__init__()
        self.settings = settings
        self.runtime = runtime
        self.router = router

    @property
    def name(self) -> str:
        return self.settings.name

    def on_start(self) -> None:
        # An input with a connection reports `connected`/`disconnected` itself, through
        # `report_state`; one without (the shell) is up while its actor runs.
        self.report_state(UP)

    def on_stop(self) -> None:
        super().on_stop()  # `release`: the subclass closes its connection
        self.report_state(DOWN)

    def report_state(self, state: str) -> None:
        """Say how this input's connection is: `up`, `connected`, `disconnected` or `down`
        (safe from any thread). `/healthz` and `status` show it."""
        self.runtime.metrics.set_input_state(self.name, state)

    def report_connected(self, connected: bool) -> None:
        self.report_state(CONNECTED if connected else DISCONNECTED)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Outbound):
            self.send(message.event)
        elif isinstance(message, Answered):
            self.answered(message)
        return None

    def answered(self, message: Answered) -> None:
        for reply in message.replies:
            self.send(reply)
        self.processed(message.event_id)

    def submit(self, event: Event) -> None:
        """Hand a person's message to the bot (safe from any thread)."""
        self.router.tell(Inbound(event))

    def hears_all(self) -> bool:
        """Whether a stream wants this input's messages that are not for the bot too:
        then hand them over with `meta[HEARD]` (the same for the bot's whole run)."""
        return self.runtime.hears(self.name)

    def send(self, event: Event) -> None:
        raise NotImplementedError

    def processed(self, event_id: str) -> None:
        """Every reply to `event_id` is out; most inputs need not care."""


class RepliesInbox:
    """An input actor's inbox that hands replies over on the sender's thread.

    For inputs whose connection runs on a thread of its own (an asyncio loop), where
    waking the actor's thread only to wake the loop's would be a hop for nothing: it
    gives `Answered` and `Outbound` to `direct` (thread-safe, never blocking: a hand-off
    to the loop) and queues everything else for the actor's thread, as does everything
    until `direct` is set.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.direct: Callable[[tuple[Event, ...]], None] | None = None

    def put(self, envelope: Any, block: bool = True, timeout: float | None = None) -> None:
        direct = self.direct
        if direct is not None and envelope.reply_to is None:
            message = envelope.message
            if isinstance(message, Answered):
                if message.replies:
                    direct(message.replies)
                return
            if isinstance(message, Outbound):
                direct((message.event,))
                return
        self._queue.put(envelope)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._queue.get(block, timeout)

    def empty(self) -> bool:
        return self._queue.empty()


class Outstanding:
    """Event ids sent to the bot whose replies are not all out yet (thread-safe)."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._changed = threading.Condition()

    def add(self, event_id: str) -> None:
        with self._changed:
            self._ids.add(event_id)

    def done(self, event_id: str) -> None:
        with self._changed:
            self._ids.discard(event_id)
            if not self._ids:
                self._changed.notify_all()

    def __len__(self) -> int:
        return len(self._ids)

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Wait until nothing is outstanding; False if `timeout` ran out first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._ids, timeout)
