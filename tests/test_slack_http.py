"""The Slack input's HTTP client against real servers on 127.0.0.1.

Each test starts a small asyncio server whose answers it scripts (keep-alive, chunked,
`Connection: close`, a connection dropped at the wrong moment, silence, garbage) and
talks to it with `HttpClient` over real sockets; nothing of the client is mocked. The
server records every connection and request, and a test waits for what it expects to
see there (with a timeout), never for time to pass.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from actors.inputs.slack_http import HttpClient, HttpError, Response

TOKEN = "xoxb-9999-8888-testsecrettoken"
HEADERS = {
    "Content-Type": "application/json;charset=utf-8",
    "User-Agent": "harken-test",
    "Authorization": f"Bearer {TOKEN}",
}
OK = b'{"ok": true}'
WAIT = 5.0
"""How long a test waits for what it expects before it fails."""


def response(body: bytes = OK, *, status: str = "200 OK", headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", *headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Seen:
    """A request the server read in full."""

    conn: int
    """Which connection, in the order the server accepted them (0, 1, ...)."""
    head: str
    body: bytes


class Peer:
    """The server's side of one connection."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.index = index
        self.reader = reader
        self.writer = writer
        self.done = False
        """Set by a handler that ended the connection."""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def close(self) -> None:
        self.done = True
        self.writer.close()

    def cut(self) -> None:
        self.done = True
        self.writer.transport.abort()


Handler = Callable[[Peer, Seen], Awaitable[None]]


async def answer(peer: Peer, seen: Seen) -> None:
    """The plain handler: 200, keep-alive, the request's body echoed in the answer."""
    await peer.send(response(b'{"ok": true, "got": %s}' % seen.body))


