"""The outbox of job deliveries: sending each run that fell due, and marking it delivered.

A run recorded by the job store (`actors.job_store.JobStore`) is sent at once to its
input (a reminder) or to the router (a deferred command), and its record is marked
delivered once the input has taken it and, for a command, once its answer came back.
The outbox keeps this state on a thread of its own, fed by one queue, so the actor and
APScheduler's thread are never kept waiting for the file; what it had not marked when
Harken stopped is sent again at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pykka
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from actors.job_deliveries import DELIVERIES, chunks, delete_delivered
from actors.jobs import Delivery, when_due, when_interrupted
from actors.messages import Inbound, Outbound
from core.event import Event
from core.jobs import Due, JobKind, JobSpec
from core.timefmt import format_time

if TYPE_CHECKING:
    from actors.runtime import Runtime
    from actors.supervision import Handle

__all__ = ["InputBarrier", "Outbox"]

logger = logging.getLogger(__name__)

_FLUSH_TIMEOUT = 2.0
"""Seconds to wait for an input to take what was sent to it, before trying again."""
_RETRY = 1.0
_RECORD_WITHIN = 0.2
"""Seconds a delivery may wait to be recorded while more keep coming (a burst)."""
_QUIET = 0.01
"""Seconds without new work after which what was sent is recorded."""


class InputBarrier(NamedTuple):
    """Asked of an input: its answer means it has handled everything told to it before.

    Inputs answer messages they do not know with None, after the ones queued ahead."""


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


class _Answered(NamedTuple):
    event_id: str


class _Removed(NamedTuple):
    job_id: str


class _Stop(NamedTuple):
    wait: float


@dataclass
class _Sending:
    """A delivery on its way: sent, and waiting for the answers of its commands."""

    delivery: Delivery
    waiting: set[str] = field(default_factory=set)
    """Ids of the commands handed over whose answers have not come yet."""


class _Sent(NamedTuple):
    sending: _Sending | None
    """None: look at what was kept aside (`Outbox._sent`)."""


class Outbox:
    """Sends deliveries and records them delivered.

    A due job is sent by APScheduler's thread as soon as its record is committed
    (`plan`, then `dispatch`), as it was sent before there was an outbox: the work
    stays on one thread. Everything else happens on the outbox's own thread, fed by one
    queue, so its state needs no lock: what was sent, the answers of deferred commands
    (`answered`), jobs cancelled, what was left undelivered before a start (`put`), and
    the records of deliveries. A burst is recorded in one commit once it has been sent:
    the inputs are asked to confirm (`InputBarrier`), and the records marked delivered.
    """

    def __init__(
        self,
        engine: Engine,
        runtime: Runtime,
        router: Handle,
        started_at: datetime,
    ) -> None:
        self.engine = engine
        self.runtime = runtime
        self.router = router
        self.started_at = started_at
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._in_flight: dict[str, _Sending] = {}
        self._unrecorded: list[_Sending] = []
        """Sent (and, for a command, answered), not yet recorded as delivered."""
        self._unrecorded_since = 0.0
        self._last_work = 0.0
        self._open: dict[str, int] = {}
        """Job id -> deliveries of it not yet recorded delivered (in this process)."""
        self._removed: set[str] = set()
        """Jobs cancelled since the last sweep of their delivered records (a removed job
        cannot fire again, so nothing needs them)."""
        self._gone: set[str] = set()
        """Cancelled jobs with deliveries still open: those records are deleted, not
        kept, once delivered."""
        self._absent: set[str] = set()
        self._sent: list[_Sending] = []
        """Sent with no command to wait for, not yet taken by the outbox's thread."""
        self._sent_lock = threading.Lock()
        self._woken = False
        self._thread = threading.Thread(target=self._run, name="job-outbox", daemon=True)

    # --- from any thread -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def put(self, delivery: Delivery) -> None:
        """Send a delivery recorded earlier and not delivered (at start-up)."""
        self._work.put(delivery)

    def answered(self, event: Event) -> None:
        self._work.put(_Answered(event.id))

    def removed(self, job_id: str) -> None:
        self._work.put(_Removed(job_id))

    def stop(self, wait: float) -> None:
        """Give commands handed over up to `wait` seconds to answer, then end."""
        self._work.put(_Stop(wait))
        self._thread.join(timeout=wait + 2 * _FLUSH_TIMEOUT + 5)
        if self._thread.is_alive():
            logger.warning("the job outbox did not stop in time")

    def plan(self, delivery: Delivery, now: datetime) -> list[Inbound | Outbound] | None:
        """What to send for `delivery`; None if its input is not running here."""
        name = delivery.spec.event.input
        if name not in self.runtime.inputs:
            # Kept unsent for a Harken that runs this input; said once per input.
            if name not in self._absent:
                self._absent.add(name)
                logger.warning(
                    "jobs for input %r fell due, but it is not running: they are kept "
                    "and delivered when Harken runs with it",
                    name,
                )
            return None
        return self._messages(delivery, now)

    def hands_over(self, delivery: Delivery, messages: list[Inbound | Outbound]) -> bool:
        """Whether sending runs a command that must never run twice."""
        return any(isinstance(m, Inbound) for m in messages) and not self._quiet(delivery.spec)

    def dispatch(self, delivery: Delivery, messages: list[Inbound | Outbound]) -> None:
        """Send a recorded delivery now (on the caller's thread)."""
        sending = _Sending(delivery)
        sending.waiting.update(m.event.id for m in messages if isinstance(m, Inbound))
        if sending.waiting:
            # Told before the command is handed over, so that its answer comes after.
            self._work.put(_Sent(sending))
        else:
            # Kept aside, waking the outbox's thread once for a burst, not once a job.
            with self._sent_lock:
                self._sent.append(sending)
                wake, self._woken = not self._woken, True
            if wake:
                self._work.put(_Sent(None))
        for message in messages:
            if isinstance(message, Outbound):
                self.runtime.deliver(message.event)
                continue
            try:
                self.router.tell(message)
            except pykka.ActorDeadError:
                # Left recorded as handed over: the next start tells the person.
                logger.error("the router is down; job %s was not run", delivery.job_id)
                return

    # --- on the outbox thread ----------------------------------------------------------

    def _run(self) -> None:
        stop_at: float | None = None
        while True:
            timeout: float | None = None
            if self._unrecorded:
                record_at = min(self._unrecorded_since + _RECORD_WITHIN, self._last_work + _QUIET)
                timeout = max(0.0, record_at - time.monotonic())
            if stop_at is not None:
                timeout = max(0.0, min(timeout or _RETRY, stop_at - time.monotonic()))
            if timeout is None:
                # About to wait for as long as it takes: the next job sent must wake it
                # (meanwhile it wakes itself, and takes what was kept aside in passing).
                with self._sent_lock:
                    if self._sent:
                        timeout = 0.0
                    else:
                        self._woken = False
            try:
                batch = [self._work.get(timeout=timeout)]
            except queue.Empty:
                batch = []
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._work.get_nowait())
            with self._sent_lock:
                sent, self._sent = self._sent, []
            batch.extend(_Sent(sending) for sending in sent)
            now = time.monotonic()
            if batch:
                self._last_work = now
            try:
                stop_at = self._handle(batch, stop_at)
                # While due jobs keep coming (a burst), record later, in one commit:
                # APScheduler's thread is not kept waiting for the file meanwhile.
                if self._unrecorded and (
                    now - self._last_work >= _QUIET
                    or now - self._unrecorded_since >= _RECORD_WITHIN
                    or stop_at is not None
                ):
                    self._record()
                if self._removed and not batch:
                    self._forget_removed()
            except Exception:
                logger.exception("the job outbox failed; what it had not recorded is sent again")
            settled = not self._in_flight and not self._unrecorded
            if stop_at is not None and (settled or time.monotonic() >= stop_at):
                break
        for sending in {id(s): s for s in self._in_flight.values()}.values():
            logger.warning(
                "job %s: `%s` for %s had not answered when the scheduler stopped; the "
                "next start tells them it may not have run",
                sending.delivery.job_id,
                sending.delivery.spec.text,
                sending.delivery.spec.owner,
            )

    def _handle(self, batch: list[Any], stop_at: float | None) -> float | None:
        deliveries: list[Delivery] = []
        done: list[_Sending] = []
        for item in batch:
            if isinstance(item, _Sent):
                sending = item.sending
                if sending is None:
                    continue  # a wake-up: what was kept aside is in this batch
                job_id = sending.delivery.job_id
                self._open[job_id] = self._open.get(job_id, 0) + 1
                for event_id in sending.waiting:
                    self._in_flight[event_id] = sending
                if not sending.waiting:
                    done.append(sending)
            elif isinstance(item, _Answered):
                answered = self._in_flight.pop(item.event_id, None)
                if answered is not None:
                    answered.waiting.discard(item.event_id)
                    if not answered.waiting:
                        done.append(answered)
            elif isinstance(item, Delivery):
                deliveries.append(item)
            elif isinstance(item, _Removed):
                self._removed.add(item.job_id)
                if item.job_id in self._open:
                    self._gone.add(item.job_id)
            elif isinstance(item, _Stop) and stop_at is None:
                stop_at = time.monotonic() + item.wait
        if deliveries:
            self._resend(deliveries)
        if done:
            if not self._unrecorded:
                self._unrecorded_since = time.monotonic()
            self._unrecorded.extend(done)
        return stop_at

    def _quiet(self, spec: JobSpec) -> bool:
        """A command of Harken's own (a watch's check): it catches up silently."""
        if spec.kind is not JobKind.RUN:
            return False
        found = self.runtime.registry.find(spec.text, hidden=True)
        return found is not None and found[0].hidden

    def _messages(self, delivery: Delivery, now: datetime) -> list[Inbound | Outbound]:
        spec = delivery.spec
        zone = _zone(delivery.zone)
        name = self.runtime.settings.bot.name
        quiet = self._quiet(spec)
        if delivery.handed and not quiet:
            logger.warning(
                "job %s: `%s` for %s was handed over before a stop and did not answer; "
                "not run again, they are told",
                delivery.job_id,
                spec.text,
                spec.owner,
            )
            return [
                when_interrupted(
                    spec,
                    delivery.run_times[-1],
                    bot_name=name,
                    show=lambda moment: format_time(moment, zone),
                )
            ]
        due = Due(
            run_times=delivery.run_times,
            now=now,
            started_at=self.started_at,
            grace=timedelta(seconds=self.runtime.settings.scheduler.grace_seconds),
            next_run=delivery.next_run,
            runs=delivery.runs,
        )
        messages = when_due(
            spec,
            due,
            bot_name=name,
            show=lambda moment: format_time(moment, zone),
            quiet=quiet,
        )
        state = "missed" if due.missed and not quiet else "late" if due.is_late else "on time"
        logger.info(
            "job %s (%s for %s) fired %s (%.3f s after %s, %d run(s) due)",
            delivery.job_id,
            spec.kind.value,
            spec.owner,
            state,
            due.late_by.total_seconds(),
            due.scheduled.isoformat(),
            delivery.runs,
        )
        return messages

    def _resend(self, deliveries: list[Delivery]) -> None:
        """Send what was recorded and not delivered before this start."""
        now = datetime.now(UTC)
        plans: list[tuple[Delivery, list[Inbound | Outbound]]] = []
        for delivery in deliveries:
            messages = self.plan(delivery, now)
            if messages is not None:
                plans.append((delivery, messages))
        # Commands are recorded as handed over before any is: a crash after this point
        # never runs them again (the person is told instead).
        handing = [d for d, messages in plans if self.hands_over(d, messages)]
        if handing:
            try:
                with self.engine.begin() as connection:
                    ids = [one for delivery in handing for one in delivery.ids]
                    for chunk in chunks(ids):
                        connection.execute(
                            update(DELIVERIES)
                            .where(DELIVERIES.c.id.in_(chunk))
                            .values(handed=time.time())
                        )
            except SQLAlchemyError as exc:
                logger.error(
                    "could not record %d deferred command(s) as handed over (%s); they are "
                    "not run now, and are sent at the next start",
                    len(handing),
                    exc,
                )
                plans = [(d, m) for d, m in plans if d not in handing]
        for delivery, messages in plans:
            self.dispatch(delivery, messages)

    def _record(self) -> None:
        """Record as delivered what the inputs have taken; keep the rest for a retry."""
        confirmed, self._unrecorded = self._unrecorded, []
        taken: list[_Sending] = []
        for name in sorted({s.delivery.spec.event.input for s in confirmed}):
            mine = [s for s in confirmed if s.delivery.spec.event.input == name]
            handle = self.runtime.inputs.get(name)
            try:
                if handle is None:
                    raise pykka.ActorDeadError(name)
                handle.ask(InputBarrier(), timeout=_FLUSH_TIMEOUT)
            except pykka.Timeout:
                logger.warning("input %r is slow to take job deliveries; waiting", name)
                if not self._unrecorded:
                    self._unrecorded_since = time.monotonic()
                self._unrecorded.extend(mine)
                continue
            except pykka.ActorDeadError:
                logger.warning(
                    "input %r went down while delivering jobs: %d delivery(ies) stay "
                    "unrecorded and are sent again at the next start",
                    name,
                    len(mine),
                )
                continue
            taken.extend(mine)
        if not taken:
            return
        keep: list[int] = []
        drop: list[int] = []
        for sending in taken:
            job_id = sending.delivery.job_id
            gone = sending.delivery.final or job_id in self._gone
            (drop if gone else keep).extend(sending.delivery.ids)
            left = self._open.get(job_id, 1) - 1
            if left > 0:
                self._open[job_id] = left
            else:
                self._open.pop(job_id, None)
                self._gone.discard(job_id)
        now = time.time()
        with self.engine.begin() as connection:
            for chunk in chunks(keep):
                connection.execute(
                    update(DELIVERIES).where(DELIVERIES.c.id.in_(chunk)).values(delivered=now)
                )
            for chunk in chunks(drop):
                connection.execute(delete(DELIVERIES).where(DELIVERIES.c.id.in_(chunk)))

    def _forget_removed(self) -> None:
        """Delete the delivered records of cancelled jobs, which nothing needs any more."""
        removed, self._removed = sorted(self._removed), set()
        with self.engine.begin() as connection:
            delete_delivered(connection, removed)
