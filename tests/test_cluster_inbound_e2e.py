"""Three `harken run` processes on one PostgreSQL answer each message once.

Each process is a real `harken run` with a data directory of its own, the PostgreSQL
memory store and `[cluster] enabled` on one database of the session's private server.
Slack: the fake Slack keeps the three Socket Mode connections open and sends each
envelope to one of them at random, some to two (duplicate delivery), or to the one a
test names. XMPP: the three processes log in to one account of a private Prosody and
join one room. Loads are sized so that the file runs in about a minute on two cores:
1,000 messages from 100 users; 600 writes around a restart of PostgreSQL; 20 room
messages. Times are printed, not asserted.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from support.cli import Background
from support.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack, Post
from support.irc import IrcPerson, PrivateNgircd, require_ngircd
from support.postgres import PrivatePostgres
from support.xmpp import PrivateProsody, XmppPerson, require_prosody

pytestmark = pytest.mark.e2e

LEASE = 3.0
RENEW = 1.0
NAMES = ("one", "two", "three")


class Process:
    """One `harken run` of the cluster, with its health endpoint on a free port."""

    def __init__(self, directory: Path, name: str, env: dict[str, str], *args: str) -> None:
        directory.mkdir()
        self.name = name
        self.run = Background(
            "run",
            *args,
            cwd=directory,
            env={
                **env,
                "HARKEN_CLUSTER_ENABLED": "true",
                "HARKEN_CLUSTER_NAME": name,
                "HARKEN_CLUSTER_LEASE_SECONDS": str(LEASE),
                "HARKEN_CLUSTER_RENEW_SECONDS": str(RENEW),
                "HARKEN_HEALTH_ENABLED": "true",
                "HARKEN_HEALTH_PORT": "0",
            },
        )

    def log(self) -> str:
        return self.run.err.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """The sum of a counter's samples on this process's /metrics."""
        found = re.search(r"health endpoint on http://127\.0\.0\.1:(\d+)/", self.log())
        assert found, "no health endpoint in the log"
        url = f"http://127.0.0.1:{found.group(1)}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in started:
            process.run.kill()


def wait_for(ready: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)  # polls other processes' state (metrics, tables)


def sum_metric(processes: list[Process], name: str) -> float:
    return sum(process.metric(name) for process in processes if process.run.proc.poll() is None)


# --- Slack ---------------------------------------------------------------------------------


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(connections=3, duplicate_rate=0.1, seed=7) as fake:
        yield fake


def start_slack_cluster(
    tmp_path: Path, slack: FakeSlack, pg_url: str, processes: list[Process]
) -> list[Process]:
    env = {
        "HARKEN_SLACK_BOT_TOKEN": BOT_TOKEN,
        "HARKEN_SLACK_APP_TOKEN": APP_TOKEN,
        "HARKEN_MEMORY_BACKEND": "postgresql",
        "HARKEN_MEMORY_URL": pg_url,
    }
    for count, name in enumerate(NAMES, 1):
        # One at a time, so connection number n is process n.
        process = Process(
            tmp_path / name,
            name,
            env,
            "--inputs",
            "slack",
            "--set",
            f"inputs.slack.api_url={slack.api_url}",
        )
        processes.append(process)
        slack.wait_open(count, timeout=60)
    return processes


def user(n: int) -> tuple[str, str]:
    """(user id, their direct message channel) of person n."""
    return f"U{n:07d}X", f"D{n:07d}X"


def replies_to(slack: FakeSlack, channel: str, after: int) -> list[Post]:
    return slack.posts_to(channel)[after:]


def test_each_of_1000_messages_from_100_people_is_answered_once_by_3_processes(
    tmp_path: Path, slack: FakeSlack, pg_url: str, processes: list[Process]
) -> None:
    start_slack_cluster(tmp_path, slack, pg_url, processes)
    started = time.monotonic()
    for n in range(1000):
        person, channel = user(n % 100)
        slack.say(f"echo m{n}", user=person, channel=channel)
    slack.wait_posts(1000, timeout=120)
    print(f"1,000 messages answered in {time.monotonic() - started:.2f} s")
    # Every duplicate delivery lost its claim somewhere: no answer is still to come.
    duplicates = sum(len(to) - 1 for to in slack.delivered.values())
    assert duplicates > 0
    wait_for(
        lambda: sum_metric(processes, "harken_claim_conflicts_total") == duplicates,
        f"{duplicates} claim conflicts",
    )
    answers = Counter(post.text for post in slack.posts)
    assert answers == Counter(f"m{n}" for n in range(1000))
    for post in slack.posts:
        assert post.channel == user(int(post.text[1:]) % 100)[1]
    with psycopg.connect(pg_url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT process, count(*) FROM harken_event_claims GROUP BY process"
        ).fetchall()
    shares = dict(rows)
    print(f"answered per process: {shares}; {duplicates} envelopes delivered twice")
    assert sorted(shares) == sorted(NAMES)
    assert sum(shares.values()) == 1000


def test_a_dialog_continues_on_other_processes_after_kill_9(
    tmp_path: Path, slack: FakeSlack, pg_url: str, processes: list[Process]
) -> None:
    one, two, three = start_slack_cluster(tmp_path, slack, pg_url, processes)
    person, channel = user(1)

    def say(text: str, to: int) -> str:
        before = len(slack.posts_to(channel))
        slack.say(text, user=person, channel=channel, to=to)
        slack.wait_post(
            lambda _: len(slack.posts_to(channel)) > before, timeout=30, what=f"reply to {text}"
        )
        return slack.posts_to(channel)[before].text

    assert say("profile", to=1).startswith("What should I call you?")
    one.run.kill()  # kill -9: the process that holds the dialog's start
    slack.wait_open(2, timeout=30)
    assert say("Ann", to=2).startswith("What is your time zone?")
    assert say("Europe/Paris", to=3).startswith("Thanks, Ann. I'll give you times in Europe/Paris")
    # Each process already has a conversation for this person: a copy of the dialog
    # that another process moves on must not be taken for the truth.
    assert say("profile", to=2).startswith("What should I call you?")
    assert say("Bob", to=3).startswith("What is your time zone?")
    assert say("UTC", to=2).startswith("Thanks, Bob. I'll give you times in UTC")
    assert two.run.stop() == 0
    assert three.run.stop() == 0


def test_postgres_restarted_mid_load_loses_no_acknowledged_write(
    tmp_path: Path,
    slack: FakeSlack,
    postgres: PrivatePostgres,
    pg_url: str,
    processes: list[Process],
) -> None:
    start_slack_cluster(tmp_path, slack, pg_url, processes)
    sent: dict[str, tuple[str, str]] = {}  # key -> (person, value)
    done = threading.Event()

    def load() -> None:
        for n in range(600):
            person, channel = user(n % 100)
            sent[f"k{n}"] = (person, f"v{n}")
            slack.say(f"remember k{n} is v{n}", user=person, channel=channel)
            time.sleep(0.005)  # a steady load, about 200 messages a second
        done.set()

    sender = threading.Thread(target=load)
    sender.start()
    slack.wait_posts(100, timeout=60)
    restarted = time.monotonic()
    postgres.restart()
    print(f"PostgreSQL down and up again in {time.monotonic() - restarted:.2f} s")
    sender.join(60)
    assert done.is_set()
    # Replies resume: a new message from everyone is answered, each with OK.
    resumed = time.monotonic()
    for n in range(100):
        person, channel = user(n)
        key = f"after{n}"
        sent[key] = (person, f"w{n}")
        deadline = time.monotonic() + 60
        while True:  # a message said while a process still reconnects may go unanswered
            before = len(slack.posts_to(channel))
            slack.say(f"remember {key} is w{n}", user=person, channel=channel)
            try:
                slack.wait_post(
                    lambda _, c=channel, b=before: len(slack.posts_to(c)) > b,  # type: ignore[misc]
                    timeout=5,
                )
            except TimeoutError:
                assert time.monotonic() < deadline, "replies did not resume"
                continue
            if slack.posts_to(channel)[before].text.startswith("OK"):
                break
    print(f"every process answered again {time.monotonic() - resumed:.2f} s after the restart")
    oks = [
        found.group(1)
        for post in slack.posts
        if (found := re.match(r"OK, I'll remember that (\S+) is (\S+)\.$", post.text))
    ]
    assert len(oks) >= 200
    with psycopg.connect(pg_url, autocommit=True) as connection:
        stored = {
            (str(owner), str(key))
            for owner, key in connection.execute(
                "SELECT owner, key FROM harken_memory WHERE namespace = 'user'"
            ).fetchall()
        }
    lost = [key for key in oks if (f"slack:{sent[key][0]}", key) not in stored]
    assert lost == [], f"{len(lost)} writes answered OK are not in the database"
    others = [post.text for post in slack.posts if not post.text.startswith("OK")]
    print(f"{len(oks)} OK, {len(others)} refusals, {len(sent) - len(oks)} not OK in all")
    assert all("can't save right now" in text for text in others), others[:5]


# --- XMPP ----------------------------------------------------------------------------------

BOT_PASSWORD = "bot-secret-7f3a"


@pytest.fixture
def prosody(tmp_path: Path) -> Iterator[PrivateProsody]:
    require_prosody()
    server = PrivateProsody(tmp_path / "prosody")
    server.register("bot", BOT_PASSWORD)
    server.register("alice", "alice-pw")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_an_xmpp_room_is_answered_once_and_by_another_process_when_its_owner_dies(
    tmp_path: Path, prosody: PrivateProsody, pg_url: str, processes: list[Process]
) -> None:
    room = prosody.room("ops")
    env = {
        "HARKEN_XMPP_JID": prosody.jid("bot"),
        "HARKEN_XMPP_PASSWORD": BOT_PASSWORD,
        "HARKEN_XMPP_HOST": "127.0.0.1",
        "HARKEN_XMPP_PORT": str(prosody.port),
        "HARKEN_XMPP_ALLOW_PLAINTEXT": "true",
        "HARKEN_XMPP_ROOMS": room,
        "HARKEN_MEMORY_BACKEND": "postgresql",
        "HARKEN_MEMORY_URL": pg_url,
    }
    for name in NAMES:
        processes.append(Process(tmp_path / name, name, env, "--inputs", "xmpp"))
    for process in processes:
        process.run.wait_stderr("in rooms " + room, timeout=60)
    with psycopg.connect(pg_url, autocommit=True) as connection:

        def owner() -> str | None:
            row = connection.execute(
                "SELECT process FROM harken_room_leases WHERE room = %s AND expires_at > now()",
                (f"xmpp:{room}",),
            ).fetchone()
            return str(row[0]) if row else None

        wait_for(lambda: owner() is not None, "owner of the room")
        first = owner()
    with XmppPerson(prosody.jid("alice"), "alice-pw", prosody.port) as alice:
        alice.join(room, "alice")
        for n in range(20):
            alice.say(room, f"harken: echo r{n}", kind="groupchat")
        heard = [
            alice.expect(lambda h: h.type == "groupchat" and h.body.startswith("alice: r")).body
            for _ in range(20)
        ]
        assert sorted(heard) == sorted(f"alice: r{n}" for n in range(20))
        # Prosody gives what is sent to the bare JID to every process: one answers.
        for n in range(5):
            assert alice.ask(prosody.jid("bot"), f"echo d{n}") == f"d{n}"
        assert sum_metric(processes, "harken_messages_in_total") == 25
        owner_process = next(p for p in processes if p.name == first)
        survivors = [p for p in processes if p.name != first]
        before = sum_metric(survivors, "harken_messages_in_total")  # direct ones, maybe
        owner_process.run.kill()  # kill -9
        killed = time.monotonic()
        deadline = killed + 30
        answered = None
        tries = 0
        while answered is None:  # what is said before the lease ends goes unanswered
            assert time.monotonic() < deadline, "no other process answered in the room"
            tries += 1
            alice.say(room, f"harken: echo after{tries}", kind="groupchat")
            try:
                answered = alice.expect(
                    lambda h: h.type == "groupchat" and h.body.startswith("alice: after"),
                    timeout=1,
                )
            except TimeoutError:
                continue
        print(f"room answered again {time.monotonic() - killed:.2f} s after kill -9")
        # The others were silent until the lease passed; then one took the room.
        assert sum_metric(survivors, "harken_messages_in_total") == before + 1
        for process in survivors:
            assert process.run.stop() == 0


# --- IRC -----------------------------------------------------------------------------------


def test_an_irc_channel_is_answered_once_and_handed_over_on_a_clean_stop(
    tmp_path: Path, pg_url: str, processes: list[Process]
) -> None:
    require_ngircd()
    with PrivateNgircd(tmp_path / "ngircd") as server:
        env = {
            "HARKEN_IRC_HOST": "127.0.0.1",
            "HARKEN_IRC_PORT": str(server.port),
            "HARKEN_IRC_TLS": "false",
            "HARKEN_IRC_CHANNELS": "#ops",
            "HARKEN_IRC_LINES_PER_SECOND": "50",
            "HARKEN_MEMORY_BACKEND": "postgresql",
            "HARKEN_MEMORY_URL": pg_url,
        }
        for name in NAMES[:2]:
            processes.append(Process(tmp_path / name, name, env, "--inputs", "irc"))
            # One at a time: the first is `harken`, the second `harken_`.
            processes[-1].run.wait_stderr("IRC: online", timeout=60)
        wait_for(
            lambda: any("now answers in irc:#ops" in p.log() for p in processes),
            "an owner of #ops",
        )
        owner = next(p for p in processes if "now answers in irc:#ops" in p.log())
        other = next(p for p in processes if p is not owner)
        with IrcPerson("alice", server.port) as alice:
            alice.join("#ops")
            for n in range(10):
                alice.say("#ops", f"harken: echo c{n}")
            heard = [
                alice.expect(lambda h: h.command == "PRIVMSG" and h.text.startswith("alice: c"))
                for _ in range(10)
            ]
            assert sorted(h.text for h in heard) == sorted(f"alice: c{n}" for n in range(10))
            assert len({h.nick for h in heard}) == 1
            assert sum_metric(processes, "harken_messages_in_total") == 10
            assert owner.run.stop() == 0  # hands #ops over at once
            other.run.wait_stderr("now answers in irc:#ops", timeout=30)
            # Addressed by the configured nick, which the survivor does not hold.
            alice.say("#ops", "harken: echo after")
            reply = alice.expect(
                lambda h: h.command == "PRIVMSG" and h.text == "alice: after", timeout=15
            )
            assert reply.nick == "harken_"
        assert other.run.stop() == 0
