"""The configuration layer: shipped default, file, env and CLI layers, secrets, errors."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from config import (
    BotSettings,
    ConfigError,
    InputSettings,
    LogSettings,
    MemorySettings,
    SchedulerSettings,
    Secret,
    Settings,
    load_settings,
    render_settings,
)
from config.rules import RULES, SECTION_SECRETS
from config.settings import ClusterSettings, HealthSettings, IdentitySettings, OpsSettings

SECTIONS: dict[str, type[Any]] = {
    "bot": BotSettings,
    "memory": MemorySettings,
    "log": LogSettings,
    "scheduler": SchedulerSettings,
    "ops": OpsSettings,
    "health": HealthSettings,
    "cluster": ClusterSettings,
    "identity": IdentitySettings,
}
TOKEN = "xoxb-1234-DO-NOT-LEAK-5678"
PASSWORD = "hunter2-very-secret"


def write(tmp_path: Path, text: str, name: str = "harken.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_for(text: str, tmp_path: Path, **kwargs: Any) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=kwargs.pop("env", {}), **kwargs)
    return caught.value


def assert_one_line(error: ConfigError) -> str:
    message = str(error)
    assert "\n" not in message
    assert message.startswith("config error: ")
    assert "Traceback" not in message
    return message


# --- the shipped default ----------------------------------------------------------


def with_paths(settings: Settings, data_dir: Path, memory: Path | None = None) -> Settings:
    """`settings` with the absolute paths the loader fills in."""
    return dataclasses.replace(
        settings,
        bot=dataclasses.replace(settings.bot, data_dir=str(data_dir)),
        memory=dataclasses.replace(settings.memory, path=str(memory or data_dir / "memory")),
    )


def test_shipped_default_equals_dataclass_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})

    # The same, except that the data directory is made absolute and memory follows it.
    assert settings == with_paths(Settings(), tmp_path / "var")
    assert settings.bot == dataclasses.replace(BotSettings(), data_dir=str(tmp_path / "var"))
    assert settings.memory == MemorySettings(path=str(tmp_path / "var" / "memory"))
    assert settings.log == LogSettings()
    assert settings.scheduler == SchedulerSettings()
    assert settings.source == "<shipped default>"
    assert list(settings.inputs) == ["shell", "email", "irc", "slack", "xmpp"]
    assert settings.inputs["shell"] == InputSettings(name="shell")
    assert settings.inputs["xmpp"].options["nick"] == "harken"
    assert settings.origins["memory.path"] == "derived from bot.data_dir"
    assert set(settings.origins.values()) == {"default", "derived from bot.data_dir"}
    assert settings.unknown_env == ()


def test_shipped_file_lists_every_key_and_no_secrets() -> None:
    data = tomllib.loads(resources.files("config").joinpath("harken.toml").read_text())

    for section, cls in SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        # Section secrets (memory.url) never appear in a file; their variable is named.
        secrets = {key.partition(".")[2] for key in SECTION_SECRETS if key.startswith(section)}
        assert set(data[section]) == names - secrets
    assert set(data["inputs"]) == {"shell", "slack", "xmpp"}
    for section in data["inputs"].values():
        assert "admins" in section
    text = resources.files("config").joinpath("harken.toml").read_text()
    secrets = ("HARKEN_SLACK_BOT_TOKEN", "HARKEN_SLACK_APP_TOKEN", "HARKEN_XMPP_PASSWORD")
    for var in (*secrets, *SECTION_SECRETS.values()):
        assert var in text


def test_rules_follow_dataclasses() -> None:
    # The loader reads each key by the type of its dataclass default; keep them in step.
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f"{section}.{f.name}" not in SECTION_SECRETS:
                assert RULES[f"{section}.{f.name}"].kind is type(f.default), f.name
    fields = sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values())
    assert len(RULES) == fields - len(SECTION_SECRETS)


def test_config_env_var_selects_file_and_explicit_path_wins(tmp_path: Path) -> None:
    from_env = write(tmp_path, "[bot]\nname = 'from-env'\n", "env.toml")
    explicit = write(tmp_path, "[bot]\nname = 'explicit'\n", "explicit.toml")

    assert load_settings(env={"HARKEN_CONFIG": str(from_env)}).bot.name == "from-env"
    assert load_settings(explicit, env={"HARKEN_CONFIG": str(from_env)}).bot.name == "explicit"


# --- layering: file < env < cli ------------------------------------------------------


def test_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [bot]
        name = "opsbot"
        inputs = ["shell", "xmpp", "matrix"]
        timezone = "Europe/Berlin"
        workers = 4
        conversation_idle_seconds = 12.5

        [memory]
        path = "/srv/harken/memory"

        [log]
        level = "debug"

        [inputs.xmpp]
        admins = ["alice@example.org"]
        jid = "bot@example.org"
        rooms = ["ops@conference.example.org"]

        [inputs.matrix]
        homeserver = "https://matrix.example.org"
        """,
    )

    settings = load_settings(path, env={})

    assert settings.source == str(path)
    assert settings.bot == BotSettings(
        name="opsbot",
        inputs=("shell", "xmpp", "matrix"),
        timezone="Europe/Berlin",
        workers=4,
        conversation_idle_seconds=12.5,
        data_dir=os.path.abspath("var"),
    )
    assert settings.memory.path == "/srv/harken/memory"
    assert settings.log.level == "DEBUG"
    xmpp = settings.inputs["xmpp"]
    assert xmpp.admins == ("alice@example.org",)
    assert xmpp.options["jid"] == "bot@example.org"
    assert xmpp.options["rooms"] == ("ops@conference.example.org",)
    assert xmpp.options["port"] == 5222  # untouched defaults stay
    assert settings.inputs["matrix"].options == {"homeserver": "https://matrix.example.org"}
    assert settings.origins["bot.workers"] == "file"
    assert settings.origins["bot.max_message_bytes"] == "default"


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[bot]\nworkers = 4\n[inputs.xmpp]\njid = 'file@example.org'\n")
    env = {
        "HARKEN_BOT_WORKERS": "8",
        "HARKEN_BOT_INPUTS": "shell, xmpp",
        "HARKEN_BOT_CONVERSATION_IDLE_SECONDS": "60",
        "HARKEN_MEMORY_PATH": "/data/memory",
        "HARKEN_LOG_LEVEL": "warning",
        "HARKEN_SHELL_ADMINS": "alice, bob",
        "HARKEN_XMPP_JID": "env@example.org",
        "HARKEN_XMPP_PORT": "5223",
        "HARKEN_XMPP_ROOMS": "a@conference.example.org,b@conference.example.org",
        "PATH": "/usr/bin",
    }

    settings = load_settings(path, env=env)

    assert settings.bot.workers == 8
    assert settings.bot.inputs == ("shell", "xmpp")
    assert settings.bot.conversation_idle_seconds == 60.0
    assert settings.memory.path == "/data/memory"
    assert settings.log.level == "WARNING"
    assert settings.inputs["shell"].admins == ("alice", "bob")
    xmpp = settings.inputs["xmpp"].options
    assert xmpp["jid"] == "env@example.org"
    assert xmpp["port"] == 5223
    assert xmpp["rooms"] == ("a@conference.example.org", "b@conference.example.org")
    assert settings.origins["bot.workers"] == "env HARKEN_BOT_WORKERS"
    assert settings.origins["inputs.xmpp.jid"] == "env HARKEN_XMPP_JID"
    assert settings.unknown_env == ()


