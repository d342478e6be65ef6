"""Commands come from the built-ins, entry points and a directory of .py files."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.event import Event
from commands.base import Command, CommandError, Registry, command
from commands.loader import load_commands
from harken import TestBot

PLUGIN = '''
from harken import command

@command(r"^greet (?P<name>\\w+)$", usage="greet <name>")
def greet(name: str) -> str:
    """Greet someone by name."""
    return f"Hello, {name}!"
'''


def test_a_command_is_a_plain_function_under_a_decorator(testbot: TestBot) -> None:
    @command(r"^double (?P<n>\d+)$", usage="double <n>")
    def double(n: str) -> str:
        """Double a number."""
        return str(2 * int(n))

    testbot.add(double)
    assert testbot.ask("double 21") == "42"
    assert testbot.ask("help double") == "double <n>\nDouble a number."


def test_registry_is_keyed_by_pattern_like_the_micro_bot() -> None:
    registry = load_commands(use_entry_points=False).registry
    assert registry["^ping$"].name == "ping"
    assert registry.by_name("echo") is not None


def test_clashing_names_and_patterns_are_refused() -> None:
    registry = Registry()
    registry.add(Command("a", "^a$", lambda: "a", "a", "first"))
    with pytest.raises(CommandError, match="already taken"):
        registry.add(Command("a", "^b$", lambda: "b", "b", "second"))
    with pytest.raises(CommandError, match="same pattern"):
        registry.add(Command("c", "^a$", lambda: "c", "c", "third"))


def test_a_parameter_that_cannot_be_injected_is_refused() -> None:
    with pytest.raises(CommandError, match="neither named groups"):

        @command(r"^x$")
        def x(nothing: str) -> str:
            return nothing


def test_a_quick_command_may_not_take_what_reaches_memory(testbot: TestBot) -> None:
    for param in ("ctx", "memory"):
        with pytest.raises(CommandError, match=f"declared quick, so it cannot take {param}"):
            Command("q", "^q$", eval(f"lambda {param}: 'q'"), "q", "quick", quick=True)

    @command(r"^shout (?P<text>.+)$", usage="shout <text>", quick=True)
    def shout(text: str, event: Event) -> str:
        """Say it louder."""
        return f"{text.upper()}, {event.user}!"

    testbot.add(shout)
    assert testbot.ask("shout hi", user="ann") == "HI, ann!"


def test_commands_load_from_a_directory_and_a_broken_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(PLUGIN)
    (tmp_path / "broken.py").write_text("this is not python\n")
    result = load_commands([tmp_path], use_entry_points=False)
    greet = result.registry.by_name("greet")
    assert greet is not None
    assert greet.source == str(tmp_path / "greet.py")
    assert greet.description == "Greet someone by name."
    assert len(result.problems) == 1
    assert "broken.py" in result.problems[0]


@pytest.fixture
def installed_plugin(tmp_path: Path) -> Iterator[None]:
    """A distribution on sys.path that declares a `harken.commands` entry point."""
    (tmp_path / "harken_greeter.py").write_text(PLUGIN)
    dist = tmp_path / "harken_greeter-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harken-greeter\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[harken.commands]\ngreet = harken_greeter\n")
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("harken_greeter", None)


@pytest.mark.usefixtures("installed_plugin")
def test_commands_load_from_entry_points() -> None:
    greet = load_commands().registry.by_name("greet")
    assert greet is not None
    assert greet.source == "entry point greet"
