"""Dialogs through the real bot (testing kit): routing, persistence, timeouts, bad input."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from actors.messages import Inbound, MemoryGet
from actors.runner import CANCEL_HINT, CONVERSATION_NS, conversation_id, state_address
from config.settings import BotSettings, Settings
from harken import Answers, Ask, Choice, Confirm, Context, Invalid, TestBot, dialog
from harken.testbot import INPUT_NAME, wait_until

FIRST = f"Which environment? (prod / staging)\n{CANCEL_HINT}"


def _replicas(text: str) -> int:
    count = int(text)
    if not 1 <= count <= 50:
        raise Invalid("Between 1 and 50 replicas, please.")
    return count


@dialog(
    r"^deploy$",
    steps=[
        Choice("env", "Which environment?", ["prod", "staging"]),
        Ask("replicas", "How many replicas?", parse=_replicas, invalid="A number, please."),
        Ask("ticket", "Change ticket for prod?", when=lambda a: a["env"] == "prod"),
        Confirm("go", lambda a: f"Deploy {a['replicas']} to {a['env']}?"),
    ],
)
def deploy(ctx: Context, answers: Answers) -> str:
    """Deploy, after a few questions."""
    ctx.memory.set("last deploy", dict(answers))
    return f"Deploying {answers['replicas']} replicas to {answers['env']}."


class Clock:
    """Wall clock the dialogs expire by, moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def stored_state(bot: TestBot, user: str = "alice", channel: str = "", thread: str = "") -> Any:
    assert bot.system is not None
    assert bot.system.runtime is not None
    talk = conversation_id((INPUT_NAME, channel, user, thread))
    address = state_address(talk)
    return bot.system.runtime.memory.ask(MemoryGet(CONVERSATION_NS, *address), timeout=5)


def make_bot(tmp_path: Path, *commands: Any, **bot_settings: Any) -> TestBot:
    settings = Settings(bot=replace(BotSettings(), **bot_settings))
    bot = TestBot(tmp_path / "memory", settings=settings, commands=commands)
    return bot.start()


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[TestBot]:
    with TestBot(tmp_path / "memory", commands=[deploy]) as running:
        yield running


# --- the API, turn by turn ------------------------------------------------------------


def test_a_dialog_is_driven_turn_by_turn_to_its_finish(bot: TestBot) -> None:
    assert bot.ask("deploy") == FIRST
    assert bot.ask("PROD") == "How many replicas?"
    assert bot.ask("3") == "Change ticket for prod?"
    assert bot.ask("CHG-42") == "Deploy 3 to prod? (yes/no)"
    assert bot.ask("yes") == "Deploying 3 replicas to prod."
    assert bot.ask("recall last deploy") == (
        "last deploy is {'env': 'prod', 'replicas': 3, 'ticket': 'CHG-42', 'go': True}"
    )
    assert stored_state(bot) is None
    assert bot.ask("ping") == "pong"


def test_a_branch_skips_the_step_earlier_answers_do_not_call_for(bot: TestBot) -> None:
    bot.ask("deploy")
    bot.ask("staging")
    assert bot.ask("2") == "Deploy 2 to staging? (yes/no)"


def test_a_refused_answer_is_asked_again_with_the_reason(bot: TestBot) -> None:
    bot.ask("deploy")
    assert bot.ask("qa") == (
        "`qa` is not one of the choices. Please answer `prod`, `staging`.\n"
        "Which environment? (prod / staging)"
    )
    bot.ask("staging")
    assert bot.ask("many") == "A number, please.\nHow many replicas?"
    assert bot.ask("99") == "Between 1 and 50 replicas, please.\nHow many replicas?"
    assert bot.ask("5") == "Deploy 5 to staging? (yes/no)"
    assert bot.ask("maybe") == "Please answer yes or no.\nDeploy 5 to staging? (yes/no)"
    assert bot.ask("no") == "OK, I stopped there: nothing was saved."
    assert bot.ask("recall last deploy").startswith("I don't know last deploy")


# --- routing --------------------------------------------------------------------------


def test_an_open_dialog_takes_only_that_persons_messages_in_that_place(bot: TestBot) -> None:
    bot.ask("deploy", user="alice", channel="C1")
    assert bot.ask("ping", user="bob", channel="C1") == "pong"
    assert bot.ask("ping", user="alice", channel="C2") == "pong"
    assert bot.ask("ping", user="alice", channel="C1", thread="T1") == "pong"
    assert bot.ask("staging", user="alice", channel="C1") == "How many replicas?"