def test_cli_overrides_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[bot]\nworkers = 4\n")
    env = {"HARKEN_BOT_WORKERS": "8", "HARKEN_MEMORY_PATH": "/data/memory"}
    overrides = {
        "bot.workers": "12",
        "bot.inputs": "shell,slack",
        "memory.path": "/tmp/x",
        "inputs.xmpp.jid": "cli@example.org",
        "inputs.shell.admins": "root",
    }

    settings = load_settings(path, env=env, overrides=overrides)

    assert settings.bot.workers == 12
    assert settings.bot.inputs == ("shell", "slack")
    assert settings.memory.path == "/tmp/x"
    assert settings.inputs["xmpp"].options["jid"] == "cli@example.org"
    assert settings.inputs["shell"].admins == ("root",)
    assert settings.origins["bot.workers"] == "cli"
    rendered = render_settings(settings)
    assert "# cli" in rendered
    assert "# file" not in rendered.split("[bot]")[1].split("workers")[1].splitlines()[0]


def test_empty_env_list_clears_it() -> None:
    settings = load_settings(env={"HARKEN_SHELL_ADMINS": "", "HARKEN_LOG_FILE": ""})

    assert settings.inputs["shell"].admins == ()
    assert settings.log.file == ""


def test_third_party_input_enabled_from_env_gets_its_secret() -> None:
    settings = load_settings(
        env={"HARKEN_BOT_INPUTS": "shell,matrix", "HARKEN_MATRIX_TOKEN": TOKEN}
    )

    assert settings.inputs["matrix"].secrets["token"].reveal() == TOKEN
    assert TOKEN not in render_settings(settings)


