"""A small asyncio HTTP/1.1 client that POSTs a body over kept-alive connections.

The Slack input posts every reply (`chat.postMessage`) from its one loop thread, and
that thread is what limits how many messages Harken answers a second. aiohttp's
`ClientSession.post` spends 105-145 µs of CPU on a small JSON request (request and
response objects, multidict headers, timers, the cookie jar); this client does the one
thing the input needs, on an `asyncio.Protocol`, for about half of that (55-70 µs).

What it does:

* `POST` a body with headers fixed per `Target` (encoded once, not per request), and
  return the status, the headers (names lower-cased) and the body as `Response`;
* keep-alive connections, pooled per (scheme, host, port): an idle connection is used
  again (the one used last first, the least likely to have been closed by the server;
  none idle longer than `idle_timeout`, as aiohttp's), at most `max_connections` are
  open to one place, and callers beyond that wait for one in the order they came;
* https through the `ssl.SSLContext` it is given (else a default, verifying one), http
  in the clear;
* responses framed by `Content-Length`, by `Transfer-Encoding: chunked`, or (over
  http only: over TLS asyncio cannot tell a close from a cut) by the server closing;
  `Connection: close` (and HTTP/1.0) honoured; bodies in `gzip` or `deflate` decoded
  (the request says it accepts them, as aiohttp's does);
* one deadline per request (`timeout` seconds, covering the wait for a connection,
  connecting and the response), like aiohttp's `ClientTimeout(total=...)`;
* a reused connection that turns out to be closed (the server dropped it while it sat
  idle, as servers do) before any byte of the response came: the request is sent once
  more, on a new connection. Never once a response has begun.

Every failure (cannot connect, timeout, connection lost, a malformed or truncated
response) is an `HttpError` whose text names the server and what went wrong, never a
header (the request's headers carry the bot's token), and which says whether the
response had begun (`answered`: the server had the request, so the caller must not
send it again). No proxies, redirects, cookies or HTTP/2: the Slack input keeps aiohttp
for a configured proxy, and Slack's Web API needs none of the rest.

Not thread-safe: a client belongs to the loop it is first used on.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl as ssl_module
import zlib
from collections import deque
from collections.abc import Mapping
from typing import NamedTuple, cast

import yarl

MAX_CONNECTIONS = 16
"""Connections open at once to one (scheme, host, port), by default."""
IDLE_TIMEOUT = 15.0
"""Seconds an idle connection is used again after, by default (aiohttp's keep-alive
timeout): servers close idle connections too, and one that does so just as a request
goes out makes the request be sent twice, which closing first avoids."""
MAX_HEAD = 64 * 1024
"""Largest response header section accepted (status line and headers)."""
MAX_BODY = 16 * 1024 * 1024
"""Largest response body accepted (a Web API answer is a few KiB)."""
CLOSE_GRACE = 1.0
"""On `close()`, how long connections get to close before they are cut."""
HAPPY_EYEBALLS_DELAY = 0.25
"""When a name has IPv6 and IPv4 addresses, how long one attempt gets before the next."""

_DEFAULT_HEADERS = (("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate"))
"""Added to a target's headers unless given (aiohttp sends the same)."""
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
"""Headers the client writes itself; a target must not set them."""
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")

# What the parser of a connection expects next.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE = range(6)


class HttpError(Exception):
    """A request that got no complete, well-formed response; the text says why.

    The text names the server (host and port) and never a header of the request.
    """

    answered = False
    """Set when the failure came after the response began: the server had the request
    and most likely acted on it, so sending it again would do it twice."""


class _NoResponse(HttpError):
    """The connection was closed before any byte of the response arrived."""

    retry = False
    """Set when the request may be sent again on a new connection (the one it failed
    on was reused); the failed connection's place in the pool is then the caller's."""


class Response(NamedTuple):
    status: int
    headers: Mapping[str, str]
    """Names lower-cased; a repeated header's values joined with ", "."""
    body: bytes
    """Decoded if the server compressed it."""


class Target:
    """A URL to POST to with fixed headers: the request's head, encoded once.

    Made by `HttpClient.target`. Its repr shows the URL only (the headers hold a token).
    """

    __slots__ = ("_head", "_host", "url")

    def __init__(self, url: str, head: bytes, host: _Host) -> None:
        self.url = url
        self._head = head
        self._host = host

    def __repr__(self) -> str:
        return f"Target({self.url!r})"


