"""End to end: reminders and deferred commands through `harken shell`, across restarts.

Each test runs the real command line as a subprocess in a temporary directory (memory
and the job store under its `./var/`), reads what it prints line by line until the
expected line appears (with a timeout, never a sleep), and stops it as a person would:
SIGTERM, or `kill -9` where that is the point.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.date import DateTrigger
from support.past_jobs import spec, store_job
from support.shell_process import Shell, run, run_logged

from core.jobs import JobKind

pytestmark = pytest.mark.e2e


def test_a_reminder_set_in_the_shell_arrives_while_it_lingers(
    tmp_path: Path, shells: list[Shell]
) -> None:
    shell = Shell(tmp_path, "remind me in 2 seconds to stretch\n", "--linger", "60")
    shells.append(shell)
    assert "OK, I'll remind you on " in shell.expect(r"^OK, I'll remind you")
    assert shell.expect(r"^Reminder for ann") == "Reminder for ann: stretch"
    assert shell.stop() == 0
    assert (tmp_path / "var" / "jobs.sqlite").is_file()


def test_listing_and_cancelling_through_the_shell(tmp_path: Path) -> None:
    out = run(tmp_path, "remind me in 1 hour to rotate keys\nin 2 hours run ping\njobs\n")
    ids = re.findall(r"Job id (\w+):", out)
    assert len(ids) == 2
    assert f"  {ids[0]}  " in out
    assert "rotate keys" in out
    out = run(tmp_path, f"cancel {ids[0]}\nreminders\n")
    assert f"Cancelled job {ids[0]}: reminder `rotate keys`" in out
    assert ids[0] not in out.split("Cancelled")[1].split("\n", 1)[1]
    assert f"  {ids[1]}  " in out


def test_jobs_survive_a_restart_between_scheduling_and_delivery(
    tmp_path: Path, shells: list[Shell]
) -> None:
    out = run(
        tmp_path,
        "remind me in 3 seconds to hydrate\nin 3 seconds run echo deferred after restart\n",
    )
    assert out.count("OK, I'll") == 2
    # A new process, started with nothing to say: it only listens.
    shell = Shell(tmp_path, "", "--linger", "60")
    shells.append(shell)
    assert shell.expect(r"^Reminder for ann").startswith("Reminder for ann: hydrate")
    shell.expect(r"^deferred after restart$")
    assert shell.stop() == 0


def test_jobs_survive_kill_9_between_scheduling_and_delivery(
    tmp_path: Path, shells: list[Shell]
) -> None:
    first = Shell(
        tmp_path,
        "remind me in 3 seconds to survive\nin 3 seconds run echo deferred after kill\n",
        "--linger",
        "60",
    )
    shells.append(first)
    first.expect(r"^OK, I'll remind you")
    first.expect(r"^OK, I'll run `echo deferred after kill`")
    first.kill9()
    assert not any("Reminder for ann" in line for line in first.seen)
    second = Shell(tmp_path, "", "--linger", "60")
    shells.append(second)
    assert second.expect(r"^Reminder for ann").startswith("Reminder for ann: survive")
    second.expect(r"^deferred after kill$")
    assert second.stop() == 0


def test_a_job_due_while_harken_was_down_is_delivered_on_start_up_marked_late(
    tmp_path: Path, shells: list[Shell]
) -> None:
    run(tmp_path, "ping\n")  # creates ./var/ and the job store, as a first start would
    store = tmp_path / "var" / "jobs.sqlite"
    twenty_minutes_ago = datetime.now(UTC) - timedelta(minutes=20)
    job = spec(JobKind.REMIND, "check the certificates", user="ann", input="shell")
    store_job(store, job, DateTrigger(twenty_minutes_ago), twenty_minutes_ago, "late01")
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    job = spec(JobKind.RUN, "echo flush the caches", user="ann", input="shell")
    store_job(store, job, DateTrigger(two_hours_ago), two_hours_ago, "miss01")

    shell = Shell(tmp_path, "", "--linger", "60", "--set", "scheduler.grace_seconds=3600")
    shells.append(shell)
    # Oldest first: the one beyond the grace time, then the late one.
    missed = shell.expect(r"I did not run")
    assert missed.startswith("ann, I did not run `echo flush the caches`")
    assert "(2 h ago while I was not running, which is more than the 1 h I may be late)" in missed
    late = shell.expect(r"check the certificates")
    assert late.startswith("Reminder for ann: check the certificates (late by 20 min")
    assert "while I was not running" in late
    assert shell.stop() == 0
    assert "flush the caches" not in "\n".join(line for line in shell.seen if line != missed)


def test_a_job_store_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the job store's directory should be")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARKEN_")}
    env["HARKEN_SCHEDULER_PATH"] = str(tmp_path / "taken" / "jobs.sqlite")
    done = subprocess.run(
        [sys.executable, "-m", "harken", "shell"],
        input=b"ping\n",
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("harken: cannot open the job store at ")


def test_jobs_due_while_harken_was_down_are_delivered_once_over_short_starts(
    tmp_path: Path,
) -> None:
    out = run(
        tmp_path,
        "remind me in 1 second to dup-reminder\nin 1 second run echo dup-run\n",
    )
    assert out.count("OK, I'll") == 2
    # More that fell due while Harken was down, so the first short start finds them.
    store = tmp_path / "var" / "jobs.sqlite"
    past = datetime.now(UTC) - timedelta(seconds=5)
    for i in range(3):
        job = spec(JobKind.REMIND, f"past-reminder-{i}", user="ann", input="shell")
        store_job(store, job, DateTrigger(past), past, f"rem{i:03}")
        job = spec(JobKind.RUN, f"echo past-run-{i}", user="ann", input="shell")
        store_job(store, job, DateTrigger(past), past, f"run{i:03}")

    # Five short starts: each answers one line and stops at once, while jobs fire. On a
    # loaded machine the first run may itself live past the second its jobs were due in:
    # what it printed counts too.
    printed: list[str] = out.splitlines()
    logged: list[str] = []
    for _ in range(5):
        stdout, stderr = run_logged(tmp_path, "ping\n")
        printed += stdout.splitlines()
        logged.append(stderr)
    # A start that stops a few milliseconds after it is up may stop before a job that fell
    # due fires: the job stays pending, for the next start. One last start stays up until
    # every job has been delivered (waiting for each line, with a timeout).
    expected = [
        *(
            f"Reminder for ann: {t}"
            for t in ("dup-reminder", *(f"past-reminder-{i}" for i in range(3)))
        ),
        *("dup-run", *(f"past-run-{i}" for i in range(3))),
    ]
    last = Shell(tmp_path, "ping\n", "--linger", "60")
    try:
        for line in expected:
            if not any(p == line or p.startswith(f"{line} (late by") for p in printed):
                last.expect(rf"^{re.escape(line)}( \(late by|$)")
    finally:
        last.stop()
        printed += last.printed()
        logged.append("\n".join(last.log))
    reminders = [line for line in printed if line.startswith("Reminder for ann: ")]
    said = sorted(
        line.split(" (late by")[0].removeprefix("Reminder for ann: ") for line in reminders
    )
    assert said == ["dup-reminder", "past-reminder-0", "past-reminder-1", "past-reminder-2"], (
        printed,
        logged,
    )
    ran = sorted(
        line for line in printed if line in ("dup-run", *(f"past-run-{i}" for i in range(3)))
    )
    assert ran == ["dup-run", "past-run-0", "past-run-1", "past-run-2"], printed
    assert run(tmp_path, "jobs\n").startswith("You have no pending")
    assert not [log for log in logged if "Traceback" in log]
