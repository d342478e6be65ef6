"""`TestBot`: the real actor system in-process, driven through the in-memory input.

For command authors (three lines with the `testbot` fixture) and for Harken's own tests
and benchmarks:

    def test_ping(testbot):
        assert testbot.ask("ping") == "pong"

`send` never blocks and returns the `Event` it sent; `replies(event)` waits for every
reply to it. A benchmark can pass its own `sink` to get the raw, thread-safe stream of
`Reply` and `Done` items instead. `configure` sets admins, groups, the time zone and
settings in plain values (no settings classes needed); `clock` is what dialogs expire
and jobs come due by, which a test moves on instead of waiting.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from actors.inputs.base import HEARD
from actors.inputs.testing import Done, Reply, Sink, TestingInput
from actors.messages import BringJobsForward, Inbound
from actors.runtime import Runtime
from actors.supervision import Handle
from actors.system import BotSystem
from commands.base import Command, Registry
from commands.loader import load_commands
from commands.streams import Stream, load_streams
from config.settings import InputSettings, Settings, StreamSettings
from core.event import Event, EventType
from harken.unit import INPUT_NAME, settings_for_tests

__all__ = ["INPUT_NAME", "Exchange", "TestBot", "TestClock", "wait_until"]


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for a state the test expects (polling), failing after `timeout` seconds.

    For states no reply announces (an actor restarted, a conversation retired, an input
    reconnected). Polling checks the state itself, so it never passes on a guess the
    way sleeping "long enough" does.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the condition did not come true within {timeout} s")
        pause.wait(0.01)


class Exchange:
    """Collects replies by the message they answer (thread-safe)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._replies: defaultdict[str, list[Event]] = defaultdict(list)
        self._done: set[str] = set()
        # Every message from the bot, for `wait_for`: reminders and the answers to
        # scheduled commands answer no message the test sent.
        self._seen: deque[Event] = deque(maxlen=10_000)

    def __call__(self, item: Reply | Done) -> None:
        with self._changed:
            if isinstance(item, Reply):
                self._replies[item.in_reply_to].append(item.event)
                self._seen.append(item.event)
            else:
                self._replies[item.event_id].extend(item.replies)
                self._done.add(item.event_id)
                self._seen.extend(item.replies)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float) -> Event:
        """The first message from the bot (sent or yet to come) that `predicate` accepts;
        it is consumed, so the next call finds the next one."""
        found: list[Event] = []

        def seen() -> bool:
            found[:] = [e for e in self._seen if predicate(e)][:1]
            return bool(found)

        with self._changed:
            if not self._changed.wait_for(seen, timeout):
                raise TimeoutError(f"no matching message from the bot within {timeout} s")
            self._seen.remove(found[0])
            return found[0]

    def wait(self, event_id: str, timeout: float) -> list[Event]:
        with self._changed:
            if not self._changed.wait_for(lambda: event_id in self._done, timeout):
                got = [e.data for e in self._replies.get(event_id, [])]
                raise TimeoutError(
                    f"no complete answer to message {event_id} within {timeout} s "
                    f"(replies so far: {got!r})"
                )
            self._done.discard(event_id)
            return self._replies.pop(event_id, [])


class TestClock:
    """The bot's clock in a test: the wall clock plus however far the test moved it on.

    Dialogs expire by it and pending jobs come due by it, so a test can let half an hour
    pass at once: `testbot.clock.advance(minutes=31)` expires an open dialog, and a
    reminder set "in 10 minutes" is sent after `advance(minutes=10)`. Time keeps
    flowing as well; a test that never advances it sees the wall clock.
    """

    __test__ = False

    def __init__(self) -> None:
        self._ahead = 0.0
        self.on_advance: Callable[[float], None] | None = None
        """Called with each step, once the bot runs: it brings the pending jobs forward."""

    def __call__(self) -> float:
        return time.time() + self._ahead

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0) -> None:
        step = seconds + 60 * minutes + 3600 * hours
        if step < 0:
            raise ValueError("a clock moves forward only")
        self._ahead += step
        if self.on_advance is not None and step:
            self.on_advance(step)


