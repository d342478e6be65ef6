"""The Slack input's way in: Socket Mode envelopes turned into events for the router.

Each envelope is read on the input's loop thread without awaiting anything, so they
are taken in order. An `events_api` envelope becomes a text event unless it was seen
already (Slack re-delivers) or is not for the bot; a click on a question's button
(`block_actions`) is that person's answer, as if typed. Display names come from
`users.info`, cached; a person's messages stay in order.

Alone, an event goes on to the router at once and the envelope is acknowledged right
after. In a cluster (`claim` set) the event is first put up to be claimed and `take`
returns the claim's future: the input acknowledges the envelope once it settles, and
not at all if the claim failed, so that Slack delivers it again; intake then forgets
the event, so the copy is taken again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from actors.claim_outcome import Claim
from actors.inputs.base import HEARD
from actors.inputs.slack_outbox import Outbox, Spawn, why
from actors.inputs.slack_text import (
    answer_block_owner,
    answered_blocks,
    from_slack,
    strip_mention,
    text_from_blocks,
)
from core.event import Event, EventType

logger = logging.getLogger(__name__)

DEDUPE_CAPACITY = 10_000
"""Event ids remembered to drop re-deliveries; Slack retries within minutes, not hours."""
NAME_TTL = 3600.0
"""How long a display name from `users.info` is trusted."""
NAME_FAILURE_TTL = 60.0
"""How long to show the bare id after `users.info` failed, before asking again."""
NAME_CACHE_SIZE = 10_000

# Message subtypes that are a person saying something; every other subtype (edits,
# deletions, joins, bot messages, topic changes, ...) is not addressed to the bot.
_SPOKEN_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})


class RecentIds:
    """The last `capacity` ids seen, to drop re-deliveries (bounded, oldest forgotten)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._order: deque[str] = deque()
        self._seen: set[str] = set()

    def __contains__(self, key: str) -> bool:
        return key in self._seen

    def add(self, key: str) -> None:
        if key in self._seen:
            return
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self._capacity:
            self._seen.discard(self._order.popleft())

    def forget(self, key: str) -> None:
        """Take `key` out again (its event was not handled). Its old place in the order
        stays: if seen again it may be forgotten early, which only a cluster does, where
        the claims still keep a copy from being answered twice."""
        self._seen.discard(key)


