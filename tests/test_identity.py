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
)
from actors.memory_actor import MemoryActor
from actors.messages import MemoryBarrier, MemoryGet, MemoryKeys, MemoryPut
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
        ref.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5))
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
        ref.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5))
        assert ref.ask(ConfirmLink(_account("a"), "12345", 0.0)).outcome == "wrong"
        assert ref.ask(ConfirmLink(_account("a"), " 123456 ", 0.0)).outcome == "linked"
        assert ref.ask(ConfirmLink(_account("a"), "123456", 0.0)).outcome == "none"
    finally:
        ref.stop()


def test_linking_two_people_merges_every_account_of_both() -> None:
    ref = MemoryActor.start(InMemoryStore(), identities=IdentityMap())
    try:
        for asker, other in (("a", "b"), ("c", "d"), ("a", "c")):
            ref.ask(OfferLink(_account(asker), _account(other), "123456", 1e12, 5))
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
    there.handle(store, OfferLink(_account("a"), _account("b"), "123456", 1e12, 5))
    assert there.handle(store, ConfirmLink(_account("a"), "123456", 0.0)).outcome == "linked"
    person = there.owner(store, "user", _account("a"), write=False)
    assert person.startswith("person:")
    now[0] = 4.0
    assert here.owner(store, "user", _account("b"), write=False) == _account("b")
    now[0] = 5.0
    assert here.owner(store, "user", _account("b"), write=False) == person
    assert here.index.accounts(_account("b")) == (_account("a"), _account("b"))


def test_writes_keep_their_order_with_a_barrier_after_a_link() -> None:
    ref = MemoryActor.start(InMemoryStore(), identities=IdentityMap())
    try:
        ref.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5))
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
        first.ask(OfferLink(_account("a"), _account("b"), "123456", 1e12, 5))
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
