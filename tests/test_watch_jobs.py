"""Watches across restarts, and `watch-check`, the hidden command a watch runs.

The real bot (TestBot) on a real HTTP service on 127.0.0.1 (`ops_services`). A watch is
a recurring job of the scheduler; after a restart its missed checks are caught up
silently: only a change of the service's state speaks, and the internal command is
never shown, listed or runnable by people.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.ops_services import ServiceState
from support.past_jobs import move_job

from config.loader import load_settings
from config.settings import Settings
from harken.testbot import TestBot


@pytest.fixture
def settings(tmp_path: Path, services: tuple[str, ServiceState]) -> Settings:
    base, _ = services
    path = tmp_path / "harken.toml"
    path.write_text(
        "[scheduler]\nmin_interval_seconds = 1\n\n"
        f'[services.flappy]\nurl = "{base}"\nhealth = "/flappy"\n'
    )
    return load_settings(path, env={})


@pytest.fixture
def bot(tmp_path: Path, settings: Settings) -> Iterator[TestBot]:
    testbot = TestBot(tmp_path / "memory", settings=settings)
    try:
        yield testbot
    finally:
        testbot.stop()


def said(bot: TestBot, pattern: str) -> bool:
    """Whether the bot has sent a message matching `pattern` (a regex) so far."""
    try:
        bot.wait_for(lambda event: re.search(pattern, event.data) is not None, timeout=0)
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    "down_for",
    [timedelta(seconds=20), timedelta(hours=3)],
    ids=["late", "beyond-the-grace-time"],
)
def test_a_watch_catches_up_silently_after_a_restart_and_speaks_only_on_a_change(
    bot: TestBot, services: tuple[str, ServiceState], down_for: timedelta
) -> None:
    _, state = services
    started = bot.ask("watch flappy every 1 second")
    job = re.search(r"\(job (\w+)\)", started)
    assert job, started
    bot.stop()
    # Harken was down for a while: the watch's next check is long overdue.
    job_store = bot.settings.scheduler.job_store(bot.settings.memory.path)
    move_job(job_store, job.group(1), datetime.now(UTC) - down_for)
    state.set_flappy(True)  # unchanged, and the check count starts from 0
    bot.start()
    state.wait_flappy_checks(2)  # the catch-up, then the next regular check
    assert not said(bot, "watch-check"), "the internal command was shown"
    assert not said(bot, r"^(Running|ALERT|RECOVERED|SLOW)|I did not run|[Mm]issed")

    state.set_flappy(False)  # a change still speaks
    assert (
        bot.wait_for("ALERT: flappy").data == "ALERT: flappy is DOWN: HTTP 503 Service Unavailable."
    )


def test_watch_check_is_neither_listed_nor_runnable_by_people(
    bot: TestBot, services: tuple[str, ServiceState]
) -> None:
    _, state = services
    assert "watch-check" not in bot.ask("help")
    assert bot.ask("help watch-check") == (
        "There is no command called `watch-check`. Say `help` to list them all."
    )
    assert bot.ask("watch flappy every 1 minute").startswith("Watching flappy")
    checks = state.flappy_checks
    assert bot.ask("watch-check flappy").startswith("I don't know the command `watch-check`.")
    assert bot.ask("in 1 second run watch-check flappy") == (
        "I don't know the command `watch-check flappy`, so I won't schedule it."
    )
    assert state.flappy_checks == checks  # nothing checked the service for them
    assert "flappy  every 1 minute" in bot.ask("watches")