class Intake:
    """Takes envelopes (`take`) and hands the events in them to `submit`."""

    def __init__(
        self,
        *,
        input_name: str,
        bot_name: str,
        prefix: str,
        web: AsyncWebClient,
        outbox: Outbox,
        submit: Callable[[Event], None],
        spawn: Spawn,
        hear_all: bool = False,
    ) -> None:
        self.input_name = input_name
        self.bot_name = bot_name
        self.prefix = prefix
        self.bot_user_id = ""
        """The bot's own user id, once `auth.test` said it (to see mentions)."""
        self._web = web
        self._outbox = outbox
        self._submit = submit
        self._spawn = spawn
        self._hear_all = hear_all
        """Hand over channel messages not for the bot too (`meta["heard"]`), for streams."""
        self._seen = RecentIds(DEDUPE_CAPACITY)
        self.claim: Callable[[Event], asyncio.Future[Claim]] | None = None
        """In a cluster: puts an event up to be claimed (the claim hands it to `admit`
        if won); None: events go to `admit` at once."""
        self._claiming: dict[str, asyncio.Future[Claim]] = {}
        """Dedupe key -> the claim not yet settled of the event taken under it."""
        self._names: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._waiting_for_name: dict[str, list[Event]] = {}

    def take(self, message: dict[str, Any], raw: str | None) -> asyncio.Future[Claim] | None:
        """One Socket Mode frame, as slack-sdk parsed it (`{}` if it was not an object).

        None: done with it, acknowledge it now. A future (in a cluster, for an event to
        claim, or a copy of one whose claim is under way): acknowledge it once that
        settles, unless it says `Claim.FAILED`.
        """
        kind = message.get("type")
        if kind == "events_api":
            return self._take_event(message)
        if kind == "interactive":
            return self._take_click(message)
        if kind == "hello":
            logger.info("connected to Slack over Socket Mode")
        elif kind == "slash_commands":
            logger.info("ignored a slash_commands envelope: Harken reads messages only")
        elif not message:
            logger.warning("ignored a Socket Mode frame that is not a JSON object: %.120r", raw)
        else:
            logger.warning("ignored a Socket Mode envelope of unknown type %.60r", kind)
        return None

    # --- messages -------------------------------------------------------------------------

    def _take_event(self, message: dict[str, Any]) -> asyncio.Future[Claim] | None:
        payload = message.get("payload")
        event = payload.get("event") if isinstance(payload, dict) else None
        if not isinstance(event, dict):
            logger.warning(
                "ignored an events_api envelope without an event (envelope %.40s)",
                message.get("envelope_id"),
            )
            return None
        assert isinstance(payload, dict)
        etype = event.get("type")
        if etype not in ("message", "app_mention"):
            logger.debug("ignored a %.60r event", etype)
            return None
        if event.get("subtype") not in _SPOKEN_SUBTYPES:
            logger.debug("ignored a message with subtype %.60r", event.get("subtype"))
            return None
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if event.get("bot_id") or user == self.bot_user_id:
            return None  # its own messages, and other bots': bots answering bots never ends well
        if not (_is_id(user) and _is_id(channel) and isinstance(ts, str)):
            logger.warning(
                "ignored a %s event without a valid user, channel or ts (event %.40s)",
                etype,
                payload.get("event_id"),
            )
            return None
        assert isinstance(user, str)
        assert isinstance(channel, str)
        keys = [f"ts:{channel}:{ts}"]
        event_id = payload.get("event_id")
        if isinstance(event_id, str) and event_id:
            keys.append(f"ev:{event_id}")
        if any(key in self._seen for key in keys):
            logger.info(
                "ignored a repeated event %.40s (retry %s, %s)",
                event_id,
                message.get("retry_attempt"),
                message.get("retry_reason") or "same message",
            )
            return self._claim_under_way(keys)
        for key in keys:
            self._seen.add(key)
        text = self._addressed_text(event, channel)
        meta: dict[str, Any] = {"ts": ts}
        if text is None:
            if not self._hear_all:
                return None
            raw = event.get("text")
            text = (
                raw
                if isinstance(raw, str) and raw.strip()
                else text_from_blocks(event.get("blocks"))
            )
            meta[HEARD] = True  # for the streams only
        thread = event.get("thread_ts")
        thread = thread if isinstance(thread, str) else ""
        return self._hand_over(user, channel, thread, from_slack(text), meta, keys=keys)

    def _addressed_text(self, event: dict[str, Any], channel: str) -> str | None:
        """The command text if the message is for the bot, else None."""
        text = event.get("text")
        if not isinstance(text, str) or not text.strip():
            text = text_from_blocks(event.get("blocks"))
        direct = event.get("channel_type") == "im" or channel.startswith("D")
        mentioned = strip_mention(text, self.bot_user_id) if self.bot_user_id else None
        if direct:
            if not text.strip():
                # Answered all the same (with a pointer to `help`): silence would puzzle.
                logger.info("a direct message from %s had no text I could read", event.get("user"))
                return ""
            return mentioned if mentioned is not None else text.strip()
        if mentioned is not None:
            return mentioned
        if self.prefix and text.startswith(self.prefix):
            return text[len(self.prefix) :].strip()
        return None

    # --- clicks on a question's buttons ---------------------------------------------------

    def _take_click(self, message: dict[str, Any]) -> asyncio.Future[Claim] | None:
        payload = message.get("payload")
        if not isinstance(payload, dict) or payload.get("type") != "block_actions":
            kind = payload.get("type") if isinstance(payload, dict) else None
            logger.info("ignored an interactive envelope of type %.60r", kind)
            return None
        user = _field(payload, "user", "id")
        channel = _field(payload, "container", "channel_id") or _field(payload, "channel", "id")
        ts = _field(payload, "container", "message_ts")
        actions = payload.get("actions")
        action = actions[0] if isinstance(actions, list) and actions else None
        if not (_is_id(user) and _is_id(channel) and _is_id(ts) and isinstance(action, dict)):
            logger.warning("ignored a block_actions envelope without a user, channel or action")
            return None
        owner = answer_block_owner(action.get("block_id"))
        value = action.get("value")
        if owner is None or not isinstance(value, str):
            logger.info("ignored a click on something that is not one of Harken's questions")
            return None
        person, thread = owner
        if user != person:
            logger.info("a click by %s on a question for %s was not taken", user, person)
            self._outbox.notice(
                channel, thread, user, f"This question is for <@{person}>; only they can answer it."
            )
            return None
        key = f"click:{channel}:{ts}"
        if key in self._seen:
            logger.info("ignored another click on question %s in %s: it is answered", ts, channel)
            return self._claim_under_way([key])
        self._seen.add(key)
        action_ts = action.get("action_ts")
        meta = {"ts": action_ts if isinstance(action_ts, str) else ts, "clicked": ts}
        question = _field(payload, "message", "text")

        def show_answer() -> None:
            if question:
                self._outbox.update(channel, ts, question, answered_blocks(question, user, value))

        return self._hand_over(user, channel, thread, value, meta, keys=[key], taken=show_answer)

    # --- display names ----------------------------------------------------------------------

    def _hand_over(
        self,
        user: str,
        channel: str,
        thread: str,
        text: str,
        meta: dict[str, Any],
        *,
        keys: list[str],
        taken: Callable[[], None] | None = None,
    ) -> asyncio.Future[Claim] | None:
        """A text event from `user`, taken under the dedupe `keys`, to `admit` now, or
        (in a cluster) once this process claimed it. `taken` runs once it is admitted."""
        event = Event(
            type=EventType.TEXT,
            sender=user,
            to=self.bot_name,
            data=text,
            input=self.input_name,
            channel=channel,
            thread=thread,
            meta=meta,
        )
        if self.claim is None:
            self.admit(event)
            if taken is not None:
                taken()
            return None
        outcome = self.claim(event)
        for key in keys:
            self._claiming[key] = outcome
        outcome.add_done_callback(lambda done: self._settled(done, keys, taken))
        return outcome

    def _settled(
        self, outcome: asyncio.Future[Claim], keys: list[str], taken: Callable[[], None] | None
    ) -> None:
        """A claim settled (before the input hears of it): on failure the event is
        forgotten, so that Slack's next delivery of it is taken again."""
        failed = outcome.cancelled() or outcome.result() is Claim.FAILED
        for key in keys:
            if self._claiming.get(key) is outcome:
                del self._claiming[key]
            if failed:
                self._seen.forget(key)
        if not failed and outcome.result() is Claim.WON and taken is not None:
            taken()

    def _claim_under_way(self, keys: list[str]) -> asyncio.Future[Claim] | None:
        """For a copy of an event already taken: the claim of the first if it has not
        settled yet (the copy is acknowledged only if that claim does not fail), else
        None (acknowledge it now)."""
        for key in keys:
            outcome = self._claiming.get(key)
            if outcome is not None:
                return outcome
        return None

    def admit(self, event: Event) -> None:
        """Give the router `event`, with its sender's display name, in order."""
        user = event.sender
        waiting = self._waiting_for_name.get(user)
        if waiting is not None:
            waiting.append(event)  # behind the same person's earlier messages
            return
        cached = self._names.get(user)
        if cached is not None and cached[1] > time.monotonic():
            self._names.move_to_end(user)
            self._submit(dataclasses.replace(event, display_name=cached[0]))
            return
        self._waiting_for_name[user] = [event]
        self._spawn(self._look_up_name(user))

    async def _look_up_name(self, user: str) -> None:
        name, ttl = user, NAME_FAILURE_TTL
        try:
            response = await self._web.users_info(user=user)
            name, ttl = _display_name(response.get("user")) or user, NAME_TTL
        except SlackApiError as exc:
            logger.info("users.info has no name for %s (%s); showing the id", user, why(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("users.info failed for %s (%s); showing the id", user, why(exc))
        finally:
            self._names[user] = (name, time.monotonic() + ttl)
            self._names.move_to_end(user)
            while len(self._names) > NAME_CACHE_SIZE:
                self._names.popitem(last=False)
            for event in self._waiting_for_name.pop(user, []):
                self._submit(dataclasses.replace(event, display_name=name))


def claim_key(event: Event) -> str:
    """What several processes claim an event of Slack's by: its message (channel and
    ts), which also makes one of a message Slack sent both as `message` and as
    `app_mention`, possibly to two processes; a click is claimed by its question, which
    takes one answer."""
    clicked = event.meta.get("clicked")
    if clicked:
        return f"click:{event.channel}:{clicked}"
    return f"ts:{event.channel}:{event.meta.get('ts', event.id)}"


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


def _field(payload: dict[str, Any], outer: str, inner: str) -> str:
    """`payload[outer][inner]` if it is a string, else ""."""
    part = payload.get(outer)
    value = part.get(inner) if isinstance(part, dict) else None
    return value if isinstance(value, str) else ""


def _display_name(user: object) -> str:
    """The name Slack shows for a `users.info` user: display name, else real name."""
    if not isinstance(user, dict):
        return ""
    profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
    assert isinstance(profile, dict)
    for name in (
        profile.get("display_name"),
        profile.get("real_name"),
        user.get("real_name"),
        user.get("name"),
    ):
        if isinstance(name, str) and name.strip():
            return name.strip()
    return ""
