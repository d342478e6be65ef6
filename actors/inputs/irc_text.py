"""Text between IRC lines and Harken: formatting codes in, split lines out.

IRC clients colour and format text with in-band control codes (mIRC's: bold `\\x02`,
colour `\\x03` with up to two numbers, hex colour `\\x04`, reset `\\x0f`, ...). They are
removed, with their numbers, before anything matches on what a person said: the router
would drop the control characters but keep the digits (`\\x0304ping` would read `04ping`).

A server relays at most 512 bytes per line, its own `:nick!user@host PRIVMSG #chan :`
included, and cuts the rest. A reply therefore goes out as one IRC line per line of
text, each split at `max_bytes` UTF-8 bytes, at a space where there is one in the second
half of the part, and never inside a character.
"""

from __future__ import annotations

import re

_FORMATTING = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?"  # colour, with foreground and background
    r"|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"  # hex colour
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"  # bold, reset, monospace, reverse, italic, ...
)
_NOT_SENT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""Never sent: NUL, CR and LF would end or break the line; \\x01 would make a reply
read as CTCP; formatting codes are not Harken's to send either."""


def strip_formatting(text: str) -> str:
    """The text without mIRC colour and formatting codes."""
    return _FORMATTING.sub("", text)


def split_lines(text: str, max_bytes: int, prefix: str = "") -> list[str]:
    """IRC lines for `text`: one per line of text (empty ones skipped), each at most
    `max_bytes` UTF-8 bytes including `prefix`, which starts every line."""
    budget = max_bytes - len(prefix.encode("utf-8"))
    if budget < 16:
        raise ValueError(f"prefix {prefix!r} leaves no room in {max_bytes} bytes")
    lines: list[str] = []
    for whole in _NOT_SENT.sub("", text.replace("\t", "    ")).split("\n"):
        rest = whole.rstrip()
        while rest:
            part = _head(rest, budget)
            lines.append(prefix + part.rstrip())
            rest = rest[len(part) :].lstrip()
    return lines


def _head(line: str, budget: int) -> str:
    """The longest start of `line` within `budget` bytes, ending at a space if one is
    in its second half, and never inside a character."""
    data = line.encode("utf-8")
    if len(data) <= budget:
        return line
    cut = budget
    while cut > 0 and (data[cut] & 0xC0) == 0x80:  # a continuation byte: back off
        cut -= 1
    head = data[:cut].decode("utf-8")
    space = head.rfind(" ")
    if space >= len(head) // 2:
        return head[: space + 1]
    return head
