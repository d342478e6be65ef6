"""Built-in commands over a person's own memory: remember, recall, forget, memory.

Keys are per person (per input and user id): one person never sees another's keys.
Keys are matched without regard to case or repeated spaces, and a key longer than
`MAX_KEY_CHARS` (as matched) is refused at once, naming the limit.
"""

from __future__ import annotations

import re

from commands.base import command
from core.context import MemoryView, key_problem

_SPACES = re.compile(r"\s+")


def normalise_key(key: str) -> str:
    return _SPACES.sub(" ", key.strip()).lower()


@command(
    r"^remember(?:\s+(?P<rest>.*))?$",
    usage="remember <key> is <value>",
    description="Remember something for you, under a key.",
)
def remember(memory: MemoryView, rest: str | None) -> str:
    key, sep, value = (rest or "").partition(" is ")
    key, value = normalise_key(key), value.strip()
    if not sep or not key or not value:
        return "Usage: remember <key> is <value>, for example `remember pager is 555-0100`."
    if problem := key_problem(key):
        return problem + "."
    memory.set(key, value)
    return f"OK, I'll remember that {key} is {value}."


@command(
    r"^recall(?:\s+(?P<key>.*))?$",
    usage="recall <key>",
    description="Tell you what you asked me to remember under <key>.",
)
def recall(memory: MemoryView, key: str | None) -> str:
    key = normalise_key(key or "")
    if not key:
        return "Usage: recall <key>. Say `memory` to list your keys."
    if problem := key_problem(key):
        return problem + "."
    value = memory.get(key)
    if value is None:
        return f"I don't know {key}. Say `memory` to list what I remember for you."
    return f"{key} is {value}"


@command(
    r"^forget(?:\s+(?P<key>.*))?$",
    usage="forget <key>",
    description="Forget what I remembered for you under <key>.",
)
def forget(memory: MemoryView, key: str | None) -> str:
    key = normalise_key(key or "")
    if not key:
        return "Usage: forget <key>."
    if problem := key_problem(key):
        return problem + "."
    if memory.delete(key):
        return f"OK, I forgot {key}."
    return f"I don't know {key}, so there was nothing to forget."


@command(r"^memory$", usage="memory", description="List the keys I remember for you.")
def memory(memory: MemoryView) -> str:
    keys = memory.keys()
    if not keys:
        return "I don't remember anything for you yet. Try `remember <key> is <value>`."
    return "I remember, for you: " + ", ".join(keys)