def test_command_names_are_answers_while_a_dialog_is_open(bot: TestBot) -> None:
    bot.ask("deploy")
    bot.ask("prod")
    bot.ask("1")
    assert bot.ask("remember x is y") == "Deploy 1 to prod? (yes/no)"
    assert bot.ask("yes") == "Deploying 1 replicas to prod."
    assert bot.ask("recall last deploy").endswith("'ticket': 'remember x is y', 'go': True}")
    assert bot.ask("recall x").startswith("I don't know x")


def test_help_works_mid_dialog_and_reminds_the_open_question(bot: TestBot) -> None:
    bot.ask("deploy")
    bot.ask("prod")
    shown = bot.ask("help")
    assert shown.startswith("Commands:")
    assert shown.endswith(f"We are in the middle of `deploy`: How many replicas?\n{CANCEL_HINT}")
    assert bot.ask("help ping").startswith("ping\nCheck that Harken is alive")
    assert bot.ask("4") == "Change ticket for prod?"


@pytest.mark.parametrize("word", ["cancel", "stop", " Cancel ", "STOP"])
def test_cancel_or_stop_ends_the_dialog_and_says_so(bot: TestBot, word: str) -> None:
    bot.ask("deploy")
    bot.ask("prod")
    assert bot.ask(word) == "OK, I cancelled `deploy`. Nothing from it was saved."
    assert stored_state(bot) is None
    assert bot.ask("ping") == "pong"
    # Outside a dialog, a `cancel` command (jobs) may answer instead; either says so.
    assert "no dialog is open" in bot.ask(word).lower()


def test_starting_a_second_dialog_asks_whether_to_abandon_the_first(bot: TestBot) -> None:
    bot.ask("deploy")
    bot.ask("prod")
    assert bot.ask("profile") == (
        "You are in the middle of `deploy`. Abandon it and start `profile`? (yes/no)"
    )
    assert bot.ask("hmm") == "Please answer yes or no: abandon `deploy`?"
    assert bot.ask("no") == "OK, let's go on with `deploy`. How many replicas?"
    assert bot.ask("2") == "Change ticket for prod?"
    assert bot.ask("deploy") == (
        "You are in the middle of `deploy`. Abandon it and start it again? (yes/no)"
    )
    bot.restart()  # the pending question is part of the saved state
    assert bot.ask("yes") == f"OK, I abandoned `deploy`.\n{FIRST}"
    assert bot.ask("staging") == "How many replicas?"


# --- persistence ----------------------------------------------------------------------


def test_state_is_saved_after_every_step(bot: TestBot) -> None:
    bot.ask("deploy")
    assert stored_state(bot)["step"] == "env"
    bot.ask("prod")
    saved = stored_state(bot)
    assert (saved["dialog"], saved["step"], saved["answers"]) == (
        "deploy",
        "replicas",
        {"env": "prod"},
    )


def test_a_restarted_bot_continues_the_dialog_at_the_same_step(bot: TestBot) -> None:
    bot.ask("deploy")
    bot.ask("prod")
    bot.restart()
    assert bot.ask("7") == "Change ticket for prod?"
    bot.restart()
    bot.ask("CHG-1")
    assert bot.ask("yes") == "Deploying 7 replicas to prod."


def test_an_evicted_conversation_continues_seamlessly(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, deploy, conversation_idle_seconds=0.1)
    try:
        assert bot.system is not None
        system = bot.system
        bot.ask("deploy")
        bot.ask("prod")
        wait_until(lambda: system.router_stats()["active_conversations"] == 0)
        assert system.router_stats()["retired"] >= 1
        assert bot.ask("3") == "Change ticket for prod?"
    finally:
        bot.stop()


