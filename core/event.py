"""The one message type between inputs and the bot.

An `Event` carries the Micro Bot's fields (type, from, to, data, meta) plus what a chat
needs to answer in the right place: the input it came through, the channel, the thread,
the person's display name, a timestamp and an id. It is immutable and round-trips
through JSON, because the scheduler and the memory store keep events on disk.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class EventType(StrEnum):
    """What an event is: a person's text, or something the bot says."""

    TEXT = "text"
    """Text from a person to the bot."""
    REPLY = "reply"
    """Text from the bot, addressed to the `to` of the event."""
    ERROR = "error"
    """A reply that reports a failure (a command that raised, a refused call)."""


class _Ids:
    """Event ids: 64 random bits drawn once per process, then a counter.

    As unique as fresh random ids for ids that outlive the process (the scheduler keeps
    events on disk): two processes share a prefix once in 2**64 starts. A random draw
    per event was a system call on every message, and one that lets go of the
    interpreter lock: on a busy bot the thread then waited to get it back.
    """

    def __init__(self) -> None:
        self._renew()
        # A forked child must not hand out its parent's ids.
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


new_id = _Ids()
"""A new id, unique across processes and restarts: for events, and for anything else
that needs one on a busy path (the XMPP input's stanza ids)."""


def _freeze(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(meta))


_NO_META: Mapping[str, Any] = MappingProxyType({})


def _no_meta() -> Mapping[str, Any]:
    return _NO_META


@dataclass(frozen=True, slots=True)
class Event:
    """A chat message travelling between an input and the bot.

    `sender` and `to` are the Micro Bot's `From` and `To` (`from` is a Python keyword);
    the JSON form uses the names `from` and `to`.
    """

    type: EventType
    sender: str
    """Who sent it: a user id on the input (the bot's own name for replies)."""
    to: str
    """Who it is for: the bot for text events, the person for replies."""
    data: str
    """The text."""
    input: str
    """Name of the input the conversation lives on (`shell`, `slack`, `xmpp`, ...)."""
    channel: str = ""
    """Channel, room or direct-message id on that input; empty for the shell."""
    thread: str = ""
    """Thread id on inputs that have threads; empty otherwise."""
    display_name: str = ""
    """The person's display name, when the input knows it."""
    meta: Mapping[str, Any] = field(default_factory=_no_meta)
    """Free-form extra data; read-only once the event exists."""
    timestamp: float = field(default_factory=time.time)
    id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, MappingProxyType):
            object.__setattr__(self, "meta", _freeze(self.meta))
        if not isinstance(self.type, EventType):
            object.__setattr__(self, "type", EventType(self.type))

    @property
    def user(self) -> str:
        """The person in the conversation: the sender of a text, the addressee of a reply."""
        return self.sender if self.type is EventType.TEXT else self.to

    def reply(self, text: str, *, type: EventType = EventType.REPLY, **meta: Any) -> Event:
        """The bot's answer to this event: same input, channel and thread, to the sender."""
        # Every answer is built here: positional, with its meta read-only already (so
        # `__post_init__` copies nothing), it costs a quarter less.
        merged = MappingProxyType({"in_reply_to": self.id, **meta})
        return Event(
            type,
            self.to,  # sender
            self.sender,  # to
            text,
            self.input,
            self.channel,
            self.thread,
            self.display_name,
            merged,
        )

    def with_data(self, text: str) -> Event:
        return replace(self, data=text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type.value,
            "from": self.sender,
            "to": self.to,
            "data": self.data,
            "input": self.input,
            "channel": self.channel,
            "thread": self.thread,
            "display_name": self.display_name,
            "meta": dict(self.meta),
            "timestamp": self.timestamp,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Event:
        try:
            return cls(
                type=EventType(raw["type"]),
                sender=str(raw["from"]),
                to=str(raw["to"]),
                data=str(raw["data"]),
                input=str(raw["input"]),
                channel=str(raw.get("channel", "")),
                thread=str(raw.get("thread", "")),
                display_name=str(raw.get("display_name", "")),
                meta=dict(raw.get("meta") or {}),
                timestamp=float(raw["timestamp"]),
                id=str(raw["id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an event: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> Event:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not an event: expected a JSON object")
        return cls.from_dict(raw)