def test_unknown_env_vars_are_listed_not_fatal() -> None:
    env = {"HARKEN_BOT_WOKRERS": "3", "HARKEN_NOSUCH_THING": "x", "HOME": "/root"}

    settings = load_settings(env=env)

    assert settings.unknown_env == ("HARKEN_BOT_WOKRERS", "HARKEN_NOSUCH_THING")
    assert settings.bot.workers == 16
    rendered = render_settings(settings)
    assert "HARKEN_BOT_WOKRERS (did you mean HARKEN_BOT_WORKERS?)" in rendered


# --- secrets -------------------------------------------------------------------------


def test_secrets_from_env_are_masked_everywhere() -> None:
    env = {"HARKEN_SLACK_BOT_TOKEN": TOKEN, "HARKEN_XMPP_PASSWORD": PASSWORD}

    settings = load_settings(env=env, overrides={"bot.inputs": "slack,xmpp"})

    slack = settings.inputs["slack"]
    assert slack.secrets["bot_token"].reveal() == TOKEN
    assert settings.inputs["xmpp"].secrets["password"].reveal() == PASSWORD
    assert "app_token" not in slack.secrets
    rendered = render_settings(settings)
    for text in (repr(settings), str(settings), rendered, f"{slack.secrets['bot_token']}"):
        assert TOKEN not in text
        assert PASSWORD not in text
        assert TOKEN[-4:] not in text
    assert repr(slack.secrets["bot_token"]) == "Secret('***')"
    assert 'bot_token = "***"' in rendered
    assert "app_token = (unset)" in rendered
    assert "HARKEN_SLACK_APP_TOKEN" in rendered


def test_empty_secret_env_var_counts_as_unset() -> None:
    settings = load_settings(env={"HARKEN_SLACK_BOT_TOKEN": ""})

    assert "bot_token" not in settings.inputs["slack"].secrets
    assert settings.unknown_env == ()


def test_secret_value_semantics() -> None:
    secret = Secret("abc")

    assert secret == Secret("abc")
    assert secret != Secret("abd")
    assert str(secret) == "***"
    with pytest.raises(AttributeError):
        secret._value = "x"


