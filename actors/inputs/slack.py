"""The Slack input: events over Socket Mode, replies over the Web API.

Socket Mode needs no public URL: the bot opens a websocket to Slack (with the app-level
token, `xapp-...`) and Slack pushes every event down it as an envelope that must be
acknowledged within a few seconds, or Slack sends it again. Replies go out through the
Web API (`chat.postMessage`, with the bot token, `xoxb-...`).

Threads. The actor has a thread of its own (pykka), and owns a second one that runs an
asyncio loop with slack-sdk's aiohttp clients. Everything that touches the network runs
on that loop: the websocket, acks, `users.info`, `chat.postMessage`. Replies reach the
actor from command workers; the actor hands them to the loop with
`call_soon_threadsafe`, which also wakes the loop at once (a reply must never wait for
the next incoming frame to be noticed). The Web API client keeps one `aiohttp`
session, so one pool of kept-alive connections, for the input's whole life. Replies
(`chat.postMessage`) are the same request as the SDK's, but posted without its
per-call work and over the input's own keep-alive HTTP client (`slack_http.py`), which
costs half the CPU of aiohttp's, because every reply passes through this one thread
(with a proxy configured, they take the aiohttp session).

Incoming, per envelope: parse it, drop it if its event was seen already (Slack
re-delivers an envelope it thinks was lost, with the same event id), filter out what is
not for the bot (its own messages, other bots, edits, deletions, channel chatter that
neither mentions it nor starts with the prefix), then hand the message to the router and
acknowledge the envelope. No command runs and no Web API call is made before the ack;
a person's display name comes from `users.info`, cached, and a message that waits for a
lookup waits behind nothing but that lookup. Messages of one person stay in order.

Outgoing, per channel: a queue paced by a token bucket (Slack allows about one message
per second per channel, with short bursts), so a burst of replies does not trip the rate
limit; a 429 anyway pauses that channel's queue for `Retry-After` seconds and the reply
is retried. Replies longer than Slack takes in one message are split into parts, in
order, and never truncated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
import urllib.error
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import aiohttp
import yarl
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.internal_utils import get_user_agent

from actors.errors import StartupError
from actors.event import Event, EventType
from actors.inputs.base import InputActor, RepliesInbox
from actors.inputs.slack_http import HttpClient, HttpError, Target
from actors.inputs.slack_text import from_slack, split_reply, strip_mention, to_slack
from actors.messages import Answered
from actors.text import clean_text
from config.settings import input_env_var

if TYPE_CHECKING:
    from actors.services import Services
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)
_web_logger = logging.getLogger(__name__ + ".web")
_socket_logger = logging.getLogger(__name__ + ".socket")
# The start-up check reports a failure as one line (StartupError); slack-sdk would log
# the same failure again, with a traceback, before it.
_preflight_logger = logging.getLogger(__name__ + ".preflight")
_preflight_logger.setLevel(logging.CRITICAL)

DEFAULT_API_URL = "https://slack.com/api/"
DEDUPE_CAPACITY = 10_000
"""Event ids remembered to drop re-deliveries; Slack retries within minutes, not hours."""
NAME_TTL = 3600.0
"""How long a display name from `users.info` is trusted."""
NAME_FAILURE_TTL = 60.0
"""How long to show the bare id after `users.info` failed, before asking again."""
NAME_CACHE_SIZE = 10_000
RATE_LIMIT_RETRIES = 10
"""429s in a row on one reply before it is given up (with an error in the log)."""
ERROR_RETRIES = 4
"""Network or server errors in a row on one reply before it is given up."""
PACE_PRUNE_AT = 1000
"""Channels with a reply bucket kept before idle ones are forgotten."""
WEB_TIMEOUT = 30.0
"""Seconds a Web API call may take in all before it counts as a network failure."""
STOP_GRACE = 5.0
"""On stop, how long replies still queued get to go out."""

# Message subtypes that are a person saying something; every other subtype (edits,
# deletions, joins, bot messages, topic changes, ...) is not addressed to the bot.
_SPOKEN_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})


@dataclass(frozen=True)
class SlackOptions:
    """`[inputs.slack]` options, checked."""

    api_url: str = DEFAULT_API_URL
    prefix: str = "!"
    replies_per_second: float = 1.0
    reply_burst: int = 4
    ping_interval: float = 5.0

    @classmethod
    def of(cls, settings: InputSettings) -> SlackOptions:
        options = settings.options
        where = f"inputs.{settings.name}"

        def get(key: str, kind: type[Any], default: Any) -> Any:
            value = options.get(key, default)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool):
                raise StartupError(f"{where}.{key}: must be {_KIND_NAMES[kind]} (got {value!r})")
            return value

        api_url = get("api_url", str, cls.api_url)
        if not api_url.startswith(("https://", "http://")):
            raise StartupError(f"{where}.api_url: must be an http(s) URL (got {api_url!r})")
        rate = get("replies_per_second", float, cls.replies_per_second)
        burst = get("reply_burst", int, cls.reply_burst)
        ping = get("ping_interval", float, cls.ping_interval)
        if not rate > 0:
            raise StartupError(f"{where}.replies_per_second: must be > 0 (got {rate})")
        if burst < 1:
            raise StartupError(f"{where}.reply_burst: must be >= 1 (got {burst})")
        if not ping > 0:
            raise StartupError(f"{where}.ping_interval: must be > 0 (got {ping})")
        return cls(
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            prefix=get("prefix", str, cls.prefix).strip(),
            replies_per_second=rate,
            reply_burst=burst,
            ping_interval=ping,
        )


_KIND_NAMES: Mapping[type[Any], str] = {str: "a string", float: "a number", int: "an integer"}


def _tokens(settings: InputSettings) -> tuple[str, str]:
    """(bot token, app token), or a `StartupError` naming the variable at fault."""
    wanted = (
        ("bot_token", "xoxb-", "bot token", "Bot User OAuth Token"),
        ("app_token", "xapp-", "app-level token", "App-Level Token"),
    )
    found: list[str] = []
    for key, prefix, what, slack_name in wanted:
        var = input_env_var(settings.name, key)
        secret = settings.secrets.get(key)
        if secret is None:
            raise StartupError(
                f"slack: {var} is not set; give it your Slack app's {slack_name} ({prefix}...)"
            )
        value = secret.reveal().strip()
        if not value.startswith(prefix):
            raise StartupError(f"slack: {var} does not hold a {what} (it must start with {prefix})")
        found.append(value)
    return found[0], found[1]


def _check_token(call: Callable[[], Any], var: str, what: str, url: str) -> Mapping[str, Any]:
    try:
        response = call()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        raise StartupError(
            f"slack: Slack refused the {what} in {var} ({error or 'no reason given'}); "
            "check the token in your Slack app's settings"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StartupError(f"slack: cannot reach the Slack Web API at {url} ({reason})") from None
    data: Mapping[str, Any] = response.data if isinstance(response.data, Mapping) else {}
    return data


class _Pace:
    """A channel's queue of replies and its token bucket."""

    __slots__ = ("pending", "running", "tokens", "updated")

    def __init__(self, burst: int) -> None:
        self.pending: deque[tuple[str, str, str]] = deque()
        """(thread, text, id of the event answered) for each message still to post."""
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


