"""The XMPP presence table (presence_map.py, docs/presence-mapping.md) on the corpus and by rule."""

from __future__ import annotations

import csv
from xml.etree import ElementTree as ET

import pytest

from purplegw.presence import Presence, Status
from purplegw.protocols.xmpp.message_text import message_text, xhtml_to_text
from purplegw.protocols.xmpp.presence_map import (
    XmppPresence,
    activities_text,
    parse_presence,
    presence_from_stanza,
    presence_from_xmpp,
    presence_to_xmpp,
)
from tests.kit.corpus import corpus_dir

XMPP_CORPUS = corpus_dir() / "xmpp"

# The documented table, written out independently of the module's dicts.
EXPECTED_STATUS = {
    "-": Status.AVAILABLE,
    "chat": Status.CHAT,
    "away": Status.AWAY,
    "xa": Status.EXTENDED_AWAY,
    "dnd": Status.BUSY,
}


def manifest_rows(stanza: str) -> list[dict[str, str]]:
    with (XMPP_CORPUS / "manifest.tsv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["stanza"] == stanza]
    assert rows, f"no {stanza} rows in the corpus manifest"
    return rows


def load(name: str) -> ET.Element:
    return ET.parse(XMPP_CORPUS / name).getroot()  # noqa: S314 - parses the gateway's own output in a test


@pytest.mark.parametrize("row", manifest_rows("presence"), ids=lambda r: r["file"])
def test_corpus_presence_maps_as_documented(row):
    element = load(row["file"])
    parsed = parse_presence(element)
    assert parsed.type == (None if row["type"] == "-" else row["type"])
    assert parsed.show == (None if row["show"] == "-" else row["show"])
    # the manifest lists every <status/> joined by " | "; the note is the
    # default-language one (the first, in every corpus stanza)
    expected_note = None if row["status_text"] == "-" else row["status_text"].split(" | ")[0]
    assert parsed.status == expected_note
    presence = presence_from_stanza(element)
    if row["type"] == "unavailable":
        assert presence == Presence(Status.OFFLINE, note=expected_note)
    elif row["type"] == "-":
        assert presence.status is EXPECTED_STATUS[row["show"]]
        assert presence.note == expected_note
        assert presence.activities == ()
        # and back: the show value survives the round trip
        back = presence_to_xmpp(presence)
        assert back.show == (None if row["show"] == "-" else row["show"])
        assert back.status == expected_note
    else:  # subscription management carries no availability
        assert row["type"] == "subscribe"
        assert parsed.status == "Hi, Juliet told me to add you to my buddy list."


@pytest.mark.parametrize("row", manifest_rows("message"), ids=lambda r: r["file"])
def test_corpus_message_body(row):
    assert message_text(load(row["file"])) == row["body"]


def test_idle_and_priority_are_read():
    parsed = parse_presence(load("xep0319_auto_away_idle.xml"))
    assert parsed.idle
    assert parsed.show == "away"
    assert presence_from_stanza(load("xep0319_auto_away_idle.xml")) == Presence(
        Status.AWAY, idle=True
    )
    assert parse_presence(load("rfc6121_s4.7.2.3_priority.xml")).priority == 1


def test_unknown_show_and_blank_status():
    assert presence_from_xmpp(None, "sleeping", "  ") == Presence(Status.AVAILABLE)
    assert presence_from_xmpp("unavailable", "dnd", "") == Presence(Status.OFFLINE)


def test_status_language_choice():
    stanza = ET.fromstring(  # noqa: S314 - parses the gateway's own output in a test
        "<presence xmlns='jabber:client' xml:lang='en'>"
        "<status xml:lang='cs'>Cesky</status><status>English</status></presence>"
    )
    assert parse_presence(stanza).status == "English"
    only_tagged = ET.fromstring("<presence><status xml:lang='cs'>Cesky</status></presence>")  # noqa: S314 - parses the gateway's own output in a test
    assert parse_presence(only_tagged).status == "Cesky"


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        (Presence(Status.AVAILABLE), XmppPresence(None, None, None, 5)),
        (Presence(Status.CHAT, note="talk"), XmppPresence(None, "chat", "talk", 5)),
        (Presence(Status.AWAY, note="brb"), XmppPresence(None, "away", "brb", 5)),
        (Presence(Status.EXTENDED_AWAY), XmppPresence(None, "xa", None, 5)),
        (Presence(Status.BUSY, note="Busy"), XmppPresence(None, "dnd", "Busy", 5)),
        (
            Presence(Status.BUSY, activities=("on-the-phone",)),
            XmppPresence(None, "dnd", "On the phone", 5),
        ),
        (
            Presence(Status.BUSY, note="call", activities=("meeting",)),
            XmppPresence(None, "dnd", "call", 5),
        ),
        (Presence(Status.AVAILABLE, idle=True), XmppPresence(None, "away", None, 5, idle=True)),
        (Presence(Status.BUSY, idle=True), XmppPresence(None, "dnd", None, 5, idle=True)),
        (Presence(Status.OFFLINE, note="gone"), XmppPresence("unavailable", None, "gone", 0)),
    ],
)
def test_outgoing_table(presence, expected):
    assert presence_to_xmpp(presence, priority=5) == expected


def test_activities_text():
    assert activities_text(("on-the-phone", "meeting")) == "On the phone, meeting"
    assert activities_text(("unknown",)) is None
    assert activities_text(()) is None


def test_xhtml_only_and_body_preference():
    ns = "xmlns='http://jabber.org/protocol/xhtml-im'"
    xhtml = (
        f"<message xmlns='jabber:client'><html {ns}><body xmlns='http://www.w3.org/1999/xhtml'>"
        "<p>Hi <b>there</b>,</p><p>second&#160;line<br/>third</p>"
        "<script>x()</script></body></html></message>"
    )
    assert message_text(ET.fromstring(xhtml)) == "Hi there,\nsecond\xa0line\nthird"  # noqa: S314 - parses the gateway's own output in a test
    both = xhtml.replace("<html", "<body>plain wins</body><html")
    assert message_text(ET.fromstring(both)) == "plain wins"  # noqa: S314 - parses the gateway's own output in a test
    assert message_text(ET.fromstring("<message><body>  </body></message>")) is None  # noqa: S314 - parses the gateway's own output in a test
    html = ET.fromstring(  # noqa: S314 - parses the gateway's own output in a test
        f"<html {ns}><body xmlns='http://www.w3.org/1999/xhtml'>a &amp; b</body></html>"
    )
    assert xhtml_to_text(html) == "a & b"
