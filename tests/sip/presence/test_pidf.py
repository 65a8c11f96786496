"""parse_pidf / serialize_pidf: safety limits, dialects, tolerances, and the written shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from purplegw.sip.errors import RemoteProtocolError
from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.model import (
    Device,
    DocumentFormat,
    Note,
    Person,
    PidfDocument,
    PidfTuple,
)
from purplegw.sip.presence.pidf import MAX_DEPTH, MAX_PIDF_SIZE, parse_pidf, serialize_pidf

PIDF = "application/pidf+xml"


def doc(inner: str, *, extra_ns: str = "", entity: str = 'entity="sip:alice@example.com"') -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" {extra_ns} {entity}>{inner}</presence>'
    ).encode()


OPEN_TUPLE = '<tuple id="t1"><status><basic>open</basic></status></tuple>'


# --- Rule 1: untrusted input ---------------------------------------------------------------------


def test_billion_laughs_is_refused_not_expanded() -> None:
    levels = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    body = (
        '<?xml version="1.0"?><!DOCTYPE presence [' + "".join(levels) + "]>"
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@example.com">'
        "<tuple id='t'><status><basic>open</basic></status><note>&lol9;</note></tuple></presence>"
    ).encode()
    with pytest.raises(PidfError, match="declares entities") as info:
        parse_pidf(body, PIDF)
    assert info.value.status_hint == 400


def test_quadratic_blowup_is_refused() -> None:
    big = "A" * 30000
    body = (
        f'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY a "{big}">]>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf">' + "&a;" * 1000 + "</presence>"
    ).encode()
    with pytest.raises(PidfError, match="declares entities"):
        parse_pidf(body, PIDF)


def test_external_entity_is_refused() -> None:
    body = (
        b'<?xml version="1.0"?><!DOCTYPE presence [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf"><note>&e;</note></presence>'
    )
    with pytest.raises(PidfError, match="entities or external references"):
        parse_pidf(body, PIDF)


def test_oversized_body_is_refused_with_413() -> None:
    body = doc(OPEN_TUPLE + "<note>" + "x" * MAX_PIDF_SIZE + "</note>")
    with pytest.raises(PidfError, match="exceeds") as info:
        parse_pidf(body, PIDF)
    assert info.value.status_hint == 413
    # The limit is the caller's to choose.
    assert parse_pidf(body, PIDF, max_size=len(body)).basic == "open"


def test_deep_nesting_is_refused() -> None:
    deep = "<x:a>" * (MAX_DEPTH + 1) + "</x:a>" * (MAX_DEPTH + 1)
    body = doc(OPEN_TUPLE + deep, extra_ns='xmlns:x="urn:example:x"')
    with pytest.raises(PidfError, match="deeper than"):
        parse_pidf(body, PIDF)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/dialog-info+xml", "application/sdp"]
)
def test_unsupported_content_type_is_415(content_type: str) -> None:
    with pytest.raises(PidfError, match="Unsupported Media Type") as info:
        parse_pidf(doc(OPEN_TUPLE), content_type)
    assert info.value.status_hint == 415


@pytest.mark.parametrize(
    "content_type",
    [
        "application/pidf+xml",
        "Application/PIDF+XML; charset=UTF-8",
        "application/cpim-pidf+xml",
        "application/lpidf+xml",
        "application/xml",
        "",
        None,
    ],
)
def test_presence_content_types_are_accepted(content_type: str | None) -> None:
    assert parse_pidf(doc(OPEN_TUPLE), content_type).basic == "open"


@pytest.mark.parametrize("body", [b"", b"   \r\n  "])
def test_empty_body_is_an_error_not_closed(body: bytes) -> None:
    with pytest.raises(PidfError, match="empty presence body"):
        parse_pidf(body, PIDF)


def test_wrong_root_is_named() -> None:
    body = b'<foo xmlns="urn:example:foo"/>'
    with pytest.raises(PidfError, match="<foo> in namespace 'urn:example:foo'"):
        parse_pidf(body, PIDF)


def test_presence_in_foreign_namespace_is_refused() -> None:
    with pytest.raises(PidfError, match="not a PIDF <presence>"):
        parse_pidf(b'<presence xmlns="jabber:client"/>', PIDF)


def test_error_carries_reason_and_hint() -> None:
    err = PidfError("Bad Request: x")
    assert (err.reason, err.status_hint, str(err)) == ("Bad Request: x", 400, "Bad Request: x")
    assert "status_hint=400" in repr(err)
    # The SIP front answers every RemoteProtocolError at one boundary.
    assert isinstance(err, RemoteProtocolError)


# --- Rule 2/3: dialects and namespace families ---------------------------------------------------


def test_xpidf_is_recognised_by_its_root_whatever_the_label() -> None:
    body = (
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE presence PUBLIC "-//IETF//DTD RFCxxxx XPIDF 1.0//EN" "xpidf.dtd">\n'
        b'<presence><presentity uri="sip:bob@example.com;method=SUBSCRIBE"/>'
        b'<atom id="7"><address uri="sip:bob@192.0.2.4" priority="0.8">'
        b'<status status="inuse"/></address></atom></presence>'
    )
    parsed = parse_pidf(body, PIDF)
    assert parsed.format is DocumentFormat.XPIDF
    assert parsed.entity == "sip:bob@example.com;method=SUBSCRIBE"
    (tup,) = parsed.tuples
    assert (tup.id, tup.basic, tup.xpidf_status, tup.contact, tup.priority) == (
        "7",
        "open",
        "inuse",
        "sip:bob@192.0.2.4",
        0.8,
    )
    # inuse without a sub-status: on a call
    assert tup.activities == ("on-the-phone",)


def test_namespace_less_lpidf() -> None:
    body = (
        b'<presence entity="sip:a@example.com">'
        b'<tuple id="a"><status><basic>closed</basic></status></tuple></presence>'
    )
    parsed = parse_pidf(body, "application/lpidf+xml")
    assert (parsed.format, parsed.basic, parsed.entity) == (
        DocumentFormat.PIDF,
        "closed",
        "sip:a@example.com",
    )


def test_prefixed_pidf_and_notes_with_lang() -> None:
    body = (
        b'<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="pres:a@example.com">'
        b'<p:tuple id="x"><p:status><p:basic>OPEN</p:basic></p:status>'
        b'<p:note xml:lang="en">Hi</p:note><p:note xml:lang="fr">Salut</p:note></p:tuple>'
        b"</p:presence>"
    )
    parsed = parse_pidf(body, PIDF)
    assert parsed.basic == "open"  # basic is case-insensitive, as the original module read it
    assert parsed.tuples[0].notes == (Note("Hi", "en"), Note("Salut", "fr"))


def test_iso_8859_1_and_utf16_bodies_are_decoded() -> None:
    latin = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf"><tuple id="t"><status><basic>open</basic>'
        "</status><note>Ne d\u00e9rangez pas</note></tuple></presence>"
    ).encode("iso-8859-1")
    assert parse_pidf(latin, PIDF).all_notes == (Note("Ne d\u00e9rangez pas"),)
    utf16 = (
        doc(OPEN_TUPLE + "<note>\u00e7a</note>")
        .decode()
        .replace("UTF-8", "UTF-16")
        .encode("utf-16")
    )
    assert parse_pidf(utf16, PIDF).notes == (Note("\u00e7a"),)


def test_leading_blank_lines_are_tolerated() -> None:
    assert parse_pidf(b"\r\n  " + doc(OPEN_TUPLE), PIDF).basic == "open"


def test_values_that_do_not_parse_are_dropped() -> None:
    body = doc(
        '<tuple id="t"><status><basic>maybe</basic></status>'
        '<contact priority="high">sip:a@example.com</contact>'
        "<timestamp>yesterday</timestamp></tuple>"
        '<tuple id="u"><status><basic>open</basic></status>'
        '<contact priority="0.5">sip:b@example.com</contact>'
        "<timestamp>2021-06-07T13:30:35.944Z</timestamp></tuple>"
    )
    first, second = parse_pidf(body, PIDF).tuples
    assert (first.basic, first.priority, first.timestamp, first.contact) == (
        None,
        None,
        None,
        "sip:a@example.com",
    )
    assert second.priority == 0.5
    assert second.timestamp == datetime(2021, 6, 7, 13, 30, 35, 944000, tzinfo=UTC)


@pytest.mark.parametrize("priority", ["2", "-0.1", "nan", "inf"])
def test_priority_outside_zero_one_is_dropped(priority: str) -> None:
    body = doc(
        f'<tuple id="t"><status><basic>open</basic></status>'
        f'<contact priority="{priority}">sip:a@b</contact></tuple>'
    )
    assert parse_pidf(body, PIDF).tuples[0].priority is None


def test_rfc4479_person_device_and_user_input() -> None:
    body = doc(
        OPEN_TUPLE + '<dm:person id="p1"><rpid:activities><rpid:note>brb</rpid:note><rpid:meal/>'
        "<rpid:other>knitting</rpid:other></rpid:activities>"
        "<rpid:user-input>active</rpid:user-input><dm:note>Lunch</dm:note>"
        "<dm:timestamp>2005-05-30T16:09:44+05:00</dm:timestamp></dm:person>"
        '<dm:device id="d1">'
        '<rpid:user-input last-input="2004-10-21T13:20:00-05:00">IDLE</rpid:user-input>'
        "<dm:deviceID>mac:8asd7d7d70</dm:deviceID><dm:note>PC</dm:note></dm:device>"
    )
    parsed = parse_pidf(body, PIDF)
    (person,) = parsed.persons
    assert person == Person(
        id="p1",
        activities=("meal", "other"),
        other_activities=("knitting",),
        has_activities=True,
        activity_notes=(Note("brb"),),
        notes=(Note("Lunch"),),
        user_input="active",
        timestamp=datetime(2005, 5, 30, 16, 9, 44, tzinfo=timezone(timedelta(hours=5))),
    )
    assert parsed.devices == (
        Device(id="d1", device_id="mac:8asd7d7d70", user_input="idle", notes=(Note("PC"),)),
    )
    assert [n.text for n in parsed.all_notes] == ["brb", "Lunch", "PC"]


def test_empty_activities_element_is_still_stated() -> None:
    parsed = parse_pidf(doc(OPEN_TUPLE + '<dm:person id="p"><rpid:activities/></dm:person>'), PIDF)
    assert parsed.has_activities
    assert parsed.activities == ()


def test_comments_and_processing_instructions_are_ignored() -> None:
    body = doc(
        '<!-- c --><?pi x?><tuple id="t"><status><!-- c --><basic>open</basic></status></tuple>'
    )
    assert parse_pidf(body, PIDF).tuples[0].status_extensions == ()


# --- Rule 4: repairs -----------------------------------------------------------------------------


def test_unterminated_end_tag_is_repaired_and_reported() -> None:
    body = doc('<tuple id="t"><status><basic>open</basic></status><note>away</note\n</tuple>')
    parsed = parse_pidf(body, PIDF)
    assert parsed.all_notes == (Note("away"),)
    assert parsed.repairs == ("end tag </note lacked its '>'",)


def test_end_tag_with_other_local_name_is_not_guessed() -> None:
    body = doc('<tuple id="t"><status><basic>open</basic></status><note>x</nope></tuple>')
    with pytest.raises(PidfError, match="mismatched tag"):
        parse_pidf(body, PIDF)


def test_repairs_do_not_hide_other_faults() -> None:
    body = doc(
        '<tuple id="t"><status><basic>open</basic></status><note>a &bogus; b</note\n</tuple>'
    )
    with pytest.raises(PidfError, match="not well-formed"):
        parse_pidf(body, PIDF)


# --- Writing -------------------------------------------------------------------------------------


def test_serialize_then_parse_gives_the_same_model() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    original = PidfDocument(
        entity="sip:bob@example.com",
        tuples=(
            PidfTuple(
                id="t1",
                basic="open",
                notes=(Note("a & <b>", "en"),),
                contact="sip:bob@192.0.2.1",
                priority=0.8,
                timestamp=stamp,
                user_input="idle",
                device_id="urn:x-mac:1",
            ),
            PidfTuple(id="t2", basic="closed"),
        ),
        persons=(
            Person(
                id="p1",
                activities=("busy", "on-the-phone", "other"),
                other_activities=("Call",),
                has_activities=True,
                activity_notes=(Note("note in activities"),),
                notes=(Note("In a call"),),
                user_input="active",
                timestamp=stamp,
            ),
        ),
        devices=(Device(id="d1", device_id="urn:x-mac:1", user_input="idle", notes=(Note("PC"),)),),
        notes=(Note("presentity note"),),
    )
    parsed = parse_pidf(serialize_pidf(original), PIDF)
    assert (parsed.entity, parsed.tuples, parsed.persons, parsed.devices, parsed.notes) == (
        original.entity,
        original.tuples,
        original.persons,
        original.devices,
        original.notes,
    )


def test_ids_that_are_not_xml_names_are_replaced_by_stable_ones() -> None:
    original = PidfDocument(
        entity=None, tuples=(PidfTuple(id="bob@example.com/phone 1", basic="open"),)
    )
    first = parse_pidf(serialize_pidf(original), PIDF)
    again = parse_pidf(serialize_pidf(original), PIDF)
    assert first.tuples[0].id == again.tuples[0].id
    assert first.tuples[0].id.startswith("t")
    assert first.tuples[0].id != "bob@example.com/phone 1"


def test_text_is_escaped_only_where_xml_requires() -> None:
    # pjsip shows entity references literally, so write as few as XML allows.
    original = PidfDocument(entity=None, notes=(Note("a > b & c < d ]]> e\rf"),))
    body = serialize_pidf(original)
    assert b"<note>a > b &amp; c &lt; d ]]&gt; e&#13;f</note>" in body
    assert parse_pidf(body, PIDF).notes == original.notes


def test_a_body_needing_many_repairs_is_refused() -> None:
    body = doc(OPEN_TUPLE + "<note>x</note\n" * 5)
    with pytest.raises(PidfError, match="not well-formed"):
        parse_pidf(body, PIDF)
    assert parse_pidf(doc(OPEN_TUPLE + "<note>x</note\n" * 4), PIDF).repairs
