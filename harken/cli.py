"""The `harken` command line: run, shell, check.

    harken run [--inputs shell,slack]     start the configured inputs
    harken shell [--user NAME]            chat in the terminal (or pipe a script in)
    harken check                          validate the config and show what is in effect
    harken check --repair                 move damaged memory store files aside, say what is lost

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
from actors.system import BotSystem, StartupError, freeze_startup_objects
from commands.loader import load_commands
from config import ConfigError, InputSettings, Settings, load_settings, render_settings
from memory.repair import repair_command

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="config file (default: the shipped one)")
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    common.add_argument("--log-file", metavar="PATH", help="log to this file instead of stderr")
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

    check = sub.add_parser("check", parents=[common], help="validate the config and print it")
    check.add_argument(
        "--repair",
        action="store_true",
        help="move damaged memory store files into its damaged/ folder, say what is lost",
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
        # Log lines would tear through the chat; keep them in a file next to memory.
        target = str(Path(settings.memory.path).parent / "harken.log")
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
    print(render_settings(settings))
    for name in settings.unknown_env:
        print(f"warning: {name} matches no setting and is ignored", file=sys.stderr)
    loaded = load_commands(settings.bot.command_dirs)
    print(f"\n# {len(loaded.registry)} commands: {', '.join(sorted(loaded.registry.names()))}")
    for problem in loaded.problems:
        print(f"error: command not loaded: {problem}", file=sys.stderr)
    return EXIT_CONFIG if loaded.problems else 0


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
    if args.action == "check" and args.repair:
        return repair_command(settings.memory.path)
    if args.action == "check":
        return _check(settings)
    return _run(settings, args)
