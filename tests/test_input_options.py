"""Inputs declare their own options and secrets; the configuration reads the declarations.

The third-party input here, `pager`, is a real distribution on `sys.path` (a module and a
`.dist-info` directory with `entry_points.txt`, as pip would install it): nothing in
`config/` knows it, yet `load_settings`, `harken check` and `harken run` type-check its
options, resolve its path, read and mask its secret and report what it lacks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from config import (
    BotSettings,
    ConfigError,
    InputSettings,
    Secret,
    Settings,
    load_settings,
    render_settings,
)
from config.inputs import INPUTS_GROUP, OPTIONS_GROUP, InputSpec, input_spec
from config.validate import input_problems, unmet_needs

TOKEN = "pg-7731-DO-NOT-LEAK"

OPTIONS_MODULE = """
from dataclasses import dataclass, field

from config import Secret


@dataclass(frozen=True, kw_only=True)
class PagerOptions:
    service: str = field(default="", metadata={"required": True})
    port: int = 8080
    escalate_after: float = 300.0
    teams: tuple[str, ...] = ()
    report: str = field(default="", metadata={"path": True})
    api_token: Secret = field(metadata={"secret": True, "required": True})
    webhook_secret: Secret | None = field(default=None, metadata={"secret": True})
"""

# On start the input says "ping" to the bot, and writes what it got: its options, the
# names of its secrets, and every reply, to the `report` file (one JSON object a line).
INPUT_MODULE = """
import json

from core.event import Event, EventType
from actors.inputs.base import InputActor
from harken_pager_options import PagerOptions


class PagerInput(InputActor):
    options_class = PagerOptions

    def _write(self, record):
        with open(self.settings.options["report"], "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\\n")

    def on_start(self):
        super().on_start()
        self._write(
            {
                "options": dict(self.settings.options),
                "token_ok": self.settings.secrets["api_token"].reveal() == "TOKEN",
                "secrets": sorted(self.settings.secrets),
            }
        )
        self.submit(
            Event(type=EventType.TEXT, sender="oncall", to="harken", data="ping", input=self.name)
        )

    def send(self, event):
        self._write({"reply": event.data})
""".replace("TOKEN", TOKEN)


def install_pager(site: Path, *, light: bool = True) -> Path:
    """Write the `pager` distribution into `site`; `light`: also `harken.input_options`."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "harken_pager_options.py").write_text(OPTIONS_MODULE)
    (site / "harken_pager.py").write_text(INPUT_MODULE)
    dist = site / "harken_pager-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harken-pager\nVersion: 1.0\n")
    points = f"[{INPUTS_GROUP}]\npager = harken_pager:PagerInput\n"
    if light:
        points += f"\n[{OPTIONS_GROUP}]\npager = harken_pager_options:PagerOptions\n"
    (dist / "entry_points.txt").write_text(points)
    return site


@pytest.fixture
def pager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The `pager` input installed in this process; yields its site directory."""
    site = install_pager(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    yield site
    for module in ("harken_pager", "harken_pager_options"):
        sys.modules.pop(module, None)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def one_line(error: ConfigError) -> str:
    message = str(error)
    assert "\n" not in message
    assert TOKEN not in message
    return message


# --- the built-in inputs ------------------------------------------------------------------


def test_each_built_in_input_declares_in_a_light_module_what_its_class_names() -> None:
    # The loader reads `harken.input_options`; the input class names the same dataclass,
    # so one entry point would be enough, and the two cannot drift apart.
    for ep in entry_points(group=INPUTS_GROUP):
        declared = entry_points(group=OPTIONS_GROUP, name=ep.name)
        assert len(declared) == 1, ep.name
        (light,) = declared
        assert ep.load().options_class is light.load(), ep.name
        assert input_spec(ep.name) == InputSpec.of(light.load())


def test_the_shipped_file_lists_each_input_with_exactly_its_declared_defaults() -> None:
    settings = load_settings(env={})
    for name in (ep.name for ep in entry_points(group=INPUTS_GROUP)):
        spec = input_spec(name)
        assert spec is not None
        assert settings.inputs[name].options == spec.defaults, name
        for secret in spec.secrets:
            assert f"HARKEN_{name}_{secret}".upper() in render_settings(settings)


def run_python(code: str, *, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


HEAVY = ("slack_sdk", "slixmpp", "aiohttp")


def test_reading_settings_for_slack_and_xmpp_imports_neither_library(tmp_path: Path) -> None:
    # A fresh interpreter: this one has imported the inputs already.
    code = f"""