@pytest.mark.parametrize(
    ("text", "key", "env_var"),
    [
        (
            "[inputs.slack]\nbot_token = 'xoxb-1'\n",
            "inputs.slack.bot_token",
            "HARKEN_SLACK_BOT_TOKEN",
        ),
        (
            "[inputs.slack]\napp_token = 'xapp-1'\n",
            "inputs.slack.app_token",
            "HARKEN_SLACK_APP_TOKEN",
        ),
        ("[inputs.xmpp]\npassword = 'pw'\n", "inputs.xmpp.password", "HARKEN_XMPP_PASSWORD"),
        ("[inputs.matrix]\ntoken = 'pw'\n", "inputs.matrix.token", "HARKEN_MATRIX_TOKEN"),
        ("[inputs.matrix.auth]\ntoken = 'pw'\n", "inputs.matrix.auth.token", "environment"),
        ("[[inputs.matrix.servers]]\npassword = 'pw'\n", "inputs.matrix.servers.password", "env"),
    ],
)
def test_secret_in_file_is_refused(tmp_path: Path, text: str, key: str, env_var: str) -> None:
    error = error_for(text, tmp_path)

    message = assert_one_line(error)
    assert error.key == key
    assert env_var in message
    assert "xoxb-1" not in message


def test_secret_on_command_line_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides={"inputs.slack.bot_token": TOKEN})

    message = assert_one_line(caught.value)
    assert "HARKEN_SLACK_BOT_TOKEN" in message
    assert TOKEN not in message


# --- bad configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ('[bot]\nworkers = "lots"', "bot.workers", 'must be an integer >= 1 (got "lots")'),
        ("[bot]\nworkers = 0", "bot.workers", "must be an integer >= 1 (got 0)"),
        ("[bot]\nworkers = true", "bot.workers", "must be an integer >= 1 (got true)"),
        ("[bot]\nworkers = 2.5", "bot.workers", "must be an integer >= 1 (got 2.5)"),
        ("[bot]\nmax_message_bytes = -5", "bot.max_message_bytes", "got -5"),
        ("[bot]\nconversation_idle_seconds = -1", "bot.conversation_idle_seconds", "> 0"),
        ("[bot]\nconversation_idle_seconds = 0", "bot.conversation_idle_seconds", "> 0"),
        ("[bot]\nconversation_idle_seconds = nan", "bot.conversation_idle_seconds", "> 0"),
        ('[bot]\ntimezone = "Mars/Base"', "bot.timezone", 'unknown time zone "Mars/Base"'),
        ('[bot]\ntimezone = ""', "bot.timezone", "unknown time zone"),
        ("[bot]\ntimezone = 1", "bot.timezone", "IANA time zone"),
        ('[bot]\nname = " "', "bot.name", "non-empty"),
        ('[bot]\ninputs = "shell"', "bot.inputs", '(got "shell")'),
        ("[bot]\ninputs = []", "bot.inputs", "at least one input"),
        ('[bot]\ninputs = ["Shell"]', "bot.inputs", "not a valid input name"),
        ('[bot]\ninputs = ["shell", "shell"]', "bot.inputs", "more than once"),
        ('[bot]\ninputs = ["memory"]', "bot.inputs", "reserved"),
        ('[bot]\ncommand_dirs = [""]', "bot.command_dirs", "empty path"),
        (
            '[memory]\nbackend = "redis"',
            "memory.backend",
            'one of: tinydb, postgresql (got "redis")',
        ),
        ('[bot]\ndata_dir = ""', "bot.data_dir", "non-empty directory path"),
        ('[log]\nlevel = "LOUD"', "log.level", "one of DEBUG, INFO, WARNING, ERROR"),
        ("[log]\nfile = false", "log.file", "file path"),
        ('[inputs.shell]\nadmins = "bob"', "inputs.shell.admins", 'list of user ids (got "bob")'),
        ('[inputs.xmpp]\nport = "x"', "inputs.xmpp.port", "integer"),
        ("[inputs.xmpp]\nrooms = [1]", "inputs.xmpp.rooms", "list of strings"),
        ("[inputs.Slack]\nadmins = []", "inputs.Slack", "not a valid input name"),
        ("[inputs]\nslack = 1", "inputs.slack", "must be a table"),
        ("bot = 3", "bot", "must be a table"),
        (
            "[identity]\nlink_codes_per_person = 0",
            "identity.link_codes_per_person",
            "must be an integer >= 1 (got 0)",
        ),
        (
            "[identity]\nlink_codes_per_account = 1.5",
            "identity.link_codes_per_account",
            "must be an integer >= 1 (got 1.5)",
        ),
        (
            "[identity]\nlink_codes_window_seconds = 0",
            "identity.link_codes_window_seconds",
            "must be a number > 0",
        ),
    ],
)
def test_bad_file_value_is_one_line_naming_the_key(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    error = error_for(text, tmp_path)

    message = assert_one_line(error)
    assert error.key == key
    assert message.startswith(f"config error: {key}: ")
    assert problem in error.problem


def test_bad_value_message_exactly() -> None:
    error = ConfigError("bot.workers", 'must be an integer >= 1 (got "lots")')
    assert str(error) == 'config error: bot.workers: must be an integer >= 1 (got "lots")'
    assert isinstance(error, Exception)


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("HARKEN_BOT_WORKERS", "lots", "bot.workers"),
        ("HARKEN_BOT_WORKERS", "0", "bot.workers"),
        ("HARKEN_BOT_TIMEZONE", "Nowhere/Special", "bot.timezone"),
        ("HARKEN_BOT_CONVERSATION_IDLE_SECONDS", "-1", "bot.conversation_idle_seconds"),
        ("HARKEN_BOT_INPUTS", "", "bot.inputs"),
        ("HARKEN_LOG_LEVEL", "loud", "log.level"),
        ("HARKEN_MEMORY_BACKEND", "redis", "memory.backend"),
        ("HARKEN_XMPP_PORT", "abc", "inputs.xmpp.port"),
    ],
)
def test_bad_env_value_names_variable_and_key(var: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={var: value})

    message = assert_one_line(caught.value)
    assert caught.value.key == key
    assert message.startswith(f"config error: {key} (from {var}): ")


