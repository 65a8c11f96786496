"""What a presence document says, as plain frozen data (RFC 3863 + RFC 4479 + RFC 4480).

``pidf.parse_pidf`` fills these from a body, ``pidf.serialize_pidf`` writes them
back; ``mapping`` turns them into the protocol-neutral ``purplegw.presence``
model.  The classes mirror the RFC 4479 data model: a presentity has *services*
(PIDF ``<tuple>``), one *person* (``<dm:person>``) and *devices*
(``<dm:device>``); each may carry notes.  Only what the gateway acts on is
modelled; other extension elements are skipped on reading.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

__all__ = [
    "BASIC_CLOSED",
    "BASIC_OPEN",
    "Device",
    "DocumentFormat",
    "Note",
    "Person",
    "PidfDocument",
    "PidfTuple",
    "StatusExtension",
]

BASIC_OPEN = "open"
BASIC_CLOSED = "closed"


class DocumentFormat(enum.Enum):
    PIDF = "pidf"  # RFC 3863, plus the cpim-pidf draft namespace and SER's namespace-less "lpidf"
    XPIDF = "xpidf"  # the pre-standard XPIDF (Polycom, eXosip, Microsoft "msoldpres")


@dataclass(frozen=True)
class Note:
    """A ``<note>`` / ``<dm:note>`` / ``<rpid:note>``; ``lang`` is its xml:lang."""

    text: str
    lang: str | None = None


@dataclass(frozen=True)
class StatusExtension:
    """A child of ``<status>`` other than ``<basic>`` (RFC 3863 section 4.1.4), or an
    XPIDF sub-status, kept as namespace + local name + text for callers that care."""

    namespace: str
    name: str
    value: str


@dataclass(frozen=True)
class PidfTuple:
    """One service of the presentity (``<tuple>``; an XPIDF ``<atom>/<address>``).

    ``activities`` holds activity tokens that pre-RFC 4480 clients put inside
    ``<status>`` (eXosip's ``<es:activities>``) or that an XPIDF sub-status
    implies; RFC 4480 activities live on the ``Person``.
    """

    id: str | None
    basic: str | None = None  # BASIC_OPEN, BASIC_CLOSED, or None when absent/unknown
    notes: tuple[Note, ...] = ()
    contact: str | None = None
    priority: float | None = None
    timestamp: datetime | None = None
    activities: tuple[str, ...] = ()
    user_input: str | None = None  # RFC 4480 section 3.11: "active" / "idle"
    device_id: str | None = None
    status_extensions: tuple[StatusExtension, ...] = ()
    xpidf_status: str | None = None  # raw XPIDF <status status="..."> (open/closed/inuse/inactive)


@dataclass(frozen=True)
class Person:
    """The ``<dm:person>`` element: what the human is doing (RFC 4479 section 3.1).

    ``activities`` are RFC 4480 tokens in document order (``"away"``,
    ``"on-the-phone"``, ``"other"``...); the text of ``<rpid:other>`` goes to
    ``other_activities``.  ``has_activities`` tells an explicit (possibly empty
    or ``unknown``) ``<rpid:activities>`` apart from none at all.
    """

    id: str | None
    activities: tuple[str, ...] = ()
    other_activities: tuple[str, ...] = ()
    has_activities: bool = False
    activity_notes: tuple[Note, ...] = ()
    notes: tuple[Note, ...] = ()
    user_input: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class Device:
    """A ``<dm:device>`` (RFC 4479 section 3.3); RFC 4480 puts user-input idle here."""

    id: str | None
    device_id: str | None = None
    user_input: str | None = None
    notes: tuple[Note, ...] = ()
    timestamp: datetime | None = None


@dataclass(frozen=True)
class PidfDocument:
    """A whole presence document.

    ``notes`` are the presentity-level ``<note>`` children of ``<presence>``;
    ``all_notes`` is every note of the document in document order, whoever
    owns it.  ``repairs`` lists the fixes applied to make a malformed body
    readable (see ``pidf.parse_pidf``); empty for a well-formed one.
    """

    entity: str | None
    format: DocumentFormat = DocumentFormat.PIDF
    tuples: tuple[PidfTuple, ...] = ()
    persons: tuple[Person, ...] = ()
    devices: tuple[Device, ...] = ()
    notes: tuple[Note, ...] = ()
    all_notes: tuple[Note, ...] = ()
    repairs: tuple[str, ...] = field(default=(), compare=False)

    @property
    def basic(self) -> str | None:
        """open when any service is open, closed when every service that says so is
        closed, None when no tuple carries a ``<basic>``."""
        values = [t.basic for t in self.tuples if t.basic is not None]
        if not values:
            return None
        return BASIC_OPEN if BASIC_OPEN in values else BASIC_CLOSED

    @property
    def activities(self) -> tuple[str, ...]:
        """Every activity token, persons first, duplicates removed, in order."""
        seen: dict[str, None] = {}
        for person in self.persons:
            seen.update(dict.fromkeys(person.activities))
        for tup in self.tuples:
            seen.update(dict.fromkeys(tup.activities))
        return tuple(seen)

    @property
    def has_activities(self) -> bool:
        """True when the document states activities at all (even ``unknown``)."""
        return any(p.has_activities for p in self.persons) or any(t.activities for t in self.tuples)