import json, os, sys
import config
before = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
from config import load_settings, render_settings
from config.validate import input_problems, unmet_needs
settings = load_settings(
    env={{"HARKEN_SLACK_BOT_TOKEN": "xoxb-1", "HARKEN_SLACK_APP_TOKEN": "xapp-1",
         "HARKEN_XMPP_PASSWORD": "pw"}},
    overrides={{"bot.inputs": "shell,slack,xmpp", "inputs.xmpp.jid": "h@example.org"}},
)
render_settings(settings)
assert input_problems(settings, {{"shell", "slack", "xmpp"}}) == []
after = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
print(json.dumps([before, after, "actors.inputs.xmpp_options" in sys.modules]))
"""
    before, after, declared = json.loads(run_python(code, cwd=tmp_path))
    assert declared  # the declarations were read...
    assert (before, after) == ([], [])  # ...and no chat library came with them


def test_harken_check_with_slack_and_xmpp_started_imports_neither_library(tmp_path: Path) -> None:
    code = f"""
import contextlib, io, json, os, sys
os.environ.update(HARKEN_SLACK_BOT_TOKEN="xoxb-1", HARKEN_SLACK_APP_TOKEN="xapp-1",
                  HARKEN_XMPP_PASSWORD="pw")
from harken.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["check", "--set", "bot.inputs=shell,slack,xmpp",
                 "--set", "inputs.xmpp.jid=h@example.org"])
