"""The email output against a real SMTP server on 127.0.0.1 (aiosmtpd, tests/support/smtp.py).

The server offers STARTTLS with a certificate made for the test and requires AUTH;
each test reads back what it received. The bot is the real actor system with the
in-memory `testing` input and the email input side by side, so a command's
`ctx.send(input="email", ...)` goes through `Runtime.send` to the email actor, its
outbox on disk, and smtplib.
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.ops_services import ServiceState
from support.servers import make_certificate
from support.smtp import SmtpServer

from commands.base import command
from config import InputSettings, Secret, load_settings
from core.context import Context, SendRefused
from harken.testbot import INPUT_NAME, TestBot

PASSWORD = "smtp-Pa55-never-in-a-log"
USER = "harken-mailer"
FROM = "harken@example.org"
ONCALL = "oncall@example.org"


class Logs(logging.Handler):
    """Every log record Harken writes while a test runs, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)  # fills exc_text, so the check below sees tracebacks too
        with self._changed:
            self.records.append(record)
            self._changed.notify_all()

    def text(self) -> str:
        with self._changed:
            return "\n".join(
                f"{r.getMessage()}\n{r.exc_text or ''}\n{r.stack_info or ''}" for r in self.records
            )

    def wait_for(self, pattern: str, timeout: float = 15.0) -> str:
        found = re.compile(pattern)

        def matching() -> list[str]:
            return [m for r in self.records if found.search(m := r.getMessage())]

        with self._changed:
            if not self._changed.wait_for(matching, timeout):
                raise TimeoutError(f"no log line matching {pattern!r} within {timeout} s")
            return matching()[0]


@pytest.fixture
def logs() -> Iterator[Logs]:
    watch = Logs()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(watch)
    try:
        yield watch
    finally:
        root.removeHandler(watch)
        root.setLevel(level)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """Not started: a test starts it (or leaves it down) and it is stopped after."""
    server = SmtpServer(tls=certificate, login=(USER, PASSWORD))
    try:
        yield server
    finally:
        server.stop()


@command(
    r"^mail\s+(?P<to>\S+)\s+(?P<text>.+)$", name="mail", usage="mail <to> <text>", max_chars=2000
)
def mail(ctx: Context, to: str, text: str) -> str:
    """A command that sends what it is given, as a plugin would."""
    try:
        sent = ctx.send(input="email", to=to, subject=f"Note: {text[:40]}", text=text)
    except SendRefused as exc:
        return f"refused: {exc}"
    return "sent" if sent.delivered else f"queued: {sent.note}"


def with_email(
    bot: TestBot, server: SmtpServer, certificate: tuple[Path, Path], **options: Any
) -> TestBot:
    """`bot` with the email input started beside the testing one, pointed at `server`."""
    settings = bot.settings
    email_input = InputSettings(
        name="email",
        options={
            "host": server.host,
            "port": server.port,
            "tls": "starttls",
            "ca_file": str(certificate[0]),
            "username": USER,
            "from_address": FROM,
            "allowed_domains": ("example.org",),
            "timeout": 5.0,
            "retry_delay": 0.05,
            "retry_max_delay": 0.2,
            **options,
        },
        secrets={"password": Secret(PASSWORD)},
    )
    bot.add(mail)
    bot.settings = dataclasses.replace(
        settings,
        bot=dataclasses.replace(settings.bot, inputs=(INPUT_NAME, "email")),
        inputs={**settings.inputs, "email": email_input},
    )
    return bot


def outbox(bot: TestBot) -> list[Path]:
    folder = Path(bot.settings.memory.path).parent / "email-outbox"
    return sorted(folder.glob("*.json"))


# --- what arrives ------------------------------------------------------------------------


def test_health_report_is_mailed_over_starttls_with_login(
    testbot: TestBot,
    smtp: SmtpServer,
    certificate: tuple[Path, Path],
    services: tuple[str, ServiceState],
    tmp_path: Path,
) -> None:
    base, _ = services
    config = tmp_path / "harken.toml"
    config.write_text(
        f'[services.web]\nurl = "{base}"\nhealth = "/healthz"\n'
        f'[services.broken]\nurl = "{base}"\nhealth = "/fail"\n'
    )
    testbot.configure(settings=load_settings(config, env={}))
    bot = with_email(testbot, smtp, certificate)
    smtp.start()

    assert bot.ask(f"health report to {ONCALL}") == f"Sent the health report to {ONCALL}."

    [got] = smtp.wait_for(1)
    assert (got.mail_from, got.rcpt_tos, got.login, got.tls) == (FROM, (ONCALL,), USER, True)
    message = got.message
    assert message["From"] == FROM
    assert message["To"] == ONCALL
    assert message["Subject"] == "harken health report: 1 of 2 services up, 1 down"
    assert email.utils.parsedate_to_datetime(str(message["Date"])) is not None
    assert re.fullmatch(r"<[^<>@\s]+@example\.org>", str(message["Message-ID"]))
    text = got.part("text/plain")
    assert "Health report from harken" in text
    assert re.search(r"^web +up +\d+ ms$", text, re.M)
    assert re.search(r"^broken +down +\d+ ms +HTTP 500", text, re.M)
    assert "harken itself:" in text
    assert re.search(r"^Inputs: .*email up", text, re.M)
    html = got.part("text/html")
    assert re.search(r"<pre[^>]*>Health report from harken", html)


