"""`harken run` as a long-lived service, as a subprocess against the fake Slack: signals,
a shell whose input ends, log files that rotate, secrets hidden from runbooks."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from support.cli import Background, harken
from support.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

pytestmark = pytest.mark.e2e

TOKENS = {"HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN, "HARKEN_SLACK_APP_TOKEN": APP_TOKEN}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def run_slack(
    slack: FakeSlack, cwd: Path, *args: str, stdin: int | IO[bytes] = subprocess.DEVNULL
) -> Background:
    url = f"inputs.slack.api_url={slack.api_url}"
    return Background("run", "--set", url, *args, cwd=cwd, env=TOKENS, stdin=stdin)


# --- a shell whose input ends -------------------------------------------------------


def test_a_shell_whose_input_ends_stops_alone_and_slack_keeps_answering(
    slack: FakeSlack, tmp_path: Path
) -> None:
    bot = run_slack(slack, tmp_path, "--inputs", "shell,slack")  # stdin: /dev/null
    try:
        slack.wait_connections(1, timeout=30)
        bot.wait_stderr("the shell's input ended")
        slack.say("ping")
        assert slack.wait_post(lambda p: p.text == "pong").channel == "D0ALICE01"
        assert bot.proc.poll() is None
    finally:
        code = bot.stop()
    assert code == 0, bot.err.read_text()


def test_a_piped_script_is_answered_then_slack_carries_on(slack: FakeSlack, tmp_path: Path) -> None:
    script = tmp_path / "script.txt"
    script.write_bytes(b"echo from the script\n")
    with script.open("rb") as stdin:
        bot = run_slack(slack, tmp_path, "--inputs", "shell,slack", stdin=stdin)
    try:
        slack.wait_connections(1, timeout=30)
        bot.wait_for(lambda: b"from the script\n" in bot.out.read_bytes(), "the shell's reply")
        bot.wait_stderr("the shell's input ended")
        slack.say("echo still here")
        slack.wait_post(lambda p: p.text == "still here")
    finally:
        code = bot.stop()
    assert code == 0, bot.err.read_text()


# --- SIGTERM: a clean stop ----------------------------------------------------------

SLOW_PLUGIN = '''
import time

from harken import Context, command


@command(r"^slow (?P<value>\\w+)$")
def slow(ctx: Context, value: str) -> str:
    """Take a few seconds, remember the value, then answer."""
    ctx.say("started")
    time.sleep(3)
    ctx.memory.set("slow", value)
    return f"done {value}"
'''


def test_sigterm_lets_a_running_command_answer_and_keeps_what_it_wrote(
    slack: FakeSlack, tmp_path: Path
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow.py").write_text(SLOW_PLUGIN)
    dirs = f"bot.command_dirs={plugins}"
    bot = run_slack(slack, tmp_path, "--inputs", "slack", "--set", dirs)
    try:
        slack.wait_connections(1, timeout=30)
        slack.say("slow kept")
        slack.wait_post(lambda p: p.text == "started")
        bot.proc.send_signal(signal.SIGTERM)
        # The brief for a service manager: stopped within 10 s, with the answer sent.
        assert bot.proc.wait(timeout=10) == 0, bot.err.read_text()
    finally:
        bot.kill()
    assert [p.text for p in slack.posts_to("D0ALICE01")] == ["started", "done kept"]
    assert "Harken stopped" in bot.err.read_text()

    again = run_slack(slack, tmp_path, "--inputs", "slack", "--set", dirs)
    try:
        slack.wait_connections(2, timeout=30)
        slack.say("recall slow")
        slack.wait_post(lambda p: p.text == "slow is kept")
    finally:
        assert again.stop() == 0


def test_sigint_stops_harken_run_as_sigterm_does(slack: FakeSlack, tmp_path: Path) -> None:
    bot = run_slack(slack, tmp_path, "--inputs", "slack")
    try:
        slack.wait_connections(1, timeout=30)
        bot.proc.send_signal(signal.SIGINT)
        assert bot.proc.wait(timeout=30) == 0
    finally:
        bot.kill()
    err = bot.err.read_text()
    assert "SIGINT: stopping" in err
    assert "Traceback" not in err


# --- log files for months -----------------------------------------------------------


def test_the_log_file_can_be_rotated_by_renaming_it(slack: FakeSlack, tmp_path: Path) -> None:
    log = tmp_path / "log" / "harken.log"
    bot = run_slack(slack, tmp_path, "--inputs", "slack", "--log-file", str(log))
    try:
        bot.wait_for(lambda: log.exists() and "Harken is up" in log.read_text(), "start-up")
        # logrotate, then `kill -HUP`: the new file is opened at once.
        log.rename(log.with_suffix(".log.1"))
        bot.proc.send_signal(signal.SIGHUP)
        bot.wait_for(lambda: log.exists() and "SIGHUP" in log.read_text(), "a new log file")
        assert bot.proc.poll() is None
        # logrotate without a signal: the next line goes to a new file all the same.
        log.rename(log.with_suffix(".log.2"))
        assert bot.stop() == 0
    finally:
        bot.kill()
    assert "Harken stopped" in log.read_text()
    assert "Harken stopped" not in log.with_suffix(".log.2").read_text()
    assert "Harken is up" in log.with_suffix(".log.1").read_text()


# --- secrets --------------------------------------------------------------------------


def test_a_runbook_cannot_read_the_secrets_from_harkens_environment(tmp_path: Path) -> None:
    config = tmp_path / "harken.toml"
    config.write_text(
        """
[inputs.shell]
groups = { ops = ["ann"] }

[ops]
runbook_tail_lines = 1000
reply_max_chars = 100000

[runbooks.environ]
argv = ["sh", "-c", "tr '\\\\0' '\\\\n' < /proc/$PPID/environ | grep -e HARKEN_ -e PROOF_"]
"""
    )
    secrets = {
        "HARKEN_SLACK_BOT_TOKEN": "xoxb-9999-runbook-must-not-see",
        "HARKEN_XMPP_PASSWORD": "runbook-must-not-see-this-password",
    }
    done = harken(
        "shell",
        "--config",
        str(config),
        "--user",
        "ann",
        stdin=b"run environ\n",
        cwd=tmp_path,
        env={**secrets, "PROOF_OF_READING": "harken-environ-was-read"},
    )
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "PROOF_OF_READING=harken-environ-was-read" in out  # it did read Harken's environ
    for value in secrets.values():
        assert value not in out
        assert value not in done.stderr.decode()
