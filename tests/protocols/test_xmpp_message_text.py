"""The XHTML-IM text walker on hostile markup: deep, wide, and in order."""

from __future__ import annotations

import logging
import sys
from xml.etree import ElementTree as ET

import pytest
from slixmpp.xmlstream import StanzaBase

from purplegw.protocols.xmpp import log_redaction
from purplegw.protocols.xmpp.message_text import MAX_DEPTH, message_text, xhtml_to_text

# Every document here is written by the tests themselves.
parse = ET.fromstring

IM = "http://jabber.org/protocol/xhtml-im"
XHTML = "http://www.w3.org/1999/xhtml"


def nested_xhtml_message(depth: int, tag: str = "span", inner: str = "deep text") -> str:
    """An XHTML-only <message/> whose body nests ``depth`` elements (built as a string:
    serializing a tree that deep would itself recurse)."""
    return (
        f"<message xmlns='jabber:client' type='chat'><html xmlns='{IM}'>"
        f"<body xmlns='{XHTML}'>before "
        + f"<{tag}>" * depth
        + inner
        + f"</{tag}> tail" * depth
        + " after</body></html></message>"
    )


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH + 1, 5_000, 50_000])
def test_deep_nesting_is_read_without_recursion(depth: int) -> None:
    message = parse(nested_xhtml_message(depth))  # expat builds it iteratively
    text = message_text(message)
    assert text == "before deep text" + " tail" * depth + " after"


def test_walk_runs_far_below_the_recursion_limit() -> None:
    # A recursive walker needs one frame per level; this one needs none.
    message = parse(nested_xhtml_message(2_000, tag="div"))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        text = message_text(message)
    finally:
        sys.setrecursionlimit(limit)
    assert text is not None
    assert text.startswith("before")
    assert text.endswith("after")
    assert "deep text" in text


def test_blocks_break_lines_only_down_to_the_cap() -> None:
    shallow = parse(nested_xhtml_message(3, tag="p", inner="x"))
    assert message_text(shallow) == "before x\ntail\ntail\ntail after"
    deep = parse(nested_xhtml_message(MAX_DEPTH + 50, tag="p", inner="x"))
    lines = message_text(deep).split("\n")  # type: ignore[union-attr]
    # Levels below the cap are one run of text, not fifty more lines.
    assert len(lines) <= MAX_DEPTH + 2
    assert "".join(lines).replace(" ", "") == "beforex" + "tail" * (MAX_DEPTH + 50) + "after"


def test_order_tails_and_skipped_elements() -> None:
    body = parse(
        f"<body xmlns='{XHTML}'>a<b>b<i>c</i>d</b>e<script>evil()</script>f"
        "<style>p{}</style><br/>g<ul><li>h</li><li>i<span>j</span></li></ul>k</body>"
    )
    assert xhtml_to_text(body) == "abcdef\ngh\nij\nk"  # <ul> is not a block, <li> is


def test_wide_markup_and_empty_markup() -> None:
    wide = parse(f"<body xmlns='{XHTML}'>" + "<span>w</span>" * 20_000 + "</body>")
    assert xhtml_to_text(wide) == "w" * 20_000
    empty = parse(
        f"<message xmlns='jabber:client'><html xmlns='{IM}'>"
        f"<body xmlns='{XHTML}'>"
        + "<span>" * 3_000
        + "</span>" * 3_000
        + "</body></html></message>"
    )
    assert message_text(empty) is None


def test_stanza_log_survives_deep_nesting(caplog: pytest.LogCaptureFixture) -> None:
    # slixmpp logs "RECV: %s" with its recursive serializer; logging re-raises
    # RecursionError, which would end the stream the stanza came on.
    log_redaction.install()
    stanza = StanzaBase(xml=parse(nested_xhtml_message(5_000)))
    stream_logger = logging.getLogger(log_redaction.STREAM_LOGGER)
    with caplog.at_level(logging.DEBUG, logger=log_redaction.STREAM_LOGGER):
        stream_logger.debug("RECV: %s", stanza)
    assert caplog.messages == ["RECV: (stanza nested too deeply to log)"]
