"""`harken check` passes exactly what `harken run` accepts, and its output is a config.

Each configuration below is one `run` refuses or misapplies; `check` must exit 2 with
one line on stderr naming the key. The check's standard output is TOML that, saved and
given back with `--config`, gives the same settings.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from support.cli import harken

from actors.system import StartupError
from config import Settings
from config.settings import AccessSettings
from harken.testbot import TestBot

pytestmark = pytest.mark.e2e

SLACK_TOKENS = {"HARKEN_SLACK_BOT_TOKEN": "xoxb-1-2-3", "HARKEN_SLACK_APP_TOKEN": "xapp-1-2-3"}


def check(tmp_path: Path, config: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    path = tmp_path / "harken.toml"
    path.write_text(config, encoding="utf-8")
    done = harken("check", "--config", str(path), cwd=tmp_path, env=env)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def one_error(tmp_path: Path, config: str, env: dict[str, str] | None = None) -> str:
    code, _, err = check(tmp_path, config, env)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_an_unknown_input_name_is_an_error(tmp_path: Path) -> None:
    line = one_error(tmp_path, '[bot]\ninputs = ["shell", "matrix"]\n')
    assert line.startswith("harken: config error: bot.inputs: input 'matrix' is not available here")
    assert "(available: email, irc, shell, slack, xmpp)" in line


def test_a_missing_slack_token_is_an_error(tmp_path: Path) -> None:
    env = {"HARKEN_SLACK_APP_TOKEN": SLACK_TOKENS["HARKEN_SLACK_APP_TOKEN"]}
    line = one_error(tmp_path, '[bot]\ninputs = ["slack"]\n', env)
    assert line.startswith("harken: config error: inputs.slack.bot_token: is not set")
    assert "HARKEN_SLACK_BOT_TOKEN" in line


def test_a_missing_xmpp_password_is_an_error(tmp_path: Path) -> None:
    line = one_error(tmp_path, '[bot]\ninputs = ["xmpp"]\n[inputs.xmpp]\njid = "h@example.org"\n')
    assert line.startswith("harken: config error: inputs.xmpp.password: is not set")
    assert "HARKEN_XMPP_PASSWORD" in line


def test_a_missing_xmpp_account_is_an_error(tmp_path: Path) -> None:
    line = one_error(tmp_path, '[bot]\ninputs = ["xmpp"]\n', {"HARKEN_XMPP_PASSWORD": "pw"})
    assert line.startswith("harken: config error: inputs.xmpp.jid: is required")


def test_a_network_input_with_its_secrets_passes(tmp_path: Path) -> None:
    code, _, err = check(tmp_path, '[bot]\ninputs = ["shell", "slack"]\n', SLACK_TOKENS)
    assert code == 0, err


def test_a_command_file_that_fails_to_load_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "cmds").mkdir()
    (tmp_path / "cmds" / "broken.py").write_text("raise RuntimeError('boom')\n")
    line = one_error(tmp_path, '[bot]\ncommand_dirs = ["cmds"]\n')
    assert line.startswith("harken: config error: bot.command_dirs: ")
    assert "broken.py" in line
    assert "boom" in line


def test_an_access_rule_for_an_unknown_command_is_an_error_naming_the_close_one(
    tmp_path: Path,
) -> None:
    line = one_error(tmp_path, '[access.commands]\nwach = ["ops"]\n')
    expected = "harken: config error: access.commands.wach: no command is called 'wach'"
    assert line.startswith(expected)
    assert "(did you mean watch?)" in line


def test_run_and_shell_refuse_to_start_with_an_access_rule_for_an_unknown_command(
    tmp_path: Path,
) -> None:
    config = tmp_path / "harken.toml"
    config.write_text('[access.commands]\nwach = ["ops"]\n')
    for action in ("run", "shell"):
        done = harken(action, "--config", str(config), stdin=b"ping\n", cwd=tmp_path)
        assert done.returncode == 2, done.stderr.decode()
        assert done.stdout == b""  # not one message was answered
        assert b"access.commands.wach: no command is called 'wach'" in done.stderr
        assert b"did you mean watch?" in done.stderr


def test_the_bot_refuses_to_start_with_an_access_rule_for_an_unknown_command(
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(Settings(), access=AccessSettings({"wach": ("ops",)}))
    bot = TestBot(tmp_path / "memory", settings=settings)
    try:
        with pytest.raises(StartupError, match=r"access\.commands\.wach: .*did you mean watch\?"):
            bot.start()
    finally:
        bot.stop()


def test_access_rules_for_dialogs_and_plugin_commands_pass(tmp_path: Path) -> None:
    (tmp_path / "cmds").mkdir()
    (tmp_path / "cmds" / "drain.py").write_text(
        "from harken import command\n\n\n"
        '@command(r"^drain$")\n'
        "def drain() -> str:\n"
        '    """Drain."""\n'
        '    return "draining"\n'
    )
    config = '[bot]\ncommand_dirs = ["cmds"]\n[access.commands]\nincident = ["ops"]\ndrain = []\n'
    code, _, err = check(tmp_path, config)
    assert code == 0, err


def test_an_unwritable_data_dir_is_one_error_line(tmp_path: Path) -> None:
    # A path under a regular file cannot be created, whoever runs the test (even root).
    (tmp_path / "file").write_text("")
    line = one_error(tmp_path, '[bot]\ndata_dir = "file/state"\n')
    expected = (
        "harken: config error: bot.data_dir: cannot create the data directory "
        f"{tmp_path}/file/state"
    )
    assert line.startswith(expected)
    assert "is not a directory" in line


def test_check_output_is_a_config_that_gives_the_same_settings(tmp_path: Path) -> None:
    (tmp_path / "etc" / "cmds").mkdir(parents=True)
    original = tmp_path / "etc" / "harken.toml"
    original.write_text(
        """
        [bot]
        inputs = ["shell", "slack"]
        command_dirs = ["cmds"]
        data_dir = "state"

        [log]
        file = "logs/harken.log"

        [services.web]
        url = "http://web.internal:8080"
        health = "/healthz"
        call = ["/v1/*"]
        description = 'Web "front" \u00e9'

        [services.postgres]
        tcp = "db1.internal:5432"

        [runbooks.restart-web]
        argv = ["systemctl", "restart", "web@{instance}"]
        args = { instance = "^[0-9]{1,2}$" }
        description = "Restart one web instance"

        [access.commands]
        watch = ["ops"]

        [inputs.shell]
        admins = ["root"]
        groups = { ops = ["alice", "bob"] }

        [inputs.slack]
        prefix = "?"
        """,
        encoding="utf-8",
    )
    env = {**SLACK_TOKENS, "HARKEN_BOT_WORKERS": "7"}
    first = harken(
        "check",
        "--config",
        str(original),
        "--set",
        "inputs.xmpp.rooms=a@conference.example.org",
        cwd=tmp_path,
        env=env,
    )
    assert first.returncode == 0, first.stderr.decode()
    text = first.stdout.decode()
    data = tomllib.loads(text)
    assert data["bot"]["data_dir"] == str(tmp_path / "etc" / "state")
    assert data["bot"]["workers"] == 7
    assert data["services"]["postgres"] == {"tcp": "db1.internal:5432"}
    # Secrets are comments: shown as set, never as values.
    assert '# bot_token = "***"' in text
    assert "bot_token" not in data["inputs"]["slack"]
    assert "xoxb-1-2-3" not in text

    saved = tmp_path / "elsewhere" / "saved.toml"
    saved.parent.mkdir()
    saved.write_text(text, encoding="utf-8")
    second = harken("check", "--config", str(saved), cwd=saved.parent, env=SLACK_TOKENS)
    assert second.returncode == 0, second.stderr.decode()
    assert tomllib.loads(second.stdout.decode()) == data
