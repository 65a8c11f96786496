"""PIDF/RPID <-> the protocol-neutral presence model (``purplegw.presence``).

``pidf_to_presence(doc)`` says what a SIP user's PUBLISH means for their IM
accounts; ``presence_to_pidf(entity, contact)`` writes an IM contact's presence
as the PIDF body of a NOTIFY (or of a PUBLISH to an upstream presence server).
The tables below are the whole mapping; docs/presence-mapping.md explains them
and where they deviate from Kamailio's purple module.

Reading rules, applied in this order:

Rule 1. basic: open when any tuple is open, closed when every tuple that has
        a <basic> says closed.  closed -> OFFLINE (the accounts log out), whatever the
        rest of the document says.  No <basic> at all counts as open: logging
        a user out is destructive, and RFC 3863 makes <basic> optional.
Rule 2. RPID activities (person, and tuple-level ones of pre-RFC clients and
        XPIDF) map through ``ACTIVITY_STATUS``; ``<rpid:other>`` texts through
        ``OTHER_STATUS``.  Several activities: the least available wins
        (``_SEVERITY``), e.g. away + on-the-phone -> BUSY.
Rule 3. Only a document with no activities at all (the original module never
        read them; note-only clients such as Zoiper, gloo, old eXosip) gets the
        original module's note keywords, ``NOTE_KEYWORDS``.  A document that
        states activities -- even just <rpid:unknown/> -- means its note as
        free text.
Rule 4. The note: the person's <dm:note> (with several persons, as an
        aggregating presence server sends, the one whose activities set
        the status), else the note inside its <rpid:activities>, else the
        notes of the best tuple (open first, then highest contact priority,
        then newest timestamp, then first), else the presentity-level <note>.
        Among notes in several languages, the one matching ``lang`` if
        asked, else the first.
Rule 5. idle: the person's <rpid:user-input> when it has one, else the best
        tuple's, else any device's (RFC 4480 section 3.11).

Writing rules: one <tuple> per resource (the most available first, because
pjsip reads the first tuple), basic open unless OFFLINE, the resource's note
as the tuple <note>; one <dm:person> with the aggregate's activities and
<dm:note>.  pjsip only knows <rpid:away/> and <rpid:busy/>, so the first
activity is always one of those when the status is AWAY/EXTENDED_AWAY/BUSY;
EXTENDED_AWAY and CHAT, which RFC 4480 has no token for, add an
<rpid:other> marker that Rule 2 reads back.  AVAILABLE writes
<rpid:unknown/> as pjsip does, which also keeps Rule 3 away from a note that
happens to read "Busy".
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from purplegw.presence import ContactPresence, Presence, Status
from purplegw.sip.presence.model import (
    BASIC_CLOSED,
    BASIC_OPEN,
    Note,
    Person,
    PidfDocument,
    PidfTuple,
)
from purplegw.sip.presence.pidf import serialize_pidf, xml_id, xml_text

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVITY_STATUS",
    "NOTE_KEYWORDS",
    "OTHER_STATUS",
    "STATUS_ACTIVITY",
    "contact_to_document",
    "pidf_to_presence",
    "presence_to_pidf",
]

# RFC 4480 section 3.2 activities (every token of the registry), and XPIDF's
# implied ones.  Anything not listed (unknown, working, other, extensions)
# leaves the status AVAILABLE.
ACTIVITY_STATUS: dict[str, Status] = {
    # cannot take a message now
    "busy": Status.BUSY,
    "on-the-phone": Status.BUSY,
    "meeting": Status.BUSY,
    "appointment": Status.BUSY,
    "presentation": Status.BUSY,
    "performance": Status.BUSY,
    "steering": Status.BUSY,
    "worship": Status.BUSY,
    # not at the device for a while
    "away": Status.AWAY,
    "breakfast": Status.AWAY,
    "lunch": Status.AWAY,
    "dinner": Status.AWAY,
    "meal": Status.AWAY,
    "in-transit": Status.AWAY,
    "travel": Status.AWAY,
    "shopping": Status.AWAY,
    "playing": Status.AWAY,
    "spectator": Status.AWAY,
    "tv": Status.AWAY,
    "looking-for-work": Status.AWAY,
    # gone for long
    "vacation": Status.EXTENDED_AWAY,
    "holiday": Status.EXTENDED_AWAY,
    "sleeping": Status.EXTENDED_AWAY,
    "permanent-absence": Status.EXTENDED_AWAY,
}

# <rpid:other> texts (normalised: lower case, '-' as space) that carry the two
# XMPP states RFC 4480 has no token for.
OTHER_STATUS: dict[str, Status] = {
    "free for chat": Status.CHAT,
    "chat": Status.CHAT,
    "extended away": Status.EXTENDED_AWAY,
    "xa": Status.EXTENDED_AWAY,
}

# Rule 3: the original module's note keywords (case-insensitive, whole note):
# status, whether the note stays the status message, implied activities.
# "online"/"available" are ours: Zoiper and Jitsi always send them.
NOTE_KEYWORDS: dict[str, tuple[Status, bool, tuple[str, ...]]] = {
    "busy": (Status.BUSY, False, ()),
    "on the phone": (Status.BUSY, True, ("on-the-phone",)),
    "away": (Status.AWAY, False, ()),
    "idle": (Status.AVAILABLE, True, ()),
    "online": (Status.AVAILABLE, False, ()),
    "available": (Status.AVAILABLE, False, ()),
}

_SEVERITY: dict[Status, int] = {
    Status.AVAILABLE: 0,
    Status.CHAT: 1,
    Status.AWAY: 2,
    Status.EXTENDED_AWAY: 3,
    Status.BUSY: 4,
    Status.OFFLINE: 5,
}

# Writing: the activity pjsip understands first, then the <rpid:other> marker.
STATUS_ACTIVITY: dict[Status, tuple[str | None, str | None]] = {
    Status.AVAILABLE: ("unknown", None),
    Status.CHAT: (None, "Free for chat"),
    Status.AWAY: ("away", None),
    Status.EXTENDED_AWAY: ("away", "Extended away"),
    Status.BUSY: ("busy", None),
    Status.OFFLINE: (None, None),
}

_SPACES = re.compile(r"[\s\-]+")


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


# ---------------------------------------------------------------------------
# PIDF -> Presence


def pidf_to_presence(doc: PidfDocument, *, lang: str | None = None) -> Presence:
    """What the document says the presentity is doing (Rules 1-5).

    ``lang`` picks among notes in several languages (RFC 3863 xml:lang).
    """
    best = _best_tuple(doc.tuples)
    note = _choose_note(doc, best, lang)
    idle = _idle(doc, best)
    activities = tuple(a for a in doc.activities if a not in {"unknown", "other"})
    if doc.basic == BASIC_CLOSED:
        return Presence(Status.OFFLINE, note.text if note else None, activities, idle)
    status = _activity_status(doc.activities, ())
    for person in doc.persons:
        status = _worse(status, _person_status(person))
    if not doc.has_activities and note is not None:
        keyword = NOTE_KEYWORDS.get(_norm(note.text))
        if keyword is not None:
            status, keep, activities = keyword
            note = note if keep else None
    return Presence(status, note.text if note else None, activities, idle)


def _worse(a: Status, b: Status) -> Status:
    return b if _SEVERITY[b] > _SEVERITY[a] else a


def _activity_status(tokens: Sequence[str], others: Sequence[str]) -> Status:
    status = Status.AVAILABLE
    for token in tokens:
        status = _worse(status, ACTIVITY_STATUS.get(token, Status.AVAILABLE))
    for text in others:
        status = _worse(status, OTHER_STATUS.get(_norm(text), Status.AVAILABLE))
    return status


def _person_status(person: Person) -> Status:
    return _activity_status(person.activities, person.other_activities)


def _epoch(value: datetime | None) -> float:
    if value is None:
        return float("-inf")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.timestamp()
    except (OverflowError, ValueError, OSError):
        return float("-inf")


def _best_tuple(tuples: Sequence[PidfTuple]) -> PidfTuple | None:
    if not tuples:
        return None
    ranked = sorted(
        enumerate(tuples),
        key=lambda it: (
            it[1].basic != BASIC_CLOSED,
            it[1].priority if it[1].priority is not None else 0.0,
            _epoch(it[1].timestamp),
            -it[0],
        ),
        reverse=True,
    )
    return ranked[0][1]


def _pick(notes: Sequence[Note], lang: str | None) -> Note | None:
    if not notes:
        return None
    if lang:
        wanted = lang.lower()
        for note in notes:
            have = (note.lang or "").lower()
            if have == wanted or have.startswith(wanted + "-"):
                return note
    return notes[0]


def _choose_note(doc: PidfDocument, best: PidfTuple | None, lang: str | None) -> Note | None:
    # Aggregators (Kamailio's presence_xml) merge several publications into one
    # document with several persons: the note goes with the status that won.
    persons = sorted(doc.persons, key=lambda p: _SEVERITY[_person_status(p)], reverse=True)
    candidates: list[Sequence[Note]] = [p.notes for p in persons]
    candidates += [p.activity_notes for p in persons]
    if best is not None:
        candidates.append(best.notes)
    candidates.append(doc.notes)
    for notes in candidates:
        note = _pick(notes, lang)
        if note is not None:
            return note
    return None


def _idle(doc: PidfDocument, best: PidfTuple | None) -> bool:
    for person in doc.persons:
        if person.user_input is not None:
            return person.user_input == "idle"
    if best is not None and best.user_input is not None:
        return best.user_input == "idle"
    return any(device.user_input == "idle" for device in doc.devices)


# ---------------------------------------------------------------------------
# Presence -> PIDF


def presence_to_pidf(
    entity: str,
    contact: ContactPresence,
    *,
    lang: str | None = None,
    timestamp: datetime | None = None,
) -> bytes:
    """The ``application/pidf+xml`` body telling SIP watchers ``contact``'s presence.

    ``entity`` is the presentity URI (``sip:bob@jabber.org``); ``lang`` is the
    xml:lang of the notes when the network says it; ``timestamp`` (the caller's
    clock, this module has none) goes into every tuple.
    """
    return serialize_pidf(contact_to_document(entity, contact, lang=lang, timestamp=timestamp))


def contact_to_document(
    entity: str,
    contact: ContactPresence,
    *,
    lang: str | None = None,
    timestamp: datetime | None = None,
) -> PidfDocument:
    """The ``PidfDocument`` that ``presence_to_pidf`` writes."""
    aggregate = contact.aggregate
    resources = list(contact.resources.items()) or [("", Presence())]
    # pjsip shows the first tuple: put the resource the aggregate came from first.
    resources.sort(key=lambda item: item[1] is not aggregate)
    tuples = tuple(
        PidfTuple(
            id=xml_id("t", f"{contact.contact}/{name}"),
            basic=BASIC_OPEN if pres.is_open else BASIC_CLOSED,
            notes=_notes_out(pres.note, lang),
            timestamp=timestamp,
            user_input="idle" if pres.idle else None,
        )
        for name, pres in resources
    )
    return PidfDocument(
        entity=entity,
        tuples=tuples,
        persons=(_person_out(contact.contact, aggregate, lang),),
    )


def _notes_out(note: str | None, lang: str | None) -> tuple[Note, ...]:
    # What survives the trip: XML cannot carry some characters, readers strip blanks.
    text = xml_text(note).strip() if note else ""
    return (Note(text, lang),) if text else ()


def _person_out(contact: str, pres: Presence, lang: str | None) -> Person:
    first, marker = STATUS_ACTIVITY[pres.status]
    tokens: list[str] = [first] if first else []
    limit = _SEVERITY[pres.status]
    for token in pres.activities:
        # Keep the extra detail only when it cannot change the status read back.
        mapped = ACTIVITY_STATUS.get(token, Status.AVAILABLE)
        if token in {"unknown", "other"} or _SEVERITY[mapped] > limit:
            continue
        if token not in tokens:
            tokens.append(token)
        if mapped is pres.status:
            marker = None  # a token already says it (vacation -> EXTENDED_AWAY)
    if len(tokens) > 1 and "unknown" in tokens:
        tokens.remove("unknown")  # RFC 4480: <unknown/> stands alone
    others = (marker,) if marker else ()
    if others:
        tokens.append("other")
    return Person(
        id=xml_id("p", contact),
        activities=tuple(tokens),
        other_activities=others,
        has_activities=pres.status is not Status.OFFLINE,
        notes=_notes_out(pres.note, lang),
        user_input="idle" if pres.idle else None,
    )