class _RecentIds:
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


CONNECTION_CHECK_SECONDS = 1.0
"""How often the input checks whether its Socket Mode connection is up."""


class _SocketClient(SocketModeClient):
    """slack-sdk's aiohttp Socket Mode client, with events handled as they are read.

    The SDK puts every frame it reads on a queue; a second task takes it off, parses
    it, and starts a third task per frame to run the listeners: two extra loop turns,
    a task, and its bookkeeping for each envelope, on the thread every message goes
    through. `events_api` envelopes (nearly all the traffic) are parsed here and given
    to the listener at once, from the reading task, in the order they came; everything
    else (hello, disconnect, malformed frames) takes the SDK's own way, so reconnecting
    stays the SDK's business. Should a later SDK stop reading through
    `enqueue_message`, every frame simply takes the SDK's way.
    """

    def __init__(
        self,
        on_envelope: Callable[
            [AsyncBaseSocketModeClient, dict[str, Any], str | None], Awaitable[None]
        ],
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._on_envelope = on_envelope

    async def enqueue_message(self, message: str) -> None:
        parsed: object = None
        if message.startswith("{"):
            try:
                parsed = json.loads(message)
            except ValueError:
                parsed = None
        if isinstance(parsed, dict) and parsed.get("type") == "events_api":
            try:
                await self._on_envelope(self, parsed, message)
            except Exception:
                # Never into the SDK's reading loop: it would pause reading for a second.
                logger.exception("could not handle a Socket Mode envelope")
            return
        await super().enqueue_message(message)


class SlackInput(InputActor):
    """Harken on Slack: answers DMs, mentions, and the prefix in channels."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        return RepliesInbox()

    @classmethod
    def preflight(cls, settings: InputSettings) -> None:
        """Check options and both tokens against Slack before anything starts."""
        options = SlackOptions.of(settings)
        bot_token, app_token = _tokens(settings)
        url = options.api_url
        web = WebClient(base_url=url, timeout=15, logger=_preflight_logger)
        bot_var = input_env_var(settings.name, "bot_token")
        app_var = input_env_var(settings.name, "app_token")
        identity = _check_token(lambda: web.auth_test(token=bot_token), bot_var, "bot token", url)
        _check_token(
            lambda: web.apps_connections_open(app_token=app_token), app_var, "app token", url
        )
        logger.info(
            "Slack tokens accepted: bot user %s in team %s",
            identity.get("user_id", "?"),
            identity.get("team", identity.get("team_id", "?")),
        )

    def __init__(self, settings: InputSettings, services: Services, router: Handle) -> None:
        super().__init__(settings, services, router)
        self.options = SlackOptions.of(settings)
        self._bot_token, self._app_token = _tokens(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"slack-loop:{settings.name}", daemon=True
        )
        # Loop-thread state below: touched only by coroutines and callbacks on the loop.
        self._session: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None
        self._post_url = yarl.URL(self.options.api_url)
        self._post_headers: dict[str, str] = {}
        self._http: HttpClient | None = None
        self._post_target: Target | None = None
        self._socket: _SocketClient | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self.bot_user_id = ""
        self._seen = _RecentIds(DEDUPE_CAPACITY)
        self._names: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._waiting_for_name: dict[str, list[Event]] = {}
        self._channels: dict[str, _Pace] = {}
        self._dm_channels: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Replies from other threads wait here; one loop wake-up takes all that came.
        self._outbox: deque[Event] = deque()
        self._outbox_lock = threading.Lock()
        self._outbox_flush_pending = False
        self.actor_inbox.direct = self._to_loop

    # --- actor thread -------------------------------------------------------------------

    def on_start(self) -> None:
        self.report_connected(False)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop)

    def release(self) -> None:
        # On a crash too: the replacement opens a connection of its own.
        self._close()

    actor_inbox: RepliesInbox

    def send(self, event: Event) -> None:
        self._to_loop((event,))

    def answered(self, message: Answered) -> None:
        if message.replies:
            self._to_loop(message.replies)

    def _to_loop(self, events: tuple[Event, ...]) -> None:
        """Hand replies to the loop (from any thread); it is woken once per batch."""
        self._outbox.extend(events)
        with self._outbox_lock:
            if self._outbox_flush_pending:
                return
            self._outbox_flush_pending = True
        try:
            self._loop.call_soon_threadsafe(self._flush_outbox)
        except RuntimeError:
            logger.warning("Slack input is stopping; %d message(s) not sent", len(self._outbox))

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _close(self) -> None:
        if not self._thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            done.result(timeout=STOP_GRACE + 5)
        except Exception:
            logger.exception("Slack input did not shut down cleanly")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # --- loop thread: connection ----------------------------------------------------------

    async def _start(self) -> None:
        self._ready = asyncio.Event()
        # One session, kept for the input's life: replies reuse kept-alive connections
        # instead of paying a new connection (and, on real Slack, a TLS handshake) each.
        # The timeout is the session's: slack-sdk applies its own only to sessions it
        # makes, and aiohttp's default is five minutes.
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WEB_TIMEOUT))
        if _web_logger.level == logging.NOTSET:
            # slack-sdk formats a debug line for every call unless the logger it is given
            # has a level of its own; the effective level is what was meant.
            _web_logger.setLevel(_web_logger.getEffectiveLevel())
        self._web = AsyncWebClient(
            token=self._bot_token,
            base_url=self.options.api_url,
            session=self._session,
            logger=_web_logger,
            timeout=int(WEB_TIMEOUT),
        )
        self._post_url = yarl.URL(urljoin(self.options.api_url, "chat.postMessage"))
        # What slack-sdk sends with a JSON body, in its order (see `_post_message`).
        self._post_headers = {
            "Content-Type": "application/json;charset=utf-8",
            "User-Agent": get_user_agent(),
            "Authorization": f"Bearer {self._bot_token}",
            **self._web.headers,
        }
        if not (self._web.proxy and self._web.proxy.strip()):
            # Replies go over Harken's own keep-alive client (see `_post_message`), with
            # the session's timeout and the SSL context slack-sdk would use.
            self._http = HttpClient(timeout=WEB_TIMEOUT, ssl=self._web.ssl)
            self._post_target = self._http.target(str(self._post_url), self._post_headers)
        task = asyncio.current_task()
        self._connecting = task
        await self._identify()
        self._socket = _SocketClient(
            self._on_frame,
            self._app_token,
            web_client=self._web,
            logger=_socket_logger,
            ping_interval=self.options.ping_interval,
        )
        self._socket.message_listeners.append(self._on_frame)
        await self._socket.connect()  # type: ignore[no-untyped-call]
        self._connecting = None
        self._spawn(self._watch_connection(self._socket))

    async def _watch_connection(self, socket: _SocketClient) -> None:
        """Report the socket's state (for /healthz and `status`) whenever it changes.

        slack-sdk reconnects by itself and tells no one; asking it now and then is the
        one reliable way to know, and it costs a few attribute reads.
        """
        reported: bool | None = None
        while True:
            connected = bool(await socket.is_connected())
            if connected != reported:
                self.report_connected(connected)
                if reported is not None:
                    logger.log(
                        logging.INFO if connected else logging.WARNING,
                        "Slack Socket Mode %s",
                        "connected again" if connected else "disconnected; reconnecting",
                    )
                reported = connected
            await asyncio.sleep(CONNECTION_CHECK_SECONDS)

    async def _identify(self) -> None:
        """Learn the bot's own user id (to ignore its own messages, to see mentions)."""
        assert self._web is not None
        assert self._ready is not None
        delay = 1.0
        while True:
            try:
                identity = await self._web.auth_test()
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning(
                    "Slack auth.test failed (%s); trying again in %.0f s", _why(exc), delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            self.bot_user_id = str(identity.get("user_id") or "")
            logger.info("Slack input is %s (%s)", identity.get("user"), self.bot_user_id)
            self._ready.set()
            return

    async def _shutdown(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        deadline = time.monotonic() + STOP_GRACE
        while any(p.pending for p in self._channels.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = sum(len(p.pending) for p in self._channels.values())
        if left:
            logger.warning("Slack input stopped with %d message(s) not sent", left)
        for task in list(self._tasks):
            task.cancel()
        if self._socket is not None:
            await self._socket.close()  # type: ignore[no-untyped-call]
        if self._session is not None:
            await self._session.close()
        if self._http is not None:
            await self._http.close()

    # --- loop thread: incoming ------------------------------------------------------------

    async def _on_frame(
        self, client: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        envelope_id = message.get("envelope_id")
        try:
            self._take(message, raw)
        except Exception:
            # A frame we cannot make sense of must not take the input down, nor be
            # re-delivered forever: log it, acknowledge it, carry on.
            logger.exception("could not handle a Socket Mode envelope; acknowledged and dropped")
        if isinstance(envelope_id, str) and envelope_id:
            try:
                await client.send_socket_mode_response({"envelope_id": envelope_id})
            except (ConnectionError, aiohttp.ClientError) as exc:
                # The socket went away; Slack re-delivers the envelope on the next one and
                # the event id check drops the copy.
                logger.warning("could not acknowledge envelope %.40s (%s)", envelope_id, exc)

    def _take(self, message: dict[str, Any], raw: str | None) -> None:
        kind = message.get("type")
        if kind == "events_api":
            self._take_event(message)
        elif kind == "hello":
            logger.info("connected to Slack over Socket Mode")
        elif kind in ("slash_commands", "interactive"):
            logger.info("ignored a %s envelope: Harken reads messages only", kind)
        elif not message:
            logger.warning("ignored a Socket Mode frame that is not a JSON object: %.120r", raw)
        else:
            logger.warning("ignored a Socket Mode envelope of unknown type %.60r", kind)

    def _take_event(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        event = payload.get("event") if isinstance(payload, dict) else None
        if not isinstance(event, dict):
            logger.warning(
                "ignored an events_api envelope without an event (envelope %.40s)",
                message.get("envelope_id"),
            )
            return
        assert isinstance(payload, dict)
        etype = event.get("type")
        if etype not in ("message", "app_mention"):
            logger.debug("ignored a %.60r event", etype)
            return
        if event.get("subtype") not in _SPOKEN_SUBTYPES:
            logger.debug("ignored a message with subtype %.60r", event.get("subtype"))
            return
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if event.get("bot_id") or user == self.bot_user_id:
            return  # its own messages, and other bots': bots answering bots never ends well
        if not (_is_id(user) and _is_id(channel) and isinstance(ts, str)):
            logger.warning(
                "ignored a %s event without a valid user, channel or ts (event %.40s)",
                etype,
                payload.get("event_id"),
            )
            return
        assert isinstance(user, str)
        assert isinstance(channel, str)
        # The same message can come twice: re-delivered (same event id, retry_attempt
        # > 0), or once as `message` and once as `app_mention` (same channel and ts).
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
            return
        for key in keys:
            self._seen.add(key)
        text = self._addressed_text(event, channel)
        if text is None:
            return
        thread = event.get("thread_ts")
        name = self._cached_name(user)
        incoming = Event(
            type=EventType.TEXT,
            sender=user,
            to=self.services.settings.bot.name,
            data=from_slack(text),
            input=self.name,
            channel=channel,
            thread=thread if isinstance(thread, str) else "",
            meta={"ts": ts},
            display_name=name or "",
        )
        if name is None:
            self._submit_named(incoming)
        else:
            self.submit(incoming)

    def _addressed_text(self, event: dict[str, Any], channel: str) -> str | None:
        """The command text if the message is for the bot, else None."""
        text = event.get("text")
        if not isinstance(text, str) or not text.strip():
            text = _text_from_blocks(event.get("blocks"))
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
        prefix = self.options.prefix
        if prefix and text.startswith(prefix):
            return text[len(prefix) :].strip()
        return None

    def _cached_name(self, user: str) -> str | None:
        """The person's display name if it can be used now: known, fresh, and none of
        their earlier messages still waiting for a lookup (they go first)."""
        cached = self._names.get(user)
        if cached is None or cached[1] <= time.monotonic() or user in self._waiting_for_name:
            return None
        self._names.move_to_end(user)
        return cached[0]

    def _submit_named(self, event: Event) -> None:
        """Hand the event to the router once the person's display name is known, in order."""
        user = event.sender
        waiting = self._waiting_for_name.get(user)
        if waiting is not None:
            waiting.append(event)  # behind the same person's earlier messages
            return
        cached = self._names.get(user)
        if cached is not None and cached[1] > time.monotonic():
            self._names.move_to_end(user)
            self.submit(dataclasses.replace(event, display_name=cached[0]))
            return
        self._waiting_for_name[user] = [event]
        self._spawn(self._look_up_name(user))

    async def _look_up_name(self, user: str) -> None:
        name, ttl = user, NAME_FAILURE_TTL
        try:
            assert self._web is not None
            response = await self._web.users_info(user=user)
            name, ttl = _display_name(response.get("user")) or user, NAME_TTL
        except SlackApiError as exc:
            logger.info("users.info has no name for %s (%s); showing the id", user, _why(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("users.info failed for %s (%s); showing the id", user, _why(exc))
        finally:
            self._names[user] = (name, time.monotonic() + ttl)
            self._names.move_to_end(user)
            while len(self._names) > NAME_CACHE_SIZE:
                self._names.popitem(last=False)
            for event in self._waiting_for_name.pop(user, []):
                self.submit(dataclasses.replace(event, display_name=name))

    # --- loop thread: outgoing ------------------------------------------------------------

    def _flush_outbox(self) -> None:
        with self._outbox_lock:
            self._outbox_flush_pending = False
        outbox = self._outbox
        while outbox:
            event = outbox.popleft()
            if not event.channel:
                # Not tied to a channel (a reminder, say): open the person's DM first.
                self._spawn(self._send_direct(event))
            else:
                self._queue(event.channel, event.thread, event.data, event.id)

    def _queue(self, channel: str, thread: str, text: str, event_id: str) -> None:
        pace = self._channels.get(channel)
        if pace is None:
            if len(self._channels) >= PACE_PRUNE_AT:
                self._prune_paces()
            pace = self._channels[channel] = _Pace(self.options.reply_burst)
        for part in split_reply(to_slack(clean_text(text))):
            pace.pending.append((thread, part, event_id))
        if not pace.running:
            pace.running = True
            self._spawn(self._drain(channel, pace))

    async def _send_direct(self, event: Event) -> None:
        user = event.to
        channel = self._dm_channels.get(user)
        if channel is None:
            try:
                assert self._web is not None
                response = await self._web.conversations_open(users=user)
                channel = str(response["channel"]["id"])
            except (SlackApiError, aiohttp.ClientError, TimeoutError, KeyError, TypeError) as exc:
                logger.error(
                    "could not open a direct message to %s (%s); message dropped", user, _why(exc)
                )
                return
            self._dm_channels[user] = channel
        self._queue(channel, "", event.data, event.id)

    async def _drain(self, channel: str, pace: _Pace) -> None:
        assert self._ready is not None
        await self._ready.wait()
        options = self.options
        try:
            while pace.pending:
                wait = pace.wait_for_token(options.replies_per_second, options.reply_burst)
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                thread, text, event_id = pace.pending[0]
                await self._post(channel, thread, text, event_id)
                pace.pending.popleft()
        finally:
            pace.running = False

    def _prune_paces(self) -> None:
        """Forget channels that are idle with a full bucket: a new one is the same."""
        refilled = self.options.reply_burst / self.options.replies_per_second
        now = time.monotonic()
        idle = [
            channel
            for channel, pace in self._channels.items()
            if not pace.running and not pace.pending and now - pace.updated >= refilled
        ]
        for channel in idle:
            del self._channels[channel]

    async def _post(self, channel: str, thread: str, text: str, event_id: str) -> None:
        """Post one message, waiting out 429s and retrying transient failures."""
        limited = failed = 0
        while True:
            try:
                status, answer, retry_after = await self._post_message(channel, thread, text)
            except (aiohttp.ClientError, HttpError, TimeoutError) as exc:
                if isinstance(exc, HttpError) and exc.answered:
                    # Slack had the request and began to answer: sending it again would
                    # most likely post the reply twice.
                    logger.warning(
                        "the answer to a reply to %s in %s broke off (%s); it was most "
                        "likely posted, so it is not sent again",
                        event_id,
                        channel,
                        _why(exc),
                    )
                    return
                if failed < ERROR_RETRIES:
                    failed += 1
                    logger.warning("posting to %s failed (%s); retrying", channel, _why(exc))
                    await asyncio.sleep(2.0 ** (failed - 1))
                    continue
                logger.error(
                    "could not post a reply to %s in %s (%s); dropped", event_id, channel, _why(exc)
                )
                return
            if status == 200 and answer.get("ok") is True:
                return
            if status == 429 and limited < RATE_LIMIT_RETRIES:
                limited += 1
                delay = _seconds(retry_after)
                logger.warning(
                    "Slack rate-limited chat.postMessage in %s; retrying in %.1f s", channel, delay
                )
                await asyncio.sleep(delay)
                continue
            if status >= 500 and failed < ERROR_RETRIES:
                failed += 1
                await asyncio.sleep(2.0 ** (failed - 1))
                continue
            logger.error(
                "Slack refused a reply to %s in %s (%s); reply dropped",
                event_id,
                channel,
                str(answer.get("error") or f"HTTP {status}"),
            )
            return

    async def _post_message(
        self, channel: str, thread: str, text: str
    ) -> tuple[int, Mapping[str, Any], str | None]:
        """One `chat.postMessage`: (HTTP status, Slack's answer, `Retry-After`).

        Not through `AsyncWebClient.chat_postMessage`: the request is the same (URL,
        headers, JSON body; tests/test_slack_input.py compares them with the SDK's),
        but the SDK's per-call work around it (argument filtering, a deprecation check
        that reads `os.environ`, `urljoin`, its retry-handler and response objects) cost
        about as much CPU as the HTTP request itself, on the one thread every reply goes
        through. Other Web API calls are rare and stay with the SDK.

        Nor through aiohttp, unless a proxy is configured: its `ClientSession.post`
        (request and response objects, multidict headers, timers, the cookie jar) costs
        105-145 µs of CPU for this small request with 50 in flight, the input's own
        keep-alive client (`actors/inputs/slack_http.py`) 55-70. That client speaks to
        no proxy, so with one (`HTTPS_PROXY`, or the Web API client's `proxy`) replies
        take the aiohttp session, as the SDK's own calls do. Either way a failure to get
        an answer is an exception `_post` retries: `HttpError`, or aiohttp's
        `ClientError`/timeout.
        """
        assert self._web is not None
        body: dict[str, str] = {"channel": channel, "text": text}
        if thread:
            body["thread_ts"] = thread
        data = json.dumps(body).encode()
        if self._post_target is not None:
            assert self._http is not None
            status, headers, raw = await self._http.post(self._post_target, data)
            retry_after = headers.get("retry-after")
        else:
            assert self._session is not None
            async with self._session.post(
                self._post_url,
                data=data,
                headers=self._post_headers,
                proxy=self._web.proxy,
                ssl=self._web.ssl if self._web.ssl is not None else True,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                try:
                    raw = await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    broke = HttpError(f"the answer broke off after HTTP {status} ({exc})")
                    broke.answered = True
                    raise broke from None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        return status, answer if isinstance(answer, dict) else {}, retry_after

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _is_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64


def _why(exc: BaseException) -> str:
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


def _text_from_blocks(blocks: object) -> str:
    """The plain text of a message's rich-text blocks (for messages sent without `text`)."""
    if not isinstance(blocks, list):
        return ""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "text" and isinstance(node.get("text"), str):
                out.append(node["text"])
            elif kind == "user" and isinstance(node.get("user_id"), str):
                out.append(f"<@{node['user_id']}>")
            elif kind == "link" and isinstance(node.get("url"), str):
                out.append(node["url"])
            walk(node.get("elements"))

    walk(blocks)
    return "".join(out).strip()
