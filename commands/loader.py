"""Where commands come from: the built-ins, entry points, and a directory of files.

* Built-ins: every `Command` defined in the modules of `commands.builtin`.
* Entry points in the group `harken.commands`: each names a `Command`, a list of
  them, or a module whose `Command`s are all taken.
* Each `.py` file in the directories listed in `bot.command_dirs`.

A plugin that fails to load is reported (logged, and listed by `harken check`) and
skipped, so one broken file does not keep the bot from answering everyone else.
Built-in commands are registered without a `max_chars` limit: their patterns are
linear, which the tests check; a plugin's pattern is tried only on messages up to its
`max_chars`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import types
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from commands.base import Command, CommandError, Registry

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "harken.commands"
BUILTIN_MODULES = (
    "commands.builtin.basic",
    "commands.builtin.memory",
    "commands.builtin.profile",
    "commands.builtin.incidents",
    "commands.builtin.reminders",
    "commands.builtin.ops",
)


@dataclass
class LoadResult:
    registry: Registry
    problems: list[str] = field(default_factory=list)


def commands_in(obj: Any) -> list[Command]:
    """The commands an object holds: itself, the items of a list, or a module's attributes."""
    if isinstance(obj, Command):
        return [obj]
    if isinstance(obj, types.ModuleType):
        return [value for value in vars(obj).values() if isinstance(value, Command)]
    if isinstance(obj, list | tuple):
        return [item for item in obj if isinstance(item, Command)]
    return []


def _load_file(path: Path) -> types.ModuleType:
    module_name = f"harken_plugin_{path.stem}_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _add_all(result: LoadResult, found: Iterable[Command], source: str) -> None:
    for cmd in found:
        try:
            # Built-in patterns are linear (the tests check it): no length limit.
            added = (
                replace(cmd, max_chars=None) if source == "builtin" else replace(cmd, source=source)
            )
            result.registry.add(added)
        except CommandError as exc:
            result.problems.append(f"{source}: {exc}")


def load_commands(
    command_dirs: Iterable[str | Path] = (), *, use_entry_points: bool = True
) -> LoadResult:
    result = LoadResult(Registry())
    for module_name in BUILTIN_MODULES:
        _add_all(result, commands_in(importlib.import_module(module_name)), "builtin")
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point {ep.name}"
            try:
                _add_all(result, commands_in(ep.load()), source)
            except Exception as exc:
                result.problems.append(f"{source}: failed to load: {exc!r}")
    for directory in command_dirs:
        folder = Path(directory)
        if not folder.is_dir():
            result.problems.append(f"{folder}: command directory does not exist")
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                module = _load_file(path)
            except Exception as exc:
                result.problems.append(f"{path}: failed to load: {exc!r}")
                continue
            _add_all(result, commands_in(module), str(path))
    for problem in result.problems:
        logger.error("command not loaded: %s", problem)
    return result
