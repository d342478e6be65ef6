"""End to end: the README's ops commands through `harken shell`, with a config file and a
real HTTP service on 127.0.0.1; the health endpoint of a running `harken shell`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.cli import harken
from support.ops_services import running_services

pytestmark = pytest.mark.e2e


def test_ops_commands_from_a_config_file_through_the_shell(tmp_path: Path) -> None:
    with running_services() as (base, _):
        config = tmp_path / "harken.toml"
        config.write_text(
            f"""
[inputs.shell]
groups = {{ ops = ["ann"] }}

[services.billing]
url = "{base}"
health = "/healthz"
tags = ["payments"]
call = ["/v1/*"]

[runbooks.hello]
argv = ["{sys.executable}", "-c", "import sys; print('hi', sys.argv[1])", "{{who}}"]
args = {{ who = "^[a-z]+$" }}
"""
        )
        script = b"hello\nlist services\nhealth billing\ncall billing /v1/status\nrun hello bob\n"
        done = harken("shell", "--config", str(config), "--user", "ann", stdin=script, cwd=tmp_path)
        assert done.returncode == 0, done.stderr.decode()
        out = done.stdout.decode()
        assert "Hello ann! I'm harken." in out
        assert f"  billing  {base} [payments]" in out
        assert "billing: up (" in out
        assert "GET billing/v1/status: HTTP 200 OK" in out
        assert "hi bob" in out

        other = harken(
            "shell",
            "--config",
            str(config),
            "--user",
            "eve",
            stdin=b"run hello bob\n",
            cwd=tmp_path,
        )
        assert other.stdout.decode().startswith("Sorry, `run` is only for the group(s) ops")

        check = harken("check", "--config", str(config), cwd=tmp_path)
        assert check.returncode == 0, check.stderr.decode()
        assert "[services.billing]" in check.stdout.decode()
        assert "[health]" in check.stdout.decode()
