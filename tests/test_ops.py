"""The operations toolkit against real HTTP services on 127.0.0.1 (tests/support/ops_services.py).

Every command runs in the real bot (`TestBot`): services from a real config file, checks
and `call` over real sockets, runbooks as real processes, watches on the real scheduler.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.ops_services import ServiceState, dead_port

from commands.ops.checks import DOWN, SLOW, UP, check, check_all
from commands.ops.registry import Service
from config import ConfigError, load_settings
from config.settings import InputSettings, ServiceSettings, Settings
from harken.testbot import INPUT_NAME, TestBot

PY = sys.executable
GREET = "import sys; [print('line', i) for i in range(10)]; print('hello', sys.argv[1])"


def ops_config(base: str, dead: int, tcp_port: int) -> str:
    return f"""
[ops]
check_timeout_seconds = 1.0
slow_seconds = 0.8
max_parallel_checks = 4
call_timeout_seconds = 2.0
reply_max_chars = 300
runbook_tail_lines = 3
runbook_progress_seconds = 0.2

[scheduler]
min_interval_seconds = 1

[services.healthy]
url = "{base}"
health = "/healthz"
tags = ["core", "payments"]
description = "answers at once"
call = ["/v1/*"]

[services.slowpoke]
url = "{base}"
health = "/slow"

[services.broken]
url = "{base}"
health = "/fail"

[services.dead]
url = "http://127.0.0.1:{dead}"
health = "/healthz"
call = ["/v1/*"]

[services.flappy]
url = "{base}"
health = "/flappy"

[services.db]
url = "{base}"
tcp = "127.0.0.1:{tcp_port}"

[runbooks.greet]
argv = ["{PY}", "-c", "{GREET}", "{{name}}"]
args = {{ name = "^[a-z]{{1,12}}$" }}
description = "Says hello after ten lines"

[runbooks.hang]
argv = ["{PY}", "-c", "import time; time.sleep(60)"]
timeout_seconds = 0.6

[runbooks.env]
argv = ["{PY}", "-c", "import os; print('secret:', os.environ.get('HARKEN_OPS_TEST_SECRET'))"]

