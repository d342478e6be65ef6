"""The records of job deliveries, in the job store: their table, and reading them.

Each run of a job that fell due is recorded in the table `harken_deliveries`, in the
same store as the jobs (the SQLite file, or PostgreSQL), so that a run is recorded with
the job's removal or move (`actors.job_store`) and delivered at least once, even after a
crash: what is recorded and not delivered is sent at the next start, or by the next
leader of a cluster (`undelivered`). The sending and the marks
of delivery are the outbox's (`actors.job_outbox`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, delete, select
from sqlalchemy.engine import Connection

from actors.jobs import MAX_RUN_TIMES, Delivery
from core.jobs import JobSpec

__all__ = ["DELIVERIES", "METADATA", "chunks", "delete_delivered", "undelivered"]

logger = logging.getLogger(__name__)

METADATA = MetaData()
DELIVERIES = Table(
    "harken_deliveries",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("job_id", String(191), nullable=False, index=True),
    Column("run_times", Text, nullable=False),
    Column("runs", Integer, nullable=False),
    Column("spec", Text, nullable=False),
    Column("zone", String(64), nullable=False),
    Column("next_run", Float, nullable=True),
    Column("handed", Float, nullable=True),
    Column("delivered", Float, nullable=True),
)
"""The outbox: one record per firing. `run_times` are the runs it covers (JSON, the
latest `MAX_RUN_TIMES`), `runs` how many; `handed` when a command was given to the
router; `delivered` when the delivery was recorded (NULL: still to send). Times are
Unix times."""

_CHUNK = 500
"""Ids per SQL statement (SQLite limits the parameters of one)."""


def _moment(stamp: float | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


def chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def delete_delivered(connection: Connection, job_ids: list[str]) -> None:
    for start in range(0, len(job_ids), _CHUNK):
        connection.execute(
            delete(DELIVERIES).where(
                DELIVERIES.c.job_id.in_(job_ids[start : start + _CHUNK]),
                DELIVERIES.c.delivered.is_not(None),
            )
        )


def undelivered(connection: Connection) -> list[Delivery]:
    """What was recorded and not delivered, one delivery per job (and per whether a
    command was handed over), in the order it fell due."""
    rows = connection.execute(
        select(DELIVERIES).where(DELIVERIES.c.delivered.is_(None)).order_by(DELIVERIES.c.id)
    ).all()
    grouped: dict[tuple[str, bool], list[Any]] = {}
    for row in rows:
        grouped.setdefault((row.job_id, row.handed is not None), []).append(row)
    found: list[Delivery] = []
    for (job_id, handed), same in grouped.items():
        try:
            spec = JobSpec.from_json(same[-1].spec)
            times = sorted(
                {datetime.fromisoformat(t) for row in same for t in json.loads(row.run_times)}
            )[-MAX_RUN_TIMES:]
        except (TypeError, ValueError) as exc:
            logger.error("undelivered record of job %s cannot be read (%s)", job_id, exc)
            continue
        found.append(
            Delivery(
                ids=tuple(row.id for row in same),
                job_id=job_id,
                spec=spec,
                run_times=tuple(times),
                runs=sum(int(row.runs) for row in same),
                zone=same[-1].zone,
                next_run=_moment(same[-1].next_run),
                handed=handed,
            )
        )
    return found
