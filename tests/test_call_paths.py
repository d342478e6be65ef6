"""What `call` sends: the normalised path, checked against the allow-list as sent.

A real HTTP server on 127.0.0.1 records the request line's path exactly as it arrived,
so these tests see what a service would see. The normaliser itself is a pure function,
checked against the standard library's RFC 3986 dot-segment removal.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from support.ops_services import serving

from commands.ops.registry import CallRefused, normalise_call_path
from harken.testbot import TestBot

DEEP = 5000


class _Recorded(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Recorded

    def _answer(self) -> None:
        with self.server.lock:
            self.server.paths.append(self.path)
        if self.path.endswith("/deep"):
            data = ("[" * DEEP + "]" * DEEP).encode()
        else:
            data = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Recorded]:
    recorded = _Recorded()
    with serving(recorded):
        yield recorded


@pytest.fixture
def bot(server: _Recorded, testbot: TestBot) -> TestBot:
    web = {
        "services.web.url": f"http://127.0.0.1:{server.server_address[1]}",
        "services.web.call": ["/v1/items/*", "/v1/invoices/*"],
    }
    return testbot.configure(settings=web, admins=["al"])


def call(bot: TestBot, text: str) -> str:
    return bot.ask(f"call web {text}", user="al")


# --- through the bot, to a real server ------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/v1/items/%2e%2e/%2e%2e/admin/users",
        "/v1/items/%2E%2e/%2e%2E/admin/users",
        "/v1/items/.%2e/.%2e/admin/users",
        "/v1/items/../../admin/users",
        "/v1/items/x/../../../admin/users",
    ],
)
def test_an_encoded_or_plain_traversal_out_of_the_allowed_paths_is_refused(
    bot: TestBot, server: _Recorded, path: str
) -> None:
    reply = call(bot, path)
    assert reply.startswith("`call` may not request `/admin/users` on web (allowed: ")
    assert server.paths == []


def test_the_service_receives_exactly_the_normalised_path(bot: TestBot, server: _Recorded) -> None:
    reply = call(bot, "/v1/items/%61b%7E/./c/%2E%2E/d")
    assert reply.startswith("GET web/v1/items/ab~/d: HTTP 200 OK")
    reply = call(bot, "/v1/items/x/../y?q=a%2fb")
    assert reply.startswith("GET web/v1/items/y?q=a%2Fb: HTTP 200 OK")
    assert server.paths == ["/v1/items/ab~/d", "/v1/items/y?q=a%2Fb"]


def test_non_ascii_in_a_path_is_sent_percent_encoded_as_utf8(
    bot: TestBot, server: _Recorded
) -> None:
    reply = call(bot, "/v1/invoices/é?who=zoë")
    assert reply.startswith("GET web/v1/invoices/%C3%A9?who=zo%C3%AB: HTTP 200 OK")
    assert server.paths == ["/v1/invoices/%C3%A9?who=zo%C3%AB"]


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/v1/items/a%2fb", "an encoded slash (%2F)"),
        ("/v1/items/a%2F..%2Fadmin", "an encoded slash (%2F)"),
        ("/v1/items/a%5cb", "an encoded backslash (%5C)"),
        ("/v1/items/a\\b", "a backslash"),
        ("/v1/items/a%00b", "an encoded NUL (%00)"),
        ("/v1/items/%252e%252e/admin", "a double-encoded escape (%25"),
        ("/v1/items/a%zz", "a % that starts no escape"),
        ("/v1/items/a#b", "a fragment (#)"),
        ("v1/items/a", "it does not start with /"),
    ],
)
def test_ambiguous_paths_are_refused_saying_why_and_nothing_is_sent(
    bot: TestBot, server: _Recorded, path: str, why: str
) -> None:
    reply = call(bot, path)
    assert reply.startswith(f"I won't send `{path}` to web: ")
    assert why in reply
    assert reply.endswith(". Nothing was sent.")
    assert server.paths == []


def test_a_deeply_nested_json_body_is_refused_naming_the_limit(
    bot: TestBot, server: _Recorded
) -> None:
    reply = call(bot, "/v1/items/x " + "[" * DEEP + "]" * DEEP)
    assert reply == (
        f"The body nests {DEEP:,} levels deep; `call` sends JSON up to 64 levels. Nothing was sent."
    )
    assert server.paths == []
    nested = '{"a": ' * 64 + "1" + "}" * 64
    assert call(bot, f"/v1/items/x {nested}").startswith("POST web/v1/items/x: HTTP 200 OK")
    assert '"[[{"' not in call(bot, '/v1/items/x ["[[{", "\\"]]]"]')  # brackets in strings


def test_a_deeply_nested_json_answer_is_shown_as_it_came(bot: TestBot) -> None:
    reply = call(bot, "/v1/items/deep")
    assert reply.startswith("GET web/v1/items/deep: HTTP 200 OK")
    assert "[[[[" in reply


def test_a_service_name_too_long_to_be_one_is_unknown(bot: TestBot) -> None:
    reply = bot.ask("call " + "w" * 300 + " /v1/items/x", user="al")
    assert reply.startswith("I know no service `www")


# --- the normaliser -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("/", "/"),
        ("/v1/status", "/v1/status"),
        ("/v1/%7euser/%41", "/v1/~user/A"),
        ("/v1/%c3%a9", "/v1/%C3%A9"),
        ("/v1/a%20b", "/v1/a%20b"),
        ("/v1/a b", "/v1/a%20b"),
        ('/v1/<"x">', "/v1/%3C%22x%22%3E"),
        ("/v1/a:b@c!$&'()*+,;=", "/v1/a:b@c!$&'()*+,;="),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a//../b", "/a/b"),
        ("/a//b/../../c", "/a/c"),
        ("/..//c", "//c"),
        ("/v1//x", "/v1//x"),
        ("/..", "/"),
        ("/v1?x=/..&y=%7e", "/v1?x=/..&y=~"),
    ],
)
def test_normalising_a_call_path(raw: str, normalised: str) -> None:
    assert normalise_call_path(raw) == normalised


def test_a_lone_surrogate_is_refused_not_an_encoding_error() -> None:
    with pytest.raises(CallRefused, match="not valid text"):
        normalise_call_path("/v1/\ud800")


def test_dot_segments_are_removed_as_rfc_3986_says() -> None:
    # The standard library's urljoin implements RFC 3986 section 5.2.4 for a path
    # against a base, except that it also drops empty segments (`//`), which the RFC
    # keeps (see the cases above): on paths without them, the two must agree.
    rng = random.Random(11)
    parts = ["a", "b", ".", "..", "%2e", "%2E%2e", ".%2E", "c.d", "%7e"]
    for _ in range(2000):
        raw = "/" + "/".join(rng.choice(parts) for _ in range(rng.randint(1, 7)))
        decoded = raw.replace("%2e", ".").replace("%2E", ".").replace("%7e", "~")
        expected = urlsplit(urljoin("http://h/", decoded)).path
        assert normalise_call_path(raw) == expected, raw
