"""The stream model: `@stream`, what a stream subscribes to, and its options.

A stream is a plugin that sees the events of the inputs it subscribes to (messages
addressed to the bot or not, and the bot's own replies if it asks) and acts on them:
sends messages to any input, runs commands, reads and writes memory, schedules jobs.
It is a function `(ctx, event) -> None`, or a class whose instances have
`on_event(ctx, event)` (and, if they like, `on_start(ctx)`), decorated with `@stream`:

    @stream(inputs=("slack",), channels=("C0OPS",), pattern=r"deploy")
    def deploys(ctx: StreamContext, event: Event) -> None:
        ctx.send(input="email", to="ops@example.org", text=event.data)

Streams are found like commands (`load_streams`: built-ins, `bot.command_dirs`, the
entry point group `harken.streams`) and run only when the config has a
`[streams.<name>]` section for them. What a stream accepts there is declared like an
input's options: a frozen dataclass (`options=`), each field with its default; its
fields may be overridden by the keys every section takes (`inputs`, `channels`,
`users`, `replies`, `mailbox`). The running bot gives each stream an actor of its own
(actors/streams.py); this module imports nothing of the actors.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, overload

from commands.base import DEFAULT_MAX_CHARS
from config.inputs import InputSpec
from config.rules import TEXT_KINDS, ConfigError, Rule, apply
from core.context import Context

if TYPE_CHECKING:
    from config.settings import Settings
    from core.event import Event

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
    "STREAM_INPUT",
    "Stream",
    "StreamContext",
    "StreamLoadResult",
    "Subscription",
    "load_streams",
    "stream",
    "stream_problems",
    "streams_in",
]

ENTRY_POINT_GROUP = "harken.streams"
STREAM_INPUT = "stream"
"""The input name of what streams do themselves: a command a stream runs (`ctx.run`)
or schedules is said by user `<stream name>` on input `stream`, so its memory owner is
`stream:<name>`, it is no admin, and `[inputs.stream] groups` can grant it groups."""
BUILTIN_MODULES = ("commands.builtin.streams_digest", "commands.builtin.streams_relay")
DEFAULT_MAILBOX = 1000
"""Events a stream may have waiting before new ones are dropped (and counted)."""
COMMON_KEYS = ("inputs", "channels", "users", "replies", "mailbox")
"""Keys every `[streams.<name>]` section takes, overriding the decorator's values."""
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}\Z")


@dataclass(frozen=True)
class Subscription:
    """Which events a stream gets. Empty tuples mean any; all given must match."""

    inputs: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    pattern: re.Pattern[str] | None = None
    """Searched in the text; tried only on texts up to `max_chars` long."""
    max_chars: int = DEFAULT_MAX_CHARS
    replies: bool = False
    """Also the bot's own messages (answers, progress, what streams send)."""

    def matches(self, event: Event) -> bool:
        if self.inputs and event.input not in self.inputs:
            return False
        if self.channels and event.channel not in self.channels:
            return False
        if self.users and event.user not in self.users:
            return False
        if self.pattern is not None:
            text = event.data
            if len(text) > self.max_chars or self.pattern.search(text) is None:
                return False
        return True


class StreamContext(Context, Protocol):
    """What a stream gets as `ctx`: a command's Context (memory, jobs, `send`, `status`)
    for the stream's own identity (user `<name>` on input `stream`; `ctx.event` is that
    identity, the event being handled is the function's second argument), plus the
    stream's options and `run`."""

    @property
    def name(self) -> str: ...

    @property
    def options(self) -> Any:
        """An instance of the stream's options dataclass (None if it declares none)."""
        ...

    def run(self, text: str, *, timeout: float = 30.0) -> list[str]:
        """Run a command's text as this stream's identity, through the usual access
        rules, and return the texts of its replies. Raises TimeoutError."""
        ...


StreamFunc = Callable[[Any, "Event"], None]


