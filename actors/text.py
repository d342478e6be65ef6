"""Making text safe to match on and to show.

Text from people (and replies built from what services return) can carry control
characters and Unicode bidirectional overrides: they can hide text, disguise it, or
drive a terminal. Harken removes them on the way in and again on the way out.
"""

from __future__ import annotations

# C0 controls except tab and newline, DEL, C1 controls, and the Unicode bidirectional
# embeddings, overrides and isolates that can make text read differently than it is.
_UNSAFE = (
    [c for c in range(0x20) if c not in (0x09, 0x0A)]
    + list(range(0x7F, 0xA0))
    + list(range(0x202A, 0x202F))
    + list(range(0x2066, 0x206A))
)
_UNSAFE_TABLE: dict[int, int | None] = dict.fromkeys(_UNSAFE)
_UNSAFE_TABLE[0x0D] = 0x0A  # a carriage return is a line break, not something to drop


def clean_text(text: str) -> str:
    """Remove characters that can hide or disguise text; keep tabs and line breaks."""
    return text.translate(_UNSAFE_TABLE)
