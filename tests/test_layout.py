"""Harken's top-level packages (`core`, `actors`, `commands`, `memory`, `config`) are its own;
what `harken` exports is imported when first used, after checking that."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import harken
from harken.layout import PACKAGES, shadowing


def test_every_exported_name_is_listed_and_importable() -> None:
    assert sorted(harken.__all__) == sorted(harken._EXPORTS)
    for name in harken.__all__:
        assert getattr(harken, name) is not None


def test_the_packages_of_this_checkout_are_harkens_own() -> None:
    assert shadowing() is None
    home = Path(harken.__file__).resolve().parent.parent
    for name in PACKAGES:
        assert (home / name / "__init__.py").is_file()


def test_a_command_file_importing_harken_is_told_which_file_shadows(tmp_path: Path) -> None:
    (tmp_path / "commands.py").write_text("")
    done = subprocess.run(
        [sys.executable, "-c", "from harken import command"],
        capture_output=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.decode().strip().splitlines()[-1]
    assert last.startswith(f"ImportError: {tmp_path / 'commands.py'} is imported as `commands`")
