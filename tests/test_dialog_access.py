"""Dialogs obey the same access rules as commands, and their turns are counted.

A dialog listed in `[access.commands]` is for the members of those groups (and the
input's admins), like a command; every turn of a dialog counts as a call of it in
`/metrics`; a dialog's finish function gets the same Context as a command, with
`ctx.runtime`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from commands.dialogs import Ask, dialog
from core.context import Context
from harken.testbot import TestBot


@dialog(r"^rollout$", steps=[Ask("service", "Which service?")])
def rollout(ctx: Context, answers: dict[str, str]) -> str:
    """Roll a service out."""
    services = "with" if ctx.runtime is not None else "without"
    return f"Rolling out {answers['service']} ({services} services)."


@dialog(r"^drill$", steps=[Ask("scenario", "Which scenario?")], admin_only=True)
def drill(ctx: Context, answers: dict[str, str]) -> str:
    """Start a fire drill."""
    return f"Drill {answers['scenario']} started."


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[TestBot]:
    with TestBot(
        tmp_path / "memory",
        commands=[rollout, drill],
        groups={"ops": ["alice"]},
        settings={"access.commands.rollout": ["ops"]},
    ) as running:
        yield running


def test_a_dialog_listed_in_access_commands_refuses_people_outside_its_groups(
    bot: TestBot,
) -> None:
    refused = bot.ask("rollout", user="mallory")
    assert "only for the group(s) ops" in refused
    assert "mallory" in refused
    # Nothing was started for mallory: her next message is not taken as an answer.
    assert bot.ask("web", user="mallory").startswith("I don't know the command `web`")
    assert bot.system is not None
    assert bot.system.runtime.metrics.snapshot().refusals == {"rollout": 1}


def test_a_member_of_the_group_runs_the_dialog_and_its_finish_has_services(
    bot: TestBot,
) -> None:
    assert bot.ask("rollout", user="alice").startswith("Which service?")
    assert bot.ask("web", user="alice") == "Rolling out web (with services)."


def test_a_dialog_offered_as_a_switch_is_refused_to_people_outside_its_groups(
    bot: TestBot,
) -> None:
    assert bot.ask("drill", user="bob").startswith("Sorry, `drill` is for admins only")
    assert bot.ask("rollout", user="alice").startswith("Which service?")
    # In the middle of rollout, alice may not be offered drill (admins only) either.
    refused = bot.ask("drill", user="alice")
    assert refused.startswith("Sorry, `drill` is for admins only")
    assert "We are still in `rollout`: Which service?" in refused


def test_dialog_turns_are_counted_as_calls_in_metrics(bot: TestBot) -> None:
    bot.ask("rollout", user="alice")
    bot.ask("api", user="alice")
    assert bot.system is not None
    snapshot = bot.system.runtime.metrics.snapshot()
    assert snapshot.calls.get("rollout") == 2
    assert sum(snapshot.latency["rollout"].counts) == 2
