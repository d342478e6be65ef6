"""The `harken` command line: run, shell, check.

    harken run [--inputs shell,slack]     start the configured inputs
    harken shell [--user NAME]            chat in the terminal (or pipe a script in)
    harken check                          validate the config and show what is in effect

Settings come from the config file (`--config`, else the shipped default), then
`HARKEN_*` environment variables, then these flags. A config problem prints one line
and exits 2.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from actors.inputs.base import Outstanding
from actors.inputs.shell import ShellInput, ShellSession
from actors.services import Services
from actors.supervision import Handle
from actors.system import BotSystem, StartupError, freeze_startup_objects, installed_inputs
from commands.loader import load_commands
from config import ConfigError, InputSettings, Settings, load_settings, render_settings
from config.validate import access_problems, input_problems, load_problems, path_problems

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
    sub = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="start the bot on the configured inputs")
    run.add_argument("--inputs", metavar="LIST", help="comma-separated inputs, e.g. shell,slack")
    _shell_flags(run)

    shell = sub.add_parser("shell", parents=[common], help="chat with Harken in this terminal")
    _shell_flags(shell)

    sub.add_parser("check", parents=[common], help="validate the config and print it")
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


def _setup_logging(settings: Settings, interactive_shell: bool) -> str:
    """Configure logging; return where logs go, for the person at the terminal."""
    target = settings.log.file
    if not target and interactive_shell:
        # Log lines would tear through the chat; keep them in a file in the data directory.
        target = str(Path(settings.bot.data_dir) / "harken.log")
    handler: logging.Handler
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(target, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log.level)
    return target or "stderr"


def _check(settings: Settings) -> int:
    """Print the settings as a reusable config file; exit 2 if `run` would refuse them.

    Each problem is one line on stderr naming the key. The command loader's log lines
    say the same about files that fail to load, so they are not shown as well.
    """
    logging.getLogger().addHandler(logging.NullHandler())
    loaded = load_commands(settings.bot.command_dirs)
    problems = [
        # The shell is wired by this command line; the other inputs are entry points.
        *input_problems(settings, {"shell", *installed_inputs()}),
        *load_problems(loaded.problems),
        *access_problems(settings, loaded.registry.names()),
        *path_problems(settings),
    ]
    print(render_settings(settings))
    print(f"# {len(loaded.registry)} commands: {', '.join(sorted(loaded.registry.names()))}")
    for name in settings.unknown_env:
        print(f"warning: {name} matches no setting and is ignored", file=sys.stderr)
    for problem in problems:
        print(str(problem), file=sys.stderr)
    return EXIT_CONFIG if problems else 0


def _run(settings: Settings, args: argparse.Namespace) -> int:
    with_shell = "shell" in settings.bot.inputs
    interactive = with_shell and sys.stdin.isatty()
    log_target = _setup_logging(settings, interactive)
    outstanding = Outstanding()
    session_actor: list[ShellInput] = []

    def make_shell(input_settings: InputSettings, services: Services, router: Handle) -> Any:
        actor = ShellInput(
            input_settings,
            services,
            router,
            out=sys.stdout,
            outstanding=outstanding,
            interactive=interactive,
        )
        session_actor[:] = [actor]
        return actor

    system = BotSystem(settings, inputs={"shell": make_shell})
    try:
        system.start()
    except StartupError as exc:
        print(f"harken: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    freeze_startup_objects()

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if with_shell:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        if not with_shell:
            signal.signal(signal.SIGINT, on_signal)
            stop.wait()
            return 0
        assert system.router is not None
        session = ShellSession(system.router, outstanding, user=args.user or getpass.getuser())
        if session_actor:
            session.actor = session_actor[0]
        if interactive:
            print(f"(logs: {log_target})")
            return session.run_interactive(sys.stdout)
        return session.run_script(
            sys.stdin.buffer, linger=args.linger, reply_timeout=args.reply_timeout
        )
    except KeyboardInterrupt:
        return 0
    finally:
        system.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    if args.action == "check":
        return _check(settings)
    return _run(settings, args)
