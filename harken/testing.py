"""The pytest plugin for command authors: `call` for unit tests, `testbot` for the bot.

Installed with Harken (entry point `pytest11`), so any test can use them:

    from harken.testing import call

    def test_ping_unit():
        assert call(ping, "ping").replies == ["pong"]       # milliseconds, no bot

    @pytest.mark.harken(admins=["alice"], timezone="Europe/Paris")
    def test_ping(testbot):
        assert testbot.ask("ping") == "pong"                  # the real bot

`call` (harken/unit.py) runs one command for one message with an in-memory memory. The
`testbot` fixture runs the bot for real (actors, memory on disk under the test's
temporary directory) and stops it after the test; the `harken` mark, on a test, a
class or a module (`pytestmark`), configures it as `testbot.configure(...)` does. The
bot's modules load only when a test uses one of these, not with the plugin.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harken.testbot import TestBot, TestClock
    from harken.unit import CallResult, call

__all__ = ["CallResult", "TestBot", "TestClock", "call", "testbot"]

_LAZY = {
    "call": "harken.unit",
    "CallResult": "harken.unit",
    "TestBot": "harken.testbot",
    "TestClock": "harken.testbot",
}

_MERGED = ("settings", "groups")

MARK_HELP = (
    "harken(admins=[...], groups={...}, timezone='Area/City', settings={...}): "
    "configure the testbot fixture, as testbot.configure() does"
)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harken.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARK_HELP)


def marked_configuration(node: pytest.Item) -> dict[str, Any]:
    """The keyword arguments of the `harken` marks on a test, its class and module: the
    closest mark wins, and `settings` and `groups` are merged key by key."""
    merged: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("harken"))):
        if mark.args:
            raise TypeError("@pytest.mark.harken takes keyword arguments only")
        for key, value in mark.kwargs.items():
            earlier = merged.get(key)
            if key in _MERGED and isinstance(earlier, Mapping) and isinstance(value, Mapping):
                merged[key] = {**earlier, **value}
            else:
                merged[key] = value
    return merged


@pytest.fixture
def testbot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestBot]:
    from harken.testbot import TestBot

    bot = TestBot(tmp_path / "memory")
    if isinstance(request.node, pytest.Item):
        bot.configure(**marked_configuration(request.node))
    try:
        yield bot
    finally:
        bot.stop()
