"""Harken: an actor-based, stateful ChatOps bot.

Everything a command author uses is importable from here:

    from harken import command, Context, Event
    from harken import dialog, Ask, Choice, Confirm, Invalid, Answers   # dialogs
    from harken import parse_when, WhenError, SchedulingRefused          # later
    from harken import SendRefused                                       # ctx.send
    from harken import stream, StreamContext, Subscription               # streams

The names are imported when first used, not with the package: `python -m harken` and
the `harken` command first check that Harken's top-level packages (`actors`, `config`,
...) are its own (harken/layout.py), which they could not do once these imports had
loaded a module that shadows one of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from commands.base import Command, Registry, command
    from commands.dialogs import Answers, Ask, Choice, Confirm, Invalid, dialog
    from commands.streams import StreamContext, Subscription, stream
    from commands.when import WhenError, parse_when
    from core.context import (
        Context,
        MemoryRefused,
        MemoryView,
        SchedulingRefused,
        SendRefused,
    )
    from core.event import Event, EventType
    from core.jobs import When
    from harken.testbot import TestBot

_EXPORTS = {
    "Event": "core.event",
    "EventType": "core.event",
    "Command": "commands.base",
    "Registry": "commands.base",
    "command": "commands.base",
    "Context": "core.context",
    "MemoryRefused": "core.context",
    "MemoryView": "core.context",
    "SchedulingRefused": "core.context",
    "SendRefused": "core.context",
    "Answers": "commands.dialogs",
    "Ask": "commands.dialogs",
    "Choice": "commands.dialogs",
    "Confirm": "commands.dialogs",
    "Invalid": "commands.dialogs",
    "dialog": "commands.dialogs",
    "When": "core.jobs",
    "WhenError": "commands.when",
    "parse_when": "commands.when",
    "TestBot": "harken.testbot",
    "stream": "commands.streams",
    "StreamContext": "commands.streams",
    "Subscription": "commands.streams",
}

__all__ = [
    "Answers",
    "Ask",
    "Choice",
    "Command",
    "Confirm",
    "Context",
    "Event",
    "EventType",
    "Invalid",
    "MemoryRefused",
    "MemoryView",
    "Registry",
    "SchedulingRefused",
    "SendRefused",
    "StreamContext",
    "Subscription",
    "TestBot",
    "When",
    "WhenError",
    "command",
    "dialog",
    "parse_when",
    "stream",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harken' has no attribute {name!r}")
    from harken.layout import shadowing

    problem = shadowing()
    if problem is not None:
        raise ImportError(problem)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
