"""The commands layer loads without the actor system (ARCHITECTURE.md, "Layers").

Each check runs in a fresh interpreter, so that modules other tests imported do not
hide an import: `commands/` (and `core/` under it) must never import `actors/`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

NO_ACTORS = (
    "import sys; "
    "loaded = sorted(m for m in sys.modules if m == 'actors' or m.startswith('actors.')); "
    "assert not loaded, loaded"
)


@pytest.mark.parametrize(
    "imports",
    [
        "import commands.base",
        "import core.context, core.event, core.jobs, core.status, core.timefmt",
        # Every built-in command module, as the bot loads them.
        "from commands.loader import load_commands; load_commands(use_entry_points=False)",
        "from harken import command, Context, MemoryView, Event, dialog, parse_when",
    ],
)
def test_the_command_layer_imports_no_actor_module(imports: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"{imports}; {NO_ACTORS}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