print(json.dumps([code, sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})]))
"""
    assert json.loads(run_python(code, cwd=tmp_path)) == [0, []]


# --- a third-party input: load_settings ---------------------------------------------------


@pytest.mark.usefixtures("pager")
def test_a_third_party_input_gets_its_declared_defaults_and_types(tmp_path: Path) -> None:
    path = write(
        tmp_path / "etc" / "harken.toml",
        '[bot]\ninputs = ["pager"]\n[inputs.pager]\nservice = "pages"\nport = 9000\n'
        'report = "out/report.jsonl"\nextra = [1, 2]\n',
    )
    env = {
        "HARKEN_PAGER_ESCALATE_AFTER": "60",
        "HARKEN_PAGER_TEAMS": "ops, db",
        "HARKEN_PAGER_API_TOKEN": TOKEN,
    }

    settings = load_settings(path, env=env)

    pager = settings.inputs["pager"]
    assert dict(pager.options) == {
        "service": "pages",
        "port": 9000,
        "escalate_after": 60.0,  # typed from the environment by the declared default
        "teams": ("ops", "db"),
        "report": str(tmp_path / "etc" / "out" / "report.jsonl"),  # beside the file
        "extra": (1, 2),  # a key it does not declare is kept, for the input to judge
    }
    assert pager.secrets == {"api_token": Secret(TOKEN)}
    assert settings.origins["inputs.pager.escalate_after"] == "env HARKEN_PAGER_ESCALATE_AFTER"
    assert settings.unknown_env == ()
    assert input_problems(settings, {"shell", "pager"}) == []
    rendered = render_settings(settings)
    assert TOKEN not in rendered
    assert '# api_token = "***"  (secret: env HARKEN_PAGER_API_TOKEN only)' in rendered
    assert "# webhook_secret = (unset)  (secret: env HARKEN_PAGER_WEBHOOK_SECRET only)" in rendered


@pytest.mark.usefixtures("pager")
def test_a_path_option_from_the_environment_is_relative_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"HARKEN_PAGER_REPORT": "r.jsonl"})
    assert settings.inputs["pager"].options["report"] == str(tmp_path / "r.jsonl")


@pytest.mark.usefixtures("pager")
@pytest.mark.parametrize(
    ("text", "env", "overrides", "expected"),
    [
        (
            '[inputs.pager]\nport = "high"\n',
            {},
            {},
            'config error: inputs.pager.port: must be an integer (got "high")',
        ),
        (
            "[inputs.pager]\nteams = 3\n",
            {},
            {},
            "config error: inputs.pager.teams: must be a list of strings (got 3)",
        ),
        (
            "",
            {"HARKEN_PAGER_PORT": "x"},
            {},
            "config error: inputs.pager.port (from HARKEN_PAGER_PORT): must be an integer "
            '(got "x")',
        ),
        (
            "",
            {},
            {"inputs.pager.escalate_after": "soon"},
            "config error: inputs.pager.escalate_after (from the command line): must be a "
            'number (got "soon")',
        ),
        (
            f'[inputs.pager]\napi_token = "{TOKEN}"\n',
            {},
            {},
            "config error: inputs.pager.api_token: secrets must not be in a config file; set "
            "HARKEN_PAGER_API_TOKEN in the environment instead",
        ),
    ],
)
def test_a_bad_value_for_a_third_party_input_is_one_line_naming_the_key(
    tmp_path: Path, text: str, env: dict[str, str], overrides: dict[str, str], expected: str
) -> None:
    path = write(tmp_path / "harken.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env=env, overrides=overrides)
    assert one_line(caught.value) == expected


@pytest.mark.usefixtures("pager")
def test_what_a_started_third_party_input_lacks_is_reported() -> None:
    settings = load_settings(env={}, overrides={"bot.inputs": "shell,pager"})

    problems = [str(p) for p in input_problems(settings, {"shell", "pager"})]

    assert problems == [
        "config error: inputs.pager.api_token: is not set: the pager input needs "
        "HARKEN_PAGER_API_TOKEN in the environment",
        "config error: inputs.pager.service: is required to start the pager input (or "
        "HARKEN_PAGER_SERVICE in the environment)",
    ]
    # Not started, it lacks nothing.
    assert input_problems(load_settings(env={}), {"shell", "pager"}) == []


def test_a_declaration_on_the_input_class_alone_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only `harken.inputs`: the loader imports the input's module and reads options_class.
    site = install_pager(tmp_path / "site", light=False)
    monkeypatch.syspath_prepend(str(site))
    try:
        with pytest.raises(ConfigError) as caught:
            load_settings(env={"HARKEN_PAGER_PORT": "x"})
        assert caught.value.key == "inputs.pager.port"
        assert "harken_pager" in sys.modules
    finally:
        for module in ("harken_pager", "harken_pager_options"):
            sys.modules.pop(module, None)


def test_an_input_whose_declaration_fails_to_load_is_refused_once_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install_pager(tmp_path / "site")
    (site / "harken_pager_options.py").write_text("raise RuntimeError('broken build')\n")
    monkeypatch.syspath_prepend(str(site))
    try:
        # Installed but not started: it does not stand in the way.
        assert load_settings(env={}).inputs["pager"].options == {}
        with pytest.raises(ConfigError) as caught:
            load_settings(env={}, overrides={"bot.inputs": "shell,pager"})
    finally:
        sys.modules.pop("harken_pager_options", None)
    message = one_line(caught.value)
    assert message.startswith(
        "config error: bot.inputs: input 'pager' is installed but what it accepts cannot be "
        "read: harken_pager_options:PagerOptions (harken.input_options) failed to load: "
    )
    assert "broken build" in message


@pytest.mark.parametrize("empty", ["", "  ", (), None])
def test_a_required_option_left_empty_is_reported_whatever_its_type(empty: object) -> None:
    spec = InputSpec(defaults={"rooms": ()}, required=("rooms",))
    settings = Settings(
        bot=BotSettings(inputs=("chat",)),
        inputs={"chat": InputSettings(name="chat", options={"rooms": empty}, spec=spec)},
    )
    assert [p.key for p in unmet_needs(settings, "chat")] == ["inputs.chat.rooms"]
    filled = dataclasses.replace(settings.inputs["chat"], options={"rooms": ("ops",)})
    assert unmet_needs(dataclasses.replace(settings, inputs={"chat": filled}), "chat") == []


# --- a declaration is checked ---------------------------------------------------------------


@dataclass(frozen=True)
class _NoDefault:
    server: str


@dataclass(frozen=True)
class _SecretWithAPlainName:
    key: Any = field(default=None, metadata={"secret": True})


@dataclass(frozen=True)
class _OptionNamedLikeASecret:
    api_token: str = ""


@pytest.mark.parametrize(
    ("declaration", "problem"),
    [
        (_NoDefault, "option 'server' has no default"),
        (_SecretWithAPlainName, "secret 'key' must be named like one"),
        (_OptionNamedLikeASecret, "option 'api_token' is named like a secret"),
        (dict, "is not a dataclass"),
    ],
)
def test_a_declaration_that_would_leak_or_cannot_be_read_is_refused(
    declaration: object, problem: str
) -> None:
    with pytest.raises((TypeError, ValueError), match=problem):
        InputSpec.of(declaration)


# --- a third-party input: harken check and harken run ------------------------------------------


def harken_env(site: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
    env["PYTHONPATH"] = str(site)
    return {**env, **extra}


def harken(site: Path, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harken", *args],
        capture_output=True,
        cwd=cwd,
        env=harken_env(site, **env),
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.e2e
def test_harken_check_validates_a_third_party_input(tmp_path: Path) -> None:
    site = install_pager(tmp_path / "site")
    config = write(tmp_path / "harken.toml", '[bot]\ninputs = ["shell", "pager"]\n')

    lacking = harken(site, tmp_path, "check", "--config", str(config))
    assert lacking.returncode == 2, lacking.stderr
    assert lacking.stderr.splitlines() == [
        "harken: config error: inputs.pager.api_token: is not set: the pager input needs "
        "HARKEN_PAGER_API_TOKEN in the environment",
        "harken: config error: inputs.pager.service: is required to start the pager input "
        "(or HARKEN_PAGER_SERVICE in the environment)",
    ]

    bad = harken(site, tmp_path, "check", "--config", str(config), HARKEN_PAGER_PORT="x")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "harken: config error: inputs.pager.port (from HARKEN_PAGER_PORT): must be an "
        'integer (got "x")'
    ]

    good = harken(
        site,
        tmp_path,
        "check",
        "--config",
        str(config),
        "--set",
        "inputs.pager.service=pages",
        HARKEN_PAGER_API_TOKEN=TOKEN,
    )
    assert good.returncode == 0, good.stderr
    assert TOKEN not in good.stdout
    assert '# api_token = "***"' in good.stdout
    assert "[inputs.pager]  # started" in good.stdout

    unknown = harken(site, tmp_path, "check", "--set", "bot.inputs=shell,pagr")
    assert unknown.returncode == 2
    assert unknown.stderr.splitlines() == [
        "harken: config error: bot.inputs: input 'pagr' is not available here (did you mean "
        "pager?) (available: email, irc, pager, shell, slack, xmpp)"
    ]


@pytest.mark.e2e
def test_harken_run_refuses_a_third_party_input_lacking_what_it_declares(tmp_path: Path) -> None:
    site = install_pager(tmp_path / "site")
    config = write(tmp_path / "harken.toml", '[bot]\ninputs = ["pager"]\n')

    done = harken(site, tmp_path, "run", "--config", str(config), HARKEN_PAGER_SERVICE="p")

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "harken: inputs.pager.api_token: is not set: the pager input needs "
        "HARKEN_PAGER_API_TOKEN in the environment"
    )


@pytest.mark.e2e
def test_harken_run_starts_a_third_party_input_with_its_checked_options(tmp_path: Path) -> None:
    site = install_pager(tmp_path / "site")
    config = write(
        tmp_path / "etc" / "harken.toml",
        '[bot]\ninputs = ["pager"]\ndata_dir = "state"\n'
        '[inputs.pager]\nservice = "pages"\nreport = "report.jsonl"\n',
    )
    report = tmp_path / "etc" / "report.jsonl"
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "harken", "run", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=tmp_path,
            env=harken_env(site, HARKEN_PAGER_API_TOKEN=TOKEN, HARKEN_PAGER_PORT="9100"),
        )
    try:
        deadline = time.monotonic() + 30
        while '"reply"' not in (report.read_text() if report.exists() else ""):
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "no reply reached the pager input in 30 s"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, err.read_text()
    started, replied = (json.loads(line) for line in report.read_text().splitlines())
    assert started == {
        "options": {
            "service": "pages",
            "port": 9100,
            "escalate_after": 300.0,
            "teams": [],
            "report": str(report),
        },
        "token_ok": True,
        "secrets": ["api_token"],
    }
    assert replied == {"reply": "pong"}
    assert TOKEN not in err.read_text()


def test_the_readme_example_declaration_reads_as_it_says() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Writing an input\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)

    spec = InputSpec.of(namespace["PagerOptions"])

    assert spec == InputSpec(
        defaults={"service": "", "port": 8080, "roster": ""},
        secrets=("api_token",),
        required=("service", "api_token"),
        paths=("roster",),
    )
