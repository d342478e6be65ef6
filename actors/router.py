"""The router: every person's message passes here on its way to their conversation.

It owns the map conversation key -> conversation actor, so it alone starts and retires
conversations: one quiet for `bot.conversation_idle_seconds` is asked (`RetireIfIdle`),
and only one that says it is idle (`IdleNow`) and got no message since is stopped. It
makes text safe first: control characters and bidirectional overrides are removed, and
over-long messages are refused with a reply that says the limit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import pykka

from actors.conversation import ConversationActor, ConversationKey, conversation_key
from actors.inputs.base import HEARD
from actors.messages import ConversationIdle, IdleNow, Inbound, RetireIfIdle, RouterStats
from actors.pool import Dispatcher
from actors.supervision import SupervisedPooledActor
from actors.text import clean_text
from core.event import Event, EventType

if TYPE_CHECKING:
    from actors.runtime import Runtime

logger = logging.getLogger(__name__)


class Router(SupervisedPooledActor):
    def __init__(self, dispatcher: Dispatcher, runtime: Runtime) -> None:
        super().__init__(dispatcher)
        self.runtime = runtime
        self.conversations: dict[ConversationKey, pykka.ActorRef[Any]] = {}
        self.last_seen: dict[ConversationKey, float] = {}
        self.retired = 0

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Inbound):
            self._route(message.event)
        elif isinstance(message, ConversationIdle):
            self._ask_idle(message.now)
        elif isinstance(message, IdleNow):
            self._retire(message.key, message.seen)
        elif isinstance(message, RouterStats):
            return {"active_conversations": len(self.conversations), "retired": self.retired}
        return None

    def _route(self, event: Event) -> None:
        self.runtime.metrics.message_in(event.input)
        if event.type is not EventType.TEXT:
            logger.warning("router got a %s event from %s; ignored", event.type, event.input)
            return
        limit = self.runtime.settings.bot.max_message_bytes
        if len(event.data) > limit // 4:
            size = len(event.data.encode("utf-8", "surrogatepass"))
            if size > limit:
                if HEARD in event.meta:
                    logger.debug("dropped a %d-byte message not for the bot", size)
                    return  # chatter: not answered, not even to refuse it
                logger.info(
                    "refused a %d-byte message from %s on %s", size, event.user, event.input
                )
                text = (
                    f"That message is {size:,} bytes; I only read messages up to "
                    f"{limit:,} bytes. Nothing was changed."
                )
                self.runtime.answer(event, [event.reply(text, type=EventType.ERROR)])
                return
        cleaned = clean_text(event.data)
        if cleaned != event.data:
            event = event.with_data(cleaned)
        streams = self.runtime.streams
        if streams is not None and streams.publish(event):
            return  # not addressed to the bot: for the streams only
        key = conversation_key(event)
        self.last_seen[key] = time.monotonic()
        ref = self.conversations.get(key)
        if ref is not None:
            try:
                ref.tell(Inbound(event))
                return
            except pykka.ActorDeadError:
                logger.warning("conversation %s had died; starting it again", key)
        ref = ConversationActor.spawn(self.runtime.dispatcher, key, self.runtime, self.actor_ref)
        self.conversations[key] = ref
        ref.tell(Inbound(event))

    def _ask_idle(self, now: float) -> None:
        """Ask the conversations quiet for the idle time whether they are idle.

        Quiet is not idle: a command may still run for the last message (a runbook
        longer than the idle time), with more messages waiting behind it. Such a
        conversation does not answer and stays; it is asked again at the next tick.
        """
        idle_after = self.runtime.settings.bot.conversation_idle_seconds
        for key, seen in self.last_seen.items():
            if now - seen >= idle_after:
                ref = self.conversations.get(key)
                if ref is not None:
                    # A dead one is replaced when its person next says something.
                    with contextlib.suppress(pykka.ActorDeadError):
                        ref.tell(RetireIfIdle(seen))

    def _retire(self, key: ConversationKey, seen: float) -> None:
        """Stop a conversation that said it is idle, unless it was given a message since."""
        if self.last_seen.get(key) != seen:
            return  # a message went to it after the question: it is busy again
        del self.last_seen[key]
        ref = self.conversations.pop(key, None)
        if ref is not None:
            ref.stop(block=False)
            self.retired += 1
            logger.debug("retired an idle conversation")

    def release(self) -> None:
        # On a crash too: the restarted router starts with an empty map, so stop the
        # conversations this one owned, lest one linger unreachable. Their state is in
        # memory.
        for ref in self.conversations.values():
            ref.stop(block=False)
        self.conversations.clear()
        self.last_seen.clear()
