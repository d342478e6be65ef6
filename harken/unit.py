"""`call`: one command, one message, in milliseconds, for a unit test.

    from harken.testing import call

    def test_pager():
        result = call(recall, "recall pager", memory={"pager": "555"})
        assert result.replies == ["pager is 555"]

The command runs on the caller's thread with a real `Context`, whose memory is a real
`MemoryActor` owning an in-memory store that checks and stores values as the bot's does
(JSON, the same key and size limits), so a command that passes here does not fail in
the bot on what it stores. Access rules (admins only, `[access.commands]` groups) are
applied as the bot applies them. Jobs the command schedules are recorded in the result,
not scheduled. No router, conversations or workers run: dialogs, ordering, restarts
and reminders that fire are for the `testbot` fixture (harken/testbot.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import secrets
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pykka

from actors.access import refusal as access_refusal
from actors.context import Context, MemoryView
from actors.memory_actor import MemoryActor
from actors.messages import CancelJob, ListJobs, MemoryBarrier, ScheduleJob
from actors.runner import refused_store_text
from actors.supervision import Handle
from actors.text import clean_text
from commands.base import Command, Registry
from commands.dialogs import dialog_of
from commands.loader import load_commands
from config.loader import load_settings
from config.settings import InputSettings, Settings
from core.context import TEAM_OWNER, USER_NS, MemoryRefused, owner_of
from core.event import Event, EventType
from core.jobs import CancelResult, JobInfo
from memory.store import (
    DEFAULT_MAX_VALUE_BYTES,
    JSON,
    StoreClosed,
    check_names,
    encode_value,
)

__all__ = ["INPUT_NAME", "CallResult", "InMemoryStore", "call", "settings_for_tests"]

INPUT_NAME = "testing"
"""The input the people of a test talk through (their memory owner is `testing:<user>`)."""

_TIMEOUT = 10.0
_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
"""Job ids look like the scheduler's: six characters without look-alikes."""

Stored = dict[tuple[str, str], dict[str, Any]]
"""Memory by (namespace, owner), then key."""


# --- settings --------------------------------------------------------------------------


