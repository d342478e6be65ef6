"""The data directory: where memory, jobs and the shell's log land, whatever the cwd.

Harken runs as a subprocess from one directory with its config in another; the test
looks at where files appear, and that nothing appears in the directory it started in.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from support.cli import Terminal, harken

pytestmark = pytest.mark.e2e


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_state_lands_in_the_config_files_data_dir_from_any_cwd(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "harken.toml").write_text('[bot]\ndata_dir = "state"\n')
    first_cwd, second_cwd = tmp_path / "first", tmp_path / "second"
    first_cwd.mkdir()
    second_cwd.mkdir()
    config = "../etc/harken.toml"  # relative to each cwd, like a person would type it

    done = harken(
        "shell", "--config", config, "--user", "ann", stdin=b"remember x is 1\n", cwd=first_cwd
    )
    assert done.returncode == 0, done.stderr.decode()

    state = etc / "state"
    assert (state / "memory").is_dir()
    assert (state / "jobs.sqlite").is_file()
    assert files_under(first_cwd) == []
    again = harken(
        "shell", "--config", config, "--user", "ann", stdin=b"recall x\n", cwd=second_cwd
    )
    assert again.stdout == b"x is 1\n"
    check = harken("check", "--config", config, cwd=second_cwd)
    assert check.returncode == 0, check.stderr.decode()
    out = check.stdout.decode()
    assert f"# data directory: {state}\n" in out
    assert tomllib.loads(out)["bot"]["data_dir"] == str(state)
    assert files_under(second_cwd) == []


def test_data_dir_flag_and_variable_are_relative_to_the_cwd(tmp_path: Path) -> None:
    by_flag = harken("shell", "--data-dir", "flag-state", stdin=b"ping\n", cwd=tmp_path)
    assert by_flag.returncode == 0, by_flag.stderr.decode()
    by_env = harken("shell", stdin=b"ping\n", cwd=tmp_path, env={"HARKEN_DATA_DIR": "env-state"})
    assert by_env.returncode == 0, by_env.stderr.decode()

    for name in ("flag-state", "env-state"):
        assert (tmp_path / name / "memory").is_dir()
        assert (tmp_path / name / "jobs.sqlite").is_file()
    assert not (tmp_path / "var").exists()
    check = harken("check", "--data-dir", "flag-state", cwd=tmp_path)
    assert f"# data directory: {tmp_path / 'flag-state'}\n" in check.stdout.decode()


def test_the_default_data_dir_is_var_of_the_directory_harken_starts_in(tmp_path: Path) -> None:
    # What `make run` relies on: started in the checkout, state goes to its ./var/.
    check = harken("check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr.decode()
    data = tomllib.loads(check.stdout.decode())
    assert data["bot"]["data_dir"] == str(tmp_path / "var")
    assert data["memory"]["path"] == ""  # follows the data directory
    assert f"# default: {tmp_path}/var/memory (memory in bot.data_dir)" in check.stdout.decode()


def test_the_interactive_shell_logs_into_the_data_dir(tmp_path: Path) -> None:
    args = ("shell", "--user", "ann", "--data-dir", "state", "--memory-path", "db/memory")
    term = Terminal(tmp_path, tmp_path / "home", args)
    try:
        term.expect("you> ")
        assert f"(logs: {tmp_path / 'state' / 'harken.log'})" in term.screen
        term.type("quit\r")
        assert term.close() == 0
    finally:
        term.kill()
    assert (tmp_path / "state" / "harken.log").is_file()
    # Set apart from the data directory, memory and its job store stay where they were put.
    assert (tmp_path / "db" / "memory").is_dir()
    assert (tmp_path / "db" / "jobs.sqlite").is_file()
