"""Linked accounts are one person: `link` with a one-time code, shared memory, jobs and
reminders, `unlink`, and what `[identity]` shares. In-process, with the real actor
system (`testbot`, one input, two people on it) and the real TinyDB store; the end to
end test across Slack and XMPP is tests/test_identity_e2e.py."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from actors.access import refusal
from actors.identity import (
    IDENTITY_NS,
    ConfirmLink,
    IdentityIndex,
    IdentityMap,
    OfferLink,
    Unlink,
    WithdrawLink,
)
from actors.memory_actor import MemoryActor
from actors.messages import MemoryBarrier, MemoryGet, MemoryKeys, MemoryPut
from core.context import TooManyLinkCodes
from core.event import Event, EventType
from harken.testbot import TestBot, wait_until
from harken.unit import InMemoryStore, settings_for_tests
from memory.pg_store import PgStore
from memory.tinydb_store import TinyDBStore

CODE = re.compile(r"say this code there: (\d{6})")


def _code_sent_to(bot: TestBot, user: str) -> str:
    sent = bot.wait_for(lambda e: e.to == user and "code" in e.data)
    found = CODE.search(sent.data)
    assert found is not None, sent.data
    return found.group(1)


def _link(bot: TestBot, asker: str, other: str) -> str:
    """`asker` links `other` (both on the testing input); the reply to the code."""
    question = bot.ask(f"link testing {other}", user=asker)
    assert f"Say the code I sent you on testing (to {other})." in question
    return bot.ask(_code_sent_to(bot, other), user=asker)


# --- link, end to end in the process ---------------------------------------------------


def test_link_sends_a_code_to_the_other_account_and_the_code_said_back_links_them(
    bot: TestBot,
) -> None:
    bot.ask("remember colour is teal", user="alice")
    bot.ask("remember colour is red", user="bob")
    bot.ask("remember pet is a cat", user="bob")
    done = _link(bot, "alice", "bob")
    assert "Linked: you and bob on testing are one person now (person:" in done
    assert "Both accounts had `user/colour`: I kept the values from this account" in done
    # One memory, read and written from either account.
    assert "teal" in bot.ask("recall colour", user="bob")
    assert "a cat" in bot.ask("recall pet", user="alice")
    bot.ask("remember car is blue", user="bob")
    assert "blue" in bot.ask("recall car", user="alice")
    who = bot.ask("whoami", user="bob")
    assert re.search(r"Linked accounts: testing:alice, testing:bob \(one person: person:\w+\)", who)


def test_a_wrong_code_is_asked_again_and_the_fifth_voids_it(bot: TestBot) -> None:
    bot.ask("link testing bob", user="alice")
    code = _code_sent_to(bot, "bob")
    wrong = "000000" if code != "000000" else "111111"
    for left in (4, 3, 2, 1):
        reply = bot.ask(wrong, user="alice")
        tries = "1 try" if left == 1 else f"{left} tries"
        assert f"That is not the code ({tries} left)." in reply
        assert "Say the code I sent you on testing" in reply
    assert "That was the last try: the code is void." in bot.ask(wrong, user="alice")
    # The right code is no use any more: the dialog is over, and nothing is linked.
    assert "I don't know the command" in bot.ask(code, user="alice")
    assert "Linked accounts" not in bot.ask("whoami", user="alice")


def test_a_code_expires_after_ten_minutes(bot: TestBot) -> None:
    bot.ask("link testing bob", user="alice")
    code = _code_sent_to(bot, "bob")
    bot.clock.advance(minutes=11)
    reply = bot.ask(code, user="alice")
    assert "expired" in reply
    assert "Linked accounts" not in bot.ask("whoami", user="alice")


def test_link_refuses_a_missing_account_itself_and_an_input_that_is_not_running(
    bot: TestBot,
) -> None:
    assert "Say `link <input> <your id there>`" in bot.ask("link", user="alice")
    assert "That is the account you are talking to me from." in bot.ask(
        "link testing alice", user="alice"
    )
    reply = bot.ask("link nosuch bob", user="alice")
    assert "I could not send a code to bob on nosuch: there is no input called 'nosuch'" in reply
    # None of these left a dialog open.
    assert bot.ask("ping", user="alice") == "pong"


def test_the_code_is_never_logged(bot: TestBot, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bot.ask("link testing bob", user="alice")
    code = _code_sent_to(bot, "bob")
    bot.ask(code, user="alice")
    assert code not in caplog.text


def _no_code_sent_to(bot: TestBot, user: str) -> bool:
    """Whether the bot has sent no code to `user` that the test did not take yet (a code
    is sent before the reply to `link`, so the test need not wait for one)."""
    try:
        bot.wait_for(lambda e: e.to == user and "code" in e.data, timeout=0)
    except TimeoutError:
        return True
    return False


def test_one_person_is_sent_at_most_three_codes_an_hour(bot: TestBot) -> None:
    for other in ("bob", "carol", "dave"):
        bot.ask(f"link testing {other}", user="alice")
        _code_sent_to(bot, other)
        bot.ask("cancel", user="alice")
    refused = bot.ask("link testing erin", user="alice")
    assert refused == (
        "You asked for 3 link codes within 1 hour, the most I send for one person. "
        "You can ask for another in 1 hour."
    )
    assert _no_code_sent_to(bot, "erin")
    assert bot.ask("ping", user="alice") == "pong"  # no dialog was left open
    bot.clock.advance(minutes=45)
    assert "You can ask for another in 15 minutes." in bot.ask("link testing erin", user="alice")
    assert _no_code_sent_to(bot, "erin")
    # Someone else is not held back by alice's codes.
    assert "Say the code I sent you" in bot.ask("link testing erin", user="frank")
    _code_sent_to(bot, "erin")
    bot.ask("cancel", user="frank")
    # An hour after the first code, alice may ask again, and the code links.
    bot.clock.advance(minutes=15)
    assert "Linked: you and erin on testing" in _link(bot, "alice", "erin")


def test_one_account_is_sent_at_most_three_codes_an_hour_whoever_asks(bot: TestBot) -> None:
    for asker in ("mallory", "trudy", "eve"):
        bot.ask("link testing bob", user=asker)
        _code_sent_to(bot, "bob")
        bot.ask("cancel", user=asker)
    refused = bot.ask("link testing bob", user="alice")
    assert refused == (
        "bob on testing was sent 3 link codes within 1 hour, the most I send to one "
        "account. You can ask again in 1 hour."
    )
    assert _no_code_sent_to(bot, "bob")
    # The count is in the store: a restart does not reset it.
    bot.restart()
    assert "You can ask again in 1 hour." in bot.ask("link testing bob", user="alice")
    assert _no_code_sent_to(bot, "bob")
    bot.clock.advance(hours=1)
    assert "Linked: you and bob on testing" in _link(bot, "alice", "bob")


@pytest.mark.harken(
    settings={"identity.link_codes_per_person": 1, "identity.link_codes_window_seconds": 600}
)
def test_the_limits_on_codes_come_from_the_config(bot: TestBot) -> None:
    bot.ask("link testing bob", user="alice")
    _code_sent_to(bot, "bob")
    bot.ask("cancel", user="alice")
    assert bot.ask("link testing carol", user="alice") == (
        "You asked for 1 link code within 10 minutes, the most I send for one person. "
        "You can ask for another in 10 minutes."
    )


def test_a_code_that_could_not_be_sent_does_not_count(bot: TestBot) -> None:
    for _ in range(4):
        assert "I could not send a code to bob on nosuch" in bot.ask(
            "link nosuch bob", user="alice"
        )
    assert "Linked: you and bob on testing" in _link(bot, "alice", "bob")


def test_reminders_set_on_one_account_are_listed_and_cancelled_from_the_other(
    bot: TestBot,
) -> None:
    _link(bot, "alice", "bob")
    set_reply = bot.ask("remind me in 2 hours to stretch", user="alice")
    job_id = re.search(r"Job id (\w+):", set_reply)
    assert job_id is not None, set_reply
    assert "stretch" in bot.ask("reminders", user="bob")
    assert "Cancelled" in bot.ask(f"cancel {job_id.group(1)}", user="bob")
    assert bot.ask("reminders", user="alice").startswith("You have no")


def test_a_reminder_goes_where_the_person_was_last_active_when_they_ask_for_that(
    bot: TestBot,
) -> None:
    _link(bot, "alice", "bob")
    bot.ask("remind me in 10 minutes to stand up", user="alice", channel="desk")
    assert "where you last spoke to me" in bot.ask("reminders go to last active", user="bob")
    bot.ask("ping", user="bob", channel="phone")
    bot.clock.advance(minutes=10)
    sent = bot.wait_for("stand up")
    assert (sent.channel, sent.to) == ("phone", "bob")
    assert "Reminders go to: last active" in bot.ask("whoami", user="alice")


def test_a_reminder_goes_where_it_was_set_by_default(bot: TestBot) -> None:
    _link(bot, "alice", "bob")
    bot.ask("remind me in 10 minutes to stand up", user="alice", channel="desk")
    bot.ask("ping", user="bob", channel="phone")
    bot.clock.advance(minutes=10)
    sent = bot.wait_for("stand up")
    assert (sent.channel, sent.to) == ("desk", "alice")


def test_unlink_splits_the_account_off_with_a_copy_of_the_memory(bot: TestBot) -> None:
    _link(bot, "alice", "bob")
    bot.ask("remember colour is teal", user="alice")
    assert "Unlinked testing:bob" in bot.ask("unlink", user="bob")
    assert "teal" in bot.ask("recall colour", user="bob")
    bot.ask("remember colour is red", user="bob")
    assert "teal" in bot.ask("recall colour", user="alice")
    assert "Linked accounts" not in bot.ask("whoami", user="alice")
    assert "not linked with you" in bot.ask("unlink testing bob", user="alice")


def test_links_survive_a_restart(bot: TestBot) -> None:
    _link(bot, "alice", "bob")
    bot.ask("remember colour is teal", user="alice")
    bot.restart()
    assert "teal" in bot.ask("recall colour", user="bob")


def test_reminders_go_to_another_place_needs_a_linked_account_there(bot: TestBot) -> None:
    assert "you have no other account linked" in bot.ask("reminders go to xmpp", user="alice")
    _link(bot, "alice", "bob")
    reply = bot.ask("reminders go to xmpp", user="alice")
    assert "You have no account on xmpp linked with this one" in reply
    assert "Reminders go to" not in bot.ask("whoami", user="alice")


# --- the map, in the memory actor --------------------------------------------------------


def _account(user: str) -> str:
    return f"testing:{user}"


def test_linking_moves_every_namespace_of_a_person_and_a_plugins_own(tmp_path: Path) -> None:
    ref = MemoryActor.start(TinyDBStore(str(tmp_path / "memory")), identities=IdentityMap())
    try:
        ref.tell(MemoryPut("plugin:notes", _account("b"), "n1", "hello"))
        ref.tell(MemoryPut("profile", _account("b"), "timezone", "Asia/Tokyo"))
        ref.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5, 0.0))
        outcome = ref.ask(ConfirmLink(_account("a"), "123456", 0.0))
        assert outcome.outcome == "linked"
        assert ref.ask(MemoryGet("plugin:notes", _account("a"), "n1")) == "hello"
        assert ref.ask(MemoryGet("profile", _account("a"), "timezone")) == "Asia/Tokyo"
        person = ref.ask(MemoryGet(IDENTITY_NS, "aliases", _account("a")))
        assert person.startswith("person:")
        # Team memory is nobody's: not moved, not renamed.
        ref.tell(MemoryPut("incidents", "team", "next_id", 3))
        assert ref.ask(MemoryKeys("incidents", "team")) == ["next_id"]
    finally:
        ref.stop()
    # The map and the moved memory are on disk: a new actor on the store reads them.
    ref = MemoryActor.start(TinyDBStore(str(tmp_path / "memory")), identities=IdentityMap())
    try:
        assert ref.ask(MemoryGet("plugin:notes", _account("b"), "n1")) == "hello"
    finally:
        ref.stop()


def test_a_code_is_single_use_and_compared_whole() -> None:
    ref = MemoryActor.start(InMemoryStore(), identities=IdentityMap())
    try:
        ref.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5, 0.0))
        assert ref.ask(ConfirmLink(_account("a"), "12345", 0.0)).outcome == "wrong"
        assert ref.ask(ConfirmLink(_account("a"), " 123456 ", 0.0)).outcome == "linked"
        assert ref.ask(ConfirmLink(_account("a"), "123456", 0.0)).outcome == "none"
    finally:
        ref.stop()


def test_linking_two_people_merges_every_account_of_both() -> None:
    ref = MemoryActor.start(InMemoryStore(), identities=IdentityMap())
    try:
        for asker, other in (("a", "b"), ("c", "d"), ("a", "c")):
            ref.ask(OfferLink(_account(asker), _account(other), "123456", 1e12, 5, 0.0))
            assert ref.ask(ConfirmLink(_account(asker), "123456", 0.0)).outcome == "linked"
        ref.tell(MemoryPut("user", _account("d"), "k", "v"))
        assert ref.ask(MemoryGet("user", _account("b"), "k")) == "v"
        assert not ref.ask(Unlink(_account("a"), _account("zz")))
    finally:
        ref.stop()


def test_another_process_link_is_seen_after_the_reload_interval() -> None:
    store = InMemoryStore()  # shared, as a PostgreSQL database is by several processes
    now = [0.0]
    here, there = (IdentityMap(reload_seconds=5, clock=lambda: now[0]) for _ in range(2))
    here.load(store)
    there.load(store)
    there.handle(store, OfferLink(_account("a"), _account("b"), "123456", 1e12, 5, 0.0))
    assert there.handle(store, ConfirmLink(_account("a"), "123456", 0.0)).outcome == "linked"
    person = there.owner(store, "user", _account("a"), write=False)
    assert person.startswith("person:")
    now[0] = 4.0
    assert here.owner(store, "user", _account("b"), write=False) == _account("b")
    now[0] = 5.0
    assert here.owner(store, "user", _account("b"), write=False) == person
    assert here.index.accounts(_account("b")) == (_account("a"), _account("b"))


def test_the_limits_on_codes_hold_for_every_process_on_a_shared_store() -> None:
    store = InMemoryStore()  # shared, as a PostgreSQL database is by several processes
    here, there = (IdentityMap(codes_per_account=2) for _ in range(2))
    here.load(store)
    there.load(store)

    def offer(where: IdentityMap, asker: str, now: float) -> object:
        return where.handle(
            store, OfferLink(_account(asker), _account("z"), "123456", 1e12, 5, now)
        )

    assert offer(here, "a", 100.0) is None
    assert offer(there, "b", 200.0) is None
    refused = offer(here, "c", 300.0)
    assert isinstance(refused, TooManyLinkCodes)
    assert refused.to_account
    assert refused.wait_seconds == 3400.0  # the first code leaves the window at 3700
    # What is kept names nobody: neither who asked nor who was sent a code.
    keys = store.keys(IDENTITY_NS, "link_codes")
    assert len(keys) == 3
    assert not any("testing" in key for key in keys)
    # A code withdrawn (it could not be sent) no longer counts, wherever it was offered.
    there.handle(store, WithdrawLink(_account("b")))
    assert offer(here, "c", 400.0) is None


def test_writes_keep_their_order_with_a_barrier_after_a_link() -> None:
    ref = MemoryActor.start(InMemoryStore(), identities=IdentityMap())
    try:
        ref.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5, 0.0))
        ref.ask(ConfirmLink(_account("a"), "123456", 0.0))
        errors: list[BaseException | None] = []
        ref.tell(MemoryPut("user", _account("b"), "k", 1))
        ref.ask(MemoryBarrier(errors.append))
        assert errors == [None]
        assert ref.ask(MemoryGet("user", _account("a"), "k")) == 1
    finally:
        ref.stop()


# --- what [identity] shares ----------------------------------------------------------------


def _event(input_name: str, user: str) -> Event:
    return Event(type=EventType.TEXT, sender=user, to="harken", data="x", input=input_name)


def _linked_index() -> IdentityIndex:
    index = IdentityIndex()
    index.publish({"testing:alice": "person:1", "other:al": "person:1"})
    return index


def test_admin_rights_stay_per_account_unless_shared() -> None:
    index = _linked_index()
    base = settings_for_tests(admins=["alice"])
    twin = _event("other", "al")
    assert index.is_admin(base, _event("testing", "alice"))
    assert not index.is_admin(base, twin)
    shared = settings_for_tests({"identity.share_admin": True}, admins=["alice"])
    assert index.is_admin(shared, twin)


def test_groups_stay_per_account_unless_shared() -> None:
    index = _linked_index()
    rules = {"access.commands.deploy": ["ops"]}
    base = settings_for_tests(rules, groups={"ops": ["alice"]})
    twin = _event("other", "al")
    linked = index.shared_accounts(base, twin)
    assert linked == ()
    assert refusal(base, "deploy", admin_only=False, event=twin, is_admin=False) is not None
    shared = settings_for_tests({**rules, "identity.share_groups": True}, groups={"ops": ["alice"]})
    linked = index.shared_accounts(shared, twin)
    assert linked == (("testing", "alice"),)
    assert (
        refusal(shared, "deploy", admin_only=False, event=twin, is_admin=False, linked=linked)
        is None
    )


def test_two_processes_on_postgresql_share_a_link(pg_url: str) -> None:
    # Two memory actors, each with its own connection: what two Harken processes are.
    first = MemoryActor.start(PgStore(pg_url), identities=IdentityMap(reload_seconds=0.05))
    second = MemoryActor.start(PgStore(pg_url), identities=IdentityMap(reload_seconds=0.05))
    try:
        assert second.ask(MemoryGet("user", _account("b"), "k")) is None
        first.tell(MemoryPut("user", _account("a"), "k", "from a"))
        first.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5, 0.0))
        assert first.ask(ConfirmLink(_account("a"), "123456", 0.0)).outcome == "linked"
        wait_until(lambda: second.ask(MemoryGet("user", _account("b"), "k")) == "from a")
    finally:
        first.stop()
        second.stop()


def test_a_write_with_no_usable_names_is_dropped_and_the_map_carries_on() -> None:
    ref = MemoryActor.start(InMemoryStore(), identities=IdentityMap())
    try:
        errors: list[BaseException | None] = []
        ref.tell(MemoryPut("user", ["not", "a", "name"], "k", 1))  # type: ignore[arg-type]
        ref.tell(MemoryPut(7, _account("a"), "k", 1))  # type: ignore[arg-type]
        ref.ask(MemoryBarrier(errors.append))
        assert len(errors) == 1
        assert errors[0] is not None
        ref.tell(MemoryPut("user", _account("a"), "k", 2))
        assert ref.ask(MemoryGet("user", _account("a"), "k")) == 2
    finally:
        ref.stop()
