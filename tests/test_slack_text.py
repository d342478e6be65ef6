"""Text between Slack's wire format and commands: escaping, mentions, splitting."""

from __future__ import annotations

import pytest

from actors.inputs.slack_text import from_slack, split_reply, strip_mention, to_slack


def test_from_slack_undoes_escaping_and_unwraps_links() -> None:
    assert from_slack("echo a &lt;b&gt; &amp;amp; c") == "echo a <b> &amp; c"
    assert from_slack("check <https://example.org/x?a=1|example.org>") == (
        "check https://example.org/x?a=1"
    )
    assert from_slack("mail <mailto:ops@example.org>") == "mail mailto:ops@example.org"


def test_from_slack_keeps_mentions_and_channels_as_markup() -> None:
    assert from_slack("page <@U012AB3CD> in <#C024BE7LR|ops>") == (
        "page <@U012AB3CD> in <#C024BE7LR|ops>"
    )


def test_to_slack_escapes_text_but_keeps_entities() -> None:
    assert to_slack("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert to_slack("on call: <@U012AB3CD>, see <#C024BE7LR> <!here>") == (
        "on call: <@U012AB3CD>, see <#C024BE7LR> <!here>"
    )
    assert to_slack("<b>bold</b>") == "&lt;b&gt;bold&lt;/b&gt;"


def test_a_leading_mention_is_stripped_and_one_further_in_is_removed() -> None:
    assert strip_mention("<@UBOT> ping", "UBOT") == "ping"
    assert strip_mention("  <@UBOT>: echo hi", "UBOT") == "echo hi"
    assert strip_mention("<@UBOT>", "UBOT") == ""
    assert strip_mention("please ping <@UBOT> now", "UBOT") == "please ping now"
    assert strip_mention("<@UOTHER> ping", "UBOT") is None
    assert strip_mention("ping", "UBOT") is None


def test_split_reply_keeps_short_text_whole() -> None:
    assert split_reply("pong") == ["pong"]
    assert split_reply("") == [""]


def test_split_reply_cuts_at_line_breaks_and_loses_nothing() -> None:
    lines = [f"line {i:04d} " + "x" * 50 for i in range(400)]
    text = "\n".join(lines)
    parts = split_reply(text, 1000)
    assert all(len(p) <= 1000 for p in parts)
    assert "\n".join(parts) == text
    assert all(p.startswith("line ") for p in parts)


def test_split_reply_cuts_a_huge_word_exactly_at_the_limit() -> None:
    text = "y" * 10_001
    parts = split_reply(text, 1000)
    assert [len(p) for p in parts] == [1000] * 10 + [1]
    assert "".join(parts) == text


def test_split_reply_never_cuts_an_escape_in_two() -> None:
    text = to_slack("&" * 3000)
    parts = split_reply(text, 998)
    assert all(len(p) <= 998 for p in parts)
    assert all(p.endswith("&amp;") for p in parts)
    assert "".join(parts) == text


def test_split_reply_refuses_a_silly_limit() -> None:
    with pytest.raises(ValueError, match="at least"):
        split_reply("text", 3)
