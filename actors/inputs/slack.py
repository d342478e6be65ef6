"""The Slack input: events over Socket Mode, replies over the Web API, with slack-sdk.

Socket Mode needs no public URL: Slack pushes events down a websocket (app token), and
replies go out through the Web API (bot token). Everything that touches the network
runs on one asyncio loop, on a thread the input owns; replies reach it from workers
through `call_soon_threadsafe`, which wakes the loop at once. `slack_intake` turns
envelopes into events, `slack_outbox` posts replies, `slack_options` checks the
settings and `slack_text` converts text (ARCHITECTURE.md, "The Slack input").

With `[cluster] enabled`, Slack may hand an event to any process's connection (and
more than one): each event is handed to the router only by the process that claims it
in the shared database (`actors.claims.ClaimQueue`, keyed by channel and ts), and its
envelope is acknowledged only once the claim is made (won or lost): if the claim fails,
Slack gets no ack and delivers the envelope again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.error
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.web.async_client import AsyncWebClient

from actors.claim_outcome import Claim
from actors.errors import StartupError
from actors.inputs.base import RepliesInput
from actors.inputs.slack_intake import Intake, claim_key
from actors.inputs.slack_options import SlackOptions
from actors.inputs.slack_outbox import Outbox, answer_tracing, why
from config.inputs import input_env_var
from core.event import Event

if TYPE_CHECKING:
    from actors.claims import Claims
    from actors.runtime import Runtime
    from actors.supervision import Handle
    from config.settings import InputSettings

logger = logging.getLogger(__name__)
_web_logger = logging.getLogger(__name__ + ".web")
_socket_logger = logging.getLogger(__name__ + ".socket")
# The start-up check reports a failure as one line (StartupError); slack-sdk would log
# the same failure again, with a traceback, before it.
_preflight_logger = logging.getLogger(__name__ + ".preflight")
_preflight_logger.setLevel(logging.CRITICAL)

WEB_TIMEOUT = 30.0
"""Seconds a Web API call may take in all before it counts as a network failure."""
STOP_GRACE = 5.0
"""On stop, how long replies still queued get to go out."""
CONNECTION_CHECK_SECONDS = 1.0
"""How often the input checks whether its Socket Mode connection is up."""


class SlackInput(RepliesInput):
    """Harken on Slack: answers DMs, mentions, the prefix in channels, and button clicks."""

    options_class = SlackOptions

    @classmethod
    def preflight(cls, settings: InputSettings) -> None:
        """Check options and both tokens against Slack before anything starts."""
        options = SlackOptions.of(settings)
        url = options.api_url
        bot_token, app_token = options.bot_token.reveal(), options.app_token.reveal()
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

    def __init__(self, settings: InputSettings, runtime: Runtime, router: Handle) -> None:
        super().__init__(settings, runtime, router)
        self.options = SlackOptions.of(settings)
        self._bot_token = self.options.bot_token.reveal()
        self._app_token = self.options.app_token.reveal()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"slack-loop:{settings.name}", daemon=True
        )
        # Loop-thread state: touched only by coroutines and callbacks on the loop.
        self._session: aiohttp.ClientSession | None = None
        self._socket: SocketModeClient | None = None
        self._intake: Intake | None = None
        self._outbox: Outbox | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._claims: Claims | None = None
        # Replies from other threads wait here; one loop wake-up takes all that came.
        self._replies: deque[Event] = deque()
        self._replies_lock = threading.Lock()
        self._flush_pending = False

    # --- actor thread -------------------------------------------------------------------

    def on_start(self) -> None:
        self.report_connected(False)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop)

    def release(self) -> None:
        # On a crash too: the replacement opens a connection of its own.
        self._close()

    def _deliver(self, events: tuple[Event, ...]) -> None:
        """Hand replies to the loop (from any thread); it is woken once per batch."""
        self._replies.extend(events)
        with self._replies_lock:
            if self._flush_pending:
                return
            self._flush_pending = True
        try:
            self._loop.call_soon_threadsafe(self._flush_replies)
        except RuntimeError:
            logger.warning("Slack input is stopping; %d message(s) not sent", len(self._replies))

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

    # --- loop thread --------------------------------------------------------------------

    async def _start(self) -> None:
        self._connecting = asyncio.current_task()
        ready = asyncio.Event()
        # One session for the input's life: calls reuse kept-alive connections instead of
        # paying a new one (and, on real Slack, a TLS handshake) each. The timeout is the
        # session's: slack-sdk applies its own only to sessions it makes.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=WEB_TIMEOUT), trace_configs=[answer_tracing()]
        )
        if _web_logger.level == logging.NOTSET:
            # slack-sdk formats a debug line for every call unless the logger it is given
            # has a level of its own; the effective level is what was meant.
            _web_logger.setLevel(_web_logger.getEffectiveLevel())

        def client(**extra: Any) -> AsyncWebClient:
            return AsyncWebClient(
                token=self._bot_token,
                base_url=self.options.api_url,
                session=self._session,
                logger=_web_logger,
                timeout=int(WEB_TIMEOUT),
                **extra,
            )

        web = client()
        claims = await self._open_claims()
        # The outbox retries posts itself: it knows whether Slack began to answer.
        self._outbox = Outbox(client(retry_handlers=[]), self.options, ready, self._spawn)
        self._intake = Intake(
            input_name=self.name,
            bot_name=self.runtime.settings.bot.name,
            prefix=self.options.prefix,
            web=web,
            outbox=self._outbox,
            submit=self.submit,
            spawn=self._spawn,
            hear_all=self.hears_all(),
        )
        if claims is not None:
            self._intake.claim = self._claim_queue(claims, self._intake.admit)
        self._flush_replies()  # any that came before the outbox was there
        await self._identify(web)
        ready.set()
        self._socket = SocketModeClient(
            self._app_token,
            web_client=web,
            logger=_socket_logger,
            ping_interval=self.options.ping_interval,
        )
        self._socket.message_listeners.append(self._on_frame)
        await self._socket.connect()  # type: ignore[no-untyped-call]
        self._connecting = None
        self._spawn(self._watch_connection(self._socket))

    async def _open_claims(self) -> Claims | None:
        """In a cluster, the claims, open (waiting for the database); else None."""
        from actors.claims import claims_url

        url = claims_url(self.runtime.settings)
        if url is None:
            return None
        from actors.claims import Claims, Complaints

        claims = Claims(url, self.runtime.settings.cluster.process_name())
        complaints = Complaints(f"{self.name}: cannot open the cluster's claims")
        while True:
            try:
                await claims.open()
                break
            except Exception as exc:  # psycopg's, the pool's timeout: try again
                complaints.failed(str(exc).strip() or type(exc).__name__)
                await asyncio.sleep(2.0)
        self._claims = claims
        return claims

    def _claim_queue(
        self, claims: Claims, admit: Callable[[Event], None]
    ) -> Callable[[Event], asyncio.Future[Claim]]:
        """Where intake puts events up to be claimed; those won go on to `admit`."""
        from actors.claims import ClaimQueue

        metrics, name = self.runtime.metrics, self.name
        queue: ClaimQueue[Event] = ClaimQueue(
            claims,
            name,
            claim_key,
            admit,
            on_conflicts=lambda count: metrics.claim_conflicts(name, count),
            on_failures=lambda count: metrics.claim_failures(name, count),
            unclaimed="not acknowledged (Slack delivers them again)",
        )
        self._spawn(queue.run())
        return queue.put

    async def _identify(self, web: AsyncWebClient) -> None:
        """Learn the bot's own user id (to ignore its own messages, to see mentions)."""
        assert self._intake is not None
        delay = 1.0
        while True:
            try:
                identity = await web.auth_test()
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                logger.warning(
                    "Slack auth.test failed (%s); trying again in %.0f s", why(exc), delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
                continue
            self._intake.bot_user_id = str(identity.get("user_id") or "")
            logger.info("Slack input is %s (%s)", identity.get("user"), identity.get("user_id"))
            return

    async def _watch_connection(self, socket: SocketModeClient) -> None:
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

    async def _on_frame(
        self, client: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        envelope_id = message.get("envelope_id")
        claim = None
        try:
            assert self._intake is not None
            claim = self._intake.take(message, raw)
        except Exception:
            # A frame we cannot make sense of must not take the input down, nor be
            # re-delivered forever: log it, acknowledge it, carry on.
            logger.exception("could not handle a Socket Mode envelope; acknowledged and dropped")
        if claim is not None and await asyncio.shield(claim) is Claim.FAILED:
            # In a cluster, the claim failed (the database away; counted and logged by
            # the claim queue), so nothing was handed over: no ack, and Slack delivers
            # the envelope again, here or to another process.
            return
        if isinstance(envelope_id, str) and envelope_id:
            try:
                await client.send_socket_mode_response({"envelope_id": envelope_id})
            except (ConnectionError, aiohttp.ClientError) as exc:
                # The socket went away; Slack re-delivers the envelope on the next one and
                # the event id check drops the copy.
                logger.warning("could not acknowledge envelope %.40s (%s)", envelope_id, exc)

    def _flush_replies(self) -> None:
        with self._replies_lock:
            self._flush_pending = False
        replies, outbox = self._replies, self._outbox
        if outbox is None:  # not started yet: `_start` flushes them
            return
        while replies:
            outbox.send(replies.popleft())

    async def _shutdown(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        deadline = time.monotonic() + STOP_GRACE
        outbox = self._outbox
        while outbox is not None and outbox.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = outbox.pending() if outbox is not None else 0
        if left:
            logger.warning("Slack input stopped with %d message(s) not sent", left)
        for task in list(self._tasks):
            task.cancel()
        if self._socket is not None:
            await self._socket.close()  # type: ignore[no-untyped-call]
        if self._session is not None:
            await self._session.close()
        if self._claims is not None:
            await self._claims.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


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
