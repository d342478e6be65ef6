"""Hostile free text to the commands that take it: every answer is a clear message.

A command that fails answers "Sorry, `x` failed (error id ...)": right for a bug, wrong
for input a person can type. This sends a few hundred generated inputs (a fixed seed,
so a failure reproduces) to the reminder, memory and `call` commands of a real bot, with
a real HTTP service behind `call`, and requires that no answer is an error-id answer.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from support.ops_services import serving

from harken.testbot import TestBot

SEED = 20261204
ROUNDS = 3
"""Inputs per command word and piece of hostile text."""

PIECES = [
    "",
    " ",
    "x",
    "k" * 201,
    "k" * 1000,
    "\t" * 300,
    "\u3000" * 50,
    "\xa0" * 50,
    "\u202e",
    "\ufffd",
    "\ud800",
    "é",
    "😀",
    "0" * 30,
    "9" * 25,
    "-1",
    "0001-01-01",
    "9999-12-31",
    "2027-02-30",
    "feb 29",
    "at",
    "on",
    "in",
    "to",
    "is",
    "run",
    "every",
    "next",
    "tomorrow",
    "half an",
    "and a half",
    "25:61",
    "12pm",
    "am",
    ".5",
    "1.5.5",
    ",",
    "%",
    "%2e%2e",
    "%2f",
    "%00",
    "%zz",
    "..",
    "/",
    "//",
    "\\",
    "?",
    "#",
    "[" * 2000,
    "{" * 50 + "}" * 50,
    '"',
    "null",
    "*",
]

COMMANDS = [
    "remind me ",
    "remind me in ",
    "remind me at ",
    "remind me on ",
    "remind me every ",
    "remind me next ",
    "in ",
    "at ",
    "on ",
    "tomorrow at ",
    "every ",
    "cancel ",
    "remember ",
    "recall ",
    "forget ",
    "call ",
    "call web ",
    "call web /v1/",
    "call web /v1/x ",
    "get service ",
    "health ",
]


class _Service(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if length:
            self.rfile.read(length)
        data = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[_Service]:
    service = _Service()
    with serving(service):
        yield service


@pytest.fixture
def bot(service: _Service, testbot: TestBot) -> TestBot:
    settings = {
        "scheduler.max_jobs_per_user": 1000,
        "services.web.url": f"http://127.0.0.1:{service.server_address[1]}",
        "services.web.health": "/healthz",
        "services.web.call": ["/v1/*"],
    }
    return testbot.configure(settings=settings, admins=["al"])


def hostile_inputs() -> list[str]:
    rng = random.Random(SEED)
    inputs = []
    for word in COMMANDS:
        for piece in PIECES:
            for _ in range(ROUNDS):
                extra = " ".join(rng.choice(PIECES) for _ in range(rng.randint(0, 3)))
                inputs.append(f"{word}{piece}{' ' if rng.random() < 0.5 else ''}{extra}")
    return inputs


def test_no_hostile_input_to_these_commands_gets_an_error_id_answer(bot: TestBot) -> None:
    sent = [(text, bot.send(text, user="al")) for text in hostile_inputs()]
    failures = []
    for text, event in sent:
        answer = "\n".join(reply.data for reply in bot.replies(event, timeout=60))
        if "(error id" in answer or "could not save" in answer:
            failures.append(f"{text[:80]!r} -> {answer[:120]!r}")
    assert not failures, f"{len(failures)} of {len(sent)}:\n" + "\n".join(failures[:20])