@pytest.mark.parametrize(
    ("overrides", "key", "problem"),
    [
        ({"bot.workers": "none"}, "bot.workers", "must be an integer >= 1"),
        ({"bot.wokers": "3"}, "bot.wokers", "unknown key (did you mean bot.workers?)"),
        ({"inputs.Bad.jid": "x"}, "inputs.Bad.jid", "not a valid input name"),
        ({"memory": "x"}, "memory", "unknown key"),
        ({"inputs.xmpp": "x"}, "inputs.xmpp", "name an input key, e.g. inputs.xmpp.jid"),
    ],
)
def test_bad_cli_override(overrides: dict[str, str], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides=overrides)

    message = assert_one_line(caught.value)
    assert caught.value.key == key
    assert message.startswith(f"config error: {key} (from the command line): ")
    assert problem in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[bot]\ntimezon = 'UTC'",
            "config error: bot.timezon: unknown key (did you mean bot.timezone?)",
        ),
        ("[bots]\nname = 'x'", "config error: bots: unknown key (did you mean bot?)"),
        ("workers = 3", "config error: workers: unknown key (did you mean bot.workers?)"),
        ("[log]\nlevle = 'INFO'", "config error: log.levle: unknown key (did you mean log.level?)"),
        ("[memory]\nzzz = 1", "config error: memory.zzz: unknown key"),
    ],
)
def test_unknown_key_suggests_the_closest(tmp_path: Path, text: str, message: str) -> None:
    assert str(error_for(text, tmp_path)) == message


def test_bad_toml_syntax_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[bot]\nname = "harken"\nworkers 16\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})

    message = assert_one_line(caught.value)
    assert message.startswith(f"config error: {path}: line 3: TOML syntax: ")
    assert caught.value.key == str(path)


def test_toml_error_at_end_of_file_names_the_last_line(tmp_path: Path) -> None:
    error = error_for('[bot]\nname = "unterminated', tmp_path)

    assert "line 2 (end of file): TOML syntax: " in assert_one_line(error)


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(missing, env={})
    assert (
        str(caught.value) == f"config error: {missing}: cannot read file: No such file or directory"
    )

    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[bot]\nname = '\xff'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(binary, env={})
    assert str(caught.value) == f"config error: {binary}: line 2: not valid UTF-8"

    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})
    assert_one_line(caught.value)


