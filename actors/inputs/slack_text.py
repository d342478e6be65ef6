"""Text between Slack's wire format and what commands see.

`from_slack` undoes Slack's escaping and unwraps links, so commands match on what the
person typed, while mentions, channels and broadcasts keep their markup; `to_slack`
escapes a reply, leaving those entities intact. `split_reply` cuts long replies at line
breaks where it can, so nothing is truncated silently. `question_blocks` lays out a
question's answers as buttons whose value is the answer's text and whose block id
names the person the question is for.
"""

from __future__ import annotations

import re
from typing import Any

MAX_REPLY_CHARS = 3900
"""Characters of (escaped) text per message: under the 4,000 Slack advises."""
MAX_SECTION_CHARS = 3000
"""Characters of text in a Block Kit section, Slack's limit (a question with buttons)."""
MAX_BUTTONS = 25
"""Elements in one actions block, Slack's limit; a question offering more gets none."""
MAX_BUTTON_LABEL = 75
MAX_BUTTON_VALUE = 2000
ANSWER_BLOCK = "harken-answer"
"""Start of the block id of the buttons under a question: `harken-answer:<person>:<thread>`."""

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


def text_from_blocks(blocks: object) -> str:
    """The plain text of a message's rich-text blocks (for messages sent without `text`)."""
    if not isinstance(blocks, list):
        return ""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "text" and isinstance(node.get("text"), str):
                out.append(node["text"])
            elif kind == "user" and isinstance(node.get("user_id"), str):
                out.append(f"<@{node['user_id']}>")
            elif kind == "link" and isinstance(node.get("url"), str):
                out.append(node["url"])
            walk(node.get("elements"))

    walk(blocks)
    return "".join(out).strip()


def question_blocks(text: str, answers: tuple[str, ...], person: str, thread: str) -> list[Any]:
    """Block Kit for a question (`text`, already escaped) with a button per answer."""
    buttons = [
        {
            "type": "button",
            "action_id": f"answer-{index}",
            "text": {"type": "plain_text", "text": _label(answer), "emoji": True},
            "value": answer,
        }
        for index, answer in enumerate(answers)
    ]
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": f"{ANSWER_BLOCK}:{person}:{thread}", "elements": buttons},
    ]


def answered_blocks(text: str, person: str, answer: str) -> list[Any]:
    """The question again (`text`, as posted) with who answered what, without buttons."""
    said = to_slack(answer if len(answer) <= 200 else answer[:200] + "…")
    note = {"type": "mrkdwn", "text": f"<@{person}> answered: {said}"}
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "context", "elements": [note]},
    ]


def answer_block_owner(block_id: object) -> tuple[str, str] | None:
    """(person, thread) from the block id of a question's buttons; None if not one."""
    if not isinstance(block_id, str):
        return None
    prefix, _, rest = block_id.partition(":")
    person, sep, thread = rest.partition(":")
    if prefix != ANSWER_BLOCK or not sep or not person:
        return None
    return person, thread


def _label(answer: str) -> str:
    return answer if len(answer) <= MAX_BUTTON_LABEL else answer[: MAX_BUTTON_LABEL - 1] + "…"
