"""What reaches a phone's screen: purplegw.protocols.text (examples and properties)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from purplegw.protocols.text import (
    BIDI_CONTROLS,
    for_phone,
    from_phone,
    irc_for_phone,
    strip_irc_formatting,
)

FORBIDDEN = (
    {chr(c) for c in range(0x20) if chr(c) not in "\t\n"}
    | {"\x7f"}
    | {chr(c) for c in range(0x80, 0xA0)}
    | BIDI_CONTROLS
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x02bold\x02 plain", "bold plain"),
        ("\x0304red\x03 and \x0304,12red on blue\x0f!", "red and red on blue!"),
        ("\x03,12comma stays", ",12comma stays"),  # no foreground: not a colour
        ("\x031234", "34"),  # two digits at most
        ("\x04FF0000hex\x04", "hex"),
        (
            "\x1ditalic\x1d \x1funder\x1f \x16rev\x16 \x1estrike\x1e \x11mono\x11",
            "italic under rev strike mono",
        ),
        ("\x0399", ""),
    ],
)
def test_irc_formatting_is_stripped(raw: str, clean: str) -> None:
    assert irc_for_phone(raw) == clean


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[2J\x1b[Hclear", "clear"),
        ("\x1b]0;pwned title\x07after", "after"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x9b31mC1 CSI", "C1 CSI"),
        ("bell\x07\x07 nul\x00 bs\x08 del\x7f", "bell nul bs del"),
        ("a\r\nb\rc\nd\te", "a\nb\nc\nd\te"),
        ("\x1bcreset", "reset"),
        ("unterminated \x1b[31", "unterminated "),
        ("abc\u202edcba\u202c", "abcdcba"),
        ("\u2066isolate\u2069 \u200fmark", "isolate \u200fmark"),
        ("héllo ✓ 😀 שלום", "héllo ✓ 😀 שלום"),
    ],
)
def test_escapes_controls_and_bidi_are_removed(raw: str, clean: str) -> None:
    assert for_phone(raw) == clean
    assert from_phone(raw) == clean


def test_from_phone_removes_ctcp_delimiters() -> None:
    # A phone user quoting "\x01ACTION ...\x01" must not send a CTCP.
    assert from_phone("\x01VERSION\x01") == "VERSION"


@given(st.text())
def test_nothing_forbidden_survives(text: str) -> None:
    for fn in (for_phone, irc_for_phone, from_phone):
        out = fn(text)
        assert not FORBIDDEN.intersection(out)


@given(st.text())
def test_idempotent(text: str) -> None:
    for fn in (for_phone, irc_for_phone, from_phone):
        once = fn(text)
        assert fn(once) == once


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs"))))
def test_printable_text_passes_unchanged(text: str) -> None:
    assert for_phone(text) == text
    assert irc_for_phone(text) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_only_removes_never_adds(text: str) -> None:
    # Every output character comes from the input, in order (LF may come from CR).
    out = irc_for_phone(text)
    source = iter(text.replace("\r\n", "\n").replace("\r", "\n"))
    assert all(any(ch == got for got in source) for ch in out)
    assert all(unicodedata.category(ch) != "Cc" or ch in "\t\n" for ch in out)


@given(st.text(), st.sampled_from(["\x02", "\x0f", "\x1d", "\x1f", "\x16", "\x1e", "\x11"]))
def test_formatting_codes_anywhere_are_stripped(text: str, code: str) -> None:
    assert code not in strip_irc_formatting(code + text + code)