def _as_text(key: str, value: object) -> str:
    """A value as `harken run --set key=value` takes it (lists comma-separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list | tuple):
        items = [_as_text(key, item) for item in value]
        if any("," in item for item in items):
            raise ValueError(f"setting {key}: a list item cannot hold a comma")
        return ",".join(items)
    raise TypeError(
        f"setting {key}: {type(value).__name__} is not a setting's value; give each key of "
        "a table on its own, e.g. 'services.web.url'"
    )


@functools.lru_cache(maxsize=64)
def _loaded(overrides: tuple[tuple[str, str], ...]) -> Settings:
    # The shipped defaults, then the overrides, checked as the command line's are; the
    # environment of the test run is left out.
    return load_settings(env={}, overrides=dict(overrides))


def settings_for_tests(
    settings: Settings | Mapping[str, Any] | None = None,
    *,
    timezone: str | None = None,
    admins: Iterable[str] = (),
    groups: Mapping[str, Iterable[str]] | None = None,
) -> Settings:
    """Settings for a test: `settings` as dotted keys (`{"ops.audit_keep": 10}`, checked
    as `harken run --set` checks them) or a `Settings`; `timezone` is `bot.timezone`;
    `admins` and `groups` (name -> members) are added to the `testing` input's.

    A wrong key or value raises `config.ConfigError` naming it.
    """
    if isinstance(settings, Settings):
        base = settings
        if timezone is not None:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{timezone!r} is not an IANA time zone name") from None
            base = dataclasses.replace(base, bot=dataclasses.replace(base.bot, timezone=timezone))
    else:
        overrides = {key: _as_text(key, value) for key, value in (settings or {}).items()}
        if timezone is not None:
            overrides["bot.timezone"] = timezone
        base = _loaded(tuple(sorted(overrides.items())))
    current = base.inputs.get(INPUT_NAME) or InputSettings(name=INPUT_NAME)
    members = {name: list(users) for name, users in current.groups.items()}
    for name, users in (groups or {}).items():
        if isinstance(users, str):
            raise TypeError(f"group {name!r}: give a list of user ids, not one string")
        members.setdefault(name, []).extend(u for u in users if u not in members[name])
    testing = dataclasses.replace(
        current,
        admins=tuple(dict.fromkeys([*current.admins, *admins])),
        groups={name: tuple(users) for name, users in members.items()},
    )
    return dataclasses.replace(base, inputs={**base.inputs, INPUT_NAME: testing})


# --- memory ------------------------------------------------------------------------------


class InMemoryStore:
    """A `memory.store.Store` in a dict: the TinyDB store's checks and JSON round trip
    (a tuple reads back as a list), without files. Nothing survives the process."""

    def __init__(self, *, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> None:
        self._tables: dict[tuple[str, str], dict[str, str]] = {}
        self._max_value_bytes = max_value_bytes
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the in-memory store is closed")

    def get(self, namespace: str, owner: str, key: str, default: JSON = None) -> JSON:
        self._check_open()
        check_names(namespace, owner, key)
        text = self._tables.get((namespace, owner), {}).get(key)
        return default if text is None else json.loads(text)

    def keys(self, namespace: str, owner: str) -> list[str]:
        self._check_open()
        check_names(namespace, owner)
        return sorted(self._tables.get((namespace, owner), ()))

    def put(self, namespace: str, owner: str, key: str, value: JSON) -> None:
        self._check_open()
        check_names(namespace, owner, key)
        text = encode_value(value, self._max_value_bytes)
        self._tables.setdefault((namespace, owner), {})[key] = text

    def delete(self, namespace: str, owner: str, key: str) -> bool:
        self._check_open()
        check_names(namespace, owner, key)
        table = self._tables.get((namespace, owner), {})
        return table.pop(key, None) is not None

    def commit(self) -> None:
        self._check_open()

    def close(self) -> None:
        self._closed = True

    def contents(self) -> Stored:
        """Everything stored, decoded (open or closed)."""
        return {
            place: {key: json.loads(text) for key, text in sorted(table.items())}
            for place, table in self._tables.items()
            if table
        }


class _Direct(Handle):
    """The address of one actor that no supervisor restarts."""

    def __init__(self, name: str, target: pykka.ActorRef[Any]) -> None:
        super().__init__(name)
        self._target = target

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        return self._target

    def is_alive(self) -> bool:
        return self._target.is_alive()

    def tell(self, message: Any) -> None:
        self._target.tell(message)

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        return self._target.ask(message, timeout=timeout)


def _wait_durable(memory: Handle) -> None:
    """Wait, as the bot does before replying, until every write told so far is durable."""
    outcome: list[BaseException | None] = []
    done = threading.Event()

    def notify(error: BaseException | None) -> None:
        outcome.append(error)
        done.set()

    memory.tell(MemoryBarrier(notify))
    if not done.wait(_TIMEOUT):
        raise TimeoutError(f"the memory actor did not commit within {_TIMEOUT} s")
    if outcome[0] is not None:
        raise RuntimeError(f"the memory actor could not commit: {outcome[0]}")


# --- scheduling ----------------------------------------------------------------------------


class _JobBook(Handle):
    """Stands in for the scheduler actor: answers `ScheduleJob`, `ListJobs` and `CancelJob`
    as it does, but keeps the jobs in a list instead of a job store, and runs none."""

    def __init__(self) -> None:
        super().__init__("scheduler")
        self.jobs: list[JobInfo] = []

    def tell(self, message: Any) -> None:
        self.ask(message)

    def ask(self, message: Any, timeout: float | None = None) -> Any:
        if isinstance(message, ScheduleJob):
            now = datetime.now(UTC)
            first = message.trigger.get_next_fire_time(None, now)
            job = JobInfo(
                "".join(secrets.choice(_ID_ALPHABET) for _ in range(6)),
                message.spec,
                None if first is None else first.astimezone(UTC),
            )
            self.jobs.append(job)
            return job
        if isinstance(message, ListJobs):
            far = datetime.max.replace(tzinfo=UTC)
            mine = [job for job in self.jobs if job.spec.owner == message.owner]
            return sorted(mine, key=lambda job: job.next_run or far)
        if isinstance(message, CancelJob):
            job_id = message.job_id.strip().lower()
            found = [job for job in self.jobs if job.id == job_id]
            if not found:
                return CancelResult("missing")
            job = found[0]
            job_input = job.spec.event.input
            if job.spec.owner != message.owner and not (
                message.is_admin and job_input == message.input
            ):
                return CancelResult("refused")
            self.jobs.remove(job)
            return CancelResult("cancelled", dataclasses.replace(job, next_run=None))
        raise NotImplementedError(
            f"harken.testing.call keeps no scheduler; {type(message).__name__} is not "
            "supported (use the testbot fixture)"
        )


# --- the call --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallResult:
    """What one call of a command did."""

    replies: list[str]
    """The replies, in order, as the person would get them (a refusal is one reply)."""
    said: list[str]
    """What the command sent with `ctx.say` before it returned."""
    memory: dict[str, Any]
    """The person's own memory (`memory`, `ctx.memory`) after the call."""
    scheduled: list[JobInfo]
    """Jobs the command scheduled (and did not cancel), in order; none will run."""
    refused: bool = False
    """The access rules refused the call: the command did not run."""
    stored: Stored = field(default_factory=dict, repr=False)
    """All memory after the call, by (namespace, owner) then key."""
    owner: str = ""

    @property
    def text(self) -> str:
        """The replies joined by line breaks, as `testbot.ask` returns them."""
        return "\n".join(self.replies)

    def memory_for(self, namespace: str) -> dict[str, Any]:
        """The person's memory in `namespace` after the call (`ctx.memory_for`)."""
        return dict(self.stored.get((namespace, self.owner), {}))

    def team_memory(self, namespace: str) -> dict[str, Any]:
        """The team's memory in `namespace` after the call (`ctx.team_memory`)."""
        return dict(self.stored.get((namespace, TEAM_OWNER), {}))


