"""Harken: an actor-based, stateful ChatOps bot.

Everything a command author uses is importable from here:

    from harken import command, Context, Event
    from harken import dialog, Ask, Choice, Confirm, Invalid, Answers   # dialogs
    from harken import parse_when, WhenError, SchedulingRefused          # later
"""

from actors.event import Event, EventType
from commands.base import Command, Registry, command
from commands.context import Context, MemoryRefused, MemoryView, SchedulingRefused
from commands.dialogs import Answers, Ask, Choice, Confirm, Invalid, dialog
from commands.when import When, WhenError, parse_when
from harken.testbot import TestBot

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
    "TestBot",
    "When",
    "WhenError",
    "command",
    "dialog",
    "parse_when",
]
__version__ = "0.1.0"
