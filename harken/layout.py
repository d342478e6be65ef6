"""Checks that the top-level packages Harken ships beside `harken` are its own.

Harken installs `core`, `actors`, `commands`, `memory` and `config` as top-level
packages. A module of the same name that comes earlier on `sys.path` is imported in
their place: a `config.py` in the current directory under `python -m harken`, a
directory on `PYTHONPATH`, another distribution's package. Harken would then fail with an error
about some missing name, far from the cause. `shadowing()` finds where each of these
names would be imported from, without importing it, and names the first file that is
not Harken's. It uses only the standard library, so it can run before anything else.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGES = ("core", "actors", "commands", "memory", "config")
"""Harken's top-level packages besides `harken`, installed beside it."""


def shadowing() -> str | None:
    """None if each of `PACKAGES` is Harken's own, else one line saying which is not."""
    home = Path(__file__).resolve().parent.parent
    for name in PACKAGES:
        expected = home / name
        found = _where(name)
        if found is None:
            return f"Harken's `{name}` package is missing (it belongs in {expected})"
        if found != expected and found != expected / "__init__.py":
            return (
                f"{found} is imported as `{name}` instead of Harken's own package "
                f"({expected}): rename or move it, or start Harken from another directory"
            )
    return None


def _where(name: str) -> Path | None:
    """The file (or, for a namespace package, the directory) `import name` would load."""
    module = sys.modules.get(name)
    try:
        spec = module.__spec__ if module is not None else importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.origin is not None and spec.has_location:
        return Path(spec.origin).resolve()
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]).resolve() if locations else None
