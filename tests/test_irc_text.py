"""IRC text: formatting codes stripped on the way in, replies split into lines on the way out."""

from __future__ import annotations

import pytest

from actors.inputs.irc_text import split_lines, strip_formatting


def test_colour_and_format_codes_go_with_their_numbers() -> None:
    assert strip_formatting("\x0304,01harken\x03: \x02ping\x02\x0f") == "harken: ping"
    assert strip_formatting("\x034red\x03 \x1ditalic\x1d \x1funder\x1f \x16rev") == (
        "red italic under rev"
    )
    assert strip_formatting("\x04FF0000,00FF00hex\x04 x") == "hex x"
    # A colour code without numbers just ends the colour; the digits after a comma
    # with no number before it are text.
    assert strip_formatting("\x03,5 left") == ",5 left"


def test_each_line_of_text_is_an_irc_line_and_empty_ones_are_skipped() -> None:
    assert split_lines("one\n\ntwo\r\nthree  ", 400) == ["one", "two", "three"]
    assert split_lines("pong", 400, "alice: ") == ["alice: pong"]
    assert split_lines("\n \n", 400) == []


def test_long_lines_split_at_the_byte_limit_never_inside_a_character() -> None:
    text = "é" * 300  # 600 bytes, no spaces
    lines = split_lines(text, 400, "alice: ")
    assert all(len(line.encode()) <= 400 for line in lines)
    assert "".join(line.removeprefix("alice: ") for line in lines) == text
    # 393 bytes of room: 196 whole characters (392 bytes), never half of the 197th.
    assert [len(line.encode()) for line in lines] == [7 + 392, 7 + 600 - 392]

    emoji = "😀" * 150  # 4 bytes each: a cut at 393 would land inside one
    lines = split_lines(emoji, 400, "bob: ")
    assert all(len(line.encode()) <= 400 for line in lines)
    assert "".join(line.removeprefix("bob: ") for line in lines) == emoji


def test_long_lines_split_at_a_space_when_there_is_one() -> None:
    words = " ".join(["word"] * 200)
    lines = split_lines(words, 100)
    assert all(len(line.encode()) <= 100 for line in lines)
    assert all(not line.endswith(" ") and not line.startswith(" ") for line in lines)
    assert " ".join(lines) == words


def test_nothing_that_could_break_or_forge_a_line_is_sent() -> None:
    lines = split_lines("a\x00b\rc\x01VERSION\x01\x02bold\tend", 400)
    assert lines == ["abcVERSIONbold    end"]


def test_a_prefix_that_leaves_no_room_is_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        split_lines("x", 20, "a-very-long-nick-indeed: ")
