"""The private PostgreSQL the tests start (tests/support/postgres.py) is what it claims.

The PostgreSQL memory and job store tests rely on it: a server of the test's own on
127.0.0.1 only, that keeps its data over a restart and can cut one client's sessions.
"""

from __future__ import annotations

import socket

import psycopg
import pytest
from support.postgres import PrivatePostgres


def test_the_private_server_listens_on_loopback_only(postgres: PrivatePostgres) -> None:
    with psycopg.connect(postgres.url(), autocommit=True) as connection:
        row = connection.execute("SHOW listen_addresses").fetchone()
    assert row == ("127.0.0.1",)
    with socket.create_connection(("127.0.0.1", postgres.port), timeout=5):
        pass


def test_a_restart_keeps_the_data_and_the_port(postgres: PrivatePostgres, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE kept (v int)")
        connection.execute("INSERT INTO kept VALUES (42)")
    port = postgres.port
    postgres.restart()
    assert postgres.port == port
    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT v FROM kept").fetchall() == [(42,)]


def test_terminate_ends_the_sessions_of_one_client(postgres: PrivatePostgres, pg_url: str) -> None:
    with (
        psycopg.connect(pg_url, application_name="cut-me", autocommit=True) as cut,
        psycopg.connect(pg_url, application_name="keep-me", autocommit=True) as kept,
    ):
        assert postgres.terminate("cut-me") == 1
        with pytest.raises(psycopg.OperationalError):
            cut.execute("SELECT 1")
        assert kept.execute("SELECT 1").fetchone() == (1,)