# --- paths -----------------------------------------------------------------------------


def test_relative_command_dirs_resolve_against_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        '[bot]\ncommand_dirs = ["commands", "../shared", "/opt/harken/commands"]\n',
        "etc/harken.toml",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    settings = load_settings(os.path.relpath(path), env={})

    assert settings.bot.command_dirs == (
        str(tmp_path / "etc" / "commands"),
        str(tmp_path / "shared"),
        "/opt/harken/commands",
    )
    assert settings.source == str(path)


def test_command_dirs_from_env_and_cli_resolve_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[bot]\ncommand_dirs = ['here']\n", "etc/harken.toml")
    monkeypatch.chdir(tmp_path)

    from_env = load_settings(path, env={"HARKEN_BOT_COMMAND_DIRS": "cmds, more"})
    from_cli = load_settings(path, env={}, overrides={"bot.command_dirs": "cli-cmds"})

    assert from_env.bot.command_dirs == (str(tmp_path / "cmds"), str(tmp_path / "more"))
    assert from_cli.bot.command_dirs == (str(tmp_path / "cli-cmds"),)


def test_home_is_expanded_in_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ops")

    settings = load_settings(
        env={"HARKEN_MEMORY_PATH": "~/memory", "HARKEN_BOT_COMMAND_DIRS": "~/cmds"}
    )

    assert settings.memory.path == "/home/ops/memory"
    assert settings.bot.command_dirs == ("/home/ops/cmds",)


# --- the objects -------------------------------------------------------------------------


def test_settings_are_read_only() -> None:
    settings = load_settings(env={})

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.bot.workers = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.inputs["xmpp"].options["jid"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        settings.inputs["new"] = InputSettings(name="new")  # type: ignore[index]


def test_render_settings_shows_values_and_origins(tmp_path: Path) -> None:
    path = write(tmp_path, "[bot]\nname = 'opsbot'\n")

    rendered = render_settings(
        load_settings(path, env={"HARKEN_BOT_WORKERS": "3"}, overrides={"log.level": "debug"})
    )

    assert f"# source: {path}" in rendered
    lines = {line.split("#")[0].strip(): line for line in rendered.splitlines()}
    assert lines['name = "opsbot"'].endswith("# file")
    assert lines["workers = 3"].endswith("# env HARKEN_BOT_WORKERS")
    assert lines['level = "DEBUG"'].endswith("# cli")
    assert lines["max_message_bytes = 65536"].endswith("# default")
    assert "[inputs.xmpp]  # not started (not in bot.inputs)" in rendered
    # Apart from the masked-secret placeholders, the output is valid TOML.
    body = "\n".join(line for line in rendered.splitlines() if "(unset)" not in line)
    assert tomllib.loads(body)["bot"]["workers"] == 3


# --- the data directory and paths --------------------------------------------------------


def test_data_dir_in_a_file_is_relative_to_the_file_and_memory_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[bot]\ndata_dir = "state"\n', "etc/harken.toml")
    monkeypatch.chdir(tmp_path)

    settings = load_settings("etc/harken.toml", env={})

    state = tmp_path / "etc" / "state"
    assert settings.bot.data_dir == str(state)
    assert settings.memory.path == str(state / "memory")
    assert settings.scheduler.job_store(settings.memory.path) == str(state / "jobs.sqlite")
    assert settings.source == str(path)


def test_data_dir_from_env_and_cli_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, '[bot]\ndata_dir = "state"\n', "etc/harken.toml")
    monkeypatch.chdir(tmp_path)

    from_env = load_settings(path, env={"HARKEN_DATA_DIR": "env-state"})
    from_long_env = load_settings(path, env={"HARKEN_BOT_DATA_DIR": "long-state"})
    from_cli = load_settings(
        path, env={"HARKEN_DATA_DIR": "env-state"}, overrides={"bot.data_dir": "cli-state"}
    )

    assert from_env.bot.data_dir == str(tmp_path / "env-state")
    assert from_env.origins["bot.data_dir"] == "env HARKEN_DATA_DIR"
    assert from_env.memory.path == str(tmp_path / "env-state" / "memory")
    assert from_long_env.bot.data_dir == str(tmp_path / "long-state")
    assert from_cli.bot.data_dir == str(tmp_path / "cli-state")
    assert from_cli.unknown_env == ()


