import dataclasses
import json

import pytest

from actors.event import Event, EventType


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