[access.commands]
call = ["ops"]
run = ["ops"]
"""


@pytest.fixture
def settings(tmp_path: Path, services: tuple[str, ServiceState]) -> Settings:
    base, _ = services
    path = tmp_path / "harken.toml"
    path.write_text(ops_config(base, dead_port(), int(base.rsplit(":", 1)[1])))
    return load_settings(path, env={})


@pytest.fixture
def bot(settings: Settings, testbot: TestBot) -> TestBot:
    return testbot.configure(settings=settings, admins=["carol"], groups={"ops": ["alice"]})


# --- Micro Bot parity ----------------------------------------------------------------


def test_hello_and_the_three_laws(bot: TestBot) -> None:
    assert bot.ask("hello", user="ann") == "Hello ann! I'm harken. Say `help` to see what I can do."
    laws = bot.ask("the three laws").splitlines()
    assert [line[:2] for line in laws] == ["1.", "2.", "3."]
    assert "may not injure a human being" in laws[0]


# --- registry ------------------------------------------------------------------------


def test_list_services_shows_the_configured_ones_with_tags(bot: TestBot) -> None:
    listed = bot.ask("list services")
    assert listed.startswith("Services (6):")
    assert re.search(
        r"healthy  http://127\.0\.0\.1:\d+ \[core, payments\] - answers at once", listed
    )


def test_get_service_shows_url_target_tags_and_last_known_status(
    bot: TestBot, services: tuple[str, ServiceState]
) -> None:
    base, _ = services
    before = bot.ask("get service healthy")
    assert f"healthy: {base}" in before
    assert f"health check: GET {base}/healthz" in before
    assert "tags: core, payments" in before
    assert "last known status: not checked yet" in before
    bot.ask("health broken")
    after = bot.ask("get service broken")
    assert re.search(
        r"last known status: down \([\d.]+ ms\): HTTP 500 Internal Server Error", after
    )
    assert bot.ask("get service nope") == "I know no service `nope`. `list services` shows them."


def test_admins_register_and_deregister_services_and_they_survive_a_restart(
    bot: TestBot, services: tuple[str, ServiceState]
) -> None:
    base, _ = services
    refused = bot.ask(f"register service web {base} health=/healthz", user="alice")
    assert refused.startswith("Sorry, `register` is for admins only")
    said = bot.ask(f"register service web {base} health=/healthz tags=frontend", user="carol")
    assert said == f"Registered web: {base}, health check: GET {base}/healthz."
    bot.restart()
    assert "web  " + base + " [frontend]" in bot.ask("list services")
    assert bot.ask("health web").startswith("web: up (")
    assert "from: registered by testing:carol" in bot.ask("get service web")
    assert bot.ask("deregister service web", user="carol") == "Deregistered web."
    assert "web" not in bot.ask("list services").split()
    assert bot.ask("deregister service healthy", user="carol") == (
        "`healthy` comes from the config file; remove it there instead."
    )


def test_register_refuses_bad_urls_and_options(bot: TestBot) -> None:
    assert bot.ask("register service web ftp://x", user="carol") == (
        "I can't register `web`: the URL must be an http:// or https:// URL with a host."
    )
    assert bot.ask("register service web http://a:b@host", user="carol") == (
        "I can't register `web`: the URL must not hold a user name or password."
    )
    assert bot.ask("register service web http://h health=x", user="carol") == (
        'I can\'t register `web`: health= must be a path starting with "/".'
    )
    assert bot.ask("register service Web! http://h", user="carol").startswith(
        "I can't register that: 'web!' is not a valid name"
    )


# --- health --------------------------------------------------------------------------


def test_health_of_all_reports_status_latency_and_errors(
    bot: TestBot, services: tuple[str, ServiceState]
) -> None:
    answer = bot.ask("health").splitlines()
    assert answer[0] == "3 of 6 services up:"
    lines = {line.split(":")[0].strip(): line for line in answer[1:]}
    assert re.fullmatch(r"  healthy: up \(\d+ ms\)", lines["healthy"])
    assert re.fullmatch(r"  db: up \(\d+ ms\)", lines["db"])
    assert re.fullmatch(r"  flappy: up \(\d+ ms\)", lines["flappy"])
    assert re.fullmatch(r"  slowpoke: down \(\d+ ms\): timed out after 1 s", lines["slowpoke"])
    assert re.fullmatch(
        r"  broken: down \(\d+ ms\): HTTP 500 Internal Server Error", lines["broken"]
    )
    assert re.fullmatch(r"  dead: down \(\d+ ms\): connection refused", lines["dead"])


def test_a_hung_service_never_blocks_other_people(
    tmp_path: Path, settings: Settings, services: tuple[str, ServiceState]
) -> None:
    base, state = services
    gated = dataclasses.replace(
        settings.ops, check_timeout_seconds=30.0
    )  # the check waits for the gate, not for a timeout
    with TestBot(
        tmp_path / "m", settings=dataclasses.replace(settings, ops=gated), admins=["carol"]
    ) as bot:
        bot.ask(f"register service gated {base} health=/gated", user="carol")
        stuck = bot.send("health gated", user="bob")
        assert state.gated_waiting.wait(10)
        # While bob's check hangs on the service, everyone else is answered.
        assert bot.ask("ping", user="ann") == "pong"
        assert bot.ask("list services", user="dan").startswith("Services (7):")
        state.gate.set()
        assert bot.replies(stuck)[0].data.startswith("gated: up (")


def test_checks_run_in_parallel_and_a_slow_answer_is_reported_as_slow(
    services: tuple[str, ServiceState],
) -> None:
    base, _state = services
    slow = [Service(f"s{i}", base, health="/slow") for i in range(8)]
    # 8 hung services, 8 at once, 0.5 s timeout each: one round of timeouts, all reported.
    results = check_all(slow, timeout=0.5, slow=0.4, parallel=8)
    assert [r.status for r in results] == [DOWN] * 8
    assert {r.detail for r in results} == {"timed out after 0.5 s"}
    healthy = Service("h", base, health="/healthz")
    assert check(healthy, timeout=5, slow=5).status == UP
    # slow=0 makes any answer slow: the classification, not a timing.
    sluggish = check(healthy, timeout=5, slow=0.0)
    assert sluggish.status == SLOW
    assert sluggish.detail.startswith("took ")


# --- call ----------------------------------------------------------------------------


def test_call_gets_an_allowed_path_and_posts_json(bot: TestBot) -> None:
    got = bot.ask("call healthy /v1/status", user="alice")
    assert re.match(
        r"GET healthy/v1/status: HTTP 200 OK \(\d+ ms\)\n\{\n  \"version\": \"1.2.3\"", got
    )
    posted = bot.ask('call healthy /v1/echo {"ping": [1, 2]}', user="alice")
    assert posted.startswith("POST healthy/v1/echo: HTTP 200 OK")
    assert '"ping": [' in posted


def test_call_truncates_a_long_response(bot: TestBot) -> None:
    got = bot.ask("call healthy /v1/big", user="alice")
    assert got.endswith("x" * 300 + "\n[... cut to 300 characters]")
    assert len(got) < 500


def test_call_refuses_paths_and_services_not_permitted(bot: TestBot) -> None:
    assert bot.ask("call healthy /admin/drop-tables", user="alice") == (
        "`call` may not request `/admin/drop-tables` on healthy (allowed: `/v1/*`)."
    )
    assert bot.ask("call healthy /v1/../admin/drop-tables", user="alice").startswith(
        "`call` may not request"
    )
    assert bot.ask("call broken /fail", user="alice") == (
        "`call` may not request `/fail` on broken (allowed: none)."
    )
    assert bot.ask("call healthy /v1/echo {not json", user="alice").startswith(
        "The body is not valid JSON"
    )


def test_call_to_a_dead_service_says_why(bot: TestBot) -> None:
    assert re.fullmatch(
        r"GET dead/v1/status failed after \d+ ms: .*Connection refused",
        bot.ask("call dead /v1/status", user="alice"),
    )


def test_services_registered_at_runtime_cannot_be_called(
    bot: TestBot, services: tuple[str, ServiceState]
) -> None:
    base, _ = services
    bot.ask(f"register service web {base}", user="carol")
    assert bot.ask("call web /v1/status", user="alice") == (
        "`call` may not request `/v1/status` on web (allowed: none)."
    )


def test_groups_limit_commands_and_refusals_are_clear_and_logged(
    bot: TestBot, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="actors.command_actor"):
        refused = bot.ask("call healthy /v1/status", user="bob")
    assert refused == (
        "Sorry, `call` is only for the group(s) ops and the admins, and you (bob on testing) "
        "are in none of them. An admin can add you to `groups` in the [inputs.testing] "
        "section of Harken's config."
    )
    assert any(
        "refused call for bob on testing: not in an allowed group" in r.getMessage()
        for r in caplog.records
    )
    assert bot.ask("call healthy /v1/status", user="carol").startswith("GET healthy")  # admin
    assert bot.ask("run greet ann", user="bob").startswith("Sorry, `run` is only for")
    assert bot.ask("health healthy", user="bob").startswith("healthy: up")  # not restricted


# --- runbooks ------------------------------------------------------------------------


def test_runbooks_lists_them_with_their_arguments(bot: TestBot) -> None:
    assert bot.ask("runbooks").splitlines() == [
        "Runbooks (3):",
        "  run greet <name> - Says hello after ten lines",
        "  run hang",
        "  run env",
    ]


def test_a_runbook_replies_with_exit_status_and_the_tail_of_its_output(bot: TestBot) -> None:
    answer = bot.ask("run greet ann", user="alice")
    assert re.fullmatch(
        r"`greet` exit 0 in [\d.]+ s\.\n\[\.\.\.\]\nline 8\nline 9\nhello ann", answer
    )


def test_runbook_arguments_are_checked_against_their_pattern(bot: TestBot) -> None:
    refused = bot.ask("run greet 'ann; rm -rf /'", user="alice")
    assert refused == (
        "`ann; rm -rf /` is not allowed for <name> of `greet` (it must match "
        "`^[a-z]{1,12}$`). Nothing was run."
    )
    assert bot.ask("run greet", user="alice") == (
        "`greet` takes 1 argument(s): `run greet <name>` (got 0)."
    )
    assert (
        bot.ask("run nosuch", user="alice")
        == "There is no runbook `nosuch`. `runbooks` lists them."
    )


def test_a_runbook_that_runs_too_long_shows_progress_then_is_killed(bot: TestBot) -> None:
    replies = [e.data for e in bot.replies(bot.send("run hang", user="alice"))]
    assert replies == [
        "`hang` is running (it may take up to 0.6 s)...",
        "`hang` timed out after 0.6 s, killed. (no output)",
    ]


def test_runbooks_never_see_harkens_environment(
    bot: TestBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARKEN_OPS_TEST_SECRET", "hunter2")
    answer = bot.ask("run env", user="alice")
    assert answer.endswith("secret: None")


# --- watches -------------------------------------------------------------------------


def test_a_watch_reports_down_once_then_recovery_with_the_outage_duration(
    bot: TestBot, services: tuple[str, ServiceState]
) -> None:
    _, state = services
    started = bot.ask("watch flappy every 1 second", channel="C-ops")
    assert re.match(
        r"Watching flappy every 1 second \(job \w{6}\); now flappy: up \(\d+ ms\)\.", started
    )

    state.set_flappy(False)
    alert = bot.wait_for("ALERT: flappy")
    assert alert.data == "ALERT: flappy is DOWN: HTTP 503 Service Unavailable."
    assert alert.channel == "C-ops"
    # Several more failed checks, and not one more message about them.
    state.wait_flappy_checks(3)
    state.set_flappy(True)
    recovered = bot.wait_for("RECOVERED: flappy")
    assert re.fullmatch(
        r"RECOVERED: flappy is up again after [\d.]+ s down \(\d+ ms\)\.", recovered.data
    )
    with pytest.raises(TimeoutError):
        bot.wait_for("ALERT", timeout=0)  # the repeated failures said nothing

    assert "flappy  every 1 second  up" in bot.ask("watches", channel="C-ops")
    bot.restart()
    assert "flappy  every 1 second" in bot.ask("watches")  # the watch survived the restart
    assert bot.ask("unwatch flappy") == "Stopped watching flappy."
    assert bot.ask("watches").startswith("You watch no services.")
    assert bot.ask("unwatch flappy") == "You do not watch flappy. `watches` lists yours."


def test_a_watch_says_when_a_service_turns_slow_and_when_it_is_fast_again(
    tmp_path: Path, settings: Settings, services: tuple[str, ServiceState]
) -> None:
    base, state = services
    sluggish = ServiceSettings(name="sluggish", url=base, health="/sluggish")
    # Wide margins: slow above 0.2 s, the service takes 0.6 s, checks give up at 5 s.
    settings = dataclasses.replace(
        settings,
        ops=dataclasses.replace(settings.ops, slow_seconds=0.2, check_timeout_seconds=5.0),
        services={**settings.services, "sluggish": sluggish},
    )
    bot = TestBot(tmp_path / "memory", settings=settings)
    try:
        started = bot.ask("watch sluggish every 1 second", channel="C-ops")
        assert "now sluggish: up" in started
        with state.changed:
            state.sluggish_delay = 0.6
        slow = bot.wait_for("SLOW: sluggish")
        assert re.fullmatch(r"SLOW: sluggish .+ \(more than 0\.2 s\)\.", slow.data), slow.data
        assert slow.channel == "C-ops"
        with state.changed:
            state.sluggish_delay = 0.0
        fast = bot.wait_for("sluggish is fast again")
        assert re.fullmatch(
            r"sluggish is fast again \(\d+ ms\) after [\d.]+ s slow\.", fast.data
        ), fast.data
        with pytest.raises(TimeoutError):
            bot.wait_for("SLOW", timeout=0)  # one message per change, not per check
    finally:
        bot.stop()


def test_a_watch_needs_a_known_checkable_service_and_one_per_service(bot: TestBot) -> None:
    assert bot.ask("watch nope every 1 minute") == (
        "I know no service `nope`. `list services` shows them."
    )
    assert bot.ask("watch healthy every 1 minute").startswith("Watching healthy every 1 minute")
    assert bot.ask("watch healthy every 5 minutes") == (
        "You already watch healthy. `unwatch healthy` first to change the interval."
    )
    assert "is not a unit I know" in bot.ask("watch broken every lunchtime")


# --- audit ---------------------------------------------------------------------------


def test_every_privileged_action_is_in_the_audit_trail(
    bot: TestBot, services: tuple[str, ServiceState]
) -> None:
    base, _ = services
    bot.ask(f"register service web {base}", user="carol")
    bot.ask("call healthy /v1/status", user="alice")
    bot.ask("call healthy /admin/drop-tables", user="alice")
    bot.ask("run greet 'x;y'", user="alice")
    bot.ask("run greet ann", user="alice")
    job = re.search(r"Job id (\w+)", bot.ask("remind me in 1 hour to stretch", user="alice"))
    assert job is not None
    bot.ask(f"cancel {job.group(1)}", user="carol")
    bot.ask("deregister service web", user="carol")

    assert bot.ask("audit", user="alice").startswith("Sorry, `audit` is for admins only")
    trail = bot.ask("audit", user="carol").splitlines()
    assert trail[0] == "Latest 7 audit entries, newest first (UTC):"
    entries = [re.sub(r"^  \S+ \S+  ", "", line) for line in trail[1:]]
    assert entries == [
        "testing:carol  deregister web: removed",
        f"testing:carol  cancel job {job.group(1)} of testing:alice: cancelled",
        "testing:alice  run greet ann: exit 0 in " + entries[2].split("exit 0 in ")[1],
        "testing:alice  run greet 'x;y': refused: `x;y` is not allowed for <name> of `greet` "
        "(it must match `^[a-z]{1,12}$`). Nothing was run.",
        "testing:alice  call healthy GET /admin/drop-tables: refused: path not allowed",
        "testing:alice  call healthy GET /v1/status: HTTP 200",
        f"testing:carol  register web {base}: registered",
    ]
    assert bot.ask("audit 2", user="carol").startswith("Latest 2 audit entries")


# --- the bot's own health ------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def parse_prometheus(text: str) -> dict[str, float]:
    """`name{labels}` -> value; fails on any line that is not the text format."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        found = re.fullmatch(r'([a-z_]+(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})?) (\S+)', line)
        assert found, f"not a Prometheus sample line: {line!r}"
        samples[found.group(1)] = float(found.group(2))
    return samples


