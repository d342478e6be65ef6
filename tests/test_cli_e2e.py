"""End to end: the `harken` command line as a subprocess, as a person or a script uses it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def harken(
    *args: str,
    stdin: bytes = b"",
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "harken", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )


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
