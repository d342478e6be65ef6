"""The pytest plugin for command authors: the `testbot` fixture.

Installed with Harken (entry point `pytest11`), so any test can ask for it:

    def test_ping(testbot):
        assert testbot.ask("ping") == "pong"

The bot runs for real (actors, memory on disk under the test's temporary directory)
and is stopped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harken.testbot import TestBot


@pytest.fixture
def testbot(tmp_path: Path) -> Iterator[TestBot]:
    bot = TestBot(tmp_path / "memory")
    try:
        yield bot
    finally:
        bot.stop()