@dataclass(frozen=True)
class Stream:
    """A stream as the bot knows it; made by `@stream`."""

    name: str
    target: Any
    """The decorated function, or the decorated class (one instance per start)."""
    subscription: Subscription = field(default_factory=Subscription)
    options: type[Any] | None = None
    """A frozen dataclass declaring what `[streams.<name>]` accepts (config/inputs.py
    style: each field with a default; `metadata={"required": True}` for what it needs)."""
    subscribe: Callable[[Any], Subscription] | None = None
    """The subscription as the options decide it (relay: from its `from`), or None."""
    mailbox: int = DEFAULT_MAILBOX
    description: str = ""
    source: str = "builtin"

    def make_handler(self) -> tuple[Callable[[Any, Event], None], Callable[[Any], None] | None]:
        """What to call per event and once at start, from a fresh instance for a class."""
        if isinstance(self.target, type):
            instance = self.target()
            return instance.on_event, getattr(instance, "on_start", None)
        return self.target, None

    def settings_for(self, settings: Settings) -> tuple[Any, Subscription, int]:
        """The options, subscription and mailbox this stream runs with.

        Raises `ConfigError` naming the key for anything its section gets wrong."""
        section = settings.streams.get(self.name)
        given = dict(section.options) if section is not None else {}
        key = f"streams.{self.name}"
        spec = InputSpec.of(self.options) if self.options is not None else InputSpec()
        known = [*spec.defaults, *COMMON_KEYS]
        for leaf in given:
            if leaf not in known:
                match = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
                hint = f" (did you mean {match[0]}?)" if match else ""
                raise ConfigError(
                    f"{key}.{leaf}",
                    f"unknown option{hint}; the {self.name} stream takes: {', '.join(known)}",
                )
        values = {
            leaf: _typed(f"{key}.{leaf}", spec.defaults[leaf], given[leaf])
            for leaf in spec.defaults
            if leaf in given
        }
        for leaf in spec.required:
            if _empty(values.get(leaf, spec.defaults.get(leaf))):
                raise ConfigError(f"{key}.{leaf}", f"is needed by the {self.name} stream")
        options = self.options(**values) if self.options is not None else None
        sub = self.subscribe(options) if self.subscribe is not None else self.subscription
        common = {
            leaf: _typed(f"{key}.{leaf}", default, given[leaf])
            for leaf, default in (
                ("inputs", ()),
                ("channels", ()),
                ("users", ()),
                ("replies", False),
            )
            if leaf in given
        }
        sub = dataclasses.replace(sub, **common)
        mailbox = self.mailbox
        if "mailbox" in given:
            mailbox = _typed(f"{key}.mailbox", 0, given["mailbox"])
            if mailbox < 1:
                raise ConfigError(f"{key}.mailbox", "must be at least 1")
        return options, sub, mailbox


def _typed(key: str, default: Any, value: Any) -> Any:
    kind = type(default)
    if kind not in TEXT_KINDS:
        return value
    rule = Rule(kind, TEXT_KINDS[kind])
    if isinstance(value, tuple):
        value = list(value)  # a list from the file, kept as a tuple by config/
    # From a file the value has its type; from --set it is text.
    as_text = isinstance(value, str) and kind is not str
    return apply(rule, key, value, None, text=as_text)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | tuple) and not value)


@overload
def stream(
    _target: Callable[..., Any] | type[Any],
    /,
    *,
    name: str | None = None,
    inputs: Iterable[str] = (),
    channels: Iterable[str] = (),
    users: Iterable[str] = (),
    pattern: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    replies: bool = False,
    options: type[Any] | None = None,
    subscribe: Callable[[Any], Subscription] | None = None,
    mailbox: int = DEFAULT_MAILBOX,
    description: str = "",
) -> Stream: ...


@overload
def stream(
    *,
    name: str | None = None,
    inputs: Iterable[str] = (),
    channels: Iterable[str] = (),
    users: Iterable[str] = (),
    pattern: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    replies: bool = False,
    options: type[Any] | None = None,
    subscribe: Callable[[Any], Subscription] | None = None,
    mailbox: int = DEFAULT_MAILBOX,
    description: str = "",
) -> Callable[[Callable[..., Any] | type[Any]], Stream]: ...


