"""Text between Slack's wire format and what commands see.

Slack escapes `&`, `<` and `>` in message text and wraps entities in angle brackets:
`<@U123>` (a person), `<#C123|ops>` (a channel), `<!here>` (a broadcast),
`<https://example.org|example.org>` (a link). Commands should match on what the person
typed, so `from_slack` undoes the escaping and unwraps links; mentions, channels and
broadcasts keep their markup, so a command can store `<@U123>` and a reply shows it as
a mention again. `to_slack` escapes a reply, leaving those entities intact.

Slack cuts a message's text at 40,000 characters and advises at most 4,000 per message;
`split_reply` cuts long replies into parts under a limit, at line breaks where it can,
so nothing is ever truncated silently.
"""

from __future__ import annotations

import re

MAX_REPLY_CHARS = 3900
"""Characters of (escaped) text per message: under the 4,000 Slack advises."""

# An entity Slack keeps in angle brackets: a person, a channel, a broadcast.
_ENTITY = re.compile(r"<([@#!][^<>\s]*)>")
# A link Slack made from a URL someone typed: <url> or <url|label>.
_LINK = re.compile(r"<((?:https?|mailto|tel|ftp):[^<>|\s]*)(?:\|[^<>]*)?>")
_MENTION_AT_START = re.compile(r"^\s*<@([A-Z0-9]+)(?:\|[^>]*)?>[\s,:]*")


def from_slack(text: str) -> str:
    """What the person typed: links unwrapped, `&amp;`, `&lt;`, `&gt;` undone."""
    # Most messages have neither markup nor escapes: skip the regex and the copies
    # (this runs for every message, on the thread all Slack traffic goes through).
    if "<" in text:
        text = _LINK.sub(r"\1", text)
    if "&" not in text:
        return text
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def to_slack(text: str) -> str:
    """A reply as Slack wants it: `&`, `<`, `>` escaped, entities kept as markup."""
    if "<" not in text and ">" not in text and "&" not in text:
        return text  # nothing to escape and no entity: the common case, for free
    out: list[str] = []
    last = 0
    for match in _ENTITY.finditer(text):
        out.append(_escape(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape(text[last:]))
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def strip_mention(text: str, user_id: str) -> str | None:
    """The text after a leading mention of `user_id` (`<@UBOT> ping` -> `ping`).

    None when the text does not start with that mention. A mention further in
    (`can you ping <@UBOT>`) also addresses the bot: it is removed where it stands.
    """
    match = _MENTION_AT_START.match(text)
    if match and match.group(1) == user_id:
        return text[match.end() :].strip()
    token = f"<@{user_id}>"
    if token in text:
        return " ".join(text.replace(token, " ").split())
    return None


def split_reply(text: str, limit: int = MAX_REPLY_CHARS) -> list[str]:
    """Cut `text` into parts of at most `limit` characters, losing nothing.

    Cuts at the last line break before the limit, else the last space, else exactly at
    the limit (a 10,000-character word is still delivered, in pieces). Never cuts an
    escape such as `&amp;` in two.
    """
    if limit < 16:
        raise ValueError("limit must be at least 16 characters")
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = window.rfind("\n")
        if cut < limit // 2:
            space = window.rfind(" ")
            cut = space if space >= limit // 2 else limit
        amp = window.rfind("&", max(0, cut - 5), cut)
        if amp != -1 and ";" not in window[amp:cut]:
            cut = amp
        part = rest[:cut]
        rest = rest[cut:]
        # The separator we cut at belongs to neither part.
        if rest[:1] in ("\n", " "):
            rest = rest[1:]
        parts.append(part)
    if rest or not parts:
        parts.append(rest)
    return parts
