"""Test helper: write a job into a stopped bot's job store, as if scheduled long ago
(`store_job`), or move a stored job's next run into the past (`move_job`).

This is how the tests make "the bot was down when the job fell due" happen without
waiting: the job's next run time is put in the past, then the bot starts on the store.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from actors.job_store import open_engine
from actors.scheduler_actor import scheduled_job
from core.event import Event, EventType
from core.jobs import JobKind, JobSpec


def spec(
    kind: JobKind,
    text: str,
    *,
    user: str = "alice",
    input: str = "testing",
    channel: str = "",
    thread: str = "",
    schedule: str = "in the past (UTC)",
) -> JobSpec:
    asked = Event(
        type=EventType.TEXT,
        sender=user,
        to="harken",
        data=f"remind me {text}",
        input=input,
        channel=channel,
        thread=thread,
    )
    return JobSpec(kind, text, asked, schedule)


def store_job(
    path: str | Path,
    job_spec: JobSpec | str,
    trigger: Any,
    next_run_time: datetime,
    job_id: str = "past01",
) -> None:
    """Add a job whose next run is `next_run_time` to the job store at `path`.

    Straight into the store, without starting a scheduler: a started one would run the
    job itself (APScheduler looks for due jobs once more while shutting down).
    """
    store = SQLAlchemyJobStore(engine=open_engine(str(path)))
    scheduler = BackgroundScheduler(timezone=UTC)  # never started: only for the job
    store.start(scheduler, "default")
    try:
        payload = job_spec if isinstance(job_spec, str) else job_spec.to_json()
        job = Job(
            scheduler,
            id=job_id,
            func=scheduled_job,
            trigger=trigger,
            executor="default",
            args=(payload,),
            kwargs={},
            name=f"test job {job_id}",
            misfire_grace_time=None,
            coalesce=False,
            max_instances=1,
            next_run_time=next_run_time,
        )
        store.add_job(job)
    finally:
        store.shutdown()


def move_job(path: str | Path, job_id: str, next_run_time: datetime) -> None:
    """Give a stored job a new next run time, as if Harken had been down since then.

    The job is rebuilt from its public attributes and written back over itself.
    """
    store = SQLAlchemyJobStore(engine=open_engine(str(path)))
    scheduler = BackgroundScheduler(timezone=UTC)  # never started: only for the job
    store.start(scheduler, "default")
    try:
        job = store.lookup_job(job_id)
        assert job is not None, f"no job {job_id} in {path}"
        moved = Job(
            scheduler,
            id=job.id,
            func=job.func,
            trigger=job.trigger,
            executor=job.executor,
            args=job.args,
            kwargs=job.kwargs,
            name=job.name,
            misfire_grace_time=job.misfire_grace_time,
            coalesce=job.coalesce,
            max_instances=job.max_instances,
            next_run_time=next_run_time,
        )
        store.update_job(moved)
    finally:
        store.shutdown()
