"""An in-memory input for tests and benchmarks.

Nothing goes over a network: a test (or a benchmark's load generator) submits events
from its own thread, and every reply comes back through `sink`, tied to the message it
answers: `Done` carries the complete answer to a message, `Reply` anything sent
before it (progress) or on its own (reminders). The sink is
called on this actor's thread, so it must be quick and thread-safe (`queue.Queue.put`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from actors.inputs.base import InputActor
from actors.messages import Answered
from core.event import Event

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings


class Reply(NamedTuple):
    """A reply from the bot to the message with id `in_reply_to`."""

    in_reply_to: str
    event: Event


class Done(NamedTuple):
    """The complete answer to the message with id `event_id`: nothing more will come."""

    event_id: str
    replies: tuple[Event, ...]


Sink = Callable[[Reply | Done], None]


class TestingInput(InputActor):
    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, settings: InputSettings, runtime: Runtime, router: Handle, sink: Sink
    ) -> None:
        super().__init__(settings, runtime, router)
        self.sink = sink

    def send(self, event: Event) -> None:
        self.sink(Reply(str(event.meta.get("in_reply_to", "")), event))

    def answered(self, message: Answered) -> None:
        self.sink(Done(message.event_id, message.replies))
