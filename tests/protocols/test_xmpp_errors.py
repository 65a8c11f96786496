"""What XMPP can carry, and the SIP <-> stanza error maps (pure, purplegw.protocols.xmpp.errors)."""

from __future__ import annotations

import pytest

from purplegw.protocols import base
from purplegw.protocols.irc import Adapter as IrcAdapter
from purplegw.protocols.matrix import Adapter as MatrixAdapter
from purplegw.protocols.xmpp import Adapter as XmppAdapter
from purplegw.protocols.xmpp import errors


@pytest.mark.parametrize(
    ("char", "described"),
    [
        ("\x00", "control character U+0000"),
        ("\x01", "control character U+0001"),
        ("\x1b", "control character U+001B"),
        ("\x0b", "control character U+000B"),
        ("\ud800", "lone surrogate U+D800"),
        ("\ufffe", "noncharacter U+FFFE"),
        ("\uffff", "noncharacter U+FFFF"),
    ],
)
def test_code_points_xml_forbids_are_refused_with_488_naming_them(char: str, described: str):
    status, reason = XmppAdapter().unsendable(f"before {char} after")
    assert status == 488
    assert described in reason


@pytest.mark.parametrize(
    "text",
    [
        "tab\there, lines\nand\r\nbreaks",
        "emoji \U0001f600 and ünïcode",
        "\u200e mark",
        "\x85 NEL",
        "<b>&amp;</b> 'quoted' \"text\"",
        "",
    ],
)
def test_everything_xml_allows_passes(text: str):
    assert XmppAdapter().unsendable(text) is None


def test_size_counts_the_escaped_bytes():
    limit = errors.DEFAULT_MAX_TEXT_BYTES
    assert XmppAdapter().unsendable("a" * limit) is None
    assert XmppAdapter().unsendable("a" * (limit + 1))[0] == 413
    # "&" is written as "&amp;": a fifth of the limit in ampersands fills it.
    assert errors.unsendable("&" * (limit // 5)) is None
    assert errors.unsendable("&" * (limit // 5 + 1))[0] == 413
    assert errors.unsendable("é" * (limit // 2 + 1))[0] == 413  # UTF-8 bytes, not characters


def test_the_size_cap_is_the_adapter_default():
    assert XmppAdapter().get_default_config()["max_text_bytes"] == errors.DEFAULT_MAX_TEXT_BYTES


def test_default_adapter_refuses_nul_only():
    class Plain(base.Adapter):
        name = "plain"

    assert Plain().unsendable("a\0b") == (488, "NUL characters cannot be sent")
    assert Plain().unsendable("a\x1bb" + "x" * 100_000) is None


def test_irc_refuses_what_send_message_refuses():
    # send_message raises UnacceptableContentError for NUL and cleans the
    # other controls (CR/LF become line breaks); long text is split.
    assert IrcAdapter().unsendable("a\0b")[0] == 488
    assert IrcAdapter().unsendable("a\r\nb\x1b[31m" + "x" * 100_000) is None


def test_matrix_refuses_text_over_the_event_size():
    assert MatrixAdapter().unsendable("x" * 60_000) is None
    status, reason = MatrixAdapter().unsendable("x" * 65_536)
    assert status == 413
    assert "65536" in reason
    # JSON escaping counts: each control character is six bytes in the event.
    assert MatrixAdapter().unsendable("\x01" * 11_000)[0] == 413
    assert MatrixAdapter().unsendable("a\0b")[0] == 488


@pytest.mark.parametrize(
    ("status", "condition", "etype"),
    [
        (404, "item-not-found", "cancel"),
        (410, "recipient-unavailable", "wait"),
        (403, "forbidden", "auth"),
        (413, "not-acceptable", "modify"),
        (488, "not-acceptable", "modify"),
        (429, "resource-constraint", "wait"),
        (503, "resource-constraint", "wait"),
        (errors.POLICY_STATUS, "policy-violation", "modify"),
        (400, "not-acceptable", "modify"),
        (500, "service-unavailable", "cancel"),
    ],
)
def test_sip_status_to_stanza_error(status: int, condition: str, etype: str):
    assert errors.condition_for_status(status) == (condition, etype)


@pytest.mark.parametrize(
    ("condition", "status"),
    [
        ("service-unavailable", 404),
        ("item-not-found", 404),
        ("forbidden", 403),
        ("policy-violation", 403),
        ("not-acceptable", 488),
        ("resource-constraint", 486),
        ("remote-server-timeout", 504),
        ("undefined-condition", 400),
    ],
)
def test_stanza_errors_are_permanent_sip_statuses(condition: str, status: int):
    assert errors.status_for_condition(condition) == status
    # never one the SIP side would retry
    assert errors.status_for_condition(condition) not in (408, 480, 503)
