"""`harken run --inputs slack` as a subprocess, against the fake Slack on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack

pytestmark = pytest.mark.e2e

HARKEN_RUN_SLACK = (sys.executable, "-m", "harken", "run", "--inputs", "slack")
PROXY_VARS = {"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"}


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _env(**tokens: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("HARKEN_") and k not in PROXY_VARS
    }
    env.update(tokens)
    return env


def _run(
    slack: FakeSlack | None, tmp_path: Path, **tokens: str
) -> subprocess.CompletedProcess[bytes]:
    url = slack.api_url if slack is not None else "http://127.0.0.1:9/api/"
    return subprocess.run(
        [*HARKEN_RUN_SLACK, "--set", f"inputs.slack.api_url={url}"],
        capture_output=True,
        cwd=tmp_path,
        env=_env(**tokens),
        timeout=60,
        check=False,
    )


def test_harken_run_answers_on_slack_and_stops_cleanly_on_sigterm(
    slack: FakeSlack, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [
            *HARKEN_RUN_SLACK,
            "--log-level",
            "DEBUG",
            "--set",
            f"inputs.slack.api_url={slack.api_url}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=_env(HARKEN_SLACK_BOT_TOKEN=BOT_TOKEN, HARKEN_SLACK_APP_TOKEN=APP_TOKEN),
    )
    try:
        slack.wait_connections(1, timeout=30)
        slack.say("ping")
        assert slack.wait_post(lambda p: p.text == "pong").channel == "D0ALICE01"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    assert "Harken stopped" in log
    for token in (BOT_TOKEN, APP_TOKEN):
        assert token not in log


@pytest.mark.parametrize(
    ("tokens", "variable"),
    [
        ({"HARKEN_SLACK_BOT_TOKEN": "xoxb-0000-wrong-secret-bot"}, "HARKEN_SLACK_BOT_TOKEN"),
        ({"HARKEN_SLACK_APP_TOKEN": "xapp-1-wrong-secret-app"}, "HARKEN_SLACK_APP_TOKEN"),
    ],
)
def test_a_token_slack_refuses_exits_2_with_one_line_naming_it(
    slack: FakeSlack, tmp_path: Path, tokens: dict[str, str], variable: str
) -> None:
    given = {"HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN, "HARKEN_SLACK_APP_TOKEN": APP_TOKEN, **tokens}
    done = _run(slack, tmp_path, **given)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert variable in lines[0]
    assert "invalid_auth" in lines[0]
    for secret in given.values():
        assert secret not in done.stderr.decode()
        assert secret not in done.stdout.decode()
    assert slack.connections == 0


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ({"HARKEN_SLACK_APP_TOKEN": APP_TOKEN}, "HARKEN_SLACK_BOT_TOKEN is not set"),
        ({"HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN}, "HARKEN_SLACK_APP_TOKEN is not set"),
        (
            {"HARKEN_SLACK_BOT_TOKEN": APP_TOKEN, "HARKEN_SLACK_APP_TOKEN": APP_TOKEN},
            "HARKEN_SLACK_BOT_TOKEN does not hold a bot token (it must start with xoxb-)",
        ),
    ],
)
def test_a_missing_or_misplaced_token_exits_2_before_calling_slack(
    tmp_path: Path, tokens: dict[str, str], expected: str
) -> None:
    done = _run(None, tmp_path, **tokens)
    assert done.returncode == 2
    err = done.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"harken: slack: {expected}")
    for secret in tokens.values():
        assert secret not in err


def test_an_unreachable_slack_exits_2_with_the_url(tmp_path: Path) -> None:
    done = _run(None, tmp_path, HARKEN_SLACK_BOT_TOKEN=BOT_TOKEN, HARKEN_SLACK_APP_TOKEN=APP_TOKEN)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "cannot reach the Slack Web API at http://127.0.0.1:9/api/" in lines[0]
