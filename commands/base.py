"""The command model: `Command`, the `@command` decorator and the `Registry`.

    @command(r"^ping$", usage="ping", description="Check that Harken is alive.")
    def ping() -> str:
        return "pong"

Arguments are injected by name (the pattern's groups, `event`, `ctx`, `memory`); the
return value is the reply (a string, a list of them, or None). README.md has the rest.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.context import Context
    from core.event import Event

CommandResult = str | list[str] | tuple[str, ...] | None
CommandFunc = Callable[..., CommandResult]

_INJECTABLE = frozenset({"event", "ctx", "memory"})
_NOT_QUICK = frozenset({"ctx", "memory"})
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")

DEFAULT_MAX_CHARS = 500
"""Longest message a command's pattern is tried on, unless the command says otherwise."""


class CommandError(ValueError):
    """A command was declared wrongly (bad pattern, clashing name, unknown argument)."""


class ReplyTypeError(TypeError):
    """A command's function returned something that is not a reply.

    `reason` says what, in words fit for the person who asked.
    """

    def __init__(self, command: str, got: str) -> None:
        self.reason = f"it returned {got} instead of a reply"
        super().__init__(
            f"command {command!r} returned {got}: a command returns a string, "
            "a list of strings, or None"
        )


def check_function(what: str, func: object, *, quick: bool = False) -> None:
    """Refuse, with a message that says what to change, a function that can never
    return a reply: not callable, a generator (sync or async), or async but quick."""
    if not callable(func):
        raise CommandError(f"{what}: {func!r} is not a function")
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        kind = "an async generator" if inspect.isasyncgenfunction(func) else "a generator"
        raise CommandError(
            f"{what} is {kind} (it uses `yield`): return the reply instead, "
            "a string, a list of strings, or None"
        )
    if quick and inspect.iscoroutinefunction(func):
        raise CommandError(
            f"{what} is declared quick, so it cannot be `async def`: a quick command runs "
            "on its command actor's thread, which must not wait. Drop quick=True."
        )


def _described(value: object) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def replies_of(name: str, result: object, *, can_wait: bool = True) -> list[str]:
    """The replies a command's function returned: a coroutine (from `async def`) is
    awaited first on an event loop of its own; anything but a string, a list or tuple
    of strings, or None raises `ReplyTypeError`."""
    if isinstance(result, str):  # the usual answer first: one reply
        return [result]
    if inspect.iscoroutine(result):
        if not can_wait:
            result.close()
            raise ReplyTypeError(name, "a coroutine, which a quick command cannot wait for,")
        result = asyncio.run(result)
    if result is None:
        return []
    if isinstance(result, str):
        return [result]
    if isinstance(result, (list, tuple)):
        wrong = [item for item in result if not isinstance(item, str)]
        if not wrong:
            return list(result)
        raise ReplyTypeError(name, f"{_described(result)} holding {_described(wrong[0])}")
    raise ReplyTypeError(name, _described(result))


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
    """Runs on the command actor's thread, not a worker, saving a thread hand-off: for
    a pure function of its named groups and `event` (no `ctx`, no `memory`)."""
    source: str = "builtin"
    """Where the command came from: `builtin`, `entry point NAME`, or a file path."""
    max_chars: int | None = DEFAULT_MAX_CHARS
    """Longest message the pattern is tried on (None: any the router lets through);
    a longer one gets a reply that says the limit (`Registry.limit_reply`)."""
    hidden: bool = False
    """Harken's own: run by the scheduler only, never matched for what a person types,
    listed nowhere (e.g. `watch-check`, what a watch runs)."""
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    params: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise CommandError(
                f"command name {self.name!r}: use lower-case letters, digits, '-' or '_'"
            )
        check_function(f"command {self.name!r}", self.func, quick=self.quick)
        if self.max_chars is not None and not (
            isinstance(self.max_chars, int) and self.max_chars >= 1
        ):
            raise CommandError(f"command {self.name!r}: max_chars must be an integer >= 1")
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
        """The pattern's match, or None (also for text longer than `max_chars`)."""
        if self.max_chars is not None and len(text) > self.max_chars:
            return None
        return self.regex.match(text)

    def call(self, ctx: Context, groups: Mapping[str, str | None]) -> list[str]:
        """Run the function with its arguments injected; return the replies."""
        return self._call(groups, {"event": ctx.event, "ctx": ctx, "memory": ctx.memory})

    def call_quick(self, event: Event, groups: Mapping[str, str | None]) -> list[str]:
        """Run a quick command, which needs no `Context`; return the replies."""
        return self._call(groups, {"event": event}, can_wait=False)

    def _call(
        self,
        groups: Mapping[str, str | None],
        available: dict[str, Any],
        *,
        can_wait: bool = True,
    ) -> list[str]:
        kwargs = {p: groups[p] if p in groups else available[p] for p in self.params}
        return replies_of(self.name, self.func(**kwargs), can_wait=can_wait)


