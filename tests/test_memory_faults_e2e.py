"""Faults of the memory store, end to end through the `harken` command (a subprocess).

A damaged owner file or journal stops `harken` at start with exit 2 and one line
naming the file and `harken check --repair`; the repair moves it aside and says what is
lost; Harken then starts. While running, an owner file that became unreadable is an
error reply, never "I don't know", and a memory directory deleted under the bot makes
every later write answer "I can't save right now", with an ERROR in the log. The cases
at the store level, and the fuzz, are in test_memory_faults.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.cli import ShellSession, harken

pytestmark = pytest.mark.e2e

REPLY_TIMEOUT = 30.0


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[Callable[[str], ShellSession]]:
    started: list[ShellSession] = []

    def start(user: str) -> ShellSession:
        log = tmp_path / "harken.log"
        session = ShellSession("--user", user, "--log-file", str(log), cwd=tmp_path)
        started.append(session)
        return session

    yield start
    for session in started:
        if session.process.poll() is None:
            session.kill()


def memory_dir(cwd: Path) -> Path:
    return cwd / "var" / "memory"


def owner_file(cwd: Path, owner: str) -> Path:
    [path] = [
        path
        for path in (memory_dir(cwd) / "owners").glob("*/*.json")
        if json.dumps(owner).encode() in path.read_bytes()
    ]
    return path


def newest_segment(cwd: Path) -> Path:
    return [p for p in sorted(memory_dir(cwd).glob("journal-*.log")) if p.stat().st_size][-1]


def assert_refused_naming(done: subprocess.CompletedProcess[bytes], path: Path) -> None:
    """Exit 2 and one line: `harken: ...`, naming the file and how to proceed."""
    assert done.returncode == 2, done.stderr.decode()
    assert done.stdout == b""
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("harken: ")
    assert str(path) in line
    assert "harken check --repair" in line


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 2)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _garbage, _empty])
def test_a_damaged_owner_file_stops_harken_until_it_is_repaired(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    harken("shell", "--user", "ann", stdin=b"remember pager is 555-0100\n", cwd=tmp_path)
    harken("shell", "--user", "bob", stdin=b"remember desk is 4F\n", cwd=tmp_path)
    path = owner_file(tmp_path, "shell:ann")
    damage(path)

    refused = harken("shell", "--user", "bob", stdin=b"recall desk\n", cwd=tmp_path)
    assert_refused_naming(refused, path)

    repaired = harken("check", "--repair", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr.decode()
    report = repaired.stdout.decode()
    assert f"owners/{path.parent.name}/{path.name}: " in report
    assert "damaged" in report
    assert not path.exists()
    assert list((memory_dir(tmp_path) / "damaged").glob(f"*/owners/*/{path.name}"))

    bob = harken("shell", "--user", "bob", stdin=b"recall desk\n", cwd=tmp_path)
    assert bob.returncode == 0
    assert bob.stdout == b"desk is 4F\n"
    ann = harken("shell", "--user", "ann", stdin=b"recall pager\n", cwd=tmp_path)
    assert ann.stdout.startswith(b"I don't know pager.")  # lost, and the repair said so


def test_a_flipped_byte_in_the_journal_stops_harken_until_it_is_repaired(
    tmp_path: Path, sessions: Callable[[str], ShellSession]
) -> None:
    ann = sessions("ann")
    for n in range(1, 4):
        reply = ann.say(f"remember k{n} is value-{n}")
        assert reply == f"OK, I'll remember that k{n} is value-{n}."
    ann.kill()  # the three writes are in the journal only
    segment = newest_segment(tmp_path)
    data = bytearray(segment.read_bytes())
    data[data.index(b"value-1")] ^= 0x01
    segment.write_bytes(bytes(data))

    refused = harken("shell", "--user", "ann", stdin=b"recall k3\n", cwd=tmp_path)
    assert_refused_naming(refused, segment)
    assert segment.read_bytes() == bytes(data)  # kept as it was, not deleted

    repaired = harken("check", "--repair", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr.decode()
    report = repaired.stdout.decode()
    assert f"{segment.name}: " in report
    assert "put user shell:ann k1" in report  # what was lost
    assert "2 after it" in report  # the intact records after the damage were kept

    after = harken("shell", "--user", "ann", stdin=b"recall k2\nrecall k3\n", cwd=tmp_path)
    assert after.stdout == b"k2 is value-2\nk3 is value-3\n"


def test_a_torn_end_of_the_journal_is_ignored_and_every_acknowledged_write_kept(
    tmp_path: Path, sessions: Callable[[str], ShellSession]
) -> None:
    ann = sessions("ann")
    assert ann.say("remember k1 is value-1") == "OK, I'll remember that k1 is value-1."
    ann.kill()
    segment = newest_segment(tmp_path)
    with segment.open("ab") as file:
        file.write(b'0badf00d ["put","user","shell:ann","k2","val')  # a write cut short
    done = harken("shell", "--user", "ann", stdin=b"recall k1\n", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"k1 is value-1\n"
    assert list((memory_dir(tmp_path) / "damaged").glob(f"*/{segment.name}"))


def test_an_owner_file_unreadable_while_running_is_an_error_not_unknown(
    tmp_path: Path, sessions: Callable[[str], ShellSession]
) -> None:
    harken("shell", "--user", "ann", stdin=b"remember pager is 555-0100\n", cwd=tmp_path)
    ann = sessions("ann")
    assert ann.say("ping") == "pong"  # started: every owner file was checked
    _empty(owner_file(tmp_path, "shell:ann"))  # ann's file is read when first needed
    recall = ann.say("recall pager")
    assert recall.startswith(
        "Sorry, I can't use my memory right now: a file of my memory store is damaged"
    )
    assert "harken check --repair" in recall
    forget = ann.say("forget pager")
    assert forget.startswith("Sorry, I can't save right now: a file of my memory store")
    assert ann.say("memory").startswith("Sorry, I can't use my memory right now")
    ann.stop()


def test_a_memory_directory_deleted_while_running_stops_writes_loudly(
    tmp_path: Path, sessions: Callable[[str], ShellSession]
) -> None:
    ann = sessions("ann")
    assert ann.say("remember a is 1") == "OK, I'll remember that a is 1."
    shutil.rmtree(memory_dir(tmp_path))
    reply = ann.say("remember b is 2")
    assert reply.startswith(
        "Sorry, I can't save right now: the files of my memory store were deleted while I "
        "was running"
    )
    assert ann.say("remember c is 3").startswith("Sorry, I can't save right now")
    assert ann.say("recall a") == "a is 1"  # what it holds in memory is still true
    ann.stop()
    log = (tmp_path / "harken.log").read_text()
    assert [line for line in log.splitlines() if " ERROR " in line and "was deleted" in line]
    assert not (memory_dir(tmp_path) / "owners").exists()  # nothing written into the void