@functools.cache
def _builtins() -> tuple[Command, ...]:
    return tuple(load_commands(use_entry_points=False).registry.commands())


def _registry(command: Command, extra: Iterable[Command]) -> tuple[Registry, Command]:
    """The bot's registry (built-ins, then `extra` and `command`), and `command` as the
    bot registers it: a built-in without its pattern's length limit."""
    registry = Registry(list(_builtins()))
    for cmd in [*extra, command]:
        known = registry.by_name(cmd.name)
        if known is None or known.func is not cmd.func:
            registry.add(cmd)  # a clash is refused here as the bot refuses it at start
    found = registry.by_name(command.name)
    assert found is not None
    return registry, found


def _run(command: Command, ctx: Context, groups: Mapping[str, str | None]) -> list[str]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return command.call(ctx, groups)
    # Called from async code: an `async def` command needs a loop of its own, as on a
    # worker of the bot, and `asyncio.run` refuses to start one inside another.
    with ThreadPoolExecutor(1, thread_name_prefix="harken-call") as pool:
        return pool.submit(command.call, ctx, groups).result()


def _seed(view: MemoryView, values: Mapping[str, Any] | None, what: str) -> None:
    for key, value in (values or {}).items():
        try:
            view.set(key, value)
        except MemoryRefused as exc:
            raise ValueError(f"{what}[{key!r}]: Harken could not store that: {exc}") from None