def command(
    pattern: str,
    *,
    name: str | None = None,
    usage: str | None = None,
    description: str | None = None,
    admin_only: bool = False,
    quick: bool = False,
    max_chars: int | None = DEFAULT_MAX_CHARS,
    hidden: bool = False,
) -> Callable[[CommandFunc], Command]:
    """Declare a plain function (or an `async def` one) as a command.

    `name` defaults to the function's name, `usage` to the name, and `description` to
    the first line of the function's docstring. `quick=True` for a function that only
    computes its reply from its arguments (see `Command.quick`). `max_chars`:
    the longest message the pattern is tried on (None for a pattern known to be linear).
    `hidden=True` for a command only scheduled jobs run (see `Command.hidden`).
    """

    def wrap(func: CommandFunc) -> Command:
        check_function(f"command {name or getattr(func, '__name__', func)!r}", func, quick=quick)
        return declared(
            func,
            func,
            pattern,
            name=name,
            usage=usage,
            description=description,
            admin_only=admin_only,
            quick=quick,
            max_chars=max_chars,
            hidden=hidden,
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
    max_chars: int | None = DEFAULT_MAX_CHARS,
    hidden: bool = False,
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
        max_chars=max_chars,
        hidden=hidden,
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
        """The command called `name`; hidden commands are not found."""
        cmd = self._by_name.get(name.lower())
        return None if cmd is None or cmd.hidden else cmd

    def names(self) -> list[str]:
        """The names people may use (hidden commands left out)."""
        return [name for name, cmd in self._by_name.items() if not cmd.hidden]

    def commands(self) -> list[Command]:
        return list(self._by_pattern.values())

    def find(self, text: str, *, hidden: bool = False) -> tuple[Command, re.Match[str]] | None:
        """The first command matching `text`, with its match. A command's pattern is not
        tried on text longer than its `max_chars`; hidden commands only with `hidden=True`
        (for the text of a scheduled job, never for what a person typed)."""
        length = len(text)
        for cmd in self._by_pattern.values():
            if cmd.hidden and not hidden:
                continue
            limit = cmd.max_chars
            if limit is not None and length > limit:
                continue
            match = cmd.regex.match(text)
            if match is not None:
                return cmd, match
        return None

    def limit_reply(self, text: str) -> str | None:
        """For text that matched nothing because it is longer than the `max_chars` of the
        command its first word names: the reply that says so. Otherwise None."""
        first = text.split(None, 1)
        if not first:
            return None
        word = first[0].lower()
        for cmd in self._by_pattern.values():
            if cmd.hidden or cmd.max_chars is None or len(text) <= cmd.max_chars:
                continue
            if word in (cmd.name, cmd.usage.split(None, 1)[0].lower()):
                return (
                    f"`{cmd.name}` reads messages of up to {cmd.max_chars:,} characters; "
                    f"that one has {len(text):,}. Nothing was done."
                )
        return None
