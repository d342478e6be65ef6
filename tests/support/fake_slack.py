"""A fake Slack on 127.0.0.1 that speaks Slack's wire protocol to the real slack-sdk.

Slack cannot run locally, so the tests (and `bench/bench_slack.py`) start this instead:
an aiohttp server with the Web API (`POST /api/<method>`, token in `Authorization:
Bearer`, arguments as query, form or JSON, answers `{"ok": ...}` as Slack does) and
Socket Mode (`apps.connections.open` hands out a `ws://` URL of this same server; the
websocket says `hello`, carries `events_api` envelopes and `interactive` ones (a click
on a button of a posted message, `block_actions`) of Slack's shape, takes acks
`{"envelope_id": ...}`, and can say `disconnect` or drop the connection). Messages may
carry Block Kit `blocks`, checked against Slack's limits for the blocks Harken uses;
`chat.postEphemeral` and `chat.update` are recorded apart from the posts.

By default a new Socket Mode connection replaces the last. With `connections=N` the fake
keeps up to N open at once (Slack allows an app 10), as when several Harken processes
share one app: each envelope goes to one of them chosen at random, and with
`duplicate_rate` to a second one too (Slack may deliver an event to more than one).

It runs on a thread of its own with its own event loop; every control method is safe
to call from the test's thread. Everything it sees (posts, acks, connections, calls) is
recorded and can be waited for with a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_TOKEN = "xoxb-1111-2222-fakebottoken"
APP_TOKEN = "xapp-1-A1111-3333-fakeapptoken"
BOT_USER_ID = "UHARKEN01"
BOT_ID = "BHARKEN01"
TEAM_ID = "T0FAKE001"
APP_ID = "A0FAKE001"
MAX_TEXT = 40_000
"""Slack's hard limit on a message's text."""


@dataclass(frozen=True)
class Post:
    """One `chat.postMessage` the fake accepted (or `chat.postEphemeral`, `chat.update`)."""

    channel: str
    text: str
    thread_ts: str | None
    at: float
    """`time.monotonic()` when it arrived."""
    ts: str = ""
    """The message's id in its channel, as Slack answered it."""
    blocks: list[Any] | None = None
    user: str | None = None
    """For an ephemeral message: the one person who sees it."""

    def buttons(self) -> dict[str, str]:
        """Label -> value of every button in the message's actions blocks."""
        return {
            element["text"]["text"]: element["value"]
            for block in self.blocks or []
            if block.get("type") == "actions"
            for element in block["elements"]
        }