def test_healthz_and_metrics_then_503_naming_the_input_that_is_down(
    tmp_path: Path, settings: Settings
) -> None:
    health = dataclasses.replace(settings.health, enabled=True, port=0)
    with TestBot(tmp_path / "m", settings=dataclasses.replace(settings, health=health)) as bot:
        assert bot.system is not None
        assert bot.system.health_server is not None
        url = f"http://127.0.0.1:{bot.system.health_server.port}"
        for _ in range(3):
            bot.ask("ping")
        bot.ask("remind me in 1 hour to stretch")
        assert bot.ask("nosuchcommand").startswith("I don't know")

        assert get(url + "/healthz") == (200, "ok\n")
        status, text = get(url + "/metrics")
        assert status == 200
        samples = parse_prometheus(text)
        assert samples["harken_up"] == 1
        assert samples['harken_messages_in_total{input="testing"}'] == 5
        assert samples['harken_messages_out_total{input="testing"}'] == 5
        assert samples['harken_commands_total{command="ping"}'] == 3
        assert samples['harken_command_duration_seconds_count{command="ping"}'] == 3
        assert samples['harken_command_duration_seconds_bucket{command="ping",le="+Inf"}'] == 3
        assert samples["harken_pending_jobs"] == 1
        assert samples["harken_active_conversations"] == 1
        assert samples["harken_open_dialogs"] == 0
        assert samples['harken_input_up{input="testing"}'] == 1
        assert get(url + "/nope")[0] == 404

        # The input goes down (its actor stops): the probe says so, and which.
        handle = bot.system.runtime.inputs  # type: ignore[union-attr]
        ref = handle[INPUT_NAME].ref
        assert ref is not None
        ref.stop()
        assert get(url + "/healthz") == (503, "down: input testing (down)\n")


