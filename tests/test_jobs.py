"""What a due job turns into (`actors.jobs.when_due`): on time, late, missed, coalesced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from support.past_jobs import spec

from actors.jobs import when_due
from actors.messages import Inbound, Outbound
from core.event import EventType
from core.jobs import Due, JobKind, JobSpec
from core.timefmt import say_delay

START = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)


def due(
    scheduled: datetime, now: datetime, *, runs: int = 1, next_run: datetime | None = None
) -> Due:
    times = tuple(scheduled - timedelta(minutes=runs - 1 - i) for i in range(runs))
    return Due(times, now, started_at=START, grace=GRACE, next_run=next_run)


def test_a_job_spec_round_trips_through_json() -> None:
    original = spec(JobKind.RUN, "echo hi", user="bob", channel="C1", thread="T9")
    again = JobSpec.from_json(original.to_json())
    assert again == original
    assert again.owner == "testing:bob"


@pytest.mark.parametrize("raw", ["", "[]", '{"kind": "nap"}', '{"kind": "remind", "text": 1}'])
def test_a_damaged_job_spec_is_a_value_error(raw: str) -> None:
    with pytest.raises(ValueError, match="not a job spec"):
        JobSpec.from_json(raw)


def test_an_on_time_reminder_goes_to_the_person_where_it_was_set() -> None:
    job = spec(JobKind.REMIND, "check the backups", user="bob", channel="C1", thread="T9")
    now = START + timedelta(minutes=5, milliseconds=20)
    [message] = when_due(job, due(START + timedelta(minutes=5), now), bot_name="harken")
    assert isinstance(message, Outbound)
    event = message.event
    assert event.data == "Reminder for bob: check the backups"
    assert (event.to, event.input, event.channel, event.thread) == ("bob", "testing", "C1", "T9")
    assert event.type is EventType.REPLY


def test_a_reminder_that_fell_due_while_down_is_marked_late_by_how_much() -> None:
    job = spec(JobKind.REMIND, "stand-up")
    scheduled = START - timedelta(minutes=12, seconds=3)
    [message] = when_due(job, due(scheduled, START), bot_name="harken")
    assert message.event.data.startswith("Reminder for alice: stand-up (late by 12 min 3 s")
    assert "while I was not running" in message.event.data
    assert message.event.meta["late_seconds"] == 723


def test_a_run_much_later_than_scheduled_is_marked_late_even_if_the_bot_was_up() -> None:
    job = spec(JobKind.REMIND, "stand-up")
    scheduled = START + timedelta(minutes=10)
    [message] = when_due(job, due(scheduled, scheduled + timedelta(minutes=2)), bot_name="h")
    assert "(late by 2 min 0 s;" in message.event.data
    assert "not running" not in message.event.data


def test_a_reminder_beyond_the_grace_time_tells_the_person_what_was_missed() -> None:
    job = spec(JobKind.REMIND, "renew the certificate")
    scheduled = START - timedelta(hours=3, minutes=2)
    [message] = when_due(job, due(scheduled, START), bot_name="harken", show=lambda t: "09:00")
    text = message.event.data
    assert text.startswith("Missed reminder for alice, due 09:00 (3 h 2 min ago")
    assert "more than the 1 h I may be late" in text
    assert text.endswith(": renew the certificate")
    assert message.event.type is EventType.ERROR


def test_a_deferred_command_becomes_the_persons_message_in_the_same_conversation() -> None:
    job = spec(JobKind.RUN, "whoami", user="carol", channel="C2", thread="T2")
    [message] = when_due(
        job, due(START + timedelta(seconds=1), START + timedelta(seconds=1)), bot_name="h"
    )
    assert isinstance(message, Inbound)
    event = message.event
    assert event.type is EventType.TEXT
    assert (event.sender, event.data, event.channel, event.thread) == (
        "carol",
        "whoami",
        "C2",
        "T2",
    )
    assert event.id != job.event.id


def test_a_late_deferred_command_runs_after_a_note_saying_how_late() -> None:
    job = spec(JobKind.RUN, "echo hi")
    note, run = when_due(job, due(START - timedelta(minutes=5), START), bot_name="harken")
    assert isinstance(note, Outbound)
    assert note.event.data.startswith("Running `echo hi` for alice (late by 5 min 0 s")
    assert isinstance(run, Inbound)


def test_a_deferred_command_beyond_the_grace_time_is_not_run_and_the_person_is_told() -> None:
    job = spec(JobKind.RUN, "restart web")
    [message] = when_due(job, due(START - timedelta(hours=2), START), bot_name="harken")
    assert isinstance(message, Outbound)
    assert message.event.data.startswith("alice, I did not run `restart web`")
    assert "Say it again if you still want it." in message.event.data


def test_a_recurring_job_that_missed_several_runs_fires_once_and_says_so() -> None:
    job = spec(JobKind.REMIND, "drink water", schedule="every 1 minute (UTC)")
    nxt = START + timedelta(minutes=1)
    messages = when_due(
        job, due(START - timedelta(seconds=30), START, runs=6, next_run=nxt), bot_name="h"
    )
    assert len(messages) == 1
    text = messages[0].event.data
    assert "(6 runs were due; this is one for all of them)" in text
    assert "Next run:" not in text  # delivered, not missed: the next one just comes


def test_a_missed_recurring_job_says_when_it_runs_next() -> None:
    job = spec(JobKind.REMIND, "weekly report")
    nxt = START + timedelta(days=6)
    [message] = when_due(
        job, due(START - timedelta(days=1), START, next_run=nxt), bot_name="h", show=str
    )
    assert message.event.data.endswith(f"Next run: {nxt}.")


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (1.23, "1.2 s"),
        (45, "45 s"),
        (723, "12 min 3 s"),
        (3 * 3600 + 125, "3 h 2 min"),
        (90000, "1 d 1 h"),
    ],
)
def test_delays_are_said_briefly(seconds: float, said: str) -> None:
    assert say_delay(timedelta(seconds=seconds)) == said
