"""The IRC input's SASL PLAIN against a real server: `harken run --inputs irc` logging in
to a private InspIRCd whose Atheme services check the account's password.

Each test gets its own InspIRCd + Atheme pair (tests/support/irc_sasl.py) on 127.0.0.1
and free ports, with one account registered through NickServ, and stops them after.
Without inspircd or atheme-services these tests skip, except under CI=true, where they
must run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import Background
from support.irc import IrcPerson
from support.irc_sasl import SaslIrcNetwork, SaslServerError, sasl_servers_missing

ACCOUNT = "harkenacct"
PASSWORD = "right-pw-7c1e"
WRONG = "wrong-pw-93ab"
CHANNEL = "#harken-sasl"


@pytest.fixture
def network(tmp_path: Path) -> Iterator[SaslIrcNetwork]:
    """A private InspIRCd + Atheme with ACCOUNT registered (password PASSWORD)."""
    reason = sasl_servers_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the SASL tests, but {reason}")
        pytest.skip(reason)
    with SaslIrcNetwork(tmp_path / "irc") as net:
        net.register(ACCOUNT, PASSWORD)
        yield net


def run_bot(net: SaslIrcNetwork, cwd: Path, password: str) -> Background:
    """`harken run --inputs irc`, logging in to ACCOUNT with SASL PLAIN."""
    return Background(
        *("run", "--inputs", "irc", "--data-dir", str(cwd / "var")),
        *("--set", "inputs.irc.host=127.0.0.1", "--set", f"inputs.irc.port={net.port}"),
        *("--set", "inputs.irc.tls=false", "--set", f"inputs.irc.sasl_username={ACCOUNT}"),
        *("--set", f"inputs.irc.channels={CHANNEL}"),
        cwd=cwd,
        env={"HARKEN_IRC_PASSWORD": password},
    )


def test_sasl_plain_with_the_right_password_logs_in_and_answers(
    network: SaslIrcNetwork, tmp_path: Path
) -> None:
    bot = run_bot(network, tmp_path, PASSWORD)
    try:
        bot.wait_stderr(f"IRC: logged in with SASL as {ACCOUNT}")
        bot.wait_stderr("IRC: online at ")
        # The server, not only the bot, says the nick is logged in to the account.
        assert network.account_of("harken") == ACCOUNT
        with IrcPerson("alice", network.port) as alice:
            alice.join(CHANNEL)
            alice.say(CHANNEL, "harken: ping")
            reply = alice.expect(
                lambda h: h.command == "PRIVMSG" and h.nick == "harken" and h.target == CHANNEL,
                30,
            )
            assert reply.text == "alice: pong"
    finally:
        assert bot.stop() == 0
    stderr = bot.err.read_text(errors="replace")
    assert PASSWORD not in stderr
    assert "offers no SASL" not in stderr


def test_sasl_plain_with_a_wrong_password_is_said_once_and_not_retried(
    network: SaslIrcNetwork, tmp_path: Path
) -> None:
    bot = run_bot(network, tmp_path, WRONG)
    try:
        bot.wait_stderr(f"the server refused the SASL login of {ACCOUNT}")
        bot.wait_stderr("Not retrying; the IRC input stays offline until Harken restarts.")
        # The bot left: it is not on the server, logged in or not.
        with pytest.raises(SaslServerError, match="no nick harken"):
            network.account_of("harken")
        assert bot.proc.poll() is None, "harken run keeps running with the input offline"
    finally:
        assert bot.stop() == 0
    stderr = bot.err.read_text(errors="replace")
    assert stderr.count("refused the SASL login") == 1, stderr
    assert "IRC: online at" not in stderr
    assert "logged in with SASL" not in stderr
    assert WRONG not in stderr
    assert PASSWORD not in stderr