def test_a_step_still_running_keeps_its_conversation_and_hands_over_after_a_crash(
    tmp_path: Path,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(text: str) -> str:
        entered.set()
        release.wait(10)
        return text

    @dialog(r"^slow$", steps=[Ask("a", "A?", parse=slow), Ask("b", "B?")])
    def slow_form(answers: Answers) -> str:
        return f"a={answers['a']} b={answers['b']}"

    bot = make_bot(tmp_path, slow_form, conversation_idle_seconds=0.1)
    try:
        system = bot.system
        assert system is not None
        assert system.router is not None
        bot.ask("slow")
        first = bot.send("one")
        assert entered.wait(5)
        # Idle retirement leaves a conversation alone while its step runs: another
        # person's conversation, quiet for less time, is retired first.
        bot.ask("ping", user="bob")
        wait_until(lambda: system.router_stats()["retired"] >= 1)
        assert system.router_stats()["active_conversations"] == 1
        # A router that crashes stops every conversation, busy or not: the running step
        # and the successor that takes the next message must not race.
        router = system.router
        old = router.ref
        assert old is not None
        old.tell(Inbound(None))  # type: ignore[arg-type]  # a malformed message kills it
        wait_until(lambda: router.ref is not old and router.is_alive())
        lanes = system.runtime.lanes
        wait_until(lambda: lanes.busy() == 1)  # the step, still running
        second = bot.send("two")  # reaches a new conversation actor
        # Whose first job, loading the dialog, waits for the step still running.
        wait_until(lambda: lanes.busy() == 2)
        release.set()
        assert [e.data for e in bot.replies(first)] == ["B?"]
        assert [e.data for e in bot.replies(second)] == ["a=one b=two"]
        wait_until(lambda: lanes.busy() == 0)
    finally:
        release.set()
        bot.stop()


# --- scheduled commands ----------------------------------------------------------------


def scheduled(bot: TestBot, text: str) -> list[str]:
    """What the bot answers to `text` sent as a scheduled job sends it (actors/jobs.py)."""
    event = replace(bot.event(text), meta={"scheduled": True})
    return [e.data for e in bot.replies(bot.send_event(event))]


def test_a_scheduled_command_is_not_taken_as_the_answer_to_an_open_dialog(bot: TestBot) -> None:
    assert bot.ask("deploy") == FIRST
    # `run in 5 minutes ping`, set before the dialog, fires in the middle of it.
    assert scheduled(bot, "ping") == ["pong"]
    assert stored_state(bot)["step"] == "env"
    assert bot.ask("prod") == "How many replicas?"


def test_a_scheduled_dialog_start_in_an_open_dialog_asks_before_abandoning_it(
    bot: TestBot,
) -> None:
    assert bot.ask("deploy") == FIRST
    assert scheduled(bot, "profile") == [
        "You are in the middle of `deploy`. Abandon it and start `profile`? (yes/no)"
    ]
    assert bot.ask("no") == "OK, let's go on with `deploy`. Which environment? (prod / staging)"


# --- timeouts -------------------------------------------------------------------------


def test_an_expired_dialog_is_dropped_and_the_message_is_handled_as_new(bot: TestBot) -> None:
    clock = Clock()
    assert bot.system is not None
    assert bot.system.runtime is not None
    bot.system.runtime.clock = clock
    bot.ask("deploy")
    bot.ask("prod")
    clock.now += 29 * 60
    assert bot.ask("3") == "Change ticket for prod?"
    clock.now += 30 * 60 + 1
    assert bot.ask("ping") == (
        "Your unfinished `deploy` expired after 30 minutes without an answer, so I dropped "
        "it; nothing from it was saved.\npong"
    )
    assert stored_state(bot) is None
    assert bot.ask("ping") == "pong"


def test_a_dialog_expires_across_a_restart_too(bot: TestBot) -> None:
    bot.ask("deploy")
    bot.restart()
    assert bot.system is not None
    assert bot.system.runtime is not None
    clock = Clock()
    clock.now += 31 * 60
    bot.system.runtime.clock = clock
    replies = bot.ask("staging")
    assert replies.startswith("Your unfinished `deploy` expired after 30 minutes")
    assert replies.endswith("I don't know the command `staging`. Say `help` to see what I can do.")


def test_the_dialog_timeout_is_configurable(tmp_path: Path) -> None:
    bot = make_bot(tmp_path, deploy, dialog_timeout_seconds=120)
    try:
        clock = Clock()
        assert bot.system is not None
        assert bot.system.runtime is not None
        bot.system.runtime.clock = clock
        bot.ask("deploy")
        clock.now += 121
        assert bot.ask("deploy").startswith(
            f"Your unfinished `deploy` expired after 2 minutes without an answer, so I "
            f"dropped it; nothing from it was saved.\n{FIRST}"
        )
    finally:
        bot.stop()


# --- the built-in dialogs -------------------------------------------------------------


def test_profile_asks_name_then_time_zone_and_whoami_and_time_use_them(bot: TestBot) -> None:
    assert bot.ask("profile") == f"What should I call you?\n{CANCEL_HINT}"
    tz_question = "What is your time zone? An IANA name such as Europe/Paris or America/New_York."
    assert bot.ask("Ann Lee") == tz_question
    for wrong in ["Mars/Olympus", "CET+2", "next tuesday"]:
        refused = bot.ask(wrong)
        assert refused.startswith(f"`{wrong}` is not a time zone."), refused
        assert refused.endswith(tz_question)
    assert bot.ask("america/new_york") == (
        "Thanks, Ann Lee. I'll give you times in America/New_York. Say `whoami` to check."
    )
    who = bot.ask("whoami")
    assert "You are alice (Ann Lee)." in who
    assert "Time zone: America/New_York" in who
    assert " in America/New_York (" in bot.ask("time")


def test_incident_is_recorded_with_an_id_listed_and_resolved(bot: TestBot) -> None:
    assert bot.ask("incidents") == "No open incidents. Say `incident` to declare one."
    assert bot.ask("incident").startswith("How severe is it: 1 (critical)")
    assert bot.ask("4") == (
        "Severity is 1, 2 or 3 (1 is the worst).\n"
        "How severe is it: 1 (critical), 2 (major) or 3 (minor)?"
    )
    assert bot.ask("sev2") == "Which service is affected?"
    assert bot.ask("checkout") == "What is happening, in one line?"
    assert bot.ask("payments time out") == (
        "Severity 2, checkout: payments time out\nRecord this incident? (yes/no)"
    )
    assert bot.ask("yes") == (
        "Recorded INC-1: severity 2, checkout: payments time out\n"
        "Say `resolve INC-1` when it is over."
    )
    listed = bot.ask("incidents", user="bob")  # team-wide: everyone sees it
    assert listed.startswith("Open incidents (1):\nINC-1 (sev 2) checkout: payments time out")
    assert "opened by alice" in listed
    assert bot.ask("resolve inc-1", user="bob") == ("Resolved INC-1 (checkout: payments time out).")
    assert bot.ask("resolve INC-1").startswith("INC-1 is already resolved (by bob,")
    assert bot.ask("resolve 9") == "There is no incident INC-9. Say `incidents` for the open ones."
    assert bot.ask("incidents") == "No open incidents. Say `incident` to declare one."


def test_incident_answered_no_records_nothing(bot: TestBot) -> None:
    for text in ["incident", "1", "db", "replica lag"]:
        bot.ask(text)
    assert bot.ask("no") == "OK, I did not record it."
    assert bot.ask("incidents") == "No open incidents. Say `incident` to declare one."


def test_incidents_confirmed_at_once_by_many_people_get_distinct_ids(bot: TestBot) -> None:
    people = [f"u{i}" for i in range(8)]
    for text in ["incident", "3", "search", "slow"]:
        for person in people:
            bot.ask(text, user=person)
    sent = [bot.send("yes", user=person) for person in people]
    ids = {bot.replies(event)[0].data.split(":")[0] for event in sent}
    assert ids == {f"Recorded INC-{n}" for n in range(1, 9)}
    assert bot.ask("incidents").startswith("Open incidents (8):")


# --- bad input ------------------------------------------------------------------------


def test_a_one_megabyte_answer_is_refused_and_the_dialog_stays_put(bot: TestBot) -> None:
    bot.ask("deploy")
    bot.ask("prod")
    assert "only read messages up to" in bot.ask("9" * 1_000_000)
    assert bot.ask("x" * 60_000) == (
        "That answer is 60,000 characters long; please keep it to 1,000.\nHow many replicas?"
    )
    assert stored_state(bot)["step"] == "replicas"
    assert bot.ask("2") == "Change ticket for prod?"


def test_an_empty_answer_is_asked_again(bot: TestBot) -> None:
    bot.ask("deploy")
    assert bot.ask("") == "I need an answer to go on.\nWhich environment? (prod / staging)"
    assert bot.ask("   ") == "I need an answer to go on.\nWhich environment? (prod / staging)"
    assert bot.ask("prod") == "How many replicas?"


def test_a_failing_finish_keeps_the_answers_and_names_an_error_id(
    bot: TestBot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    @dialog(r"^flaky$", steps=[Ask("a", "A?")])
    def flaky(answers: Answers) -> str:
        calls.append(answers["a"])
        if len(calls) == 1:
            raise RuntimeError("backend down")
        return f"done with {answers['a']}"

    other = make_bot(tmp_path / "other", flaky)
    try:
        other.ask("flaky")
        failed = other.ask("first")
        assert failed.startswith("Sorry, `flaky` failed (error id ")
        assert "Your answers so far are kept" in failed
        error_id = failed.split("error id ")[1].split(")")[0]
        assert error_id in caplog.text
        assert other.ask("second") == "done with second"
    finally:
        other.stop()


def test_a_thousand_messages_mid_dialog_are_all_answered_in_order_and_others_are_served(
    tmp_path: Path,
) -> None:
    entered, release = threading.Event(), threading.Event()

    def word(text: str) -> str:
        if text == "block":
            entered.set()
            release.wait(10)
        if text != "done":
            raise Invalid(f"not yet: {text}")
        return text

    @dialog(r"^gate$", steps=[Ask("w", "Word?", parse=word)])
    def gate(answers: Answers) -> str:
        return "through"

    bot = make_bot(tmp_path, gate)
    try:
        bot.ask("gate")
        blocked = bot.send("block")
        assert entered.wait(5)
        spam = [bot.send(f"x{i}") for i in range(1000)]
        # Alice's conversation is stuck behind her own slow step; others are not.
        assert bot.ask("ping", user="bob") == "pong"
        assert bot.ask("gate", user="carol") == f"Word?\n{CANCEL_HINT}"
        release.set()
        assert [e.data for e in bot.replies(blocked)] == ["not yet: block", "Word?"]
        for i, event in enumerate(spam):
            assert [e.data for e in bot.replies(event)] == [f"not yet: x{i}", "Word?"]
        assert bot.ask("done") == "through"
        assert stored_state(bot) is None
    finally:
        release.set()
        bot.stop()


def test_a_full_incident_book_refuses_a_new_one_and_records_nothing(
    bot: TestBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("commands.builtin.incidents.MAX_OPEN", 1)
    for text in ["incident", "1", "db", "down", "yes", "incident", "2", "api", "slow"]:
        bot.ask(text)
    assert bot.ask("yes") == (
        "There are already 1 open incidents, so I did not record this one. "
        "Resolve some first (`incidents` lists them)."
    )
    assert bot.ask("incidents").startswith("Open incidents (1):\nINC-1 (sev 1) db: down")


def test_an_admin_only_dialog_refuses_others_and_starts_for_admins(tmp_path: Path) -> None:
    @dialog(r"^drain$", steps=[Ask("node", "Which node?")], admin_only=True)
    def drain(answers: Answers) -> str:
        return f"draining {answers['node']}"

    with TestBot(tmp_path / "memory", commands=[drain], admins=["root"]) as bot:
        assert bot.ask("drain", user="eve") == (
            "Sorry, `drain` is for admins only, and you are not an admin on testing."
        )
        assert bot.ask("ping", user="eve") == "pong"
        assert bot.ask("drain", user="root") == f"Which node?\n{CANCEL_HINT}"
        assert bot.ask("n1", user="root") == "draining n1"


def test_a_dialog_that_no_longer_exists_after_an_upgrade_is_dropped_with_a_note(
    tmp_path: Path,
) -> None:
    with TestBot(tmp_path / "memory", commands=[deploy]) as before:
        before.ask("deploy")
    with TestBot(tmp_path / "memory") as after:
        assert after.ask("ping") == (
            "I could not go on with your unfinished `deploy`: this version of Harken no "
            "longer has that dialog (or that step of it). I dropped it; nothing from it "
            "was saved.\npong"
        )
        assert after.ask("ping") == "pong"


def test_a_finish_that_stores_too_much_is_told_so_and_keeps_the_answers(tmp_path: Path) -> None:
    @dialog(r"^hoard$", steps=[Ask("size", "How many kilobytes?", parse=int)])
    def hoard(ctx: Context, answers: Answers) -> str:
        ctx.memory.set("blob", "x" * 1024 * answers["size"])
        return "stored"

    bot = make_bot(tmp_path, hoard)
    try:
        bot.ask("hoard")
        refused = bot.ask("64")
        assert refused.startswith("Sorry, I can't store that: value is ")
        assert refused.endswith("Your answers so far are kept: answer again, or say `cancel`.")
        assert bot.ask("1") == "stored"
    finally:
        bot.stop()


def test_the_dialog_timeout_comes_from_file_env_or_flag_and_bad_values_are_named() -> None:
    from config import ConfigError, load_settings

    assert load_settings(env={}).bot.dialog_timeout_seconds == 1800
    env = {"HARKEN_BOT_DIALOG_TIMEOUT_SECONDS": "90"}
    assert load_settings(env=env).bot.dialog_timeout_seconds == 90
    flag = {"bot.dialog_timeout_seconds": "600"}
    assert load_settings(env=env, overrides=flag).bot.dialog_timeout_seconds == 600
    with pytest.raises(ConfigError, match=r"bot\.dialog_timeout_seconds.*a number > 0"):
        load_settings(env={"HARKEN_BOT_DIALOG_TIMEOUT_SECONDS": "-5"})
