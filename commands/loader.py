"""Where commands come from: the built-ins, entry points, and a directory of files.

Built-ins are the `Command`s of `commands.builtin`; the `harken.commands` entry points
name a `Command`, a list of them, or a module; each `.py` file of `bot.command_dirs` is
imported as a module of a package named after its directory, so sibling imports and
pickling work. A plugin that fails to load is logged, listed by `harken check` and
skipped. Built-ins have no `max_chars` limit (their patterns are linear, tests check).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import keyword
import logging
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from commands.base import Command, CommandError, Registry
from commands.dialogs import dialog_of

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "harken.commands"
BUILTIN_MODULES = (
    "commands.builtin.basic",
    "commands.builtin.memory",
    "commands.builtin.profile",
    "commands.builtin.identity",
    "commands.builtin.incidents",
    "commands.builtin.reminders",
    "commands.builtin.ops",
    "commands.builtin.reports",
    "commands.builtin.streams_digest",
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


def _serves(module: types.ModuleType, folder: Path) -> bool:
    """Whether `module` is the package of `folder`."""
    return any(Path(entry).resolve() == folder for entry in getattr(module, "__path__", ()))


def _package_name(folder: Path) -> str:
    """The package name the files of `folder` are imported under: the folder's own name
    when that names nothing else, else a private one derived from its path."""
    name = folder.name
    if name.isidentifier() and not keyword.iskeyword(name):
        existing = sys.modules.get(name)
        if existing is not None:
            if _serves(existing, folder):
                return name
        else:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):
                spec = importlib.machinery.ModuleSpec(name, None)  # taken, in some way
            if spec is None or any(
                Path(entry).resolve() == folder for entry in spec.submodule_search_locations or ()
            ):
                return name
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return f"harken_command_dir_{digest}"


def _import_package(folder: Path) -> str:
    """Import `folder` as a package (running its `__init__.py`, if any); its name."""
    name = _package_name(folder)
    existing = sys.modules.get(name)
    if existing is not None and _serves(existing, folder):
        return name
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(folder)]
        )
    else:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    if spec is None:
        raise ImportError(f"cannot import {folder} as a package")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        if init.is_file() and spec.loader is not None:
            spec.loader.exec_module(package)
    except BaseException:
        del sys.modules[name]
        raise
    return name


def _hint(exc: BaseException, folder: Path, package: str) -> str:
    """What to write instead, for a top-level import of a file of the same directory."""
    missing = exc.name if isinstance(exc, ImportError) else None
    if missing is None or "." in missing or not (folder / f"{missing}.py").is_file():
        return ""
    return (
        f" ({folder / missing}.py is the module `{package}.{missing}`: write "
        f"`from .{missing} import ...` or `from {package}.{missing} import ...`)"
    )


def _defined_in(cmd: Command) -> str | None:
    """The module that defines a command's function (a dialog's: its finish function)."""
    flow = dialog_of(cmd)
    func: object = flow.finish if flow is not None else cmd.func
    module = getattr(func, "__module__", None)
    return module if isinstance(module, str) else None


def dir_modules(folder: Path) -> tuple[list[tuple[Path, types.ModuleType]], list[str]]:
    """Import each `.py` file of `folder` (not `_*.py`) as a module of the folder's
    package: (path, module) of each that loaded, and what went wrong with the others.
    The command loader and the stream loader (commands/streams.py) walk it alike."""
    try:
        package = _import_package(folder.resolve())
    except Exception as exc:
        return [], [f"{folder}: failed to load: {exc!r}"]
    modules: list[tuple[Path, types.ModuleType]] = []
    problems: list[str] = []
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        if "." in path.stem:
            problems.append(f"{path}: not loaded: a module name cannot hold a '.'")
            continue
        try:
            modules.append((path, importlib.import_module(f"{package}.{path.stem}")))
        except Exception as exc:
            problems.append(f"{path}: failed to load: {exc!r}{_hint(exc, folder, package)}")
    return modules, problems


def _load_dir(result: LoadResult, folder: Path) -> None:
    modules, problems = dir_modules(folder)
    result.problems.extend(problems)
    # A file that imports a command from a sibling holds it too: register each command
    # once, from the file that defines it.
    holders: dict[int, list[Path]] = {}
    for path, module in modules:
        for cmd in commands_in(module):
            holders.setdefault(id(cmd), []).append(path)
    paths = {module.__name__: path for path, module in modules}
    for path, module in modules:
        own = []
        for cmd in commands_in(module):
            where = holders[id(cmd)]
            home = paths.get(_defined_in(cmd) or "")
            if path == (home if home in where else where[0]):
                own.append(cmd)
        _add_all(result, own, str(path))


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
        _load_dir(result, folder)
    for problem in result.problems:
        logger.error("command not loaded: %s", problem)
    return result
