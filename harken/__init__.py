"""Harken: an actor-based, stateful ChatOps bot.

Everything a command author uses is importable from here:

    from harken import command, Context, Event
"""

from actors.event import Event, EventType
from commands.base import Command, Registry, command
from commands.context import Context, MemoryRefused, MemoryView
from harken.testbot import TestBot

__all__ = [
    "Command",
    "Context",
    "Event",
    "EventType",
    "MemoryRefused",
    "MemoryView",
    "Registry",
    "TestBot",
    "command",
]
__version__ = "0.1.0"