def test_two_data_dir_variables_that_disagree_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"HARKEN_DATA_DIR": "/a", "HARKEN_BOT_DATA_DIR": "/b"})
    message = assert_one_line(caught.value)
    assert message.startswith("config error: bot.data_dir (from HARKEN_DATA_DIR): ")


def test_paths_set_apart_from_the_data_dir_stay_where_they_are_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        """
        [memory]
        path = "db/memory"
        [scheduler]
        path = "db/jobs.sqlite"
        [log]
        file = "logs/harken.log"
        [inputs.xmpp]
        ca_file = "certs/ca.pem"
        """,
        "etc/harken.toml",
    )
    monkeypatch.chdir(tmp_path)

    settings = load_settings(path, env={})
    from_env = load_settings(env={"HARKEN_MEMORY_PATH": "m", "HARKEN_XMPP_CA_FILE": "ca.pem"})

    etc = tmp_path / "etc"
    assert settings.bot.data_dir == str(tmp_path / "var")  # the default, from the cwd
    assert settings.memory.path == str(etc / "db" / "memory")
    assert settings.origins["memory.path"] == "file"
    assert settings.scheduler.path == str(etc / "db" / "jobs.sqlite")
    assert settings.log.file == str(etc / "logs" / "harken.log")
    assert settings.inputs["xmpp"].options["ca_file"] == str(etc / "certs" / "ca.pem")
    assert from_env.memory.path == str(tmp_path / "m")
    assert from_env.inputs["xmpp"].options["ca_file"] == str(tmp_path / "ca.pem")


def test_an_empty_memory_path_follows_the_data_dir(tmp_path: Path) -> None:
    path = write(tmp_path, '[bot]\ndata_dir = "/srv/harken"\n[memory]\npath = ""\n')

    settings = load_settings(path, env={})

    assert settings.memory.path == "/srv/harken/memory"
    assert settings.origins["memory.path"] == "derived from bot.data_dir"


# --- tables from the command line, TCP-only services -------------------------------------


