"""The `harken` command line: run, shell, check, migrate.

    harken run [--inputs shell,slack]     start the configured inputs
    harken shell [--user NAME]            chat in the terminal (or pipe a script in)
    harken check                          validate the config and show what is in effect
    harken --version
    harken check --repair                 move damaged memory store files aside, say what is lost
    harken migrate                        create or update the tables in PostgreSQL

Settings come from the config file (`--config`, else the shipped default), then
`HARKEN_*` environment variables, then these flags. Secrets are read once and then
removed from the process environment, before any runbook can start. A fatal problem at
start-up prints one line starting `harken: ` and exits 2 when the configuration is at
fault, 1 otherwise.

`harken run` stops cleanly on SIGTERM or SIGINT (commands already running finish and
answer first). Without a terminal, SIGHUP reopens the log file (after a rotation). A
shell whose input ends stops only itself when other inputs run.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import queue
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from actors.inputs.base import Outstanding
from actors.inputs.shell import ShellInput, ShellSession
from actors.job_store import migrate_jobs
from actors.runtime import Runtime
from actors.supervision import Handle
from actors.system import BotSystem, StartupError, freeze_startup_objects, installed_inputs
from commands.loader import load_commands
from commands.streams import load_streams, stream_problems
from config import ConfigError, InputSettings, Settings, load_settings, render_settings
from config.loader import secret_env_vars
from config.validate import access_problems, input_problems, load_problems, path_problems
from harken import __version__
from harken.environment import forget
from harken.logs import Logs, setup_logging
from harken.memory_admin import check_memory, migrate_memory
from memory.repair import repair_command

logger = logging.getLogger(__name__)

EXIT_RUNTIME = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="config file (default: the shipped one)")
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    common.add_argument("--log-file", metavar="PATH", help="log to this file instead of stderr")
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where Harken keeps its state: memory, jobs, the shell's log (default: ./var)",
    )
    common.add_argument("--memory-path", metavar="DIR", help="where the memory store lives")
    common.add_argument("--timezone", metavar="ZONE", help="default time zone (IANA name)")
    common.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override any setting by its dotted key, e.g. --set bot.workers=32",
    )

    parser = argparse.ArgumentParser(
        prog="harken", description="Harken, the ChatOps bot that remembers."
    )
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="start the bot on the configured inputs")
    run.add_argument("--inputs", metavar="LIST", help="comma-separated inputs, e.g. shell,slack")
    _shell_flags(run)

    shell = sub.add_parser("shell", parents=[common], help="chat with Harken in this terminal")
    _shell_flags(shell)

    check = sub.add_parser("check", parents=[common], help="validate the config and print it")
    check.add_argument(
        "--repair",
        action="store_true",
        help="move damaged memory store files into its damaged/ folder, say what is lost",
    )
    sub.add_parser(
        "migrate",
        parents=[common],
        help="create or update Harken's tables in PostgreSQL (the postgresql backend)",
    )
    return parser


def _shell_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="NAME", help="speak as NAME (default: the OS user)")
    parser.add_argument(
        "--linger",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="with piped input: keep listening this long after the last reply",
    )
    parser.add_argument(
        "--reply-timeout",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="with piped input: give up waiting for replies after this long (exit 1)",
    )


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides: dict[str, str] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(item, "--set takes KEY=VALUE, e.g. --set bot.workers=32")
        overrides[key.strip()] = value
    flags = {
        "log.level": args.log_level,
        "log.file": args.log_file,
        "bot.data_dir": args.data_dir,
        "memory.path": args.memory_path,
        "bot.timezone": args.timezone,
        "bot.inputs": getattr(args, "inputs", None),
    }
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if args.action == "shell":
        overrides["bot.inputs"] = "shell"
    return overrides


def _check(settings: Settings) -> int:
    """Print the settings as a reusable config file; exit 2 if `run` would refuse them.

    Each problem is one line on stderr naming the key. The command loader's log lines
    say the same about files that fail to load, so they are not shown as well.
    """
    logging.getLogger().addHandler(logging.NullHandler())
    loaded = load_commands(settings.bot.command_dirs)
    streams = load_streams(settings.bot.command_dirs).streams
    problems = [
        # The shell is wired by this command line; the other inputs are entry points.
        *input_problems(settings, {"shell", *installed_inputs()}),
        *load_problems(loaded.problems),
        *access_problems(settings, loaded.registry.names()),
        *stream_problems(settings, streams),
        *path_problems(settings),
        *_cluster_problems(settings),
    ]
    memory_lines, memory_problems = check_memory(settings)
    print(render_settings(settings))
    print(*memory_lines, sep="\n", end="\n" if memory_lines else "")
    print(f"# {len(loaded.registry)} commands: {', '.join(sorted(loaded.registry.names()))}")
    running = [name for name in settings.streams if name in streams]
    print(
        f"# {len(streams)} streams: {', '.join(sorted(streams))}; "
        f"running: {', '.join(running) or 'none (no [streams.<name>] section)'}"
    )
    for name in settings.unknown_env:
        print(f"warning: {name} matches no setting and is ignored", file=sys.stderr)
    for problem in [*problems, *memory_problems]:
        print(f"harken: {problem}", file=sys.stderr)
    return EXIT_CONFIG if problems or memory_problems else 0


def _migrate(settings: Settings) -> int:
    """Create or migrate the schema in PostgreSQL; say what was done."""
    done, problems = migrate_memory(settings)
    if not problems:  # the jobs may be in the same database: one failure, said once
        jobs_done, problems = migrate_jobs(settings)
        done += jobs_done
    print(*done, sep="\n", end="\n" if done else "")
    for problem in problems:
        print(f"harken: {problem}", file=sys.stderr)
    return EXIT_CONFIG if problems else 0


def _cluster_problems(settings: Settings) -> list[str]:
    if not settings.cluster.enabled:
        return []
    try:
        from actors.cluster import cluster_problems  # psycopg: an extra, for clusters only
    except ImportError as exc:
        return [f"cluster.enabled needs psycopg ({exc}): pip install 'harken[postgresql]'"]
    return cluster_problems(settings)


class _Stop(BaseException):
    """Raised in the main thread by a stop signal, to end a blocking read of the shell."""


class _Signals:
    """SIGTERM and SIGINT stop Harken; SIGHUP reopens the log file, or, when a person
    chats at a terminal, stops Harken as the terminal has gone.

    Handlers run on the main thread. They queue what came for `wait_for_stop`, and while
    the main thread may block elsewhere (starting, reading the shell: `interruptible`),
    a stop raises `_Stop` there instead.
    """

    def __init__(self, *, hangup_stops: bool) -> None:
        self.hangup_stops = hangup_stops
        self.received: queue.SimpleQueue[int] = queue.SimpleQueue()  # put() is reentrant
        self.stop_requested = False
        self.interruptible = False
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.put(signum)
        if signum != signal.SIGHUP or self.hangup_stops:
            self.stop_requested = True
            if self.interruptible:
                raise _Stop

    def wait_for_stop(self, logs: Logs) -> None:
        while True:
            signum = self.received.get()
            if signum == signal.SIGHUP and not self.hangup_stops:
                if logs.reopen():
                    logger.info("SIGHUP: log file %s reopened", logs.target)
                continue
            logger.info("%s: stopping", signal.Signals(signum).name)
            return


def _run(settings: Settings, args: argparse.Namespace) -> int:
    with_shell = "shell" in settings.bot.inputs
    others = [name for name in settings.bot.inputs if name != "shell"]
    interactive = with_shell and sys.stdin.isatty()
    # At a terminal, log lines would tear through the chat: keep them in a file.
    default_file = str(Path(settings.bot.data_dir) / "harken.log") if interactive else ""
    try:
        logs = setup_logging(settings.log, default_file=default_file)
    except OSError as exc:
        where = settings.log.file or default_file
        print(
            f"harken: cannot write the log file {where} (log.file): {exc.strerror or exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    outstanding = Outstanding()
    session_actor: list[ShellInput] = []

    def make_shell(input_settings: InputSettings, runtime: Runtime, router: Handle) -> Any:
        actor = ShellInput(
            input_settings,
            runtime,
            router,
            out=sys.stdout,
            outstanding=outstanding,
            interactive=interactive,
        )
        session_actor[:] = [actor]
        return actor

    signals = _Signals(hangup_stops=interactive)
    system = BotSystem(settings, inputs={"shell": make_shell})
    try:
        signals.interruptible = True
        try:
            system.start()
        except StartupError as exc:
            print(f"harken: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        signals.interruptible = False
        freeze_startup_objects()
        code = 0
        if with_shell and not signals.stop_requested:
            assert system.router is not None
            session = ShellSession(system.router, outstanding, user=args.user or getpass.getuser())
            if session_actor:
                session.actor = session_actor[0]
            signals.interruptible = True
            if interactive:
                print(f"(logs: {logs.target})")
                code = session.run_interactive(sys.stdout)
            else:
                code = session.run_script(
                    sys.stdin.buffer, linger=args.linger, reply_timeout=args.reply_timeout
                )
            signals.interruptible = False
            if not others:
                return code
            _shell_closed(others, interactive)
        signals.wait_for_stop(logs)
        return 0
    except _Stop:
        if interactive:
            print()
        return 0
    finally:
        signals.interruptible = False
        system.stop()


def _shell_closed(others: list[str], interactive: bool) -> None:
    """The shell's input ended while other inputs run: they carry on until a signal."""
    names = ", ".join(others)
    logger.info("the shell's input ended; Harken keeps running on %s until stopped", names)
    if interactive:
        print(f"(The shell is closed; Harken keeps running on {names}. Ctrl-C stops it.)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"harken: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    # The settings hold the secrets now; runbooks started later must not find them.
    forget(secret_env_vars(os.environ))
    if args.action == "migrate":
        return _migrate(settings)
    if args.action == "check" and args.repair:
        if settings.memory.backend != "tinydb":
            print(
                "harken: check --repair is for the tinydb memory store; on PostgreSQL, the "
                "error names the damaged row: correct or delete it",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        return repair_command(settings.memory.path)
    if args.action == "check":
        return _check(settings)
    try:
        return _run(settings, args)
    except Exception as exc:
        logger.exception("Harken stopped on an unexpected error")
        print(f"harken: stopped on an unexpected error: {exc!r}", file=sys.stderr)
        return EXIT_RUNTIME
