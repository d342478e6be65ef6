"""What became of an item put up to be claimed (`actors.claims.ClaimQueue.put`).

Apart from `actors/claims.py` so that the inputs can read an outcome in every process:
that module needs the database driver, an extra that a process without a cluster may
not have.
"""

from __future__ import annotations

import enum

__all__ = ["Claim"]


class Claim(enum.Enum):
    WON = "won"
    """This process claimed it and handed it over."""
    TAKEN = "taken"
    """Another process had claimed it first (or it came twice in one batch)."""
    FAILED = "failed"
    """The claim could not be made (the database away): no process may have it."""
