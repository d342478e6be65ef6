"""Reading `[streams.<name>]` tables: which streams run, and their options as written.

A stream runs only when it has a section (an empty one will do). What a stream accepts
is declared by the stream itself (commands/streams.py), which this package cannot
import: here each section is only checked for shape (a table of strings, numbers,
booleans and lists of strings, no secrets); the options' names and types are checked
against the declaration at start-up and by `harken check`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from config.inputs import is_secret_key
from config.ops_config import TableError, check_name
from config.settings import Settings, StreamSettings

__all__ = ["read_streams", "render_streams"]


def _value(key: str, value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise TableError(key, "must be a string, a number, true or false, or a list of strings")


def read_streams(value: Any) -> dict[str, StreamSettings]:
    if not isinstance(value, dict):
        raise TableError("streams", "must be a table ([streams.<name>])")
    streams: dict[str, StreamSettings] = {}
    for name, table in value.items():
        key = f"streams.{name}"
        check_name(key, name)
        if not isinstance(table, dict):
            raise TableError(key, f"must be a table ([{key}])")
        options: dict[str, Any] = {}
        for leaf, option in table.items():
            if is_secret_key(leaf):
                raise TableError(f"{key}.{leaf}", "a stream takes no secrets")
            options[leaf] = _value(f"{key}.{leaf}", option)
        streams[name] = StreamSettings(name=name, options=options)
    return streams


def render_streams(settings: Settings, show: Callable[[Any], str]) -> list[str]:
    """The streams' sections, for `harken check`."""
    out: list[str] = []
    for stream in settings.streams.values():
        out += ["", f"[streams.{stream.name}]"]
        out += [f"{leaf} = {show(value)}" for leaf, value in stream.options.items()]
    return out