@dataclass
class _Bucket:
    rate: float
    burst: float
    tokens: float
    updated: float = field(default_factory=time.monotonic)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FakeSlack:
    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        channel_limit: tuple[float, float] | None = None,
        connections: int = 1,
        duplicate_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """`users`: user id -> display name known to `users.info` (others are unknown).

        `channel_limit`: (messages per second, burst) per channel for `chat.postMessage`;
        beyond it the fake answers 429 as Slack does. None: no limit.

        `connections`: Socket Mode connections kept open at once (the oldest is closed
        beyond it); `duplicate_rate`: the share of envelopes sent to two of them.
        """
        if not 1 <= connections <= 10:
            raise ValueError("Slack keeps 1 to 10 Socket Mode connections per app")
        self.keep_connections = connections
        self.duplicate_rate = duplicate_rate
        self._random = random.Random(seed)
        self.users = dict(users or {"U0ALICE01": "Alice", "U0BOB0001": "Bob"})
        self.channel_limit = channel_limit
        self.on_post: Callable[[Post], None] | None = None
        """Called on the fake's loop for every accepted post (benchmarks)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fake-slack", daemon=True)
        self._changed = threading.Condition()
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        """Open Socket Mode connections, oldest first."""
        self.delivered: dict[str, list[int]] = {}
        """Envelope id -> the connections (numbered from 1 as they opened) it went to."""
        self._numbers: dict[int, int] = {}
        self._ticks = itertools.count(1)
        self._buckets: dict[str, _Bucket] = {}
        self.port = 0
        # Recorded (under _changed):
        self.posts: list[Post] = []
        self.ephemerals: list[Post] = []
        self.updates: list[Post] = []
        self.acks: dict[str, float] = {}
        self.sent: dict[str, float] = {}
        self.connections = 0
        self.rate_limited = 0
        self._cut_next = 0
        self.calls: Counter[str] = Counter()
        self.frames_in: list[Any] = []
        self._limit_next = 0
        self._retry_after = 1
        self._refuse_next: list[tuple[int, str]] = []
        self.record_requests = False
        """When set, every Web API request is kept in `requests` (method, headers, body)."""
        self.requests: list[tuple[str, dict[str, str], bytes]] = []

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def start(self) -> FakeSlack:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    @property
    def _ws(self) -> web.WebSocketResponse | None:
        """The newest open connection."""
        return self._sockets[-1] if self._sockets else None

    async def _shutdown(self) -> None:
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- Web API ----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    args.update(body)
            else:
                args.update(await request.post())
        if self.record_requests:
            raw = await request.read() if request.body_exists else b""  # read once, kept
            with self._changed:
                self.requests.append((method, dict(request.headers), raw))
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        with self._changed:
            self.calls[method] += 1
        handler = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.postEphemeral": self._post_ephemeral,
            "chat.update": self._update,
            "users.info": self._users_info,
            "conversations.open": self._conversations_open,
        }.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        response = handler(token, args)
        with self._changed:
            cut = method == "chat.postMessage" and self._cut_next > 0 and response.status == 200
            if cut:
                self._cut_next -= 1
        if cut:
            return await self._cut_answer(request, response)
        return response

    async def _cut_answer(self, request: web.Request, response: web.Response) -> web.StreamResponse:
        """Send the status line, the headers and part of the body, then drop the TCP
        connection: the request was carried out, its answer never arrives whole."""
        body = response.body if isinstance(response.body, bytes) else b""
        partial = web.StreamResponse(status=response.status)
        partial.content_type = "application/json"
        partial.content_length = len(body)
        await partial.prepare(request)
        await partial.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.abort()
        return partial

    def _auth_test(self, token: str, args: dict[str, Any]) -> web.Response:
        if token != BOT_TOKEN:
            return _error("invalid_auth" if token else "not_authed")
        return web.json_response(
            {
                "ok": True,
                "url": "https://fake.slack.com/",
                "team": "Fake Team",
                "user": "harken",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        )

    def _connections_open(self, token: str, args: dict[str, Any]) -> web.Response:
        if token == BOT_TOKEN:
            return _error("not_allowed_token_type")
        if token != APP_TOKEN:
            return _error("invalid_auth" if token else "not_authed")
        ticket = uuid.uuid4().hex
        return web.json_response(
            {"ok": True, "url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id=x"}
        )

    def _post_message(self, token: str, args: dict[str, Any]) -> web.Response:
        if token != BOT_TOKEN:
            return _error("invalid_auth")
        channel, text = args.get("channel"), args.get("text")
        if not channel:
            return _error("channel_not_found")
        if not isinstance(text, str) or not text:
            return _error("no_text")
        if len(text) > MAX_TEXT:
            return _error("msg_too_long")
        try:
            blocks = _blocks(args.get("blocks"))
        except ValueError:
            return _error("invalid_blocks")
        limited = False
        with self._changed:
            refusal = self._refuse_next.pop(0) if self._refuse_next else None
        if refusal is not None:
            status, code = refusal
            return web.json_response({"ok": False, "error": code}, status=status)
        with self._changed:
            if self._limit_next > 0:
                self._limit_next -= 1
                limited = True
            elif self.channel_limit is not None:
                bucket = self._buckets.get(channel)
                if bucket is None:
                    rate, burst = self.channel_limit
                    bucket = self._buckets[channel] = _Bucket(rate, burst, burst)
                limited = not bucket.take()
            if limited:
                self.rate_limited += 1
                self._changed.notify_all()
        if limited:
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(self._retry_after)},
            )
        thread = args.get("thread_ts")
        ts = self._ts()
        post = Post(
            str(channel), text, str(thread) if thread else None, time.monotonic(), ts, blocks
        )
        with self._changed:
            self.posts.append(post)
            self._changed.notify_all()
        if self.on_post is not None:
            self.on_post(post)
        return web.json_response(
            {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"type": "message", "text": text, "user": BOT_USER_ID, "ts": ts},
            }
        )

    def _post_ephemeral(self, token: str, args: dict[str, Any]) -> web.Response:
        if token != BOT_TOKEN:
            return _error("invalid_auth")
        channel, user, text = args.get("channel"), args.get("user"), args.get("text")
        if not channel:
            return _error("channel_not_found")
        if not user:
            return _error("user_not_in_channel")
        if not isinstance(text, str) or not text:
            return _error("no_text")
        thread = args.get("thread_ts")
        ts = self._ts()
        post = Post(
            str(channel), text, str(thread) if thread else None, time.monotonic(), ts, None, user
        )
        with self._changed:
            self.ephemerals.append(post)
            self._changed.notify_all()
        return web.json_response({"ok": True, "message_ts": ts})

    def _update(self, token: str, args: dict[str, Any]) -> web.Response:
        if token != BOT_TOKEN:
            return _error("invalid_auth")
        channel, ts, text = args.get("channel"), args.get("ts"), args.get("text")
        try:
            blocks = _blocks(args.get("blocks"))
        except ValueError:
            return _error("invalid_blocks")
        with self._changed:
            known = any(p.channel == channel and p.ts == ts for p in self.posts)
        if not known:
            return _error("message_not_found")
        post = Post(str(channel), str(text or ""), None, time.monotonic(), str(ts), blocks)
        with self._changed:
            self.updates.append(post)
            self._changed.notify_all()
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "text": text})

    def _users_info(self, token: str, args: dict[str, Any]) -> web.Response:
        if token != BOT_TOKEN:
            return _error("invalid_auth")
        user = str(args.get("user", ""))
        name = self.users.get(user)
        if name is None:
            return _error("user_not_found")
        return web.json_response(
            {
                "ok": True,
                "user": {
                    "id": user,
                    "team_id": TEAM_ID,
                    "name": name.lower(),
                    "real_name": f"{name} Example",
                    "is_bot": False,
                    "profile": {"display_name": name, "real_name": f"{name} Example"},
                },
            }
        )

    def _conversations_open(self, token: str, args: dict[str, Any]) -> web.Response:
        if token != BOT_TOKEN:
            return _error("invalid_auth")
        users = str(args.get("users", ""))
        if not users:
            return _error("users_list_not_supplied")
        return web.json_response({"ok": True, "channel": {"id": "D" + users.split(",", 1)[0][1:]}})

    # --- Socket Mode ------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        while len(self._sockets) > self.keep_connections:
            old = self._sockets.pop(0)
            if not old.closed:
                await old.close()
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": APP_ID},
                }
            )
        )
        with self._changed:
            self.connections += 1
            self._numbers[id(ws)] = self.connections
            self._changed.notify_all()
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(frame.data)
            except ValueError:
                data = frame.data
            with self._changed:
                self.frames_in.append(data)
                if isinstance(data, dict) and "envelope_id" in data:
                    self.acks[str(data["envelope_id"])] = time.monotonic()
                self._changed.notify_all()
        with self._changed:
            if ws in self._sockets:
                self._sockets.remove(ws)
            self._changed.notify_all()
        return ws

    def _ts(self) -> str:
        return f"{int(time.time())}.{next(self._ticks):06d}"

    def envelope(
        self,
        event: Mapping[str, Any],
        *,
        event_id: str | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> dict[str, Any]:
        """An `events_api` envelope around `event`, shaped as Slack sends it."""
        return {
            "envelope_id": str(uuid.uuid4()),
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
            "payload": {
                "token": "verification-token",
                "team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "event": dict(event),
                "type": "event_callback",
                "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
                "event_time": int(time.time()),
                "authorizations": [{"team_id": TEAM_ID, "user_id": BOT_USER_ID, "is_bot": True}],
                "is_ext_shared_channel": False,
            },
        }

    def message_event(
        self,
        text: str,
        *,
        user: str = "U0ALICE01",
        channel: str = "D0ALICE01",
        channel_type: str = "im",
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A `message` event as Slack sends it for what a person typed."""
        ts = self._ts()
        event: dict[str, Any] = {
            "type": "message",
            "client_msg_id": str(uuid.uuid4()),
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "team": TEAM_ID,
            "channel": channel,
            "channel_type": channel_type,
            "blocks": [
                {
                    "type": "rich_text",
                    "block_id": "b1",
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                    ],
                }
            ],
        }
        if thread_ts is not None:
            event["thread_ts"] = thread_ts
        event.update(extra)
        return event

    def click(
        self, post: Post, label: str, *, user: str = "U0ALICE01", retry: bool = False
    ) -> dict[str, Any]:
        """`user` clicks the button labelled `label` under a posted message: send the
        `interactive` envelope (a `block_actions` payload) Slack sends; return it."""
        assert post.blocks, "the message has no blocks"
        block, button = next(
            (block, element)
            for block in post.blocks
            if block.get("type") == "actions"
            for element in block["elements"]
            if element["text"]["text"] == label
        )
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": post.ts,
            "channel_id": post.channel,
            "is_ephemeral": False,
        }
        message: dict[str, Any] = {
            "bot_id": BOT_ID,
            "type": "message",
            "text": post.text,
            "user": BOT_USER_ID,
            "ts": post.ts,
            "team": TEAM_ID,
            "blocks": post.blocks,
        }
        if post.thread_ts:
            container["thread_ts"] = message["thread_ts"] = post.thread_ts
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": "verification-token",
            "container": container,
            "trigger_id": f"{next(self._ticks)}.{TEAM_ID}.{uuid.uuid4().hex}",
            "team": {"id": TEAM_ID, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": post.channel, "name": "directmessage"},
            "message": message,
            "state": {"values": {}},
            "response_url": f"http://127.0.0.1:{self.port}/actions/{uuid.uuid4().hex}",
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": block.get("block_id", ""),
                    "text": button["text"],
                    "value": button.get("value"),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "payload": payload,
            "type": "interactive",
            "accepts_response_payload": False,
        }
        return self.send_envelope(envelope)

    def say(self, text: str, *, to: int | None = None, **where: Any) -> dict[str, Any]:
        """Send what a person typed (a `message` event); return the envelope sent.
        `to`: the number of the connection it goes to (else the fake chooses)."""
        return self.send_envelope(self.envelope(self.message_event(text, **where)), to=to)

    def send_envelope(
        self, envelope: Mapping[str, Any], timeout: float = 10, *, to: int | None = None
    ) -> dict[str, Any]:
        self.send_raw(json.dumps(envelope), timeout, to=to)
        return dict(envelope)

    def send_raw(self, text: str, timeout: float = 10, *, to: int | None = None) -> None:
        """Send a text frame down the current Socket Mode connection (with several: one
        chosen at random, or two at `duplicate_rate`; connection number `to` if given)."""
        self.wait_connections(1, timeout)

        async def send() -> list[int]:
            targets = self._targets(to)
            if not targets:
                raise ConnectionError("no Socket Mode connection")
            for ws in targets:
                await ws.send_str(text)
            return [self._numbers.get(id(ws), 0) for ws in targets]

        sent_at = time.monotonic()
        numbers = asyncio.run_coroutine_threadsafe(send(), self._loop).result(timeout)
        try:
            envelope_id = json.loads(text).get("envelope_id")
        except (ValueError, AttributeError):
            envelope_id = None
        if envelope_id:
            with self._changed:
                self.sent[str(envelope_id)] = sent_at
                self.delivered[str(envelope_id)] = numbers

    def _targets(self, to: int | None = None) -> list[web.WebSocketResponse]:
        """On the loop: the connection(s) the next envelope goes to."""
        open_ = [ws for ws in self._sockets if not ws.closed]
        if to is not None:
            return [ws for ws in open_ if self._numbers.get(id(ws)) == to]
        if len(open_) <= 1 or self.keep_connections == 1:
            return open_[-1:]
        count = 2 if self._random.random() < self.duplicate_rate else 1
        return self._random.sample(open_, count)

    def call_soon(self, func: Callable[[], None]) -> None:
        """Run `func` on the fake's loop (where `on_post` runs too)."""
        self._loop.call_soon_threadsafe(func)

    async def send_now(self, text: str) -> None:
        """On the fake's own loop (from `on_post`): send a frame without a thread hop."""
        for ws in self._targets():
            await ws.send_str(text)

    def redeliver(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """Send an envelope again as Slack does when it saw no ack: same event, new id."""
        again = json.loads(json.dumps(envelope))
        again["envelope_id"] = str(uuid.uuid4())
        again["retry_attempt"] = int(envelope.get("retry_attempt", 0)) + 1
        again["retry_reason"] = "timeout"
        return self.send_envelope(again)

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does every few hours."""
        self.send_raw(json.dumps({"type": "disconnect", "reason": reason, "debug_info": {}}))

    def drop(self, timeout: float = 10) -> None:
        """Cut the current connection without a close frame (a network failure)."""

        async def cut() -> None:
            ws = self._ws
            if ws is not None:
                self._sockets.remove(ws)
            transport = ws._req.transport if ws is not None and ws._req is not None else None
            if transport is not None:
                transport.abort()

        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(timeout)

    def cut_next_answer(self) -> None:
        """Carry out the next successful `chat.postMessage`, then cut its answer off
        halfway through the body (as a connection that drops at the wrong moment)."""
        with self._changed:
            self._cut_next += 1

    def rate_limit_next(self, count: int, retry_after: int = 1) -> None:
        """Answer the next `count` `chat.postMessage` calls with 429 and `Retry-After`."""
        with self._changed:
            self._limit_next = count
            self._retry_after = retry_after

    def refuse_next(self, error: str = "channel_not_found", status: int = 200) -> None:
        """Answer the next `chat.postMessage` (after any queued before) with an error:
        `{"ok": false, "error": error}` and HTTP `status` (200 as Slack refuses, 5xx as
        a server failing)."""
        with self._changed:
            self._refuse_next.append((status, error))

    # --- waiting ----------------------------------------------------------------------------

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(ready, timeout):
                raise TimeoutError(f"fake Slack: no {what} within {timeout} s")

    def wait_connections(self, count: int, timeout: float = 10) -> None:
        """Wait until `count` Socket Mode connections have been opened in all."""
        self._wait(
            lambda: self.connections >= count and self._ws is not None,
            timeout,
            f"Socket Mode connection #{count}",
        )

    def open_connections(self) -> list[int]:
        """The numbers of the connections open now."""
        with self._changed:
            return [self._numbers[id(ws)] for ws in self._sockets if not ws.closed]

    def wait_open(self, count: int, timeout: float = 10) -> None:
        """Wait until exactly `count` Socket Mode connections are open."""
        self._wait(
            lambda: sum(not ws.closed for ws in self._sockets) == count,
            timeout,
            f"{count} open Socket Mode connections",
        )

    def wait_posts(self, count: int, timeout: float = 10) -> list[Post]:
        """Wait for at least `count` posts in all; return every post so far."""
        self._wait(lambda: len(self.posts) >= count, timeout, f"{count} posts")
        with self._changed:
            return list(self.posts)

    def wait_post(
        self, predicate: Callable[[Post], bool], timeout: float = 10, what: str = "matching post"
    ) -> Post:
        found: list[Post] = []

        def ready() -> bool:
            found[:] = [p for p in self.posts if predicate(p)]
            return bool(found)

        self._wait(ready, timeout, what)
        return found[0]

    def wait_acked(self, envelope_id: str, timeout: float = 10) -> float:
        """Wait for the ack of an envelope; return when it arrived (monotonic)."""
        self._wait(lambda: envelope_id in self.acks, timeout, f"ack of {envelope_id}")
        return self.acks[envelope_id]

    def wait_ephemeral(
        self, predicate: Callable[[Post], bool], timeout: float = 10, what: str = "ephemeral"
    ) -> Post:
        found: list[Post] = []

        def ready() -> bool:
            found[:] = [p for p in self.ephemerals if predicate(p)]
            return bool(found)

        self._wait(ready, timeout, what)
        return found[0]

    def wait_update(self, ts: str, timeout: float = 10) -> Post:
        """Wait for a `chat.update` of the message `ts`; return the first."""
        found: list[Post] = []

        def ready() -> bool:
            found[:] = [p for p in self.updates if p.ts == ts]
            return bool(found)

        self._wait(ready, timeout, f"update of {ts}")
        return found[0]

    def posts_to(self, channel: str) -> list[Post]:
        with self._changed:
            return [p for p in self.posts if p.channel == channel]


def _error(code: str) -> web.Response:
    return web.json_response({"ok": False, "error": code})


def _blocks(raw: object) -> list[Any] | None:
    """The message's blocks (None without any); ValueError when Slack would answer
    `invalid_blocks`. Checked for sections, actions blocks of buttons, context blocks and rich
    text, the limits Slack documents (text, ids, values, elements per block)."""
    if raw is None:
        return None
    if isinstance(raw, str):  # form-encoded requests carry them as JSON text
        raw = json.loads(raw)
    if not isinstance(raw, list) or not 0 < len(raw) <= 50:
        raise ValueError
    for block in raw:
        if not isinstance(block, dict) or len(str(block.get("block_id", ""))) > 255:
            raise ValueError
        kind = block.get("type")
        if kind == "section":
            text = block.get("text")
            if not (isinstance(text, dict) and 0 < len(str(text.get("text", ""))) <= 3000):
                raise ValueError
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 0 < len(elements) <= 25:
                raise ValueError
            ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
            if len(ids) != len(elements) or len(set(ids)) != len(ids):
                raise ValueError
            for button in elements:
                label = button.get("text")
                if button.get("type") != "button" or not isinstance(label, dict):
                    raise ValueError
                if label.get("type") != "plain_text" or not 0 < len(label.get("text", "")) <= 75:
                    raise ValueError
                if len(str(button.get("value", ""))) > 2000:
                    raise ValueError
        elif kind == "context":
            if not isinstance(block.get("elements"), list) or not block["elements"]:
                raise ValueError
        elif kind != "rich_text":
            raise ValueError
    return raw