def call(
    command: Command,
    text: str,
    *,
    user: str = "alice",
    memory: Mapping[str, Any] | None = None,
    memory_for: Mapping[str, Mapping[str, Any]] | None = None,
    team_memory: Mapping[str, Mapping[str, Any]] | None = None,
    admin: bool = False,
    groups: Iterable[str] = (),
    settings: Settings | Mapping[str, Any] | None = None,
    timezone: str | None = None,
    channel: str = "",
    thread: str = "",
    display_name: str = "",
    commands: Iterable[Command] = (),
) -> CallResult:
    """Run `command` for the message `text` from `user`, and return what it did.

    * `memory`: the person's own memory before the call (`{"pager": "555"}`);
      `memory_for`: their other namespaces (`{"profile": {"timezone": "Asia/Tokyo"}}`);
      `team_memory`: the team's, by namespace. Values the bot could not store (not JSON,
      over 32 KiB, a bad key) raise `ValueError`.
    * `admin`: the person is an admin on the input; `groups`: the groups they are in.
      The command's access rules apply as in the bot: a refusal is the reply, and
      `result.refused` is true.
    * `settings`: dotted keys as for `harken run --set` (`{"ops.audit_keep": 10,
      "access.commands.oncall": ["ops"]}`), or a `Settings`; `timezone`: the bot's
      default time zone (`bot.timezone`).
    * `commands`: more commands for `ctx.registry` (`help`), besides the built-ins.

    Supported from `Context`: memory (`memory`, `ctx.memory`, `ctx.profile`,
    `ctx.memory_for`, `ctx.team_memory`), `ctx.say` (in `result.said`), settings,
    registry, `is_admin`, `timezone()`, and scheduling: `ctx.schedule_reminder` and
    `ctx.schedule_command` answer as the bot does and record the job in
    `result.scheduled` (nothing runs later); `ctx.jobs()` and `ctx.cancel_job` see the
    jobs of this call only, and the per-person job limit is not applied.
    `ctx.status()` (the running bot's health, for `status`) is None, as for any command
    run outside the bot. A dialog raises `TypeError`: it takes several messages (use
    the `testbot` fixture). `text` the command's pattern does not match raises
    `ValueError`. An exception the command raises is raised here (the bot would log it
    and answer with an error id); `MemoryRefused` is answered as the bot answers it.
    """
    if dialog_of(command) is not None:
        raise TypeError(
            f"`{command.name}` is a dialog: it takes several messages, and "
            "harken.testing.call runs one. Drive it with the testbot fixture."
        )
    config = settings_for_tests(
        settings,
        timezone=timezone,
        admins=[user] if admin else [],
        groups={name: [user] for name in groups},
    )
    event = Event(
        type=EventType.TEXT,
        sender=user,
        to=config.bot.name,
        data=clean_text(text),
        input=INPUT_NAME,
        channel=channel,
        thread=thread,
        display_name=display_name,
    )
    registry, runs = _registry(command, commands)
    match = runs.match(event.data)
    if match is None:
        raise ValueError(
            f"{text!r} does not match the pattern of `{runs.name}` ({runs.pattern!r}"
            + (f", messages of up to {runs.max_chars} characters" if runs.max_chars else "")
            + ")"
        )
    found = match.groupdict()
    is_admin = user in config.inputs[INPUT_NAME].admins
    owner = owner_of(event)
    store = InMemoryStore()
    actor = MemoryActor.start(store)
    said: list[str] = []
    jobs = _JobBook()
    try:
        handle = _Direct("memory", actor)

        def view(namespace: str, whose: str) -> MemoryView:
            return MemoryView(handle, namespace, whose, lambda: None)

        _seed(view(USER_NS, owner), memory, "memory")
        for namespace, values in (memory_for or {}).items():
            _seed(view(namespace, owner), values, f"memory_for[{namespace!r}]")
        for namespace, values in (team_memory or {}).items():
            _seed(view(namespace, TEAM_OWNER), values, f"team_memory[{namespace!r}]")

        refused = access_refusal(
            config, runs.name, admin_only=runs.admin_only, event=event, is_admin=is_admin
        )
        if refused is not None:
            replies = [refused[1]]
        elif runs.quick:
            replies = runs.call_quick(event, found)
        else:
            ctx = Context(
                event,
                memory=handle,
                settings=config,
                registry=registry,
                is_admin=is_admin,
                say=said.append,
                scheduler=jobs,
                runtime=None,
            )
            try:
                replies = _run(runs, ctx, found)
            except MemoryRefused as exc:
                replies = [refused_store_text(exc)]
            if ctx.wrote:
                _wait_durable(handle)
    finally:
        actor.stop()
    stored = store.contents()
    return CallResult(
        replies=replies,
        said=said,
        memory=dict(stored.get((USER_NS, owner), {})),
        scheduled=list(jobs.jobs),
        refused=refused is not None,
        stored=stored,
        owner=owner,
    )
