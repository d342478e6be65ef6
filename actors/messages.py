"""Typed messages between Harken's actors.

Small, immutable and named for what they ask, in the style of `pykka.messages`. Chat
traffic itself is always an `Event`; these messages wrap events with the routing
information the receiving actor needs, or ask an actor for something.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from core.event import Event

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger

    from actors.runner import Turn
    from commands.dialogs import DialogState
    from core.jobs import JobSpec

JSON = Any
"""A value that `json.dumps` accepts: what the memory store keeps."""


# --- inputs -> router -> conversations ------------------------------------------------


class Inbound(NamedTuple):
    """A person's text arrived on an input (input -> router -> conversation)."""

    event: Event


class Outbound(NamedTuple):
    """Send this event to its person now (anyone -> input actor).

    For what is not the final answer to a message: progress from a slow command, a
    reminder, a message to another channel.
    """

    event: Event


class Answered(NamedTuple):
    """The complete answer to one person's message (-> the input it came from).

    Send `replies` in order; after them, nothing more will come for `event_id`. Inputs
    that must know when a message is fully answered (the shell reading a pipe, the
    testing kit) rely on this; one message instead of one per reply plus a "done" saves
    a hop on the busiest path.
    """

    event_id: str
    replies: tuple[Event, ...]


class ConversationIdle(NamedTuple):
    """Router's own tick: retire conversations idle for longer than the configured time."""

    now: float


class RetireIfIdle(NamedTuple):
    """Router -> conversation: answer `IdleNow` if nothing is running or waiting.

    `seen` is when the router last gave this conversation a message; it comes back in
    `IdleNow`, so the router can tell whether it gave it another one meanwhile."""

    seen: float


class IdleNow(NamedTuple):
    """Conversation -> router: nothing runs or waits here (an answer to `RetireIfIdle`)."""

    key: tuple[str, str, str, str]
    seen: float


class RouterStats(NamedTuple):
    """Ask the router for its figures: active and retired conversations."""


# --- conversations -> command actors -> the runner (actors/runner.py) ---------------


class RunTurn(NamedTuple):
    """Authorize and run this turn (conversation -> the actor of its command)."""

    turn: Turn


class TurnDone(NamedTuple):
    """The turn for this event is answered and its writes durable (runner ->
    conversation), whatever the outcome. `dialog` is the open dialog now (None: none)."""

    event_id: str
    dialog: DialogState | None


class DialogLoaded(NamedTuple):
    """The conversation's open dialog as memory has it, or None (worker -> conversation)."""

    state: DialogState | None


# --- supervision -----------------------------------------------------------------------


class ActorCrashed(NamedTuple):
    """A supervised actor died of an unhandled exception (actor -> supervisor)."""

    name: str
    error: str


# --- memory actor ----------------------------------------------------------------------
# Reads are asks (`ask(MemoryGet(...))` returns the value); writes are tells, applied in
# the order they arrive and made durable together (group commit). A `MemoryBarrier`
# queued after writes fires once every write before it is on disk.


class MemoryGet(NamedTuple):
    """Ask: the value stored under (namespace, owner, key), or `default`."""

    namespace: str
    owner: str
    key: str
    default: JSON = None


class MemoryFetch(NamedTuple):
    """Tell: read (namespace, owner, key) and call `notify(value, error)` with the answer.

    `value` is the stored value (None if there is none) and `error` None, or `error` is
    what the read raised. The read sees every write told to memory before it. Reads
    that wait in the memory actor together are answered by one query when the store can
    (`PgStore.get_many`), before the next commit. `notify` runs on the memory actor's
    thread, so it must be quick (typically one `tell`).
    """

    namespace: str
    owner: str
    key: str
    notify: Callable[[JSON, BaseException | None], None]


class MemoryKeys(NamedTuple):
    """Ask: the sorted keys stored for (namespace, owner)."""

    namespace: str
    owner: str


class MemoryPut(NamedTuple):
    """Tell: store a JSON value under (namespace, owner, key)."""

    namespace: str
    owner: str
    key: str
    value: JSON


class MemoryDelete(NamedTuple):
    """Ask or tell: remove a key; an ask returns whether it existed."""

    namespace: str
    owner: str
    key: str


class MemoryBarrier(NamedTuple):
    """Tell: call `notify(None)` once every write queued before this is durable.

    `notify(error)` is called instead when the store could not make them durable. It runs
    on the memory actor's thread, so it must be quick (typically one `tell`).
    """

    notify: Callable[[BaseException | None], None]


# --- scheduler actor (see actors/scheduler_actor.py) ------------------------------------
# All asks, from a command's worker thread; the answers are values, never exceptions.


class ScheduleJob(NamedTuple):
    """Ask: store a job; answers its `JobInfo`, or a `str` saying why it was refused."""

    spec: JobSpec
    trigger: BaseTrigger
    """An APScheduler trigger, in the person's time zone."""


class ListJobs(NamedTuple):
    """Ask: the pending `JobInfo`s of one owner (`<input>:<user>`), soonest first."""

    owner: str


class JobCount(NamedTuple):
    """Ask: how many jobs are pending, everyone's (for `/metrics` and `status`)."""


class BringJobsForward(NamedTuple):
    """Ask, from the test kit: its clock moved on by `seconds`, so every pending job comes
    due that much sooner (never before now); answers how many jobs moved."""

    seconds: float


class ClusterStatus(NamedTuple):
    """Ask the scheduler: with `[cluster] enabled`, the processes, the leader and the
    lease as the database has them (a `ClusterView`), or None if it cannot be read."""


class CancelJob(NamedTuple):
    """Ask: remove a job if `owner` has it, or `is_admin` on the job's `input`; answers a
    `CancelResult`."""

    job_id: str
    owner: str
    input: str
    is_admin: bool
