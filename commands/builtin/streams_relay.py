"""The `relay` stream: mirror one room into another, on any two inputs.

    [streams.relay]
    from_room = "xmpp:ops@conference.example.org"   # <input>:<channel or room>
    to_room = "irc:#ops"
    both_ways = true                                 # and back again

Every message said in `from_room` (addressed to the bot or not) is posted in `to_room`
as `[xmpp] alice: text`; with `both_ways`, the other way too. It is loop-safe: what it
posts carries `meta["via"]` with its name, so the hub never hands it back to the relay
(even with `replies = true`, which mirrors the bot's answers in the room too), and the
inputs drop the bot's own messages when a room echoes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from commands.streams import StreamContext, Subscription, stream
from config.rules import ConfigError
from core.event import Event, EventType


@dataclass(frozen=True, kw_only=True)
class RelayOptions:
    from_room: str = field(default="", metadata={"required": True})
    """Where messages come from: `<input>:<channel>` (`xmpp:ops@conference.example.org`)."""
    to_room: str = field(default="", metadata={"required": True})
    """Where they go: `<input>:<channel>` (`irc:#ops`, `slack:C0123ABCD`)."""
    both_ways: bool = False
    """Mirror `to_room` back into `from_room` as well."""


def room(key: str, text: str) -> tuple[str, str]:
    """`<input>:<channel>` as (input, channel); `ConfigError` naming `key` if it is not."""
    input_name, sep, channel = text.partition(":")
    if not sep or not input_name or not channel:
        raise ConfigError(key, f"must be <input>:<channel>, e.g. irc:#ops (got {text!r})")
    # IRC channel names are case-insensitive; the IRC input gives them in lower case.
    return input_name, channel.lower() if channel.startswith(("#", "&")) else channel


def _subscription(options: RelayOptions) -> Subscription:
    source = room("streams.relay.from_room", options.from_room)
    target = room("streams.relay.to_room", options.to_room)
    if source == target:
        raise ConfigError("streams.relay.to_room", "is the same room as from_room")
    rooms = [source, target] if options.both_ways else [source]
    return Subscription(
        inputs=tuple(dict.fromkeys(r[0] for r in rooms)),
        channels=tuple(dict.fromkeys(r[1] for r in rooms)),
    )


@stream(name="relay", options=RelayOptions, subscribe=_subscription)
def relay(ctx: StreamContext, event: Event) -> None:
    """Mirror one room into another (and back, with both_ways)."""
    options: RelayOptions = ctx.options
    source = room("streams.relay.from_room", options.from_room)
    target = room("streams.relay.to_room", options.to_room)
    here = (event.input, event.channel)
    if here == source:
        there = target
    elif options.both_ways and here == target:
        there = source
    else:
        return
    said_by_bot = event.type is not EventType.TEXT  # an answer, with `replies = true`
    who = ctx.settings.bot.name if said_by_bot else event.display_name or event.user
    text = event.data
    if said_by_bot and event.display_name:
        text = f"{event.display_name}: {text}"  # as the room saw it: addressed to them
    ctx.send(input=there[0], to=there[1], text=f"[{event.input}] {who}: {text}")
