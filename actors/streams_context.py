"""The `ctx` a stream gets: a command's Context for the stream's own identity.

The identity is user `<stream name>` on the input `stream` (commands/streams.py:
`STREAM_INPUT`), so a stream's memory is owner `stream:<name>`, its jobs are its own,
it is no admin, and a command it runs (`run`) or schedules goes through the router, the
conversation and the command actor like anyone's, access rules included
(`[inputs.stream] groups` may grant it groups). What it sends carries `meta["via"]`:
the streams the event it is handling passed through, and itself, so neither it nor
any stream it fed sees the result come back.
"""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from actors.context import Context
from actors.messages import Inbound
from commands.streams import STREAM_INPUT
from core.context import SendRefused, SendResult
from core.event import Event, EventType

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.streams import StreamRunner

logger = logging.getLogger(__name__)

__all__ = ["BotStreamContext", "identity", "via_of"]

_SEND_WAIT = 10.0


def via_of(event: Event | None) -> tuple[str, ...]:
    """The streams an event passed through (`meta["via"]`), oldest first."""
    if event is None:
        return ()
    via = event.meta.get("via")
    return tuple(str(name) for name in via) if isinstance(via, list | tuple) else ()


def identity(name: str, bot_name: str, via: tuple[str, ...] = ()) -> Event:
    """The event a stream speaks as: user `name` on input `stream`."""
    return Event(
        type=EventType.TEXT,
        sender=name,
        to=bot_name,
        data="",
        input=STREAM_INPUT,
        channel=name,
        display_name=f"stream {name}",
        meta={"via": list(via)} if via else {},
    )


class BotStreamContext(Context):
    """A stream's `ctx` (commands.streams.StreamContext): one per stream actor, told
    which event it handles (`handling`) so that what it sends carries the right via."""

    def __init__(self, runner: StreamRunner, runtime: Runtime) -> None:
        self.name = runner.name
        self.options: Any = runner.options
        self._hub = runner.hub
        self._own: tuple[str, ...] = (runner.name,)
        self._via: tuple[str, ...]
        self._via = self._own
        super().__init__(
            identity(runner.name, runtime.settings.bot.name, self._via),
            memory=runtime.memory,
            settings=runtime.settings,
            registry=runtime.registry,
            is_admin=False,
            say=self._log,
            scheduler=runtime.scheduler,
            runtime=runtime,
        )

    def stale(self) -> bool:
        """Made before the scheduler started: a new one can schedule."""
        return self.runtime is not None and self._scheduler is not self.runtime.scheduler

    def handling(self, event: Event | None) -> None:
        """The event the stream handles now (None: its start)."""
        if event is None or "via" not in event.meta:
            self._via = self._own
            return
        via = via_of(event)
        self._via = via if self.name in via else (*via, self.name)

    def _log(self, text: str) -> None:
        logger.info("stream %s: %s", self.name, text)

    def send(self, *, input: str, to: str, text: str, subject: str = "") -> SendResult:
        """Send `text` to `to` through `input` (a channel, a room, an address)."""
        runtime = self.runtime
        if runtime is None:  # always set for a stream; for the type checker
            raise SendRefused("sending needs the running bot")
        event = Event(
            type=EventType.REPLY,
            sender=self.settings.bot.name,
            to=to,
            data=text,
            input=input,
            channel=to,
            meta={"subject": subject, "via": list(self._via)},
        )
        return runtime.send(event, wait=_SEND_WAIT)

    def run(self, text: str, *, timeout: float = 30.0) -> list[str]:
        """Run `text` as a command said by this stream; its replies' texts."""
        runtime = self.runtime
        if runtime is None or runtime.router is None:
            raise RuntimeError("running a command needs the running bot")
        event = Event(
            type=EventType.TEXT,
            sender=self.name,
            to=self.settings.bot.name,
            data=text,
            input=STREAM_INPUT,
            channel=self.name,
            display_name=f"stream {self.name}",
            meta={"via": list(self._via)},
        )
        answer = self._hub.expect_answer(event.id)
        try:
            runtime.router.tell(Inbound(event))
            replies = answer.result(timeout)
        except FutureTimeout:
            raise TimeoutError(f"{text!r} was not answered within {timeout:.0f} s") from None
        finally:
            self._hub.forget_answer(event.id)
        return [reply.data for reply in replies]
