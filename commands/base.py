"""The command model: `Command`, the `@command` decorator and the `Registry`.

A command is a plain function under a decorator, as in Slack Bolt or Errbot:

    @command(r"^ping$", usage="ping", description="Check that Harken is alive.")
    def ping() -> str:
        return "pong"

Arguments are injected by name: every named group of the pattern, plus `event` (the
`Event`), `ctx` (the `Context`: memory, settings, time zone, ...) and `memory` (the
person's own key/value memory). The return value is the reply: a string, a list of
strings (several replies), or None (no reply).

A command that computes its reply from its arguments alone (no memory, no network, no
waiting) can be declared `quick=True`: it runs on its conversation's thread instead of
a worker thread, which saves a thread hand-off on every call. Such a function may take
named groups and `event` only; `ctx` and `memory` reach the memory actor, which can wait.

The registry is keyed by pattern, as the Micro Bot's `Commands["^ping$"]` was.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.event import Event
    from commands.context import Context

CommandResult = str | list[str] | tuple[str, ...] | None
CommandFunc = Callable[..., CommandResult]

_INJECTABLE = frozenset({"event", "ctx", "memory"})
_NOT_QUICK = frozenset({"ctx", "memory"})
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


class CommandError(ValueError):
    """A command was declared wrongly (bad pattern, clashing name, unknown argument)."""


@dataclass(frozen=True)
class Command:
    """A command: what it is called, what it matches, and the function that answers."""

    name: str
    pattern: str
    func: CommandFunc
    usage: str
    description: str
    admin_only: bool = False
    quick: bool = False
    """Runs on the conversation's thread, not a worker: see the module's docstring."""
    source: str = "builtin"
    """Where the command came from: `builtin`, `entry point NAME`, or a file path."""
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise CommandError(
                f"command name {self.name!r}: use lower-case letters, digits, '-' or '_'"
            )
        try:
            regex = re.compile(self.pattern, re.IGNORECASE | re.DOTALL)
        except re.error as exc:
            raise CommandError(
                f"command {self.name!r}: bad pattern {self.pattern!r}: {exc}"
            ) from exc
        params = tuple(inspect.signature(self.func).parameters)
        unknown = [p for p in params if p not in _INJECTABLE and p not in regex.groupindex]
        if unknown:
            raise CommandError(
                f"command {self.name!r}: parameter(s) {', '.join(unknown)} are neither "
                f"named groups of {self.pattern!r} nor one of {', '.join(sorted(_INJECTABLE))}"
            )
        waits = sorted(_NOT_QUICK.intersection(params))
        if self.quick and waits:
            raise CommandError(
                f"command {self.name!r} is declared quick, so it cannot take "
                f"{' or '.join(waits)}: they reach memory, which can wait. "
                "Take only named groups and `event`, or drop quick=True."
            )
        object.__setattr__(self, "regex", regex)
        object.__setattr__(self, "params", params)

    def match(self, text: str) -> re.Match[str] | None:
        return self.regex.match(text)

    def call(self, ctx: Context, groups: Mapping[str, str | None]) -> list[str]:
        """Run the function with its arguments injected; return the replies."""
        return self._call(groups, {"event": ctx.event, "ctx": ctx, "memory": ctx.memory})

    def call_quick(self, event: Event, groups: Mapping[str, str | None]) -> list[str]:
        """Run a quick command, which needs no `Context`; return the replies."""
        return self._call(groups, {"event": event})

    def _call(self, groups: Mapping[str, str | None], available: dict[str, Any]) -> list[str]:
        kwargs = {p: groups[p] if p in groups else available[p] for p in self.params}
        result = self.func(**kwargs)
        if result is None:
            return []
        if isinstance(result, str):
            return [result]
        return [str(r) for r in result]


def command(
    pattern: str,
    *,
    name: str | None = None,
    usage: str | None = None,
    description: str | None = None,
    admin_only: bool = False,
    quick: bool = False,
) -> Callable[[CommandFunc], Command]:
    """Declare a plain function as a command.

    `name` defaults to the function's name, `usage` to the name, and `description` to
    the first line of the function's docstring. `quick=True` for a function that only
    computes its reply from its arguments (see the module's docstring).
    """

    def wrap(func: CommandFunc) -> Command:
        return declared(
            func,
            func,
            pattern,
            name=name,
            usage=usage,
            description=description,
            admin_only=admin_only,
            quick=quick,
        )

    return wrap


def declared(
    declared_by: Callable[..., object],
    func: CommandFunc,
    pattern: str,
    *,
    name: str | None,
    usage: str | None,
    description: str | None,
    admin_only: bool,
    quick: bool = False,
) -> Command:
    """The `Command` a decorator declares: what it leaves out comes from `declared_by`,
    the decorated function (name from its name, description from its docstring)."""
    cmd_name = name or declared_by.__name__.replace("_", "-")
    doc = (inspect.getdoc(declared_by) or "").strip().splitlines()
    return Command(
        name=cmd_name,
        pattern=pattern,
        func=func,
        usage=usage or cmd_name,
        description=description or (doc[0] if doc else ""),
        admin_only=admin_only,
        quick=quick,
    )


class Registry(Mapping[str, Command]):
    """Commands keyed by pattern, in the order they were added.

    The first command whose pattern matches the text wins, so built-ins (added first)
    keep their meaning when plugins add broader patterns.
    """

    def __init__(self, commands: list[Command] | None = None) -> None:
        self._by_pattern: dict[str, Command] = {}
        self._by_name: dict[str, Command] = {}
        for cmd in commands or []:
            self.add(cmd)

    def add(self, cmd: Command) -> None:
        if cmd.pattern in self._by_pattern:
            other = self._by_pattern[cmd.pattern]
            raise CommandError(
                f"command {cmd.name!r} ({cmd.source}) has the same pattern {cmd.pattern!r} "
                f"as {other.name!r} ({other.source})"
            )
        if cmd.name in self._by_name:
            other = self._by_name[cmd.name]
            raise CommandError(
                f"command name {cmd.name!r} ({cmd.source}) is already taken ({other.source})"
            )
        self._by_pattern[cmd.pattern] = cmd
        self._by_name[cmd.name] = cmd

    def __getitem__(self, pattern: str) -> Command:
        return self._by_pattern[pattern]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_pattern)

    def __len__(self) -> int:
        return len(self._by_pattern)

    def by_name(self, name: str) -> Command | None:
        return self._by_name.get(name.lower())

    def names(self) -> list[str]:
        return list(self._by_name)

    def commands(self) -> list[Command]:
        return list(self._by_pattern.values())

    def find(self, text: str) -> tuple[Command, re.Match[str]] | None:
        for cmd in self._by_pattern.values():
            match = cmd.regex.match(text)
            if match is not None:
                return cmd, match
        return None
