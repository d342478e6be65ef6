"""A private PostgreSQL for the tests: a real server, owned by the test session.

Harken's PostgreSQL memory store and job store are tested against a real server, never
a mock. This makes a cluster of its own with the Debian package's `initdb` in a fresh
temporary directory and starts it with `pg_ctl` on 127.0.0.1 only, on a free port, with
its Unix socket inside that directory. It never touches a system cluster or its config.
PostgreSQL refuses to run as root, so under root (CI, containers) the server runs as the
`postgres` system user that the package creates.

    with PrivatePostgres() as server:
        url = server.create_database("t1")     # postgresql://harken@127.0.0.1:PORT/t1
        ...

`stop()` is a fast shutdown; `restart()` keeps the data and the port, for tests of a
database that goes away and comes back; `terminate(application_name)` ends the sessions
of one client, as a partition from the database would.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from .servers import free_port, require

USER = "harken"
_SYSTEM_USER = "postgres"


def _bindir() -> Path | None:
    """Where the newest installed PostgreSQL's server programs are, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def postgres_missing() -> str | None:
    """Why a private PostgreSQL cannot run here, or None if it can."""
    bindir = _bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        return "PostgreSQL is not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            return f"running as root and there is no {_SYSTEM_USER!r} user to run PostgreSQL"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    return None


def require_postgres() -> None:
    """Skip the test without PostgreSQL, or fail it under CI=true (`servers.require`)."""
    require(postgres_missing(), "PostgreSQL tests")


class PostgresError(RuntimeError):
    """The private server could not be started or driven; the message says why."""


class PrivatePostgres:
    """One private PostgreSQL cluster, made, started and removed by its owner."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise PostgresError("PostgreSQL is not installed")
        self._bindir = bindir
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="harken-pg-"))
        self.data = self._root / "data"
        self.log = self._root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam(_SYSTEM_USER)
            os.chown(self._root, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", _SYSTEM_USER, "--"]
        self._running = False

    def _run(self, *argv: str, timeout: float = 60) -> None:
        done = subprocess.run(
            [*self._as, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresError(
                f"{Path(argv[0]).name} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}\n{log}"
            )

    def start(self) -> PrivatePostgres:
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self._bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"listen_addresses = '127.0.0.1'\n"
                    f"port = {self.port}\n"
                    f"unix_socket_directories = '{self._root}'\n"
                    "max_connections = 200\n"
                    "fsync = on\n"
                    "log_min_messages = warning\n"
                )
        self._run(
            str(self._bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        )
        self._running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self._running:
            self._run(str(self._bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
            self._running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:
            connection.execute(sql.encode())

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def terminate(self, application_name: str) -> int:
        """End every session of the client that calls itself `application_name`."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as connection:
            rows = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (application_name,),
            ).fetchall()
        return len(rows)

    def __enter__(self) -> PrivatePostgres:
        try:
            return self.start()
        except BaseException:
            self.remove()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.remove()
