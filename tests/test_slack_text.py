"""Text between Slack's wire format and commands: escaping, mentions, splitting, buttons."""

from __future__ import annotations

import pytest

from actors.inputs.slack_outbox import offered_answers
from actors.inputs.slack_text import (
    MAX_BUTTON_VALUE,
    MAX_BUTTONS,
    answer_block_owner,
    from_slack,
    question_blocks,
    split_reply,
    strip_mention,
    text_from_blocks,
    to_slack,
)
from commands.dialogs import Choice, Confirm
from core.event import Event, EventType

ASKED = Event(type=EventType.TEXT, sender="U0ALICE01", to="harken", data="rota", input="slack")


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


def test_the_answers_a_dialog_step_offers_are_read_from_the_replys_meta() -> None:
    # The contract between the dialog's questions and the buttons Slack shows: the
    # runner puts the answers a question offers in `meta["choices"]` (tests/test_runner.py).
    choice = Choice("rota", "Which rota?", ["ops", "db", "Network ops"])
    question = ASKED.reply(choice.ask({}), choices=choice.labels())
    assert offered_answers(question) == ("ops", "db", "Network ops")
    confirm = ASKED.reply(Confirm("ok", "Save it?").ask({}), choices=["yes", "no"])
    assert offered_answers(confirm) == ("yes", "no")


def test_a_reply_without_usable_choices_offers_none() -> None:
    # What a reply's text lists is no offer: only the meta is.
    assert offered_answers(ASKED.reply("Which one? (a / b)")) == ()
    assert offered_answers(ASKED.reply("Save it? (yes/no)")) == ()
    for choices in (
        ["only"],
        [str(i) for i in range(MAX_BUTTONS + 1)],
        ["a", ""],
        ["a", "x" * (MAX_BUTTON_VALUE + 1)],
        ["a", 2],
        "ab",
    ):
        assert offered_answers(ASKED.reply("Which one?", choices=choices)) == (), choices


def test_a_question_is_laid_out_as_a_section_and_a_button_per_answer() -> None:
    long = "x" * 100
    blocks = question_blocks("Which? (a / " + long + ")", ("a", long), "U0ALICE01", "17.5")
    section, actions = blocks
    assert section == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Which? (a / " + long + ")"},
    }
    assert answer_block_owner(actions["block_id"]) == ("U0ALICE01", "17.5")
    assert [b["value"] for b in actions["elements"]] == ["a", long]
    assert len(actions["elements"][1]["text"]["text"]) == 75
    assert len({b["action_id"] for b in actions["elements"]}) == 2


def test_a_block_id_that_is_not_a_questions_has_no_owner() -> None:
    assert answer_block_owner("harken-answer:U0ALICE01:") == ("U0ALICE01", "")
    for block_id in (None, 7, "", "actions1", "harken-answer:", "harken-answer::17.5", "other:U1:"):
        assert answer_block_owner(block_id) is None


def test_text_is_read_from_rich_text_blocks() -> None:
    section = {
        "type": "rich_text_section",
        "elements": [
            {"type": "text", "text": "echo "},
            {"type": "user", "user_id": "U0BOB0001"},
            {"type": "link", "url": "https://example.org"},
        ],
    }
    assert text_from_blocks([{"type": "rich_text", "elements": [section]}]) == (
        "echo <@U0BOB0001>https://example.org"
    )
    assert text_from_blocks("not blocks") == ""
