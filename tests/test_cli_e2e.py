"""End to end: the `harken` command line as a subprocess, as a person or a script uses it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from support.cli import harken

pytestmark = pytest.mark.e2e


def test_piped_ping_prints_pong_and_exits_zero(tmp_path: Path) -> None:
    done = harken("shell", stdin=b"ping\n", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"pong\n"


def test_every_line_of_a_script_is_answered_in_order(tmp_path: Path) -> None:
    script = "".join(f"echo line {i}\n" for i in range(200)).encode()
    done = harken("shell", stdin=script, cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.decode().splitlines() == [f"line {i}" for i in range(200)]


def test_memory_lives_under_var_and_survives_a_restart(tmp_path: Path) -> None:
    first = harken("shell", "--user", "ann", stdin=b"remember pager is 555-0100\n", cwd=tmp_path)
    assert first.stdout == b"OK, I'll remember that pager is 555-0100.\n"
    assert (tmp_path / "var" / "memory").is_dir()
    second = harken("shell", "--user", "ann", stdin=b"recall pager\n", cwd=tmp_path)
    assert second.stdout == b"pager is 555-0100\n"
    other = harken("shell", "--user", "bob", stdin=b"recall pager\n", cwd=tmp_path)
    assert other.stdout.startswith(b"I don't know pager.")


def test_user_flag_sets_who_is_speaking(tmp_path: Path) -> None:
    done = harken("shell", "--user", "night-owl", stdin=b"whoami\n", cwd=tmp_path)
    assert b"You are night-owl" in done.stdout
    assert b"Input: shell" in done.stdout


def test_invalid_utf8_and_control_characters_on_stdin_are_answered(tmp_path: Path) -> None:
    done = harken("shell", stdin=b"echo caf\xff\x1b[31mred\n\x00ping\n", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.decode() == "caf\ufffd[31mred\npong\n"


def test_a_one_megabyte_line_is_refused_and_the_shell_keeps_going(tmp_path: Path) -> None:
    done = harken("shell", stdin=b"echo " + b"z" * 1_000_000 + b"\nping\n", cwd=tmp_path)
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    assert "only read messages up to" in lines[0]
    assert lines[1] == "pong"


def test_a_bad_config_prints_one_line_naming_the_key_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[bot]\nworkers = 'lots'\n")
    done = harken("check", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "bot.workers" in lines[0]
    assert b"Traceback" not in done.stderr


def test_check_prints_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    token = "xoxb-1234-very-secret-token"
    done = harken("check", cwd=tmp_path, env={"HARKEN_SLACK_BOT_TOKEN": token})
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "***" in out
    assert "timezone" in out
    assert token not in out
    assert token not in done.stderr.decode()


def test_cli_flags_override_environment_and_file(tmp_path: Path) -> None:
    done = harken(
        "shell",
        "--timezone",
        "Asia/Tokyo",
        stdin=b"time\n",
        cwd=tmp_path,
        env={"HARKEN_BOT_TIMEZONE": "Europe/Paris"},
    )
    assert b" in Asia/Tokyo (" in done.stdout


def test_an_unknown_input_is_a_clear_error_with_exit_2(tmp_path: Path) -> None:
    done = harken("run", "--inputs", "carrier_pigeon", stdin=b"", cwd=tmp_path)
    assert done.returncode == 2
    assert b"input 'carrier_pigeon' is not available here" in done.stderr
    assert b"Traceback" not in done.stderr


LATE_PLUGIN = '''
import threading

from harken import Context, command


@command(r"^later$")
def later(ctx: Context) -> str:
    """Answer now, and again a moment after the answer."""
    threading.Timer(1.0, ctx.say, args=("later!",)).start()
    return "soon"
'''


def test_linger_keeps_listening_for_messages_after_the_last_reply(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "later.py").write_text(LATE_PLUGIN)
    args = ("shell", "--set", f"bot.command_dirs={plugins}")
    done = harken(*args, "--linger", "4", stdin=b"later\n", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout == b"soon\nlater!\n"


ADMIN_PLUGIN = '''
from harken import command


@command(r"^drain$", admin_only=True)
def drain() -> str:
    """Take this node out of the pool."""
    return "draining"
'''


def test_admins_listed_in_the_config_may_run_admin_commands_and_others_are_refused(
    tmp_path: Path,
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "drain.py").write_text(ADMIN_PLUGIN)
    config = tmp_path / "harken.toml"
    config.write_text('[bot]\ncommand_dirs = ["plugins"]\n\n[inputs.shell]\nadmins = ["root"]\n')
    admin = harken(
        "shell", "--config", str(config), "--user", "root", stdin=b"drain\n", cwd=tmp_path
    )
    assert admin.stdout == b"draining\n"
    other = harken(
        "shell", "--config", str(config), "--user", "eve", stdin=b"drain\n", cwd=tmp_path
    )
    assert (
        other.stdout == b"Sorry, `drain` is for admins only, and you are not an admin on shell.\n"
    )
    assert b"refused drain for eve" in other.stderr


# --- version, fatal errors and exit codes ---------------------------------------------


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    done = harken("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.decode() == f"harken {importlib.metadata.version('harken')}\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("check", "--set", "bot.workers=lots"), "harken: config error: bot.workers"),
        (("run", "--inputs", "carrier_pigeon"), "harken: input 'carrier_pigeon'"),
        (("shell", "--log-file", "/"), "harken: cannot write the log file / (log.file)"),
    ],
)
def test_a_fatal_configuration_problem_is_one_harken_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    done = harken(*args, stdin=b"ping\n", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected)


SLOW_PLUGIN = '''
import time

from harken import command


@command(r"^nap$")
def nap() -> str:
    """Take longer than the caller waits."""
    time.sleep(5)
    return "rested"
'''


def test_a_runtime_failure_is_a_harken_line_and_exit_1(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nap.py").write_text(SLOW_PLUGIN)
    args = ("shell", "--set", f"bot.command_dirs={plugins}", "--reply-timeout", "0.5")
    done = harken(*args, stdin=b"nap\n", cwd=tmp_path)
    assert done.returncode == 1
    fatal = [line for line in done.stderr.decode().splitlines() if line.startswith("harken: ")]
    assert fatal == ["harken: 1 message(s) got no complete answer within 0.5 s"]


# --- Harken's own top-level packages --------------------------------------------------


def test_a_config_py_in_the_current_directory_is_named_and_refused(tmp_path: Path) -> None:
    shadow = tmp_path / "config.py"
    shadow.write_text("SETTING = 1\n")
    done = harken("check", cwd=tmp_path)  # python -m harken: the cwd comes first
    assert done.returncode == 2
    err = done.stderr.decode()
    assert err.startswith(f"harken: {shadow} is imported as `config` instead of Harken's own")
    assert len(err.strip().splitlines()) == 1
    assert b"Traceback" not in done.stderr


def test_the_harken_command_names_a_package_shadowed_on_pythonpath(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "__init__.py").write_text("")
    script = Path(sys.executable).with_name("harken")
    done = subprocess.run(
        [str(script), "check"],
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    expected = f"harken: {tmp_path / 'memory' / '__init__.py'} is imported as `memory`"
    assert done.stderr.decode().startswith(expected)


# --- log format and levels ------------------------------------------------------------

FAILING_PLUGIN = '''
from harken import command


@command(r"^boom$")
def boom() -> str:
    """Fail."""
    raise RuntimeError("the boom command failed on purpose")
'''


def test_json_logs_are_one_object_per_line_with_the_exception(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "boom.py").write_text(FAILING_PLUGIN)
    done = harken(
        "shell",
        "--set",
        "log.format=json",
        "--set",
        f"bot.command_dirs={plugins}",
        "--log-level",
        "DEBUG",
        stdin=b"ping\nboom\n",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr.decode()
    records = [json.loads(line) for line in done.stderr.decode().splitlines()]
    assert len(records) > 3
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert datetime.fromisoformat(record["time"]).tzinfo is not None
    failed = [r for r in records if "exception" in r]
    assert len(failed) == 1
    assert failed[0]["level"] == "ERROR"
    assert "RuntimeError: the boom command failed on purpose" in failed[0]["exception"]
    assert any(r["message"] == "Harken stopped" for r in records)


def test_apscheduler_is_quiet_by_default_and_log_levels_set_it(tmp_path: Path) -> None:
    def scheduler_info(*args: str) -> list[str]:
        done = harken("shell", "--set", "log.format=json", *args, stdin=b"ping\n", cwd=tmp_path)
        assert done.returncode == 0, done.stderr.decode()
        records = [json.loads(line) for line in done.stderr.decode().splitlines()]
        return [
            r["message"]
            for r in records
            if r["logger"].startswith("apscheduler") and r["level"] == "INFO"
        ]

    assert scheduler_info() == []
    assert "Scheduler started" in scheduler_info("--set", "log.levels=apscheduler=INFO")
    config = tmp_path / "harken.toml"
    config.write_text('[log.levels]\n"apscheduler" = "info"\n')
    assert "Scheduler started" in scheduler_info("--config", str(config))


def test_a_tcp_only_service_from_the_readme_is_checked_by_connecting(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        config = tmp_path / "harken.toml"
        config.write_text(f'[services.postgres]\ntcp = "127.0.0.1:{port}"\n')
        script = b"health postgres\nlist services\n"
        done = harken("shell", "--config", str(config), stdin=script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("postgres: up (")
    assert lines[1:] == ["Services (1):", f"  postgres  tcp 127.0.0.1:{port}"]