def test_the_html_part_escapes_the_text_and_headers_stay_one_line(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    bot = with_email(testbot, smtp, certificate)
    smtp.start()

    assert bot.ask(f"mail {ONCALL} <script>alert('x')</script> & ünïcode") == "sent"

    [got] = smtp.wait_for(1)
    assert got.part("text/plain").strip() == "<script>alert('x')</script> & ünïcode"
    html = got.part("text/html")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; ünïcode" in html
    assert "<script>" not in html
    assert got.message["Subject"] == "Note: <script>alert('x')</script> & ünïcode"


def test_implicit_tls_is_spoken_from_the_first_byte(
    testbot: TestBot, certificate: tuple[Path, Path]
) -> None:
    with SmtpServer(tls=certificate, login=(USER, PASSWORD), implicit_tls=True) as server:
        bot = with_email(testbot, server, certificate, tls="implicit")

        assert bot.ask(f"mail {ONCALL} over TLS") == "sent"

        [got] = server.wait_for(1)
        assert (got.tls, got.login) == (True, USER)


# --- the allow-list ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipient",
    [
        "mallory@attacker.net",
        "a@example.org.attacker.net",
        "a@sub.example.org",
        "a@example.org,b@attacker.net",
        "a@attacker.net>,<b@example.org",
        '"a@example.org"@attacker.net',
        "a@attacker.net%example.org",
        "example.org",
    ],
)
def test_a_recipient_outside_the_allow_list_is_refused_and_nothing_is_sent(
    testbot: TestBot,
    smtp: SmtpServer,
    certificate: tuple[Path, Path],
    logs: Logs,
    recipient: str,
) -> None:
    bot = with_email(testbot, smtp, certificate)
    smtp.start()

    reply = bot.ask(f"mail {recipient} the keys to the kingdom")

    assert reply.startswith("refused: ")
    assert "nothing was sent" in reply
    assert "refused a mail to" in logs.wait_for(r"^email: refused a mail to ")
    assert outbox(bot) == []
    # Nothing went out: the next mail, to an allowed address, is the server's first.
    assert bot.ask(f"mail {ONCALL} after the refusal") == "sent"
    [got] = smtp.wait_for(1)
    assert got.rcpt_tos == (ONCALL,)
    assert smtp.rcpt_count == 1


