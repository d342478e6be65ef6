"""Fixtures Harken's own tests share.

The `testbot` fixture itself is the public pytest plugin (harken/testing.py); here it
also goes by `bot`, the name these tests use. Configure it per module, class or test
with `@pytest.mark.harken(admins=[...], groups={...}, timezone=..., settings={...})`,
or in a fixture of the module with `testbot.configure(...)`. What the tests share
beyond fixtures (the `harken` command as a subprocess, a private Prosody, HTTP
services) is in tests/support/.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from support.ops_services import ServiceState, running_services
from support.postgres import PrivatePostgres, require_postgres
from support.shell_process import WAIT, Shell

from harken.testbot import TestBot


@pytest.fixture
def bot(testbot: TestBot) -> TestBot:
    """The bot under test: the `testbot` fixture, stopped after the test."""
    return testbot


@pytest.fixture
def shells() -> Iterator[list[Shell]]:
    """`harken shell` processes a test started (append them): killed if still running."""
    started: list[Shell] = []
    try:
        yield started
    finally:
        for shell in started:
            if shell.proc.poll() is None:
                shell.proc.kill()
                shell.proc.wait(timeout=WAIT)


@pytest.fixture
def services() -> Iterator[tuple[str, ServiceState]]:
    """(base URL, state) of the test HTTP services on 127.0.0.1 (tests/support)."""
    with running_services() as found:
        yield found


@pytest.fixture(scope="session")
def postgres() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL cluster for the whole test session (tests/support/postgres.py).

    Without PostgreSQL the tests that need it skip with the reason, except under
    CI=true, where they must run and fail instead.
    """
    require_postgres()
    with PrivatePostgres() as server:
        yield server


_databases = itertools.count(1)


@pytest.fixture
def pg_url(postgres: PrivatePostgres) -> str:
    """The URL of a new, empty database of the private cluster, for one test."""
    return postgres.create_database(f"harken_test_{os.getpid()}_{next(_databases)}")
