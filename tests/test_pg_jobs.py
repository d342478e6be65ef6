"""The job store on PostgreSQL and the leader lease, in-process, against a real server.

The contract of the SQLite store holds on PostgreSQL (a job is stored before "OK", is
delivered once, leaves no record once delivered, lists and cancels); two schedulers on
one database deliver each due job once, from the one that holds the lease; the lease
(actors/cluster.py) passes on a clean stop, and a leader that cannot renew stops
leading while its lease is still valid for the database; `/metrics` says who leads.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import psycopg
import pytest
from prometheus_client.core import Metric
from support.cli import harken

from actors.cluster import CLUSTER_MIGRATIONS, Lease, NotLeader, reach_problem
from actors.health import BotCollector, collect
from actors.job_store import JOBS_MIGRATIONS, job_store_url, open_pg_engine
from config import ConfigError, load_settings
from config.settings import (
    ClusterSettings,
    HealthSettings,
    SchedulerSettings,
    Secret,
    Settings,
)
from harken.testbot import TestBot, wait_until
from memory import pg_schema


def pg_settings(
    url: str, name: str = "", *, cluster: bool = False, health: bool = False
) -> Settings:
    return Settings(
        scheduler=SchedulerSettings(url=Secret(url)),
        health=HealthSettings(enabled=health, port=0),
        cluster=ClusterSettings(enabled=cluster, name=name, lease_seconds=2.0, renew_seconds=0.5),
    )


def leads(bot: TestBot) -> bool:
    assert bot.system is not None
    assert bot.system.runtime is not None
    report = collect(bot.system.runtime)
    return report.cluster is not None and report.cluster.is_leader


def undelivered(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM harken_deliveries WHERE delivered IS NULL"
        ).fetchone()
    assert row is not None
    return int(row[0])


# --- the store's contract ------------------------------------------------------------------


def test_jobs_on_postgres_are_stored_listed_cancelled_and_delivered_once(
    tmp_path: Path, pg_url: str
) -> None:
    with TestBot(tmp_path / "memory", settings=pg_settings(pg_url)) as bot:
        kept = bot.ask("remind me in 1 hour to rotate keys", user="bob")
        job = re.search(r"Job id (\w+)", kept)
        assert job is not None
        assert bot.ask("remind me in 1 second to stretch", user="bob").startswith("OK")
        assert bot.wait_for("Reminder for bob: stretch").to == "bob"
        wait_until(lambda: undelivered(pg_url) == 0)
        assert "rotate keys" in bot.ask("reminders", user="bob")
        assert f"Cancelled job {job[1]}" in bot.ask(f"cancel {job[1]}", user="bob")
        with pytest.raises(TimeoutError):
            bot.wait_for("Reminder for bob: stretch", timeout=0)
    with psycopg.connect(pg_url, autocommit=True) as connection:
        assert connection.execute("SELECT count(*) FROM apscheduler_jobs").fetchone() == (0,)
        # A delivered one-off job leaves no record behind, as on SQLite.
        assert connection.execute("SELECT count(*) FROM harken_deliveries").fetchone() == (0,)


def test_a_job_stored_by_one_process_survives_and_is_delivered_by_the_next(
    tmp_path: Path, pg_url: str
) -> None:
    with TestBot(tmp_path / "a", settings=pg_settings(pg_url)) as first:
        assert first.ask("remind me in 2 seconds to carry on").startswith("OK")
    # Another process, with a memory of its own: the job is in the shared store.
    with TestBot(tmp_path / "b", settings=pg_settings(pg_url)) as second:
        assert "carry on" in second.wait_for("carry on").data


# --- two schedulers, one leader ------------------------------------------------------------


def test_two_schedulers_on_one_database_deliver_each_due_job_once(
    tmp_path: Path, pg_url: str
) -> None:
    settings = pg_settings(pg_url, "a", cluster=True, health=True)
    with TestBot(tmp_path / "a", settings=settings) as first:
        wait_until(lambda: leads(first))
        with TestBot(tmp_path / "b", settings=pg_settings(pg_url, "b", cluster=True)) as other:
            for n in range(10):
                assert other.ask(f"remind me in 2 seconds to r{n}").startswith("OK")
            for n in range(10):
                first.wait_for(f"Reminder for alice: r{n}")
            wait_until(lambda: undelivered(pg_url) == 0)
            assert not leads(other)
            with pytest.raises(TimeoutError):
                other.wait_for("Reminder", timeout=0)
            with pytest.raises(TimeoutError):
                first.wait_for("Reminder", timeout=0)
            gauges = {m.name: m for m in BotCollector(first.system.runtime).collect()}  # type: ignore[union-attr]
            assert value(gauges["harken_is_leader"]) == 1
            gauges = {m.name: m for m in BotCollector(other.system.runtime).collect()}  # type: ignore[union-attr]
            assert value(gauges["harken_is_leader"]) == 0
            assert other.system is not None
            assert other.system.runtime is not None
            view = collect(other.system.runtime).cluster
            assert view is not None
            assert view.leader == "a"
            assert {p.name for p in view.processes} == {"a", "b"}
            assert "leader: a" in other.ask("status")
            assert first.system is not None
            assert first.system.health_server is not None
            base = f"http://127.0.0.1:{first.system.health_server.port}"
            with urllib.request.urlopen(f"{base}/healthz", timeout=10) as answer:
                healthz = answer.read().decode()
            assert "this process is a (the leader); leader: a, lease epoch" in healthz
            assert re.search(r"^  b on .* heartbeat [0-9.]+ s ago$", healthz, re.MULTILINE)
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
                assert "harken_is_leader 1.0" in answer.read().decode()
            # The leader stops cleanly and gives the lease back: the other one leads.
            first.stop()
            wait_until(lambda: leads(other))


def value(metric: Metric) -> float:
    return float(metric.samples[0].value)


# --- the lease ---------------------------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.gained = threading.Event()
        self.lost = threading.Event()


def lease(url: str, name: str, events: Events) -> Lease:
    return Lease(
        url,
        name,
        lease_seconds=2.0,
        renew_seconds=0.5,
        on_gain=events.gained.set,
        on_loss=lambda why: events.lost.set(),
        on_notify=lambda: None,
    )


def migrated(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as connection:
        pg_schema.migrate(connection, "jobs", JOBS_MIGRATIONS)
        pg_schema.migrate(connection, "cluster", CLUSTER_MIGRATIONS)


def test_one_lease_holder_and_only_it_passes_the_fence(pg_url: str) -> None:
    migrated(pg_url)
    a_events, b_events = Events(), Events()
    a, b = lease(pg_url, "a", a_events), lease(pg_url, "b", b_events)
    a.start()
    assert a_events.gained.wait(10)
    b.start()
    engine = open_pg_engine(pg_url, "test")
    try:
        with engine.begin() as connection:
            a.fence(connection)
            with pytest.raises(NotLeader):
                b.fence(connection)
        a.stop()
        assert b_events.gained.wait(10)
        with engine.begin() as connection:
            b.fence(connection)
            with pytest.raises(NotLeader):
                a.fence(connection)
    finally:
        b.stop()
        a.stop()
        engine.dispose()


def test_a_leader_that_cannot_renew_stops_before_its_lease_expires(pg_url: str) -> None:
    migrated(pg_url)
    events = Events()
    a = lease(pg_url, "a", events)
    a.start()
    try:
        assert events.gained.wait(10)
        # The database stops answering the leader: its renewal waits on a row lock.
        with psycopg.connect(pg_url) as blocker:
            blocker.execute("SELECT * FROM harken_lease FOR UPDATE")
            assert events.lost.wait(10)
            assert not a.is_leader()
            row = blocker.execute(
                "SELECT expires_at > clock_timestamp() FROM harken_lease"
            ).fetchone()
            assert row == (True,), "the leader stopped only after others could lead"
            blocker.rollback()
    finally:
        a.stop()


# --- configuration and `harken check` ---------------------------------------------------------


def test_check_names_an_unreachable_cluster_database_in_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    done = harken(
        "check",
        cwd=tmp_path,
        env={
            "HARKEN_CLUSTER_ENABLED": "true",
            "HARKEN_SCHEDULER_URL": "postgresql://harken:s3cret-pw@127.0.0.1:1/jobs",
        },
    )
    assert done.returncode == 2
    errors = done.stderr.decode().strip().splitlines()
    assert len(errors) == 1, errors
    assert errors[0].startswith("harken: cannot reach the cluster's"), errors
    assert "harken@127.0.0.1:1/jobs" in errors[0]
    assert "s3cret-pw" not in done.stdout.decode() + done.stderr.decode()
    assert "[cluster]" in done.stdout.decode()


def test_check_passes_with_a_reachable_cluster_database(tmp_path: Path, pg_url: str) -> None:
    assert reach_problem(pg_url, "check") is None
    done = harken(
        "check",
        cwd=tmp_path,
        env={"HARKEN_CLUSTER_ENABLED": "true", "HARKEN_SCHEDULER_URL": pg_url},
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "(secret: env HARKEN_SCHEDULER_URL only)" in done.stdout.decode()


def test_a_cluster_without_postgres_is_refused_by_check(tmp_path: Path) -> None:
    done = harken("check", cwd=tmp_path, env={"HARKEN_CLUSTER_ENABLED": "true"})
    assert done.returncode == 2
    assert "several processes share jobs only on PostgreSQL" in done.stderr.decode()


def test_the_job_store_url_is_a_secret_read_from_the_environment_only(tmp_path: Path) -> None:
    url = "postgresql://harken:s3cret-pw@db/jobs"
    path = tmp_path / "harken.toml"
    path.write_text(f'[scheduler]\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as in_file:
        load_settings(path, env={})
    with pytest.raises(ConfigError) as on_cli:
        load_settings(env={}, overrides={"scheduler.url": url})
    for error in (in_file.value, on_cli.value):
        assert "HARKEN_SCHEDULER_URL" in str(error)
        assert "s3cret" not in str(error)
    settings = load_settings(env={"HARKEN_SCHEDULER_URL": url})
    assert settings.scheduler.url is not None
    assert settings.scheduler.url.reveal() == url
    assert "s3cret" not in repr(settings)


def test_the_lease_must_outlast_two_renewals() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.renew_seconds"):
        load_settings(
            env={"HARKEN_CLUSTER_LEASE_SECONDS": "3", "HARKEN_CLUSTER_RENEW_SECONDS": "2"}
        )
    assert dataclasses.replace(ClusterSettings(), name="n1").process_name() == "n1"


def test_harken_without_postgres_does_not_load_psycopg() -> None:
    # psycopg is an extra (harken[postgresql]): the CLI and the bot must load without it.
    code = (
        "import sys, harken.cli, actors.system, actors.health, actors.scheduler_actor;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'"
        " or m == 'actors.cluster'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_jobs_use_the_memory_stores_database_unless_told_otherwise() -> None:
    memory = "postgresql://harken:pw@db/memory"
    jobs = "postgresql://harken:pw@db/jobs"
    on_postgres = {"HARKEN_MEMORY_BACKEND": "postgresql", "HARKEN_MEMORY_URL": memory}
    assert job_store_url(load_settings(env=on_postgres)) == memory
    assert job_store_url(load_settings(env={**on_postgres, "HARKEN_SCHEDULER_URL": jobs})) == jobs
    assert job_store_url(load_settings(env={"HARKEN_MEMORY_URL": memory})) is None  # tinydb


def test_harken_migrate_makes_the_job_and_cluster_tables(tmp_path: Path, pg_url: str) -> None:
    env = {"HARKEN_SCHEDULER_URL": pg_url}
    first = harken("migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr.decode()
    assert "jobs: schema migrated from version 0 to 1 in harken@" in first.stdout.decode()
    assert "cluster: schema migrated from version 0 to 1" in first.stdout.decode()
    again = harken("migrate", cwd=tmp_path, env=env)
    assert "jobs: schema migrated from version 1 to 1" in again.stdout.decode()