def test_status_shows_uptime_inputs_and_counts(bot: TestBot) -> None:
    bot.ask("ping")
    bot.ask("call healthy /v1/status", user="bob")  # refused
    lines = bot.ask("status").splitlines()
    assert re.fullmatch(r"harken: all up; up [\d.]+ s\.", lines[0])
    assert lines[1] == "Inputs: testing up."
    assert lines[2] == "Messages: 3 in, 2 out. Commands: 1 run, 0 failed, 1 refused."
    assert lines[3] == "Conversations: 2 active; dialogs open: 0; jobs pending: 0."


def test_the_health_port_in_use_stops_start_up_with_one_line(tmp_path: Path) -> None:
    import socket

    from actors.errors import StartupError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        base = Settings()
        settings = dataclasses.replace(
            base, health=dataclasses.replace(base.health, enabled=True, port=port)
        )
        bot = TestBot(tmp_path / "m", settings=settings)
        with pytest.raises(
            StartupError, match=rf"cannot serve the health endpoint on 127.0.0.1:{port}"
        ):
            bot.start()


# --- config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[services.web]\nhealth = '/h'\n", "services.web.url: is required"),
        ("[services.web]\nurl = 'ftp://x'\n", "services.web.url: must be an http:// or https://"),
        ("[services.web]\nurl = 'http://x'\nhealth = 'h'\n", "services.web.health: must be a path"),
        ("[services.web]\nurl = 'http://x'\ntcp = 'x'\n", 'services.web.tcp: must be "host:port"'),
        ("[services.web]\nurl = 'http://x'\nport = 1\n", "services.web.port: unknown key"),
        ("[runbooks.r]\nargv = []\n", "runbooks.r.argv: must name a program"),
        (
            "[runbooks.r]\nargv = ['ls', '{dir}']\n",
            "runbooks.r.argv: uses {dir}, which args does not declare",
        ),
        (
            "[runbooks.r]\nargv = ['ls']\nargs = { d = '(' }\n",
            "runbooks.r.args.d: bad regular expression",
        ),
        ("[access.commands]\ncall = 'ops'\n", "access.commands.call: must be a list of strings"),
        ("[inputs.shell]\ngroups = { ops = 'alice' }\n", "inputs.shell.groups.ops: must be a list"),
        ("[health]\nport = 70000\n", "health.port: must be a TCP port"),
    ],
)
def test_bad_ops_config_is_one_line_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "h.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_groups_and_access_rules_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text(
        "[inputs.shell]\ngroups = { ops = ['alice'], db = ['bob'] }\n"
        "[access.commands]\nwatch = ['ops', 'db']\n"
    )
    settings = load_settings(path, env={})
    assert settings.inputs["shell"].groups == {"ops": ("alice",), "db": ("bob",)}
    assert settings.access.commands == {"call": ("ops",), "run": ("ops",), "watch": ("ops", "db")}
    assert InputSettings(name="x").groups == {}
