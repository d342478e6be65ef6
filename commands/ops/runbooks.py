"""Runbooks: programs declared in the config, started with validated arguments.

A runbook is an argv list (`[runbooks.<name>] argv`), started directly, never through a
shell, so an argument is one argv element whatever it contains. Each argument must match
its declared pattern as a whole. The program gets Harken's environment without the
`HARKEN_*` variables (secrets stay with Harken), no standard input, its own process
group (so a timeout kills what it started too), and a timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from config.settings import RunbookSettings


class ArgumentRefused(ValueError):
    """The arguments do not fit the runbook; the message is for the person."""


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None
    """None when it was killed for taking too long."""
    output: str
    """Standard output and error, interleaved as written."""
    seconds: float
    timed_out: bool


def bind_arguments(runbook: RunbookSettings, text: str) -> list[str]:
    """The argv to start, from the person's words; raises `ArgumentRefused`."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ArgumentRefused(f"I can't read those arguments: {exc}.") from None
    names = list(runbook.args)
    usage = " ".join(f"<{name}>" for name in names)
    if len(words) != len(names):
        raise ArgumentRefused(
            f"`{runbook.name}` takes {len(names)} argument(s): `run {runbook.name} {usage}`"
            f" (got {len(words)})."
        )
    values = dict(zip(names, words, strict=True))
    for name, value in values.items():
        if not re.fullmatch(runbook.args[name], value):
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise ArgumentRefused(
                f"`{shown}` is not allowed for <{name}> of `{runbook.name}` "
                f"(it must match `{runbook.args[name]}`). Nothing was run."
            )

    def fill(element: str) -> str:
        return re.sub(r"\{([^{}]*)\}", lambda m: values[m.group(1)], element)

    return [fill(element) for element in runbook.argv]


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("HARKEN_")}


def run(
    argv: list[str],
    *,
    timeout: float,
    progress_after: float,
    on_progress: Callable[[], None],
) -> RunResult:
    """Run `argv`; call `on_progress` once if it is still running after `progress_after`."""
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_environment(),
        start_new_session=True,
    )
    first_wait = min(progress_after, timeout)
    try:
        out, _ = process.communicate(timeout=first_wait)
    except subprocess.TimeoutExpired:
        if first_wait < timeout:
            on_progress()
        try:
            out, _ = process.communicate(timeout=max(0.0, timeout - first_wait))
        except subprocess.TimeoutExpired:
            _kill_group(process)
            out, _ = process.communicate()
            return RunResult(None, _decode(out), time.monotonic() - started, True)
    return RunResult(process.returncode, _decode(out), time.monotonic() - started, False)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _decode(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def tail(text: str, *, lines: int, chars: int) -> str:
    """The end of `text`: at most `lines` lines and `chars` characters, marked if cut."""
    kept = text.rstrip("\n").splitlines()
    cut = len(kept) > lines
    kept = kept[-lines:]
    result = "\n".join(kept)
    if len(result) > chars:
        result = result[-chars:]
        cut = True
    return ("[...]\n" if cut else "") + result
