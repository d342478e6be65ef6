"""Fixtures Harken's own tests share.

The `testbot` fixture itself is the public pytest plugin (harken/testing.py); here it
also goes by `bot`, the name these tests use. Configure it per module, class or test
with `@pytest.mark.harken(admins=[...], groups={...}, timezone=..., settings={...})`,
or in a fixture of the module with `testbot.configure(...)`. What the tests share
beyond fixtures (the `harken` command as a subprocess, a private Prosody, HTTP
services) is in tests/support/.
"""

from __future__ import annotations

import pytest

from harken.testbot import TestBot


@pytest.fixture
def bot(testbot: TestBot) -> TestBot:
    """The bot under test: the `testbot` fixture, stopped after the test."""
    return testbot
