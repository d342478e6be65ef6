"""Taking secrets out of the process environment once the settings hold them.

Runbooks run as Harken's children, with its user id, so they can read Harken's own
environment from /proc/<pid>/environ. Removing a variable from `os.environ` takes it
out of what Python and later child processes see, but not out of that file: the kernel
shows the block it wrote when the process started, and unsetenv leaves it in place. So
on Linux the values are also overwritten there, through /proc/self/mem (which a process
may always write for itself). Elsewhere there is no such file and `os.environ` is all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

_ENV_START_FIELD = 50
"""Field of /proc/<pid>/stat with the address of the start-up environment (proc(5));
the next one is where it ends."""


def forget(names: Iterable[str]) -> None:
    """Remove these variables from the environment, and their values from /proc."""
    present = [name for name in names if name in os.environ]
    for name in present:
        os.environ.pop(name)
    if present and Path("/proc/self/mem").exists():
        try:
            _blank_startup_values(present)
        except (OSError, ValueError, IndexError) as exc:
            logger.warning(
                "could not blank the secrets in /proc/%d/environ (%s); children running as "
                "the same user can read them there",
                os.getpid(),
                exc,
            )


def _blank_startup_values(names: list[str]) -> None:
    stat = Path("/proc/self/stat").read_bytes()
    # Fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rindex(b")") + 2 :].split()
    first = 3
    start = int(fields[_ENV_START_FIELD - first])
    end = int(fields[_ENV_START_FIELD + 1 - first])
    prefixes = tuple(name.encode() + b"=" for name in names)
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        block = mem.read(end - start)
        offset = 0
        for entry in block.split(b"\0"):
            if entry.startswith(prefixes):
                name_length = entry.index(b"=") + 1
                mem.seek(start + offset + name_length)
                mem.write(b"\0" * (len(entry) - name_length))
            offset += len(entry) + 1