def test_the_health_report_says_why_a_recipient_is_refused(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    bot = with_email(testbot, smtp, certificate)
    smtp.start()

    reply = bot.ask("health report to boss@attacker.net")

    assert reply == (
        "I could not send the health report to boss@attacker.net: I may only send mail to "
        "addresses at example.org, not to boss@attacker.net; nothing was sent."
    )
    assert bot.ask("health report to nobody") == (
        "Whom should I send it to? Say `health report to <email>`."
    )
    assert smtp.rcpt_count == 0


# --- failures: temporary, permanent --------------------------------------------------------


def test_a_server_down_at_first_gets_the_mail_once_it_is_up(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    bot = with_email(testbot, smtp, certificate)

    reply = bot.ask(f"health report {ONCALL}")

    assert reply.startswith(f"The health report to {ONCALL} is not sent yet: the mail server ")
    assert "(connection refused)" in reply
    assert len(outbox(bot)) == 1
    smtp.start()
    [got] = smtp.wait_for(1)
    assert got.rcpt_tos == (ONCALL,)
    delivered = bot.wait_for(f"The mail to {ONCALL} (harken health report")
    assert delivered.data.endswith("is delivered now.")
    assert delivered.to == "alice"


def test_a_temporary_refusal_4xx_is_retried(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    bot = with_email(testbot, smtp, certificate)
    smtp.refuse = "451 4.3.0 mailbox busy, try again later"
    smtp.start()

    reply = bot.ask(f"mail {ONCALL} try and try again")

    assert reply.startswith("queued: the mail server is not taking mail right now (451 4.3.0")
    smtp.wait_for_rcpt(3)
    smtp.refuse = None
    [got] = smtp.wait_for(1)
    assert got.part("text/plain").strip() == "try and try again"
    bot.wait_for(f"The mail to {ONCALL} (Note: try and try again) is delivered now.")


def test_a_permanent_refusal_5xx_is_reported_and_not_retried(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path], logs: Logs
) -> None:
    bot = with_email(testbot, smtp, certificate)
    smtp.refuse = "550 5.1.1 no such mailbox"
    smtp.start()

    reply = bot.ask(f"mail {ONCALL} into the void")

    assert reply == (
        "refused: the mail server refused it (550 5.1.1 no such mailbox); nothing was sent"
    )
    assert "not retried" in logs.wait_for(r"^email: .* refused the mail ")
    assert outbox(bot) == []
    # Not retried: with the server accepting again, the next mail is the only other RCPT.
    smtp.refuse = None
    assert bot.ask(f"mail {ONCALL} the next one") == "sent"
    [got] = smtp.wait_for(1)
    assert got.part("text/plain").strip() == "the next one"
    assert smtp.rcpt_count == 2


def test_pending_mail_survives_a_restart_and_arrives_once(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    bot = with_email(testbot, smtp, certificate)
    assert bot.ask(f"mail {ONCALL} kept across a restart").startswith("queued: ")
    bot.stop()
    [queued] = outbox(bot)
    assert "kept across a restart" in queued.read_text()

    smtp.start()
    bot.start()

    smtp.wait_for(1)
    bot.wait_for(f"The mail to {ONCALL} (Note: kept across a restart) is delivered now.")
    assert outbox(bot) == []
    assert bot.ask(f"mail {ONCALL} after the restart") == "sent"
    first, second = smtp.wait_for(2)
    assert first.part("text/plain").strip() == "kept across a restart"
    assert second.part("text/plain").strip() == "after the restart"
    assert len(smtp.received) == 2
    assert first.message["Message-ID"] != second.message["Message-ID"]


def test_a_full_outbox_refuses_new_mail(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    bot = with_email(testbot, smtp, certificate, outbox_size=1)

    assert bot.ask(f"mail {ONCALL} first").startswith("queued: ")
    reply = bot.ask(f"mail {ONCALL} second")

    assert reply.startswith("refused: my email outbox is full (1 mails are waiting already)")
    assert len(outbox(bot)) == 1


def test_an_unreadable_queued_mail_is_moved_aside_and_named(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path], logs: Logs
) -> None:
    bot = with_email(testbot, smtp, certificate)
    folder = Path(bot.settings.memory.path).parent / "email-outbox"
    folder.mkdir(parents=True)
    damaged = folder / "00000000000000000001-damaged.json"
    damaged.write_text('{"id": "cut sho')
    smtp.start()

    assert bot.ask(f"mail {ONCALL} still works") == "sent"

    line = logs.wait_for(r"^email: cannot read the queued mail ")
    assert str(damaged) in line
    assert not damaged.exists()
    assert len(list((folder / "damaged").iterdir())) == 1
    assert len(smtp.wait_for(1)) == 1


# --- secrets -------------------------------------------------------------------------------


def test_the_password_never_appears_in_logs_or_replies(
    testbot: TestBot, smtp: SmtpServer, certificate: tuple[Path, Path], logs: Logs
) -> None:
    smtp.login = (USER, "another-password")
    bot = with_email(testbot, smtp, certificate)
    smtp.start()

    refused = bot.ask(f"mail {ONCALL} with the wrong password")
    smtp.login = (USER, PASSWORD)
    sent = bot.ask(f"mail {ONCALL} with the right one")

    assert refused.startswith("refused: the mail server refused it (535 ")
    assert sent == "sent"
    smtp.wait_for(1)
    bot.stop()
    assert PASSWORD not in logs.text()
    assert PASSWORD not in refused + sent
    assert logs.wait_for(r"^email: delivered ")
    for file in Path(bot.settings.memory.path).parent.rglob("*"):
        if file.is_file():
            assert PASSWORD.encode() not in file.read_bytes(), file


# --- the input's options, and sending to an input that is not there --------------------------


def test_sending_through_an_input_that_is_not_running_says_so(testbot: TestBot) -> None:
    reply = testbot.ask(f"health report to {ONCALL}")

    assert reply == (
        f"I could not send the health report to {ONCALL}: the email input is not started "
        "here (running: testing); add it to bot.inputs."
    )


def test_sending_through_an_input_that_does_not_exist_says_so(testbot: TestBot) -> None:
    @command(r"^page$", name="page", usage="page")
    def page(ctx: Context) -> str:
        try:
            ctx.send(input="pager", to="ops", text="wake up")
        except SendRefused as exc:
            return str(exc)
        return "sent"

    testbot.add(page)

    assert testbot.ask("page") == "there is no input called 'pager' (running: testing)"
