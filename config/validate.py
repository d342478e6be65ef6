"""What a configuration needs beyond well-formed values, checked before Harken starts.

`load_settings` checks each value on its own. Whether the settings can run depends on
more: the inputs installed and what each declares it needs, the commands loaded, the
disk. `harken check` runs every check here so that it passes exactly the configurations
`harken run` accepts; `run` itself refuses an input lacking what it declares it needs,
and the access rules that would otherwise be misapplied (a rule for a misspelt command
leaves the real one open to everyone).

Each problem is a `ConfigError` naming the key, one line, as the loader's are.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from config.inputs import input_env_var
from config.rules import ConfigError
from config.settings import Settings

__all__ = [
    "access_problems",
    "input_problems",
    "load_problems",
    "path_problems",
    "unmet_needs",
]


def _closest(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def input_problems(settings: Settings, available: Collection[str]) -> list[ConfigError]:
    """Inputs in `bot.inputs` that are not installed, or lack a secret or option they
    declare they need."""
    problems = []
    for name in settings.bot.inputs:
        if name not in available:
            problems.append(
                ConfigError(
                    "bot.inputs",
                    f"input {name!r} is not available here{_closest(name, available)} "
                    f"(available: {', '.join(sorted(available)) or 'none'})",
                )
            )
            continue
        problems += unmet_needs(settings, name)
    return problems


def _empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (isinstance(value, Collection) and not value)


def unmet_needs(settings: Settings, name: str) -> list[ConfigError]:
    """The secrets and options input `name` declares required (`config.inputs`) that are
    unset or empty: secrets first, each in the order declared."""
    input_settings = settings.inputs.get(name)
    spec = input_settings.spec if input_settings else None
    if input_settings is None or spec is None:
        return []
    problems = [
        ConfigError(
            f"inputs.{name}.{secret}",
            f"is not set: the {name} input needs {input_env_var(name, secret)} in the environment",
        )
        for secret in spec.secrets
        if secret in spec.required and secret not in input_settings.secrets
    ]
    problems += [
        ConfigError(
            f"inputs.{name}.{option}",
            f"is required to start the {name} input (or {input_env_var(name, option)} in "
            "the environment)",
        )
        for option in spec.required
        if option not in spec.secrets and _empty(input_settings.options.get(option))
    ]
    return problems


def access_problems(settings: Settings, commands: Collection[str]) -> list[ConfigError]:
    """Rules in `[access.commands]` for commands that do not exist.

    Such a rule protects nothing, and usually means the command it was meant for (a
    typo: `wach` for `watch`) is open to everyone.
    """
    return [
        ConfigError(
            f"access.commands.{name}",
            f"no command is called {name!r}{_closest(name, commands)}, so this rule "
            "protects nothing",
        )
        for name in settings.access.commands
        if name not in commands
    ]


def load_problems(problems: Iterable[str]) -> list[ConfigError]:
    """Command files and entry points that failed to load (`commands.loader` problems)."""
    errors = []
    for problem in problems:
        if problem.startswith("entry point "):
            source, _, what = problem.partition(": ")
            errors.append(ConfigError(f"{source} (harken.commands)", what))
        else:
            errors.append(ConfigError("bot.command_dirs", problem))
    return errors


def _unwritable(path: Path, what: str) -> str | None:
    """Why Harken could not create or write the directory `path`, or None."""
    if path.exists():
        if not path.is_dir():
            return f"{path} is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by this user"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {what} {path}: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {what} {path}: {parent} is not writable by this user"
    return None


def path_problems(settings: Settings) -> list[ConfigError]:
    """The data directory, and the directories of the paths set apart from it, must be
    writable (or creatable) by this user."""
    wanted = [
        ("bot.data_dir", Path(settings.bot.data_dir), "the data directory"),
        *(
            [("memory.path", Path(settings.memory.path), "the memory store")]
            if settings.memory.backend == "tinydb"  # else the store is in a database
            else []
        ),
        (
            "scheduler.path",
            Path(settings.scheduler.job_store(settings.memory.path)).parent,
            "the job store's directory",
        ),
    ]
    if settings.log.file:
        wanted.append(("log.file", Path(settings.log.file).parent, "the log's directory"))
    problems = []
    checked: list[Path] = []
    bad: list[Path] = []
    for key, path, what in wanted:
        # One line per fault: a store inside an unwritable data directory is the same one.
        if path in checked or any(b == path or b in path.parents for b in bad):
            continue
        checked.append(path)
        if why := _unwritable(path, what):
            problems.append(ConfigError(key, why))
            bad.append(path)
    return problems