def stream(
    _target: Any = None,
    /,
    *,
    name: str | None = None,
    inputs: Iterable[str] = (),
    channels: Iterable[str] = (),
    users: Iterable[str] = (),
    pattern: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    replies: bool = False,
    options: type[Any] | None = None,
    subscribe: Callable[[Any], Subscription] | None = None,
    mailbox: int = DEFAULT_MAILBOX,
    description: str = "",
) -> Any:
    """Make a function `(ctx, event)` or a class with `on_event(ctx, event)` a stream.

    `inputs`, `channels`, `users` and `pattern` filter what it gets (empty: everything);
    `replies=True` adds the bot's own messages; `options` declares what its
    `[streams.<name>]` section takes; `mailbox` bounds the events waiting for it.
    """

    def wrap(target: Any) -> Stream:
        stream_name = name or getattr(target, "__name__", "").replace("_", "-").lower()
        if not _NAME.match(stream_name):
            raise ValueError(f"{stream_name!r} is not a valid stream name")
        if not (callable(target) or isinstance(target, type)):
            raise TypeError(f"stream {stream_name!r}: not a function or a class")
        if isinstance(target, type) and not callable(getattr(target, "on_event", None)):
            raise TypeError(f"stream {stream_name!r}: a class needs on_event(ctx, event)")
        if options is not None and not dataclasses.is_dataclass(options):
            raise TypeError(f"stream {stream_name!r}: options must be a dataclass")
        if mailbox < 1:
            raise ValueError(f"stream {stream_name!r}: mailbox must be at least 1")
        sub = Subscription(
            inputs=tuple(inputs),
            channels=tuple(channels),
            users=tuple(users),
            pattern=re.compile(pattern) if pattern is not None else None,
            max_chars=max_chars,
            replies=replies,
        )
        doc = description or (getattr(target, "__doc__", None) or "").strip().split("\n")[0]
        return Stream(stream_name, target, sub, options, subscribe, mailbox, doc)

    return wrap(_target) if _target is not None else wrap


def streams_in(obj: Any) -> list[Stream]:
    """The streams an object holds: itself, the items of a list, or a module's attributes."""
    if isinstance(obj, Stream):
        return [obj]
    if isinstance(obj, types.ModuleType):
        return [value for value in vars(obj).values() if isinstance(value, Stream)]
    if isinstance(obj, list | tuple):
        return [item for item in obj if isinstance(item, Stream)]
    return []


@dataclass
class StreamLoadResult:
    streams: dict[str, Stream] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _add(result: StreamLoadResult, found: Iterable[Stream], source: str) -> None:
    for item in found:
        held = result.streams.get(item.name)
        if held is not None and held is not item and held.target is not item.target:
            result.problems.append(
                f"{source}: stream {item.name!r} is already defined by {held.source}"
            )
            continue
        result.streams.setdefault(item.name, dataclasses.replace(item, source=source))


def load_streams(
    command_dirs: Iterable[str | Path] = (), *, use_entry_points: bool = True
) -> StreamLoadResult:
    """Every stream: the built-ins, entry points (`harken.streams`), then each `.py`
    file of `bot.command_dirs` (imported as the command loader imports them; a file
    that fails to load is reported by the command loader, and skipped here)."""
    # Imported here: the loader imports the built-in commands, which import this module.
    from commands.loader import dir_modules

    result = StreamLoadResult()
    for module_name in BUILTIN_MODULES:
        _add(result, streams_in(importlib.import_module(module_name)), "builtin")
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point {ep.name}"
            try:
                _add(result, streams_in(ep.load()), source)
            except Exception as exc:
                result.problems.append(f"{source}: failed to load: {exc!r}")
    for directory in command_dirs:
        folder = Path(directory)
        if not folder.is_dir():
            continue  # the command loader says so
        modules, _ = dir_modules(folder)  # its problems: the command loader says them
        for path, module in modules:
            own = [s for s in streams_in(module) if _defined_in(s) == module.__name__]
            _add(result, own, str(path))
    for problem in result.problems:
        logger.error("stream not loaded: %s", problem)
    return result


def _defined_in(item: Stream) -> str | None:
    module = getattr(item.target, "__module__", None)
    return module if isinstance(module, str) else None


def stream_problems(settings: Settings, streams: Mapping[str, Stream]) -> list[ConfigError]:
    """Sections for streams that do not exist, and options a stream refuses."""
    problems: list[ConfigError] = []
    for name in settings.streams:
        found = streams.get(name)
        if found is None:
            match = difflib.get_close_matches(name, list(streams), n=1, cutoff=0.6)
            hint = f" (did you mean {match[0]}?)" if match else ""
            problems.append(
                ConfigError(
                    f"streams.{name}",
                    f"there is no stream called {name!r}{hint} "
                    f"(streams: {', '.join(sorted(streams)) or 'none'})",
                )
            )
            continue
        try:
            found.settings_for(settings)
        except ConfigError as exc:
            problems.append(exc)
        except (TypeError, ValueError) as exc:
            problems.append(ConfigError(f"streams.{name}", str(exc)))
    return problems
