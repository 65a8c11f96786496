"""pidf_to_presence / presence_to_pidf: the original module's rules, RPID tables, round trips."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from defusedxml.ElementTree import fromstring

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.sip.presence.mapping import (
    ACTIVITY_STATUS,
    NOTE_KEYWORDS,
    pidf_to_presence,
    presence_to_pidf,
)
from purplegw.sip.presence.pidf import DM_NS, PIDF_NS, RPID_NS, parse_pidf

PIDF = "application/pidf+xml"

# RFC 4480 section 3.2, every activity token the RFC defines.
RFC4480_ACTIVITIES = [
    "appointment",
    "away",
    "breakfast",
    "busy",
    "dinner",
    "holiday",
    "in-transit",
    "looking-for-work",
    "lunch",
    "meal",
    "meeting",
    "on-the-phone",
    "performance",
    "permanent-absence",
    "playing",
    "presentation",
    "shopping",
    "sleeping",
    "spectator",
    "steering",
    "travel",
    "tv",
    "unknown",
    "vacation",
    "working",
    "worship",
]


def read(inner: str, *, lang: str | None = None) -> Presence:
    body = (
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">'
        f"{inner}</presence>"
    ).encode()
    return pidf_to_presence(parse_pidf(body, PIDF), lang=lang)


def tup(basic: str = "open", extra: str = "", tid: str = "t1") -> str:
    return f'<tuple id="{tid}"><status><basic>{basic}</basic></status>{extra}</tuple>'


IDLE_DEVICE = (
    '<dm:device id="d"><rpid:user-input>idle</rpid:user-input>'
    "<dm:deviceID>x</dm:deviceID></dm:device>"
)


def person(inner: str) -> str:
    return f'<dm:person id="p1">{inner}</dm:person>'


# --- The original module's PUBLISH rules ---------------------------------------------------------


def test_closed_logs_out() -> None:
    assert read(tup("closed")) == Presence(Status.OFFLINE)


def test_closed_wins_over_a_note_keyword() -> None:
    # The original let <dm:note>Away</dm:note> turn a closed document into "away" (logged in).
    assert read(tup("closed") + person("<dm:note>Away</dm:note>")).status is Status.OFFLINE


def test_closed_keeps_its_note_as_the_offline_message() -> None:
    assert read(tup("closed", "<note>Gone home</note>")) == Presence(Status.OFFLINE, "Gone home")


def test_open_without_anything_is_available() -> None:
    assert read(tup()) == Presence(Status.AVAILABLE)


def test_no_basic_at_all_does_not_log_out() -> None:
    assert read(person("<rpid:activities><rpid:away/></rpid:activities>")).status is Status.AWAY
    assert read("").status is Status.AVAILABLE


@pytest.mark.parametrize(
    ("note", "expected"),
    [
        ("Busy", Presence(Status.BUSY)),
        ("busy", Presence(Status.BUSY)),
        ("On the Phone", Presence(Status.BUSY, "On the Phone", ("on-the-phone",))),
        ("on-the-phone", Presence(Status.BUSY, "on-the-phone", ("on-the-phone",))),
        ("Away", Presence(Status.AWAY)),
        ("AWAY ", Presence(Status.AWAY)),
        ("Idle", Presence(Status.AVAILABLE, "Idle")),
        ("Online", Presence(Status.AVAILABLE)),
        ("Back at 3", Presence(Status.AVAILABLE, "Back at 3")),
    ],
)
@pytest.mark.parametrize("where", ["person", "tuple"])
def test_note_keywords_of_activity_less_documents(
    note: str, expected: Presence, where: str
) -> None:
    if where == "person":
        body = tup() + person(f"<dm:note>{note}</dm:note>")
    else:
        body = tup(extra=f"<note>{note}</note>")
    assert read(body) == expected


def test_keyword_table_matches_the_original_module() -> None:
    assert NOTE_KEYWORDS["busy"][0] is Status.BUSY
    assert NOTE_KEYWORDS["on the phone"][:2] == (Status.BUSY, True)
    assert NOTE_KEYWORDS["away"][0] is Status.AWAY
    assert NOTE_KEYWORDS["idle"][:2] == (Status.AVAILABLE, True)


def test_a_document_with_activities_means_its_note_as_text() -> None:
    body = tup() + person(
        "<rpid:activities><rpid:unknown/></rpid:activities><dm:note>Busy</dm:note>"
    )
    assert read(body) == Presence(Status.AVAILABLE, "Busy")


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("person", tup() + person("<rpid:user-input>idle</rpid:user-input>")),
        ("tuple", tup(extra="<rpid:user-input>idle</rpid:user-input>")),
        (
            "device",
            tup() + IDLE_DEVICE,
        ),
    ],
)
def test_user_input_idle_means_idle(where: str, body: str) -> None:
    pres = read(body)
    assert pres.idle, where
    assert pres.status is Status.AVAILABLE
    assert pres.note is None  # the original wrote "idle" into the status message


def test_person_user_input_active_overrides_device_idle() -> None:
    body = tup() + person("<rpid:user-input>active</rpid:user-input>") + (IDLE_DEVICE)
    assert not read(body).idle


# --- RPID activities -----------------------------------------------------------------------------


@pytest.mark.parametrize("activity", RFC4480_ACTIVITIES)
def test_every_rfc4480_activity_maps_per_the_table(activity: str) -> None:
    pres = read(tup() + person(f"<rpid:activities><rpid:{activity}/></rpid:activities>"))
    assert pres.status is ACTIVITY_STATUS.get(activity, Status.AVAILABLE)
    assert pres.activities == (() if activity == "unknown" else (activity,))


def test_table_covers_the_expected_classes() -> None:
    assert {t for t, s in ACTIVITY_STATUS.items() if s is Status.EXTENDED_AWAY} == {
        "vacation",
        "holiday",
        "sleeping",
        "permanent-absence",
    }
    assert set(ACTIVITY_STATUS) <= set(RFC4480_ACTIVITIES)


def test_least_available_activity_wins() -> None:
    acts = "<rpid:activities><rpid:away/><rpid:on-the-phone/><rpid:meal/></rpid:activities>"
    assert read(tup() + person(acts)).status is Status.BUSY


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Free for chat", Status.CHAT),
        ("free-for-chat", Status.CHAT),
        ("Extended away", Status.EXTENDED_AWAY),
        ("xa", Status.EXTENDED_AWAY),
        ("knitting", Status.AVAILABLE),
    ],
)
def test_other_activity_markers(text: str, status: Status) -> None:
    body = tup() + person(f"<rpid:activities><rpid:other>{text}</rpid:other></rpid:activities>")
    pres = read(body)
    assert pres.status is status
    assert "other" not in pres.activities


def test_legacy_status_activities_of_exosip() -> None:
    body = (
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        b'xmlns:es="urn:ietf:params:xml:ns:pidf:status:rpid-status" entity="sip:a@example.com">'
        b'<tuple id="t"><status><basic>open</basic>'
        b"<es:activities><es:activity>on-the-phone</es:activity>"
        b"</es:activities></status><note>on the phone</note></tuple></presence>"
    )
    pres = pidf_to_presence(parse_pidf(body, PIDF))
    assert pres == Presence(Status.BUSY, "on the phone", ("on-the-phone",))


# --- Which note ----------------------------------------------------------------------------------


def test_person_note_beats_tuple_note() -> None:
    body = tup(extra="<note>tuple</note>") + person("<dm:note>person</dm:note>")
    assert read(body).note == "person"


def test_with_several_persons_the_note_follows_the_status() -> None:
    # The shape of a Kamailio presence_xml aggregate of two publications.
    body = (
        tup(extra="<note>at lunch</note>", tid="a")
        + '<dm:person id="pa"><rpid:activities><rpid:away/></rpid:activities>'
        "<dm:note>at lunch</dm:note></dm:person>"
        + tup(extra="<note>in a call</note>", tid="b")
        + '<dm:person id="pb"><rpid:activities><rpid:busy/></rpid:activities>'
        "<dm:note>in a call</dm:note></dm:person>"
    )
    assert read(body) == Presence(Status.BUSY, "in a call", ("away", "busy"))


def test_best_tuple_gives_the_note() -> None:
    body = (
        tup("closed", '<contact priority="1.0">a</contact><note>closed one</note>', "a")
        + tup("open", '<contact priority="0.2">b</contact><note>low</note>', "b")
        + tup("open", '<contact priority="0.9">c</contact><note>high</note>', "c")
    )
    assert read(body) == Presence(Status.AVAILABLE, "high")


def test_newest_tuple_breaks_priority_ties() -> None:
    body = tup(extra="<note>old</note><timestamp>2020-01-01T00:00:00Z</timestamp>", tid="a") + tup(
        extra="<note>new</note><timestamp>2021-01-01T00:00:00</timestamp>", tid="b"
    )
    assert read(body).note == "new"


def test_note_language_preference() -> None:
    notes = '<note xml:lang="en">Do not disturb</note><note xml:lang="fr-CA">Pas maintenant</note>'
    assert read(tup(extra=notes), lang="fr").note == "Pas maintenant"
    assert read(tup(extra=notes), lang="de").note == "Do not disturb"
    assert read(tup(extra=notes)).note == "Do not disturb"


# --- Writing: the shape pjsip reads --------------------------------------------------------------


def q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


@pytest.mark.parametrize(
    ("status", "first_activity"),
    [
        (Status.AVAILABLE, "unknown"),
        (Status.AWAY, "away"),
        (Status.EXTENDED_AWAY, "away"),
        (Status.BUSY, "busy"),
        (Status.CHAT, "other"),
    ],
)
def test_written_shape(status: Status, first_activity: str) -> None:
    contact = ContactPresence("bob@example.com", {"phone": Presence(status, "note <1>")})
    body = presence_to_pidf("sip:bob@example.com", contact, lang="en")
    text = body.decode()
    # pjsip matches these literal, unprefixed names; extensions use dm:/rpid:.
    assert text.startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf"'
    )
    for literal in (
        "<tuple id=",
        "<status>",
        "<basic>open</basic>",
        '<note xml:lang="en">note &lt;1></note>',
        "<dm:person id=",
        "<rpid:activities>",
        '<dm:note xml:lang="en">',
    ):
        assert literal in text
    root = fromstring(body)
    assert root.tag == q(PIDF_NS, "presence")
    assert root.get("entity") == "sip:bob@example.com"
    tuple_el, person_el = list(root)
    assert tuple_el.tag == q(PIDF_NS, "tuple")
    assert person_el.tag == q(DM_NS, "person")
    activities = person_el.find(q(RPID_NS, "activities"))
    assert activities is not None
    assert activities[0].tag == q(RPID_NS, first_activity)


def test_offline_contact_has_no_activities() -> None:
    body = presence_to_pidf("sip:bob@example.com", ContactPresence("bob@example.com"))
    root = fromstring(body)
    (tuple_el, person_el) = list(root)
    assert tuple_el.findtext(f"{q(PIDF_NS, 'status')}/{q(PIDF_NS, 'basic')}") == "closed"
    assert person_el.find(q(RPID_NS, "activities")) is None


def test_one_tuple_per_resource_most_available_first() -> None:
    contact = ContactPresence(
        "bob@example.com",
        {
            "laptop": Presence(Status.AWAY, "at lunch", idle=True),
            "phone": Presence(Status.AVAILABLE, "on the move"),
            "old": Presence(Status.OFFLINE),
        },
    )
    doc = parse_pidf(presence_to_pidf("sip:bob@example.com", contact), PIDF)
    assert [t.basic for t in doc.tuples] == ["open", "open", "closed"]
    assert [t.notes[0].text if t.notes else None for t in doc.tuples] == [
        "on the move",
        "at lunch",
        None,
    ]
    assert [t.user_input for t in doc.tuples] == [None, "idle", None]
    assert len({t.id for t in doc.tuples}) == 3
    assert pidf_to_presence(doc) == Presence(Status.AVAILABLE, "on the move")


def test_timestamp_is_the_callers() -> None:
    stamp = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    contact = ContactPresence("bob@example.com", {"": Presence(Status.AVAILABLE)})
    doc = parse_pidf(presence_to_pidf("sip:bob@example.com", contact, timestamp=stamp), PIDF)
    assert doc.tuples[0].timestamp == stamp


def test_extra_activities_are_kept_when_they_agree_with_the_status() -> None:
    contact = ContactPresence(
        "b", {"": Presence(Status.BUSY, activities=("on-the-phone", "vacation"))}
    )
    doc = parse_pidf(presence_to_pidf("sip:b@example.com", contact), PIDF)
    # Both map to a status no worse than BUSY, so reading them back still says BUSY.
    assert doc.persons[0].activities == ("busy", "on-the-phone", "vacation")
    assert pidf_to_presence(doc).status is Status.BUSY


def test_extra_activities_that_would_change_the_status_are_dropped() -> None:
    contact = ContactPresence("b", {"": Presence(Status.AWAY, activities=("meeting", "meal"))})
    doc = parse_pidf(presence_to_pidf("sip:b@example.com", contact), PIDF)
    assert doc.persons[0].activities == ("away", "meal")


def test_extended_away_named_by_a_token_needs_no_marker() -> None:
    contact = ContactPresence("b", {"": Presence(Status.EXTENDED_AWAY, activities=("vacation",))})
    doc = parse_pidf(presence_to_pidf("sip:b@example.com", contact), PIDF)
    assert doc.persons[0].activities == ("away", "vacation")
    assert doc.persons[0].other_activities == ()
    assert pidf_to_presence(doc).status is Status.EXTENDED_AWAY


# --- Round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", list(Status))
@pytest.mark.parametrize(
    "note", [None, "In a meeting until 3", "Busy", "Away", "Idle", "  spaced  "]
)
@pytest.mark.parametrize("idle", [False, True])
def test_round_trip_every_status(status: Status, note: str | None, idle: bool) -> None:
    sent = Presence(status, note, idle=idle)
    body = presence_to_pidf(
        "sip:bob@example.com", ContactPresence("bob@example.com", {"res": sent})
    )
    got = pidf_to_presence(parse_pidf(body, PIDF))
    assert got.status is status
    assert got.note == (note.strip() if note else None)
    assert got.idle is idle
