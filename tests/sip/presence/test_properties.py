"""Property tests: no input raises anything but PidfError; what we write reads back the same."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.mapping import ACTIVITY_STATUS, pidf_to_presence, presence_to_pidf
from purplegw.sip.presence.pidf import parse_pidf, xml_text
from tests.kit.corpus import corpus_dir

CONTENT_TYPES = ["application/pidf+xml", "application/xpidf+xml", "", "text/plain; x=1"]

SEEDS = sorted(
    p.read_bytes()
    for folder in [
        corpus_dir() / "pidf",
        corpus_dir() / "fuzz" / "pjproject-fuzz-pidf",
        corpus_dir() / "fuzz" / "pjproject-fuzz-presence",
        corpus_dir() / "fuzz" / "pjproject-fuzz-xml",
    ]
    for p in folder.rglob("*.xml")
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_or_refuse(body: bytes, content_type: str) -> None:
    """The contract: a document (that maps to a Presence) or a PidfError."""
    try:
        doc = parse_pidf(body, content_type)
    except PidfError as exc:
        error = exc
    else:
        pidf_to_presence(doc)
        pidf_to_presence(doc, lang="en")
        return
    assert error.reason
    assert error.status_hint in {400, 413, 415}


def test_seed_corpus_is_there() -> None:
    assert len(SEEDS) > 50


@FAST
@given(st.binary(max_size=2048), st.sampled_from(CONTENT_TYPES))
def test_random_bytes(body: bytes, content_type: str) -> None:
    read_or_refuse(body, content_type)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(
            st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate", "markup"])
        )
        i = draw(st.integers(0, len(data)))
        j = draw(st.integers(i, min(len(data), i + 64)))
        if op == "delete":
            del data[i:j]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "replace" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "duplicate":
            data[j:j] = data[i:j]
        elif op == "markup":
            data[i:i] = draw(
                st.sampled_from(
                    [
                        b"<",
                        b">",
                        b"</",
                        b"/>",
                        b"&",
                        b"&amp;",
                        b"&#0;",
                        b"&#x110000;",
                        b"]]>",
                        b"<![CDATA[",
                        b"<!--",
                        b'"',
                        b"xmlns:a='urn:x'",
                        b"<rpid:other>",
                        b"</note",
                        b"<basic>closed</basic>",
                        b"<!ENTITY x 'y'>",
                        b"\xff\xfe",
                        b"\x00",
                    ]
                )
            )
    return bytes(data)


@FAST
@given(mutated(), st.sampled_from(CONTENT_TYPES[:3]))
def test_mutated_documents(body: bytes, content_type: str) -> None:
    read_or_refuse(body, content_type)


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(
        ["note", "dm:note", "basic", "rpid:other", "contact", "timestamp", "rpid:user-input"]
    ),
)
def test_arbitrary_text_in_every_element(text: str, element: str) -> None:
    from xml.sax.saxutils import escape

    body = (
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:a@example.com">'
        '<tuple id="t"><status><basic>open</basic></status><contact>x</contact></tuple>'
        '<dm:person id="p"><rpid:activities><rpid:away/></rpid:activities></dm:person>'
        "</presence>"
    ).replace("<contact>x</contact>", f"<{element}>{escape(xml_text(text))}</{element}>")
    read_or_refuse(body.encode(), "application/pidf+xml")


# --- Round trips ---------------------------------------------------------------------------------

notes = st.one_of(st.none(), st.text(max_size=60))
activities = st.lists(
    st.sampled_from([*ACTIVITY_STATUS, "unknown", "working", "other"]), max_size=3
)


def expected_note(note: str | None) -> str | None:
    cleaned = xml_text(note).strip() if note else ""
    return cleaned or None


@FAST
@given(
    st.sampled_from(list(Status)),
    notes,
    st.booleans(),
    activities,
    st.one_of(st.none(), st.sampled_from(["en", "fr-CA"])),
)
def test_round_trip(
    status: Status,
    note: str | None,
    idle: bool,  # drawn by hypothesis
    acts: list[str],
    lang: str | None,
) -> None:
    sent = Presence(status, note, tuple(acts), idle)
    body = presence_to_pidf(
        "sip:bob@example.com", ContactPresence("bob@example.com", {"r": sent}), lang=lang
    )
    got = pidf_to_presence(parse_pidf(body, "application/pidf+xml"), lang=lang)
    assert got.status is status
    assert got.note == expected_note(note)
    assert got.idle is idle


resources = st.dictionaries(
    st.text(max_size=12),
    st.builds(Presence, st.sampled_from(list(Status)), notes, st.just(()), st.booleans()),
    max_size=4,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources)
def test_round_trip_of_the_aggregate(res: dict[str, Presence]) -> None:
    contact = ContactPresence("bob@example.com", res)
    doc = parse_pidf(presence_to_pidf("sip:bob@example.com", contact), "application/pidf+xml")
    assert len(doc.tuples) == max(1, len(res))
    got = pidf_to_presence(doc)
    want = contact.aggregate
    assert got.status is want.status
    if want.status is not Status.OFFLINE:
        assert got.note == expected_note(want.note)
        assert got.idle is want.idle
