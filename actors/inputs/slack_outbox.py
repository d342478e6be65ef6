"""The Slack input's way out: replies queued per channel, paced, posted with slack-sdk.

Each channel has a queue and a token bucket (`replies_per_second`, `reply_burst`); a
429 pauses that channel for `Retry-After` and sends the same message again, so order is
kept. 5xx answers and network failures are retried, but never once Slack has begun to
answer (it would most likely post twice). Long replies are split in order; questions
get buttons; error replies in a channel may go out ephemeral. All on the loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from actors.inputs.slack_options import SlackOptions
from actors.inputs.slack_text import (
    MAX_BUTTON_VALUE,
    MAX_BUTTONS,
    MAX_SECTION_CHARS,
    question_blocks,
    split_reply,
    to_slack,
)
from actors.text import clean_text
from core.event import Event, EventType

logger = logging.getLogger(__name__)

RATE_LIMIT_RETRIES = 10
"""429s in a row on one message before it is given up (with an error in the log)."""
ERROR_RETRIES = 4
"""Network or server errors in a row on one message before it is given up."""
PACE_PRUNE_AT = 1000
"""Channels with a bucket kept before idle ones are forgotten."""

Spawn = Callable[[Coroutine[Any, Any, None]], None]

# The post in flight in the current task, and whether Slack has begun to answer it.
_answering: ContextVar[list[bool] | None] = ContextVar("slack_answering", default=None)


def answer_tracing() -> aiohttp.TraceConfig:
    """For the input's aiohttp session: marks the post in flight as answered as soon as
    Slack's response headers arrive (aiohttp's `on_request_end`), before its body is
    read, so a failure after that point is known not to be worth a second post."""

    async def answered(session: aiohttp.ClientSession, context: Any, params: Any) -> None:
        began = _answering.get()
        if began is not None:
            began[0] = True

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(answered)
    return trace


@dataclass(frozen=True, slots=True)
class Message:
    """One message to post: a part of a reply, as Slack wants it (escaped)."""

    thread: str
    text: str
    event_id: str
    """The id of the event it answers, for log lines."""
    blocks: list[Any] | None = None
    """Block Kit (a question's buttons); `text` is then the notification fallback."""
    only_for: str = ""
    """Shown to this person alone (`chat.postEphemeral`); empty: to the channel."""


class _Pace:
    """A channel's queue of messages and its token bucket."""

    __slots__ = ("pending", "running", "tokens", "updated")

    def __init__(self, burst: int) -> None:
        self.pending: deque[Message] = deque()
        self.running = False
        self.tokens = float(burst)
        self.updated = time.monotonic()

    def wait_for_token(self, rate: float, burst: int) -> float:
        """Take a token and return 0, or return how long until one is there."""
        now = time.monotonic()
        self.tokens = min(float(burst), self.tokens + (now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / rate

    def posted(self) -> None:
        """A post just got its answer. The bucket earns nothing for the time it was on
        its way: Slack counts it when it arrived, somewhere in that time, so the next
        one then arrives at least a token's time after it even at Slack's exact rate."""
        self.updated = time.monotonic()


class Outbox:
    """Posts what the input is told to send. `web` must have no retry handlers: the
    outbox retries itself, knowing whether Slack began to answer."""

    def __init__(
        self, web: AsyncWebClient, options: SlackOptions, ready: asyncio.Event, spawn: Spawn
    ) -> None:
        self._web = web
        self._options = options
        self._ready = ready
        """Set once the bot's identity is known: nothing is posted before."""
        self._spawn = spawn
        self._channels: dict[str, _Pace] = {}
        self._dm_channels: dict[str, str] = {}

    def send(self, event: Event) -> None:
        """Queue a reply in its channel (a person's DM if it has none)."""
        if event.channel:
            self._queue(event.channel, event)
        else:
            # Not tied to a channel (a reminder, say): open the person's DM first.
            self._spawn(self._send_direct(event))

    def notice(self, channel: str, thread: str, person: str, text: str) -> None:
        """Tell `person` alone something, in order with the channel's replies."""
        message = Message(thread, to_slack(clean_text(text)), "", only_for=person)
        self._enqueue(channel, [message])

    def update(self, channel: str, ts: str, text: str, blocks: list[Any]) -> None:
        """Replace a posted message (`chat.update`); a failure is only logged."""
        self._spawn(self._update(channel, ts, text, blocks))

    def pending(self) -> int:
        return sum(len(pace.pending) for pace in self._channels.values())

    def _queue(self, channel: str, event: Event) -> None:
        text = clean_text(event.data)
        alone = (
            self._options.ephemeral_errors
            and event.type is EventType.ERROR
            and bool(event.to)
            and not channel.startswith("D")  # in a DM everyone who sees it is the asker
        )
        answers = () if alone else offered_answers(event)
        escaped = to_slack(text)
        # A question's text goes in a Block Kit section, which takes less than a message.
        parts = split_reply(escaped, MAX_SECTION_CHARS) if answers else split_reply(escaped)
        messages = [
            Message(event.thread, part, event.id, only_for=event.to if alone else "")
            for part in parts
        ]
        if answers:
            last = messages[-1]
            blocks = question_blocks(last.text, answers, event.to, event.thread)
            messages[-1] = Message(last.thread, last.text, last.event_id, blocks=blocks)
        self._enqueue(channel, messages)

    def _enqueue(self, channel: str, messages: list[Message]) -> None:
        pace = self._channels.get(channel)
        if pace is None:
            if len(self._channels) >= PACE_PRUNE_AT:
                self._prune()
            pace = self._channels[channel] = _Pace(self._options.reply_burst)
        pace.pending.extend(messages)
        if not pace.running:
            pace.running = True
            self._spawn(self._drain(channel, pace))

    async def _send_direct(self, event: Event) -> None:
        person = event.to
        channel = self._dm_channels.get(person)
        if channel is None:
            try:
                response = await self._web.conversations_open(users=person)
                channel = str(response["channel"]["id"])
            except (SlackApiError, aiohttp.ClientError, TimeoutError, KeyError, TypeError) as exc:
                logger.error(
                    "could not open a direct message to %s (%s); message dropped", person, why(exc)
                )
                return
            self._dm_channels[person] = channel
        self._queue(channel, event)

    async def _drain(self, channel: str, pace: _Pace) -> None:
        await self._ready.wait()
        rate, burst = self._options.replies_per_second, self._options.reply_burst
        try:
            while pace.pending:
                wait = pace.wait_for_token(rate, burst)
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await self._post(channel, pace.pending[0])
                pace.posted()
                pace.pending.popleft()
        finally:
            pace.running = False

    def _prune(self) -> None:
        """Forget channels that are idle with a full bucket: a new one is the same."""
        refilled = self._options.reply_burst / self._options.replies_per_second
        now = time.monotonic()
        idle = [
            channel
            for channel, pace in self._channels.items()
            if not pace.running and not pace.pending and now - pace.updated >= refilled
        ]
        for channel in idle:
            del self._channels[channel]

    async def _post(self, channel: str, message: Message) -> None:
        """Post one message, waiting out 429s and retrying what can be retried."""
        limited = failed = 0
        while True:
            began = [False]
            token = _answering.set(began)
            try:
                await self._call(channel, message)
                return
            except SlackApiError as exc:
                status = exc.response.status_code
                if status == 429 and limited < RATE_LIMIT_RETRIES:
                    limited += 1
                    delay = _seconds(exc.response.headers.get("Retry-After"))
                    logger.warning(
                        "Slack rate-limited a reply in %s; retrying in %.1f s", channel, delay
                    )
                    await asyncio.sleep(delay)
                    continue
                if status >= 500 and failed < ERROR_RETRIES:
                    failed += 1
                    await asyncio.sleep(2.0 ** (failed - 1))
                    continue
                logger.error(
                    "Slack refused a reply to %s in %s (%s); reply dropped",
                    message.event_id,
                    channel,
                    why(exc),
                )
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                if began[0]:
                    logger.warning(
                        "the answer to a reply to %s in %s broke off (%s); it was most "
                        "likely posted, so it is not sent again",
                        message.event_id,
                        channel,
                        why(exc),
                    )
                    return
                if failed < ERROR_RETRIES:
                    failed += 1
                    logger.warning("posting to %s failed (%s); retrying", channel, why(exc))
                    await asyncio.sleep(2.0 ** (failed - 1))
                    continue
                logger.error(
                    "could not post a reply to %s in %s (%s); dropped",
                    message.event_id,
                    channel,
                    why(exc),
                )
                return
            finally:
                _answering.reset(token)

    async def _call(self, channel: str, message: Message) -> None:
        thread = message.thread or None
        if message.only_for:
            await self._web.chat_postEphemeral(
                channel=channel, user=message.only_for, text=message.text, thread_ts=thread
            )
        else:
            await self._web.chat_postMessage(
                channel=channel, text=message.text, thread_ts=thread, blocks=message.blocks
            )

    async def _update(self, channel: str, ts: str, text: str, blocks: list[Any]) -> None:
        try:
            await self._web.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("could not update the question %s in %s (%s)", ts, channel, why(exc))


def offered_answers(event: Event) -> tuple[str, ...]:
    """The answers a reply offers as buttons: its `meta["choices"]`, if there are two to
    `MAX_BUTTONS` of them, each a non-empty text Slack takes as a button's value."""
    choices = event.meta.get("choices")
    if not isinstance(choices, list | tuple) or not 2 <= len(choices) <= MAX_BUTTONS:
        return ()
    if not all(isinstance(c, str) and 0 < len(c) <= MAX_BUTTON_VALUE for c in choices):
        return ()
    return tuple(choices)


def why(exc: BaseException) -> str:
    """A short reason for a log line: Slack's error code, or the exception's text."""
    if isinstance(exc, SlackApiError) and exc.response is not None:
        return str(exc.response.get("error") or f"HTTP {exc.response.status_code}")
    return str(exc) or type(exc).__name__


def _seconds(retry_after: str | None) -> float:
    """How long a 429's `Retry-After` says to wait (1 s if it says nothing usable)."""
    try:
        return max(0.0, float(retry_after if retry_after is not None else "1"))
    except ValueError:
        return 1.0
