"""End to end: Harken's memory on PostgreSQL through the `harken` command line.

`harken migrate`, `check`, `run`/`shell` with `HARKEN_MEMORY_URL`, against the private
server of tests/support/postgres.py; the URL carries a password (the server trusts local
connections, so any is accepted), which must appear in no output and no log line.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from support.cli import ShellSession, harken
from support.postgres import PrivatePostgres

from config import ConfigError, load_settings, render_settings
from config.loader import secret_env_vars
from memory.pg_store import APPLICATION_NAME

pytestmark = pytest.mark.e2e

PASSWORD = "s3cret-pw"


@pytest.fixture
def url(pg_url: str) -> str:
    return pg_url.replace("://harken@", f"://harken:{PASSWORD}@")


def pg_env(url: str) -> dict[str, str]:
    return {"HARKEN_MEMORY_BACKEND": "postgresql", "HARKEN_MEMORY_URL": url}


def one_harken_line(stderr: bytes) -> str:
    """The one `harken: ` line of a refused start (log lines before it are not errors)."""
    [line] = [line for line in stderr.decode().splitlines() if line.startswith("harken: ")]
    return line


def test_migrate_creates_the_schema_then_finds_nothing_to_do(tmp_path: Path, url: str) -> None:
    first = harken("migrate", cwd=tmp_path, env=pg_env(url))
    assert first.returncode == 0, first.stderr.decode()
    assert "memory: schema migrated from version 0 to 1 in 127.0.0.1:" in first.stdout.decode()
    again = harken("migrate", cwd=tmp_path, env=pg_env(url))
    assert again.returncode == 0
    assert "memory: schema at version 1" in again.stdout.decode()
    assert "already current" in again.stdout.decode()
    for done in (first, again):
        assert PASSWORD.encode() not in done.stdout + done.stderr


def test_migrate_with_the_tinydb_backend_has_nothing_to_do(tmp_path: Path) -> None:
    done = harken("migrate", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == b"memory: the tinydb backend has no schema to migrate\n"


def test_check_reaches_the_database_and_masks_the_password(tmp_path: Path, url: str) -> None:
    before = harken("check", cwd=tmp_path, env=pg_env(url))
    assert before.returncode == 0, before.stderr.decode()
    out = before.stdout.decode()
    assert 'backend = "postgresql"' in out
    assert '# url = "postgresql://harken:***@127.0.0.1:' in out
    assert "(secret: env HARKEN_MEMORY_URL only)" in out
    assert "schema version 0 (not created yet" in out
    harken("migrate", cwd=tmp_path, env=pg_env(url))
    after = harken("check", cwd=tmp_path, env=pg_env(url))
    assert "schema version 1 (current)" in after.stdout.decode()
    for done in (before, after):
        assert PASSWORD.encode() not in done.stdout + done.stderr


def test_check_names_the_host_and_the_reason_when_it_cannot_reach_it(tmp_path: Path) -> None:
    unreachable = f"postgresql://harken:{PASSWORD}@127.0.0.1:1/harken"
    for action in ("check", "migrate", "shell"):
        done = harken(action, cwd=tmp_path, env=pg_env(unreachable))
        assert done.returncode == 2, (action, done.stderr.decode())
        line = one_harken_line(done.stderr)
        assert "127.0.0.1:1/harken" in line
        assert "refused" in line.lower()
        assert PASSWORD.encode() not in done.stdout + done.stderr


def test_a_schema_newer_than_known_is_refused_with_one_line(
    tmp_path: Path, url: str, pg_url: str
) -> None:
    harken("migrate", cwd=tmp_path, env=pg_env(url))
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("UPDATE harken_schema SET version = 2 WHERE component = 'memory'")
    for action in ("check", "shell", "migrate"):
        done = harken(action, stdin=b"ping\n", cwd=tmp_path, env=pg_env(url))
        assert done.returncode == 2, action
        line = one_harken_line(done.stderr)
        assert "version 2, newer than this Harken knows (1)" in line
        assert b"pong" not in done.stdout


def test_the_postgresql_backend_without_a_url_is_a_config_error(tmp_path: Path) -> None:
    done = harken("shell", cwd=tmp_path, env={"HARKEN_MEMORY_BACKEND": "postgresql"})
    assert done.returncode == 2
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("harken: config error: memory.url: is not set")
    assert "HARKEN_MEMORY_URL" in line


def test_the_url_is_a_secret_of_the_environment_only(tmp_path: Path) -> None:
    config = tmp_path / "harken.toml"
    config.write_text(f'[memory]\nurl = "postgresql://harken:{PASSWORD}@db/harken"\n')
    with pytest.raises(ConfigError, match="HARKEN_MEMORY_URL in the environment") as in_file:
        load_settings(config, env={})
    with pytest.raises(ConfigError, match="not accepted on the command line") as on_cli:
        load_settings(env={}, overrides={"memory.url": "postgresql://db/harken"})
    assert PASSWORD not in str(in_file.value) + str(on_cli.value)
    env = {"HARKEN_MEMORY_URL": f"postgresql://harken:{PASSWORD}@db:5433/harken?x=1"}
    settings = load_settings(env=env)
    assert settings.memory.url is not None
    assert settings.memory.url.reveal() == env["HARKEN_MEMORY_URL"]
    assert PASSWORD not in repr(settings) + render_settings(settings)
    assert "HARKEN_MEMORY_URL" in secret_env_vars(env)  # removed before runbooks start


def test_two_processes_share_memory_and_a_lost_session_is_never_a_false_ok(
    tmp_path: Path, url: str, postgres: PrivatePostgres
) -> None:
    env = {**pg_env(url), "HARKEN_LOG_LEVEL": "DEBUG"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = ShellSession("--user", "ann", cwd=tmp_path / "a", env=env)
    second = ShellSession("--user", "ann", cwd=tmp_path / "b", env=env)
    try:
        assert first.say("remember pager is 555-0100") == (
            "OK, I'll remember that pager is 555-0100."
        )
        assert second.say("recall pager") == "pager is 555-0100"
        assert second.say("remember pager is 555-0199") == (
            "OK, I'll remember that pager is 555-0199."
        )
        assert first.say("recall pager") == "pager is 555-0199"

        # Both processes' sessions die, as in a failover: the next save is refused...
        assert postgres.terminate(APPLICATION_NAME) >= 2
        refused = first.say("remember rota is weekly")
        assert refused.startswith("Sorry, I can't save right now: my memory database cannot")
        # ... and the one after goes through, on a fresh connection.
        assert first.say("remember oncall is bob") == "OK, I'll remember that oncall is bob."
        assert second.say("recall oncall") == "oncall is bob"
    finally:
        assert first.stop() == 0
        assert second.stop() == 0
    logs = "".join(first.stderr + second.stderr)
    assert "memory commit failed" in logs
    assert PASSWORD not in logs
    assert str(postgres.port) in logs  # the failure names the database, by host and port