class _Host:
    """The pool of connections to one (scheme, host, port)."""

    __slots__ = ("conns", "host", "idle", "label", "open", "port", "ssl", "waiters")

    def __init__(self, host: str, port: int, ssl: ssl_module.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.open = 0
        """Places taken: connections open or being opened (at most max_connections)."""
        self.idle: list[_Connection] = []
        self.conns: set[_Connection] = set()
        """Every connection with a transport, idle or busy (for `close`)."""
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        """Callers waiting for a connection, first come first served: each is handed an
        idle connection, or None for a free place to open one in."""

    def release(self, conn: _Connection) -> None:
        """Take back a connection that answered in full and may be used again."""
        if conn.closed:
            self.forget(conn)
            return
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle = True
        conn.idle_since = conn.loop.time()
        self.idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        """A connection is done with (closed, or about to be): its place is free."""
        if not conn.counted:
            return
        conn.counted = False
        self.free_place()

    def free_place(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place passes to them: `open` stays
                return
        self.open -= 1


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, the response parsed as it comes."""

    def __init__(self, host: _Host, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.host = host
        self.loop = loop
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.lost: asyncio.Future[None] = loop.create_future()
        self.idle = False
        self.idle_since = 0.0
        self.counted = True
        """Holds one of its host's places (see `_Host.forget`)."""
        # The exchange under way.
        self._waiter: asyncio.Future[Response] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._retryable = False
        self._started = False
        self._buffer = bytearray()
        self._state = _HEAD
        self._status = 0
        self._headers: dict[str, str] = {}
        self._keep = True
        self._remaining = 0
        self._parts: list[bytes] = []
        self._size = 0

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.host.conns.add(self)

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Nothing was asked: a server that speaks out of turn (a 408 before it
            # closes, say) leaves the connection in a state no one can trust.
            self._discard()
            return
        self._started = True
        self._buffer += data
        try:
            done = self._parse()
        except HttpError as exc:
            self._fail(exc)
            return
        if done:
            self._succeed()

    def eof_received(self) -> bool:
        return False  # close; connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        host = self.host
        host.conns.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        if self.idle:
            self.idle = False
            host.idle.remove(self)
            host.forget(self)
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # between requests: its owner finds it closed
        why = f" ({exc})" if exc is not None else ""
        if self._state == _UNTIL_CLOSE and exc is None and host.ssl is not None:
            # Over TLS, asyncio reports a connection cut without TLS's closing message
            # as a clean end: a body that ends at the close may be a cut one.
            self._fail(HttpError(f"{host.label} ended an answer of unknown length by closing"))
        elif self._state == _UNTIL_CLOSE and exc is None:
            self._parts.append(bytes(self._buffer))
            self._buffer.clear()
            self._succeed()
        elif not self._started:
            self._fail(_NoResponse(f"{host.label} closed the connection before answering{why}"))
        else:
            self._fail(HttpError(f"{host.label} closed the connection mid-response{why}"))

    # --- one exchange -------------------------------------------------------------------

    async def exchange(self, request: bytes, deadline: float, retryable: bool) -> Response:
        """Send `request`; the response, or `HttpError`.

        Whatever happens, the connection's place in the pool is settled before this
        returns or raises: given back (a complete response that allows it), freed, or,
        for a `_NoResponse` with `retry` set, handed to the caller.
        """
        waiter: asyncio.Future[Response] = self.loop.create_future()
        self._waiter = waiter
        self._retryable = retryable
        self._started = False
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            self._fail(_NoResponse(f"{self.host.label} closed the connection before answering"))
        else:
            self._timer = self.loop.call_at(deadline, self._time_out)
            transport.write(request)
        try:
            return await waiter
        except asyncio.CancelledError:
            if self._waiter is waiter:  # cancelled while waiting: nothing will come now
                self._end()
                self._abort()
                self.host.forget(self)
            elif not waiter.cancelled():
                error = waiter.exception()
                if isinstance(error, _NoResponse) and error.retry:
                    error.retry = False
                    self.host.free_place()  # passed to a caller that is gone
            raise

    def _end(self) -> asyncio.Future[Response] | None:
        """The exchange is over: its waiter (to be given the outcome), timer cancelled."""
        waiter = self._waiter
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiter

    def _time_out(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._fail(HttpError(f"no response from {self.host.label} within {self.timeout:g} s"))

    def _succeed(self) -> None:
        headers = self._headers
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        coding = headers.get("content-encoding")
        if coding is not None and body:
            try:
                body = _decode(body, coding)
            except HttpError as exc:
                self._fail(HttpError(f"response from {self.host.label}: {exc}"))
                return
        response = Response(self._status, headers, body)
        keep = self._keep
        self._reset()
        waiter = self._end()
        if keep and not self.closed:
            self.host.release(self)
        else:
            self._close()
            self.host.forget(self)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: HttpError) -> None:
        """End the exchange with `exc`: cut the connection, settle its place."""
        if self._started:
            exc.answered = True
        waiter = self._end()
        self._abort()
        if isinstance(exc, _NoResponse) and self._retryable:
            exc.retry = True
            self.counted = False  # its place passes to the caller, for the new connection
        else:
            self.host.forget(self)
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _reset(self) -> None:
        self._state = _HEAD
        self._headers = {}
        self._keep = True
        self._parts = []
        self._size = 0

    def _discard(self) -> None:
        """Close a connection no one is waiting on, so that it is not used again."""
        self._abort()
        if self.idle:
            self.idle = False
            self.host.idle.remove(self)
            self.host.forget(self)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # --- parsing ------------------------------------------------------------------------

    def _malformed(self, what: str) -> HttpError:
        return HttpError(f"malformed response from {self.host.label}: {what}")

    def _parse(self) -> bool:
        """Take what the buffer holds; True once the response is complete."""
        buf = self._buffer
        while self._state == _HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD:
                if len(buf) > MAX_HEAD:
                    raise self._malformed(f"header section over {MAX_HEAD // 1024} KiB")
                return False
            head = buf[:end].decode("latin-1")
            del buf[: end + 4]
            self._read_head(head)  # an interim response (1xx) leaves the state at _HEAD
        state = self._state
        if state == _LENGTH:
            remaining = self._remaining
            if len(buf) < remaining:
                return False
            self._parts.append(bytes(buf[:remaining]))
            del buf[:remaining]
            return self._done_with(buf)
        if state == _UNTIL_CLOSE:  # the body is whatever comes before the server closes
            if len(buf) > MAX_BODY:
                raise HttpError(f"response body from {self.host.label} over {MAX_BODY} bytes")
            return False
        return self._parse_chunks(buf)

    def _parse_chunks(self, buf: bytearray) -> bool:
        """`Transfer-Encoding: chunked`: sizes in hex, data, then trailers (ignored)."""
        while True:
            state = self._state
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise self._malformed("chunk size line over 1 KiB")
                    return False
                size_text = buf[:end].split(b";", 1)[0].strip(b" \t")
                del buf[: end + 2]
                if not size_text or len(size_text) > 16 or size_text.strip(_HEX_DIGITS):
                    raise self._malformed("invalid chunk size")
                size = int(size_text, 16)
                if size == 0:
                    self._state = _TRAILERS
                    continue
                self._grow(size)
                self._remaining = size
                self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                remaining = self._remaining
                if len(buf) < remaining + 2:
                    return False
                if buf[remaining : remaining + 2] != b"\r\n":
                    raise self._malformed("chunk not followed by CRLF")
                self._parts.append(bytes(buf[:remaining]))
                del buf[: remaining + 2]
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                if buf[:2] == b"\r\n":
                    del buf[:2]
                    return self._done_with(buf)
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise self._malformed(f"trailer section over {MAX_HEAD // 1024} KiB")
                    return False
                del buf[: end + 4]  # trailers carry nothing the client needs
                return self._done_with(buf)

    def _done_with(self, buf: bytearray) -> bool:
        if buf:
            self._keep = False  # bytes past the response: the stream cannot be trusted
        return True

    def _grow(self, size: int) -> None:
        self._size += size
        if self._size > MAX_BODY:
            raise HttpError(f"response body from {self.host.label} over {MAX_BODY} bytes")

    def _read_head(self, head: str) -> None:
        lines = head.split("\r\n")
        if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:
            raise self._malformed("bare CR or LF in the header section")
        match = _STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise self._malformed("the status line is not HTTP/1.0 or HTTP/1.1")
        status = int(match[2])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or " " in name or "\t" in name:
                raise self._malformed("a header line is not `name: value`")
            key = name.lower()
            value = value.strip(" \t")
            old = headers.get(key)
            headers[key] = value if old is None else f"{old}, {value}"
        if status < 200:
            if status == 101:
                raise self._malformed("101 Switching Protocols to a request that asked for none")
            return  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self._status = status
        self._headers = headers
        if match[1] == "0" or "close" in headers.get("connection", "").lower():
            self._keep = False
        if status in (204, 304):
            self._remaining = 0
            self._state = _LENGTH
            return
        coding = headers.get("transfer-encoding")
        length = headers.get("content-length")
        if coding is not None:
            if coding.lower() != "chunked":
                raise self._malformed("a Transfer-Encoding other than chunked")
            if length is not None:
                self._keep = False  # both: the length is ignored, the stream suspect
            self._state = _CHUNK_SIZE
        elif length is not None:
            values = {v.strip(" \t") for v in length.split(",")}
            text = values.pop()
            if values or not (text.isascii() and text.isdigit()):
                raise self._malformed("an invalid Content-Length")
            self._remaining = int(text)
            self._grow(self._remaining)
            self._state = _LENGTH
        else:
            self._keep = False
            self._state = _UNTIL_CLOSE


_HEX_DIGITS = b"0123456789abcdefABCDEF"


def _decode(body: bytes, coding: str) -> bytes:
    coding = coding.strip(" \t").lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif coding == "deflate":
        # Meant to be zlib-wrapped; some servers send it raw.
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise HttpError(f"response body in an encoding it was not offered ({coding[:20]})")
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(body, MAX_BODY + 1)
    except zlib.error as exc:
        raise HttpError(f"cannot decode the {coding} response body ({exc})") from None
    if len(out) > MAX_BODY:
        raise HttpError(f"decoded response body over {MAX_BODY} bytes")
    if not decoder.eof:
        raise HttpError(f"the {coding} response body is truncated")
    return out


def _expire(waiter: asyncio.Future[_Connection | None], label: str, timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(HttpError(f"no connection to {label} free within {timeout:g} s"))


class HttpClient:
    """POSTs over pooled keep-alive HTTP/1.1 connections (see the module docstring).

    `timeout`: seconds a request may take in all. `ssl`: the context for https (None:
    a default, verifying one). `max_connections`: open at once to one host and port.
    `idle_timeout`: seconds after which an idle connection is closed rather than used.
    """

    def __init__(
        self,
        *,
        timeout: float,
        ssl: ssl_module.SSLContext | None = None,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 (got {timeout})")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1 (got {max_connections})")
        if not idle_timeout >= 0:
            raise ValueError(f"idle_timeout must be >= 0 (got {idle_timeout})")
        self._timeout = timeout
        self._ssl = ssl
        self._max = max_connections
        self._idle_timeout = idle_timeout
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        self._closed = False

    def target(self, url: str, headers: Mapping[str, str]) -> Target:
        """Where to POST, with these headers on every request.

        The client adds `Host`, `Content-Length`, and `Accept: */*` and `Accept-Encoding:
        gzip, deflate` unless given. A header it writes itself, a malformed name, or a
        value with a line break is a `ValueError` (naming the header, not its value).
        """
        parsed = yarl.URL(url)
        scheme = parsed.scheme
        host = parsed.raw_host
        port = parsed.port
        if scheme not in ("http", "https") or not host or port is None:
            raise ValueError(f"not an http(s) URL with a host: {url!r}")
        lines = [f"POST {parsed.raw_path_qs} HTTP/1.1", f"Host: {parsed.host_port_subcomponent}"]
        given = set()
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _OWN_HEADERS:
                raise ValueError(f"the client writes the {name} header itself")
            if _BAD_VALUE.search(value):
                raise ValueError(f"the value of header {name} has a control character")
            given.add(name.lower())
            lines.append(f"{name}: {value}")
        lines.extend(f"{n}: {v}" for n, v in _DEFAULT_HEADERS if n.lower() not in given)
        lines.append("Content-Length: ")
        head = "\r\n".join(lines).encode("utf-8")
        key = (scheme, host, port)
        pool = self._hosts.get(key)
        if pool is None:
            context = None
            if scheme == "https":
                context = self._ssl if self._ssl is not None else _default_ssl_context()
            pool = self._hosts[key] = _Host(host, port, context)
        return Target(str(parsed.with_query(None).with_fragment(None)), head, pool)

    @property
    def open_connections(self) -> int:
        """Connections open now, to every host (being opened ones included)."""
        return sum(host.open for host in self._hosts.values())

    @property
    def waiting(self) -> int:
        """Requests waiting for a connection (every host's at their limit)."""
        return sum(not w.done() for host in self._hosts.values() for w in host.waiters)

    async def post(self, target: Target, body: bytes) -> Response:
        """POST `body` to `target`: the response, whatever its status, or `HttpError`."""
        if self._closed:
            raise HttpError(f"the client for {target._host.label} is closed")
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + self._timeout
        request = b"%s%d\r\n\r\n%s" % (target._head, len(body), body)
        host = target._host
        conn: _Connection | None = None
        if not host.waiters:
            idle = host.idle
            fresh_since = now - self._idle_timeout
            while idle:
                candidate = idle.pop()
                candidate.idle = False
                if not candidate.closed and candidate.idle_since > fresh_since:
                    conn = candidate
                    break
                candidate._close()
                host.forget(candidate)
        if conn is not None:
            reused = True
        else:
            conn, reused = await self._acquire(host, loop, deadline)
        try:
            return await conn.exchange(request, deadline, reused)
        except _NoResponse as exc:
            if not exc.retry:
                raise
        # A connection the server had closed while it sat idle: its place is ours now.
        conn = await self._open(host, loop, deadline)
        return await conn.exchange(request, deadline, False)

    async def _acquire(
        self, host: _Host, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> tuple[_Connection, bool]:
        """A connection and whether it was used before: opened in a free place, or
        handed over by a request that finished, after those who waited longer."""
        if not host.waiters and host.open < self._max:
            host.open += 1
            return await self._open(host, loop, deadline), False
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        host.waiters.append(waiter)
        timer = loop.call_at(deadline, _expire, waiter, host.label, self._timeout)
        try:
            got = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over as the caller was cancelled: pass it on
                if handed is None:
                    host.free_place()
                else:
                    host.release(handed)
            elif waiter in host.waiters:
                host.waiters.remove(waiter)
            raise
        finally:
            timer.cancel()
        if got is None:
            return await self._open(host, loop, deadline), False
        return got, True

    async def _open(
        self, host: _Host, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> _Connection:
        """A new connection in a place the caller holds (freed again if this fails)."""
        conn = _Connection(host, loop, self._timeout)
        try:
            if self._closed:
                raise HttpError(f"the client for {host.label} is closed")
            async with asyncio.timeout_at(deadline):
                await loop.create_connection(
                    lambda: conn,
                    host.host,
                    host.port,
                    ssl=host.ssl,
                    server_hostname=host.host if host.ssl is not None else None,
                    happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY,
                )
        except TimeoutError:
            host.forget(conn)
            raise HttpError(f"cannot connect to {host.label} within {self._timeout:g} s") from None
        except OSError as exc:
            host.forget(conn)
            raise HttpError(f"cannot connect to {host.label} ({exc})") from None
        except BaseException:
            host.forget(conn)
            raise
        if self._closed:
            conn._abort()
            host.forget(conn)
            raise HttpError(f"the client for {host.label} is closed")
        return conn

    async def close(self) -> None:
        """Close every connection; requests still waiting or under way fail."""
        self._closed = True
        conns: list[_Connection] = []
        for host in self._hosts.values():
            while host.waiters:
                waiter = host.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(HttpError(f"the client for {host.label} is closed"))
            conns.extend(host.conns)
        for conn in conns:
            if conn._waiter is not None and not conn._waiter.done():
                conn._fail(HttpError(f"the client for {conn.host.label} is closed"))
            else:
                conn._close()
        if conns:
            await asyncio.wait([conn.lost for conn in conns], timeout=CLOSE_GRACE)
            for conn in conns:
                if not conn.lost.done():
                    conn._abort()


@functools.cache
def _default_ssl_context() -> ssl_module.SSLContext:
    """A verifying context, made once (loading the CA certificates takes a while)."""
    context = ssl_module.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
