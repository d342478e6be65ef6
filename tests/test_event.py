import dataclasses
import json
import os

import pytest

from core.event import Event, EventType


def make_event(**extra: object) -> Event:
    fields: dict[str, object] = {
        "type": EventType.TEXT,
        "sender": "U1",
        "to": "harken",
        "data": "ping \u202e ünïcode",
        "input": "slack",
        "channel": "C9",
        "thread": "171.2",
        "display_name": "Ann",
        "meta": {"k": [1, 2]},
    }
    fields.update(extra)
    return Event(**fields)  # type: ignore[arg-type]


def test_event_round_trips_through_json() -> None:
    event = make_event()
    again = Event.from_json(event.to_json())
    assert again == event
    assert json.loads(event.to_json())["from"] == "U1"


def test_event_is_immutable_including_meta() -> None:
    event = make_event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.meta["k"] = 3  # type: ignore[index]


def test_reply_goes_back_to_the_sender_in_the_same_place() -> None:
    event = make_event()
    reply = event.reply("pong")
    assert (reply.type, reply.sender, reply.to, reply.data) == (
        EventType.REPLY,
        "harken",
        "U1",
        "pong",
    )
    assert (reply.input, reply.channel, reply.thread) == ("slack", "C9", "171.2")
    assert reply.meta["in_reply_to"] == event.id
    assert reply.user == event.user == "U1"


@pytest.mark.parametrize("bad", ["[]", "{}", '{"type": "nope"}'])
def test_malformed_event_json_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="not an event"):
        Event.from_json(bad)


def test_event_ids_are_unique_in_a_process_and_in_a_forked_child() -> None:
    ids = {Event(EventType.TEXT, "ann", "harken", "hi", "shell").id for _ in range(10_000)}
    assert len(ids) == 10_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id of its own and leave at once
        os.write(write, Event(EventType.TEXT, "ann", "harken", "hi", "shell").id.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_id = pipe.read()
    os.waitpid(pid, 0)
    parent_next = Event(EventType.TEXT, "ann", "harken", "hi", "shell").id
    assert child_id
    assert child_id not in ids
    assert child_id != parent_next
    # The child drew a prefix of its own rather than counting on from the parent's.
    assert child_id[:16] != parent_next[:16]
