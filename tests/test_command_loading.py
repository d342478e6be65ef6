"""Commands come from the built-ins, entry points and a directory of .py files."""

from __future__ import annotations

import importlib
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from commands.base import Command, CommandError, Registry, command
from commands.loader import load_commands
from core.event import Event
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


# --- command_dirs files are ordinary modules ------------------------------------------------

HELPERS = """
GREETING = "Hello"
"""

SHIFT = '''
from __future__ import annotations

from dataclasses import dataclass

from harken import command

from .helpers import GREETING
from {package}.helpers import GREETING as SAME_GREETING


@dataclass(frozen=True)
class Shift:
    team: str
    person: str | None = None


@command(r"^shift (?P<team>\\w+)$", usage="shift <team>")
def shift(team: str) -> str:
    """Say who holds a shift."""
    assert GREETING is SAME_GREETING
    return f"{{GREETING}}: {{Shift(team)}}"
'''

REUSE = '''
from harken import command

from .shift import Shift, shift


@command(r"^both (?P<team>\\w+)$", usage="both <team>")
def both(team: str) -> str:
    """Say a shift twice."""
    return shift.func(team) + " / " + repr(Shift(team, "ann"))
'''


@pytest.fixture
def package_dir(tmp_path: Path) -> Path:
    """A command directory whose name no other module has."""
    folder = tmp_path / f"cmds_{tmp_path.name.replace('-', '_')}_{id(tmp_path):x}"
    folder.mkdir()
    return folder


def test_command_files_are_ordinary_modules_of_a_package_named_after_the_directory(
    package_dir: Path, tmp_path: Path
) -> None:
    package = package_dir.name
    (package_dir / "helpers.py").write_text(HELPERS)
    (package_dir / "shift.py").write_text(SHIFT.format(package=package))
    (package_dir / "reuse.py").write_text(REUSE)
    result = load_commands([package_dir], use_entry_points=False)
    assert result.problems == []
    module = importlib.import_module(f"{package}.shift")
    assert sys.modules[f"{package}.shift"] is module
    # A dataclass under `from __future__ import annotations` needs its module in
    # sys.modules; pickling needs the module importable by its name.
    shift = module.Shift("ops", "ann")
    assert pickle.loads(pickle.dumps(shift)) == shift
    cmd = result.registry.by_name("shift")
    assert cmd is not None
    assert cmd.func is module.shift.func
    # `reuse.py` holds `shift` too (it imports it): registered once, from its own file.
    assert cmd.source == str(package_dir / "shift.py")
    both = result.registry.by_name("both")
    assert both is not None
    assert both.source == str(package_dir / "reuse.py")
    bot = TestBot(tmp_path / "memory", commands=[cmd, both])
    try:
        assert bot.ask("shift ops") == "Hello: Shift(team='ops', person=None)"
        assert bot.ask("both db") == (
            "Hello: Shift(team='db', person=None) / Shift(team='db', person='ann')"
        )
    finally:
        bot.stop()
    # Loading again (a restart) finds the same modules, not second copies.
    again = load_commands([package_dir], use_entry_points=False).registry.by_name("shift")
    assert again is not None
    assert again.func is cmd.func


def test_a_top_level_import_of_a_sibling_is_refused_with_what_to_write(package_dir: Path) -> None:
    (package_dir / "helpers.py").write_text(HELPERS)
    (package_dir / "bare.py").write_text(
        "from helpers import GREETING\nfrom harken import command\n\n"
        "@command(r'^bare$')\ndef bare() -> str:\n    return GREETING\n"
    )
    result = load_commands([package_dir], use_entry_points=False)
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.startswith(f"{package_dir / 'bare.py'}: failed to load: ")
    assert problem.endswith(
        f"({package_dir / 'helpers'}.py is the module `{package_dir.name}.helpers`: write "
        f"`from .helpers import ...` or `from {package_dir.name}.helpers import ...`)"
    )


def test_a_directory_named_like_another_module_loads_under_a_private_name(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "commands"  # Harken's own package has this name
    folder.mkdir()
    (folder / "__init__.py").write_text("PACKAGE_RAN = True\n")
    (folder / "helpers.py").write_text(HELPERS)
    (folder / "greet.py").write_text(
        "from .helpers import GREETING\nfrom harken import command\n\n"
        "@command(r'^hi there$')\ndef hi_there() -> str:\n    return GREETING\n"
    )
    result = load_commands([folder], use_entry_points=False)
    assert result.problems == []
    cmd = result.registry.by_name("hi-there")
    assert cmd is not None
    assert cmd.func() == "Hello"
    package = sys.modules[cmd.func.__module__.rpartition(".")[0]]
    assert package.__name__.startswith("harken_command_dir_")
    assert package.PACKAGE_RAN is True
    assert "commands.builtin" in sys.modules  # Harken's own package is untouched
    assert sys.modules["commands"].__file__ != str(folder / "__init__.py")