class Server:
    """An HTTP/1.1 server on 127.0.0.1 that reads requests and lets `handler` answer."""

    def __init__(self, handler: Handler = answer, ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.seen: list[Seen] = []
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self.ended: set[int] = set()
        """Connections that are over (the client closed them, or the server did)."""
        self.port = 0
        self._changed = asyncio.Event()
        self._peers: list[Peer] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/api/chat.postMessage"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for peer in self._peers:
            peer.writer.transport.abort()
        await self._server.wait_closed()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"the server saw no {what} within {WAIT} s")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(self.accepted, reader, writer)
        self._peers.append(peer)
        self.accepted += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        self._notify()
        try:
            while not peer.done:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                    length = 0
                    for line in head.split("\r\n")[1:]:
                        name, _, value = line.partition(":")
                        if name.strip().lower() == "content-length":
                            length = int(value)
                    body = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                seen = Seen(peer.index, head, body)
                self.seen.append(seen)
                self._notify()
                await self.handler(peer, seen)
        except ConnectionError:
            pass
        finally:
            self.open -= 1
            self.ended.add(peer.index)
            writer.close()
            self._notify()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def until(ready: Callable[[], bool], what: str) -> None:
    """Wait for a state of the client's (polling), failing after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {WAIT} s")
        await asyncio.sleep(0.005)


def body(i: int) -> bytes:
    return json.dumps({"channel": "C0OPS0001", "text": f"reply {i}"}).encode()


def expect_error(exc: pytest.ExceptionInfo[HttpError], *words: str) -> None:
    text = str(exc.value)
    for word in words:
        assert word in text
    assert TOKEN not in text
    assert TOKEN not in repr(exc.value)


# --- keep-alive and framing ---------------------------------------------------------------


def test_sequential_posts_share_one_kept_alive_connection() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            for i in range(20):
                got = await client.post(target, body(i))
                assert got.status == 200
                assert json.loads(got.body) == {"ok": True, "got": json.loads(body(i))}
                assert got.headers["content-type"] == "application/json"
            assert server.accepted == 1
            assert client.open_connections == 1
            assert [s.body for s in server.seen] == [body(i) for i in range(20)]
            await client.close()
            await server.wait_for(lambda: server.ended == {0}, "connection closed by close()")

    run(scenario)


def test_the_request_carries_the_given_headers_and_what_http_needs() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = HttpClient(timeout=WAIT)
            await client.post(client.target(server.url, HEADERS), body(1))
            head = server.seen[0].head.split("\r\n")
            assert head[0] == "POST /api/chat.postMessage HTTP/1.1"
            assert head[1:-2] == [
                f"Host: 127.0.0.1:{server.port}",
                "Content-Type: application/json;charset=utf-8",
                "User-Agent: harken-test",
                f"Authorization: Bearer {TOKEN}",
                "Accept: */*",
                "Accept-Encoding: gzip, deflate",
                f"Content-Length: {len(body(1))}",
            ]
            assert TOKEN not in repr(client.target(server.url, HEADERS))
            await client.close()

    run(scenario)


def test_a_chunked_response_is_read_whole_and_the_connection_kept() -> None:
    async def chunked(peer: Peer, seen: Seen) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
        await peer.send(f"{head}\r\n\r\n".encode())
        # In pieces that split the size lines and the data, with an extension and trailer.
        for piece in (
            b"5\r\n",
            b'{"ok"',
            b"\r\n",
            b"7;name=x\r\n: true,",
            b"\r\n0",
            b'9\r\n "n": 16}',
        ):
            await peer.send(piece)
        await peer.send(b"\r\n0\r\nX-Trailer: yes\r\n\r\n")

    async def scenario() -> None:
        async with Server(chunked) as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            for i in range(3):
                got = await client.post(target, body(i))
                assert (got.status, json.loads(got.body)) == (200, {"ok": True, "n": 16})
            assert server.accepted == 1
            await client.close()

    run(scenario)


def test_a_gzip_body_is_decoded() -> None:
    async def gzipped(peer: Peer, seen: Seen) -> None:
        await peer.send(
            response(gzip.compress(b'{"ok": true}'), headers=("Content-Encoding: gzip",))
        )

    async def scenario() -> None:
        async with Server(gzipped) as server:
            client = HttpClient(timeout=WAIT)
            got = await client.post(client.target(server.url, HEADERS), body(1))
            assert got.body == b'{"ok": true}'
            await client.close()

    run(scenario)


def test_status_and_retry_after_of_a_429_are_returned() -> None:
    async def limited(peer: Peer, seen: Seen) -> None:
        refusal = b'{"ok": false, "error": "ratelimited"}'
        await peer.send(
            response(refusal, status="429 Too Many Requests", headers=("Retry-After: 7",))
        )

    async def scenario() -> None:
        async with Server(limited) as server:
            client = HttpClient(timeout=WAIT)
            got = await client.post(client.target(server.url, HEADERS), body(1))
            assert isinstance(got, Response)
            assert (got.status, got.headers["retry-after"]) == (429, "7")
            assert json.loads(got.body)["error"] == "ratelimited"
            await client.close()

    run(scenario)


def test_connection_close_from_the_server_is_honoured() -> None:
    # The server says `Connection: close` but leaves the socket open: the client must
    # close it and use a new connection, not send another request down this one.
    async def closing(peer: Peer, seen: Seen) -> None:
        await peer.send(response(headers=("Connection: close",)))

    async def scenario() -> None:
        async with Server(closing) as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            assert (await client.post(target, body(1))).status == 200
            await server.wait_for(lambda: 0 in server.ended, "end of connection 0")
            assert (await client.post(target, body(2))).status == 200
            assert [(s.conn, s.body) for s in server.seen] == [(0, body(1)), (1, body(2))]
            await client.close()

    run(scenario)


# --- connections closed under the client --------------------------------------------------


def test_a_reused_connection_closed_before_answering_is_retried_once_on_a_new_one() -> None:
    # The keep-alive race: the server gives up on an idle connection just as the next
    # request goes out on it. Nothing of the response came, so the request is sent again.
    async def drops_the_second(peer: Peer, seen: Seen) -> None:
        if peer.index == 0 and seen.body == body(2):
            peer.cut()
        else:
            await answer(peer, seen)

    async def scenario() -> None:
        async with Server(drops_the_second) as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            assert (await client.post(target, body(1))).status == 200
            got = await client.post(target, body(2))
            assert json.loads(got.body)["got"] == json.loads(body(2))
            assert [(s.conn, s.body) for s in server.seen] == [
                (0, body(1)),
                (0, body(2)),
                (1, body(2)),
            ]
            assert client.open_connections == 1
            await client.close()

    run(scenario)


def test_a_new_connection_closed_before_answering_is_an_error_not_a_retry() -> None:
    async def drops(peer: Peer, seen: Seen) -> None:
        peer.close()

    async def scenario() -> None:
        async with Server(drops) as server:
            client = HttpClient(timeout=WAIT)
            with pytest.raises(HttpError) as exc:
                await client.post(client.target(server.url, HEADERS), body(1))
            expect_error(exc, f"127.0.0.1:{server.port}", "closed the connection before answering")
            assert not exc.value.answered  # the caller may send it again
            assert len(server.seen) == 1
            assert client.open_connections == 0
            await client.close()

    run(scenario)


def test_a_request_is_never_sent_again_once_its_response_began() -> None:
    async def breaks_off(peer: Peer, seen: Seen) -> None:
        if seen.body == body(2):
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")
            peer.close()
        else:
            await answer(peer, seen)

    async def scenario() -> None:
        async with Server(breaks_off) as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            await client.post(target, body(1))
            with pytest.raises(HttpError) as exc:
                await client.post(target, body(2))
            expect_error(exc, "closed the connection mid-response")
            assert [s.body for s in server.seen] == [body(1), body(2)]
            assert server.accepted == 1
            assert client.open_connections == 0
            await client.close()

    run(scenario)


def test_an_idle_connection_the_server_closed_is_dropped_from_the_pool() -> None:
    async def answers_then_closes(peer: Peer, seen: Seen) -> None:
        await answer(peer, seen)  # keep-alive promised, then broken
        peer.close()

    async def scenario() -> None:
        async with Server(answers_then_closes) as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            await client.post(target, body(1))
            await until(lambda: client.open_connections == 0, "closed connection dropped")
            assert (await client.post(target, body(2))).status == 200
            assert [s.conn for s in server.seen] == [0, 1]
            await client.close()

    run(scenario)


def test_a_connection_idle_longer_than_idle_timeout_is_closed_not_used() -> None:
    # Closing first beats finding the server closed it just as a request went out.
    async def scenario() -> None:
        async with Server() as server:
            client = HttpClient(timeout=WAIT, idle_timeout=0)  # every idle one is too old
            target = client.target(server.url, HEADERS)
            for i in range(3):
                assert (await client.post(target, body(i))).status == 200
            assert [s.conn for s in server.seen] == [0, 1, 2]
            await server.wait_for(lambda: {0, 1} <= server.ended, "old connections closed")
            assert client.open_connections == 1
            await client.close()

    run(scenario)


# --- timeouts, refusals, garbage ----------------------------------------------------------


def test_a_server_that_never_answers_is_a_timeout_error() -> None:
    async def silent(peer: Peer, seen: Seen) -> None:
        await peer.reader.read()  # until the client gives up and closes

    async def scenario() -> None:
        async with Server(silent) as server:
            client = HttpClient(timeout=0.3)
            started = time.monotonic()
            with pytest.raises(HttpError) as exc:
                await client.post(client.target(server.url, HEADERS), body(1))
            assert 0.3 <= time.monotonic() - started < WAIT
            expect_error(exc, f"no response from 127.0.0.1:{server.port} within 0.3 s")
            await server.wait_for(lambda: server.ended == {0}, "connection closed by the client")
            assert client.open_connections == 0
            await client.close()

    run(scenario)


def test_a_port_nobody_listens_on_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def scenario() -> None:
        client = HttpClient(timeout=WAIT)
        with pytest.raises(HttpError) as exc:
            await client.post(client.target(f"http://127.0.0.1:{port}/api/x", HEADERS), OK)
        expect_error(exc, f"cannot connect to 127.0.0.1:{port}")
        assert client.open_connections == 0
        await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "the status line is not HTTP/1.0 or HTTP/1.1"),
        (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "the status line is not HTTP/1.0"),
        (b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", "the status line is not HTTP/1.0"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "a header line is not `name: value`"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "a header line is not `name: value`"),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n", "a header line is not `name: value`"),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "bare CR or LF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "an invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "other than chunked"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd", "not followed by CRLF"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101 Switching Protocols"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
            "cannot decode the gzip response body",
        ),
    ],
)
def test_a_malformed_response_is_a_clear_error(reply: bytes, reason: str) -> None:
    async def garbage(peer: Peer, seen: Seen) -> None:
        await peer.send(reply)
        await peer.reader.read()  # and wait: the error must come from the reply itself

    async def scenario() -> None:
        async with Server(garbage) as server:
            client = HttpClient(timeout=WAIT)
            with pytest.raises(HttpError) as exc:
                await client.post(client.target(server.url, HEADERS), body(1))
            expect_error(exc, f"response from 127.0.0.1:{server.port}", reason)
            assert len(server.seen) == 1  # not sent again
            await server.wait_for(lambda: server.ended == {0}, "connection closed by the client")
            assert client.open_connections == 0
            await client.close()

    run(scenario)


def test_a_response_shorter_than_its_content_length_is_an_error() -> None:
    async def short(peer: Peer, seen: Seen) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK)
        peer.close()

    async def scenario() -> None:
        async with Server(short) as server:
            client = HttpClient(timeout=WAIT)
            with pytest.raises(HttpError) as exc:
                await client.post(client.target(server.url, HEADERS), body(1))
            expect_error(exc, f"127.0.0.1:{server.port}", "closed the connection mid-response")
            assert exc.value.answered  # the server had it: sending it again does it twice
            await client.close()

    run(scenario)


def test_a_response_without_length_ends_when_the_server_closes() -> None:
    async def until_close(peer: Peer, seen: Seen) -> None:
        await peer.send(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK)
        peer.close()

    async def scenario() -> None:
        async with Server(until_close) as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            for i in range(2):
                assert (await client.post(target, body(i))).body == OK
            assert server.accepted == 2
            await client.close()

    run(scenario)


# --- the pool -------------------------------------------------------------------------------


def test_concurrent_posts_open_no_more_connections_than_the_cap() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = HttpClient(timeout=WAIT, max_connections=3)
            target = client.target(server.url, HEADERS)
            got = await asyncio.gather(*(client.post(target, body(i)) for i in range(30)))
            assert [json.loads(r.body)["got"]["text"] for r in got] == [
                f"reply {i}" for i in range(30)
            ]
            assert server.accepted == 3
            assert server.max_open == 3
            assert client.open_connections == 3
            await client.close()
            await server.wait_for(lambda: server.ended == {0, 1, 2}, "every connection closed")

    run(scenario)


def test_posts_waiting_for_a_connection_are_served_first_come_first_served() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = HttpClient(timeout=WAIT, max_connections=1)
            target = client.target(server.url, HEADERS)
            await asyncio.gather(*(client.post(target, body(i)) for i in range(10)))
            assert [s.body for s in server.seen] == [body(i) for i in range(10)]
            assert server.accepted == 1
            await client.close()

    run(scenario)


def test_a_cancelled_wait_for_a_connection_gives_nothing_away() -> None:
    released = asyncio.Event()

    async def held(peer: Peer, seen: Seen) -> None:
        if seen.body == body(1):
            await released.wait()
        await answer(peer, seen)

    async def scenario() -> None:
        async with Server(held) as server:
            client = HttpClient(timeout=WAIT, max_connections=1)
            target = client.target(server.url, HEADERS)
            first = asyncio.ensure_future(client.post(target, body(1)))
            await server.wait_for(lambda: len(server.seen) == 1, "first request")
            second = asyncio.ensure_future(client.post(target, body(2)))
            await until(lambda: client.waiting == 1, "second request waiting")
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            assert client.waiting == 0
            released.set()
            assert (await first).status == 200
            assert (await client.post(target, body(3))).status == 200
            assert [(s.conn, s.body) for s in server.seen] == [(0, body(1)), (0, body(3))]
            await client.close()

    run(scenario)


def test_close_closes_every_connection_and_refuses_further_posts() -> None:
    async def scenario() -> None:
        async with Server() as server:
            client = HttpClient(timeout=WAIT)
            target = client.target(server.url, HEADERS)
            await asyncio.gather(*(client.post(target, body(i)) for i in range(4)))
            assert server.accepted == 4
            await client.close()
            await server.wait_for(lambda: server.ended == {0, 1, 2, 3}, "every connection closed")
            with pytest.raises(HttpError) as exc:
                await client.post(target, body(5))
            expect_error(exc, "closed")

    run(scenario)


# --- https ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certificate, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_goes_through_the_given_ssl_context(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        async with Server(ssl_context=serving) as server:
            client = HttpClient(timeout=WAIT, ssl=trusting)
            target = client.target(server.url, HEADERS)
            for i in range(3):
                assert (await client.post(target, body(i))).status == 200
            assert server.accepted == 1
            await client.close()
            # Without that context, the default one verifies, and refuses this certificate.
            default = HttpClient(timeout=WAIT)
            with pytest.raises(HttpError) as exc:
                await default.post(default.target(server.url, HEADERS), body(1))
            expect_error(exc, f"cannot connect to 127.0.0.1:{server.port}", "CERTIFICATE_VERIFY")
            await default.close()

    run(scenario)


def test_over_https_an_answer_ended_only_by_the_close_is_not_taken_as_whole(
    certificate: tuple[Path, Path],
) -> None:
    # Over TLS asyncio reports a cut connection as a clean close, so a body framed only
    # by the close might be a cut one: an error, marked as answered.
    cert, key = certificate
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def until_close(peer: Peer, seen: Seen) -> None:
        await peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + OK)
        peer.close()

    async def scenario() -> None:
        async with Server(until_close, ssl_context=serving) as server:
            client = HttpClient(timeout=WAIT, ssl=trusting)
            with pytest.raises(HttpError) as exc:
                await client.post(client.target(server.url, HEADERS), body(1))
            expect_error(exc, f"127.0.0.1:{server.port}", "of unknown length by closing")
            assert exc.value.answered
            await client.close()

    run(scenario)
