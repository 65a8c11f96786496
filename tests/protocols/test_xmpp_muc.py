"""The pure parts of purplegw/protocols/xmpp/muc.py (the rest runs against Prosody: tests/e2e)."""

from __future__ import annotations

from defusedxml.ElementTree import fromstring

from purplegw.protocols.xmpp.muc import join_error, next_nick, stamp, statuses


def test_nicks_tried_after_a_conflict() -> None:
    assert [next_nick("alice", n) for n in (1, 2, 3)] == ["alice_", "alice2", "alice3"]


def test_status_codes_of_a_muc_presence() -> None:
    xml = fromstring(
        "<presence xmlns='jabber:client'><x xmlns='http://jabber.org/protocol/muc#user'>"
        "<item affiliation='none' role='participant'/><status code='110'/><status code='201'/>"
        "</x></presence>"
    )
    assert statuses(xml) == {"110", "201"}
    assert statuses(fromstring("<presence xmlns='jabber:client'/>")) == set()


def test_refused_joins_carry_the_status_and_the_servers_text() -> None:
    xml = fromstring(
        "<presence xmlns='jabber:client' type='error'><error type='auth'>"
        "<registration-required xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>Members only</text>"
        "</error></presence>"
    )
    error = join_error(xml, "registration-required")
    assert error.status_hint == 403
    assert str(error) == "members-only room (registration-required: Members only)"
    assert join_error(xml, "forbidden").status_hint == 403
    assert "banned" in str(join_error(xml, "forbidden"))
    assert join_error(xml, "item-not-found").status_hint == 404
    assert join_error(xml, "conflict").status_hint == 409
    assert join_error(xml, "undefined-condition").status_hint == 403


def test_history_since_is_an_xep_0082_utc_stamp() -> None:
    assert stamp(0.0) == "1970-01-01T00:00:00Z"