def test_set_reaches_the_keys_of_tables(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [services.web]
        url = "http://web.internal:8080"
        health = "/healthz"

        [inputs.shell]
        groups = { ops = ["alice"] }
        """,
    )
    overrides = {
        "services.web.url": "http://web2.internal:8080",
        "services.web.tags": "front, public",
        "services.db.tcp": "db1.internal:5432",
        "runbooks.restart.argv": "systemctl,restart,web@{instance}",
        "runbooks.restart.args.instance": "^[0-9]+$",
        "runbooks.restart.timeout_seconds": "30",
        "access.commands.watch": "ops,oncall",
        "inputs.shell.groups.oncall": "carol",
    }

    settings = load_settings(path, env={}, overrides=overrides)

    web = settings.services["web"]
    assert (web.url, web.health, web.tags) == (
        "http://web2.internal:8080",
        "/healthz",  # the file's other keys stay
        ("front", "public"),
    )
    assert settings.services["db"].tcp == "db1.internal:5432"
    restart = settings.runbooks["restart"]
    assert restart.argv == ("systemctl", "restart", "web@{instance}")
    assert restart.args == {"instance": "^[0-9]+$"}
    assert restart.timeout_seconds == 30.0
    assert settings.access.commands["watch"] == ("ops", "oncall")
    assert settings.access.commands["run"] == ("ops",)  # the defaults stay
    assert settings.inputs["shell"].groups == {"ops": ("alice",), "oncall": ("carol",)}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"services.web": "http://x"},
            "config error: services.web (from the command line): name a service key, "
            "e.g. services.web.url",
        ),
        (
            {"services.web.url": "ftp://x"},
            "config error: services.web.url (from the command line): must be an http:// or "
            "https:// URL with a host",
        ),
        (
            {"services.web.urll": "http://x"},
            "config error: services.web.urll (from the command line): unknown key "
            "(known: url, health, tcp, tags, description, call)",
        ),
        (
            {"runbooks.x.argv": "true", "runbooks.x.timeout_seconds": "soon"},
            "config error: runbooks.x.timeout_seconds (from the command line): "
            "must be a number > 0",
        ),
        (
            {"access.watch": "ops"},
            "config error: access.watch (from the command line): name a command, "
            "e.g. access.commands.watch",
        ),
    ],
)
def test_bad_table_keys_on_the_command_line(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={}, overrides=overrides)
    assert assert_one_line(caught.value) == message


def test_a_tcp_only_service_needs_no_url(tmp_path: Path) -> None:
    path = write(tmp_path, '[services.postgres]\ntcp = "db1.internal:5432"\n')

    service = load_settings(path, env={}).services["postgres"]

    assert (service.url, service.tcp) == ("", "db1.internal:5432")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[services.x]\ndescription = "?"', "services.x.url: is required, or tcp"),
        ('[services.x]\ntcp = "db:5432"\nhealth = "/h"', "services.x.health: needs url"),
        ('[services.x]\ntcp = "db:5432"\ncall = ["/v1"]', "services.x.call: needs url"),
    ],
)
def test_a_service_without_url_is_refused_what_needs_http(
    tmp_path: Path, text: str, message: str
) -> None:
    assert message in assert_one_line(error_for(text, tmp_path))


def test_readme_config_examples_load_and_name_every_environment_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = readme.split("```toml\n")[1:]
    examples = [b.split("```")[0] for b in blocks if not b.lstrip().startswith("[project")]
    assert len(examples) >= 3
    monkeypatch.chdir(tmp_path)
    for number, example in enumerate(examples):
        load_settings(write(tmp_path, example, f"example{number}.toml"), env={})
    for section in SECTIONS:
        assert f"HARKEN_{section.upper()}_<KEY>" in readme, section
    assert "HARKEN_DATA_DIR" in readme


# --- harken check's output is a config file -----------------------------------------------


def test_rendered_settings_load_back_as_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        """
        [bot]
        inputs = ["shell", "xmpp", "matrix"]
        command_dirs = ["cmds"]
        data_dir = "state"
        [scheduler]
        path = "jobs/jobs.sqlite"
        [services.web]
        url = "http://web.internal:8080"
        call = ["/v1/*"]
        [services."db.main"]
        tcp = "db1.internal:5432"
        [runbooks.restart]
        argv = ["systemctl", "restart", "web"]
        description = "Restart web"
        [access.commands]
        watch = ["ops"]
        "odd name" = []
        [inputs.shell]
        groups = { ops = ["alice"] }
        [inputs.xmpp]
        jid = "bot@example.org"
        nick = "del\\u007fete"
        [inputs.matrix]
        homeserver = "https://matrix.example.org"
        limits = { rooms = 3, names = ["a", "b"] }
        """,
        "etc/harken.toml",
    )
    env = {"HARKEN_XMPP_PASSWORD": PASSWORD, "HARKEN_MATRIX_TOKEN": TOKEN}
    monkeypatch.chdir(tmp_path)
    settings = load_settings(path, env=env, overrides={"bot.workers": "3"})

    rendered = render_settings(settings)
    saved = write(tmp_path, rendered, "elsewhere/saved.toml")
    again = load_settings(saved, env=env)

    assert PASSWORD not in rendered
    assert TOKEN not in rendered
    assert again == dataclasses.replace(settings, source=str(saved))
    assert again.inputs["xmpp"].secrets["password"] == Secret(PASSWORD)