class TestBot:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        memory_path: str | Path,
        *,
        settings: Settings | Mapping[str, Any] | None = None,
        commands: Iterable[Command] = (),
        streams: Iterable[Stream] = (),
        admins: Iterable[str] = (),
        groups: Mapping[str, Iterable[str]] | None = None,
        timezone: str | None = None,
        sink: Sink | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._memory_path = str(memory_path)
        self._config: dict[str, Any] = {}
        self.system: BotSystem | None = None
        self._router: Handle | None = None
        self.settings = Settings()
        self.configure(settings=settings, admins=admins, groups=groups, timezone=timezone)
        self._extra = list(commands)
        self._streams = list(streams)
        """Streams under test; each runs when the settings have its `streams.<name>`."""
        self._exchange = Exchange()
        self._sink: Sink = sink or self._exchange
        self.timeout = timeout
        self.clock = TestClock()
        """What dialogs expire by: `testbot.clock.advance(minutes=31)`."""

    def configure(
        self,
        *,
        admins: Iterable[str] | None = None,
        groups: Mapping[str, Iterable[str]] | None = None,
        timezone: str | None = None,
        settings: Settings | Mapping[str, Any] | None = None,
    ) -> TestBot:
        """Set who is an admin, the groups (name -> user ids), the default time zone
        and settings (dotted keys, checked as `harken run --set` checks them:
        `{"ops.audit_keep": 10}`; or a `Settings`), before the first message. What is
        not given stays as it was."""
        if self.system is not None:
            raise RuntimeError("configure the bot before the first message: it is running")
        given = {"admins": admins, "groups": groups, "timezone": timezone, "settings": settings}
        config = {**self._config, **{k: v for k, v in given.items() if v is not None}}
        base = settings_for_tests(
            config.get("settings"),
            timezone=config.get("timezone"),
            admins=config.get("admins", ()),
            groups=config.get("groups"),
        )
        self.settings = dataclasses.replace(
            base,
            bot=dataclasses.replace(base.bot, inputs=(INPUT_NAME,)),
            memory=dataclasses.replace(base.memory, path=self._memory_path),
            scheduler=dataclasses.replace(base.scheduler, path=f"{self._memory_path}.jobs.sqlite"),
        )
        self._config = config  # only once the settings are good
        return self

    def add(self, *commands: Command) -> None:
        """Add commands under test; call before the first message."""
        if self.system is not None:
            raise RuntimeError("add commands before the first message: the bot is running")
        self._extra.extend(commands)

    def add_stream(self, *streams: Stream) -> None:
        """Add streams under test; call before the first message. Each runs, with its
        `streams.<name>` settings if there are any."""
        if self.system is not None:
            raise RuntimeError("add streams before the first message: the bot is running")
        self._streams.extend(streams)

    def start(self) -> TestBot:
        if self.system is not None:
            return self
        missing = {s.name: StreamSettings(s.name) for s in self._streams}
        missing.update(self.settings.streams)
        self.settings = dataclasses.replace(self.settings, streams=missing)
        loaded = load_commands(self.settings.bot.command_dirs, use_entry_points=False)
        registry: Registry = loaded.registry
        for cmd in self._extra:
            registry.add(cmd)
        streams = load_streams(self.settings.bot.command_dirs, use_entry_points=False).streams
        streams.update((item.name, item) for item in self._streams)
        sink = self._sink

        def make_input(settings: InputSettings, runtime: Runtime, router: Handle) -> Any:
            return TestingInput(settings, runtime, router, sink)

        system = BotSystem(
            self.settings, inputs={INPUT_NAME: make_input}, registry=registry, streams=streams
        )
        system.start()
        assert system.runtime is not None
        system.runtime.clock = self.clock
        scheduler = system.runtime.scheduler

        def bring_jobs_forward(seconds: float) -> None:
            if scheduler is not None:
                scheduler.ask(BringJobsForward(seconds))

        self.clock.on_advance = bring_jobs_forward
        self.system = system
        self._router = system.router
        return self

    def stop(self) -> None:
        self.clock.on_advance = None
        if self.system is not None:
            self.system.stop()
            self.system = None

    def restart(self) -> None:
        """Stop the bot and start a fresh one on the same memory, as after a restart."""
        self.stop()
        self._router = None
        self.start()

    def __enter__(self) -> TestBot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def event(
        self,
        text: str,
        *,
        user: str = "alice",
        channel: str = "",
        thread: str = "",
        display_name: str = "",
        addressed: bool = True,
    ) -> Event:
        """A person's message on the testing input; `addressed=False`: one said in the
        channel but not to the bot, as inputs hand them over for streams."""
        return Event(
            type=EventType.TEXT,
            sender=user,
            to=self.settings.bot.name,
            data=text,
            input=INPUT_NAME,
            channel=channel,
            thread=thread,
            display_name=display_name,
            meta={} if addressed else {HEARD: True},
        )

    def send(self, text: str, *, addressed: bool = True, **who: str) -> Event:
        """Send text as a person without waiting (`user=`, `channel=`, `thread=`);
        `addressed=False` says it in the channel, not to the bot: only streams see it."""
        return self.send_event(self.event(text, addressed=addressed, **who))

    def send_event(self, event: Event) -> Event:
        if self._router is None:
            self.start()
        assert self._router is not None
        self._router.tell(Inbound(event))
        return event

    def replies(self, event: Event, timeout: float | None = None) -> list[Event]:
        """Every reply to `event`, once the bot says it has answered it completely."""
        return self._exchange.wait(event.id, self.timeout if timeout is None else timeout)

    def wait_for(
        self, match: str | Callable[[Event], bool], *, timeout: float | None = None
    ) -> Event:
        """Wait for a message from the bot that answers nothing the test waits on: a
        reminder, the answer to a scheduled command. `match` is a text the message
        contains, or a test of the `Event`."""
        test = match if callable(match) else (lambda event: match in event.data)
        return self._exchange.wait_for(test, self.timeout if timeout is None else timeout)

    def ask(self, text: str, *, timeout: float | None = None, **who: str) -> str:
        """Send text and return the replies, joined by line breaks."""
        return "\n".join(
            e.data for e in self.replies(self.send(text, addressed=True, **who), timeout)
        )
