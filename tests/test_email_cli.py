"""The email input through the `harken` command line: `run` with the shell, and `check`.

The password comes from `HARKEN_EMAIL_PASSWORD` in the child's environment, as in
production; the tests look for it in everything the process printed and logged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import Background, harken
from support.servers import make_certificate
from support.smtp import SmtpServer

pytestmark = pytest.mark.e2e

PASSWORD = "cli-Pa55-kept-out-of-sight"
USER = "harken-mailer"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[SmtpServer, Path]]:
    cert, key = make_certificate(tmp_path)
    with SmtpServer(tls=(cert, key), login=(USER, PASSWORD)) as server:
        yield server, cert


def config(tmp_path: Path, port: int, ca_file: Path, extra: str = "") -> Path:
    path = tmp_path / "harken.toml"
    path.write_text(
        f"""
[inputs.email]
host = "127.0.0.1"
port = {port}
ca_file = "{ca_file}"
username = "{USER}"
from_address = "harken@example.org"
allowed_domains = ["example.org"]
{extra}
""",
        encoding="utf-8",
    )
    return path


def test_a_health_report_asked_at_the_shell_arrives_and_the_password_stays_hidden(
    smtp: tuple[SmtpServer, Path], tmp_path: Path
) -> None:
    server, cert = smtp
    path = config(tmp_path, server.port, cert)
    script = tmp_path / "script.txt"
    script.write_bytes(b"health report to oncall@example.org\nhealth report to x@evil.net\n")
    env = {"HARKEN_EMAIL_PASSWORD": PASSWORD}
    with script.open("rb") as stdin:
        bot = Background(
            "run",
            "--config",
            str(path),
            "--inputs",
            "shell,email",
            cwd=tmp_path,
            env=env,
            stdin=stdin,
        )
    try:
        [got] = server.wait_for(1, timeout=30)
        bot.wait_stderr("the shell's input ended")
        bot.wait_stderr("email: refused a mail to x@evil.net")
    finally:
        code = bot.stop()
    assert code == 0, bot.err.read_text()
    printed = bot.out.read_text()
    assert "Sent the health report to oncall@example.org." in printed
    assert "I could not send the health report to x@evil.net: I may only send mail" in printed
    assert (got.login, got.rcpt_tos) == (USER, ("oncall@example.org",))
    assert len(server.received) == 1
    assert PASSWORD not in printed + bot.err.read_text()


def test_check_shows_the_password_only_as_a_masked_comment(tmp_path: Path) -> None:
    path = config(tmp_path, 587, tmp_path / "ca.pem")
    path.write_text("[bot]\ninputs = ['email']\n" + path.read_text(), encoding="utf-8")

    done = harken(
        "check", "--config", str(path), cwd=tmp_path, env={"HARKEN_EMAIL_PASSWORD": PASSWORD}
    )

    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    assert '# password = "***"  (secret: env HARKEN_EMAIL_PASSWORD only)' in out
    assert PASSWORD not in out + done.stderr.decode()


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ('tls = "none"', 'inputs.email.tls: "none" sends mail and password in clear'),
        ('tls = "smtps"', "inputs.email.tls: must be one of starttls, implicit, none"),
        ("retry_delay = 0.0", "inputs.email.retry_delay: must be > 0"),
    ],
)
def test_run_refuses_unsafe_or_wrong_email_options_with_one_line(
    tmp_path: Path, extra: str, error: str
) -> None:
    path = config(tmp_path, 587, tmp_path / "ca.pem", extra)
    path.write_text(path.read_text().replace('"127.0.0.1"', '"smtp.example.org"'), encoding="utf-8")

    done = harken(
        "run",
        "--config",
        str(path),
        "--inputs",
        "email",
        cwd=tmp_path,
        env={"HARKEN_EMAIL_PASSWORD": PASSWORD},
    )

    err = done.stderr.decode().strip()
    assert done.returncode == 2, err
    assert err.splitlines() == [f"harken: {err.removeprefix('harken: ')}"]
    assert err.startswith(f"harken: {error}")


def test_run_refuses_a_login_without_its_password(tmp_path: Path) -> None:
    path = config(tmp_path, 587, tmp_path / "ca.pem")

    done = harken("run", "--config", str(path), "--inputs", "email", cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.decode().strip() == (
        "harken: HARKEN_EMAIL_PASSWORD is not set: the email input needs the password of "
        f"{USER} in the environment"
    )
