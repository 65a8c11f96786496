"""PIDF (RFC 3863) documents with RPID (RFC 4480) and the RFC 4479 data model: bytes <-> model.

Pure functions, no I/O.  ``parse_pidf(body, content_type)`` reads what SIP
clients really send; ``serialize_pidf(doc)`` writes the shape pjsip's picky
parser accepts.

Reading rules (each one a tolerance some shipped client needs):

Rule 1. The body is untrusted: it is parsed by defusedxml, so a DTD that
        declares entities (billion laughs, external entities) is refused before
        anything is expanded; bodies over ``max_size`` bytes are refused unread
        (413), and element nesting deeper than ``MAX_DEPTH`` is refused.
Rule 2. The root decides the dialect, the Content-Type only gates: a
        ``<presence>`` in the PIDF namespace (or the pre-RFC cpim-pidf draft
        namespace, or no namespace at all as SER's "lpidf" did) is PIDF; a
        namespace-less ``<presence>`` holding ``<presentity>``/``<atom>`` is XPIDF,
        whatever label it came with.  Content types that cannot hold presence
        are refused with 415.
Rule 3. Elements are matched by namespace *family*, not exact namespace:
        ``<person>`` in the PIDF namespace (pjproject's fuzz seeds), ``<rpid:note>``
        under ``<dm:person>`` (linphone 2010), ``<note>`` inside ``<status>``
        (schema-invalid, seen in the wild), and eXosip's pre-RFC 4480
        ``<es:activities><es:activity>away</es:activity>`` inside ``<status>``.
Rule 4. A body that is not well-formed gets ONE repair attempt for the two
        faults eXosip2 shipped for years: an end tag missing its ``>``
        (``</note`` followed by ``</tuple>``) and an end tag whose prefix differs
        from its start tag's (``<es:activity>...</e:activity>``).  Nothing else
        is guessed: a truncated body stays an error, and so does one that
        needs more than ``MAX_REPAIRS`` fixes.  ``PidfDocument.repairs`` says
        what was fixed.
Rule 5. Values that do not parse (priority, timestamp) are dropped, not fatal:
        the status is what matters to the gateway.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import xml.etree.ElementTree as ET  # types and ParseError only; parsing is defusedxml's
from datetime import datetime
from typing import TYPE_CHECKING
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.model import (
    BASIC_CLOSED,
    BASIC_OPEN,
    Device,
    DocumentFormat,
    Note,
    Person,
    PidfDocument,
    PidfTuple,
    StatusExtension,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

logger = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE_PIDF",
    "CONTENT_TYPE_XPIDF",
    "DM_NS",
    "MAX_DEPTH",
    "MAX_PIDF_SIZE",
    "PIDF_NS",
    "RPID_NS",
    "parse_pidf",
    "parse_untrusted_xml",
    "serialize_pidf",
    "xml_id",
]

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
XML_NS = "http://www.w3.org/XML/1998/namespace"
_XML_LANG = f"{{{XML_NS}}}lang"

CONTENT_TYPE_PIDF = "application/pidf+xml"
CONTENT_TYPE_XPIDF = "application/xpidf+xml"

# A PUBLISH body is a few hundred bytes; RFC 4480's full example is 2.5 KiB.
MAX_PIDF_SIZE = 64 * 1024
MAX_DEPTH = 32
# eXosip2's templates need one or two; a body needing many is not that quirk.
MAX_REPAIRS = 4

# The PIDF namespace, the pre-RFC draft's (draft-ietf-impp-cpim-pidf, with and
# without its odd trailing colon) and none at all (SER "lpidf", sloppy clients).
_PIDF_FAMILY = frozenset(
    {PIDF_NS, "urn:ietf:params:xml:ns:cpim-pidf:", "urn:ietf:params:xml:ns:cpim-pidf", ""}
)
# person/device: RFC 4479's namespace; PIDF's (pjproject seeds); old RPID drafts had rpid:person.
_DM_FAMILY = _PIDF_FAMILY | {DM_NS}


def _is_rpid_ns(ns: str) -> bool:
    # RFC 4480's namespace and the drafts' (eXosip: ...:pidf:status:rpid-status).
    return ns == RPID_NS or "rpid" in ns


# Body types that may carry a presence document; the root element decides which
# dialect it is (Rule 2).  Generic XML types are sniffed for the same reason.
_ACCEPTED_TYPES = frozenset(
    {
        CONTENT_TYPE_PIDF,
        CONTENT_TYPE_XPIDF,
        "application/cpim-pidf+xml",
        "application/lpidf+xml",
        "application/xml",
        "text/xml",
        "",
    }
)

# RFC 4480 section 3.11.
_USER_INPUT_VALUES = frozenset({"active", "idle"})

# XPIDF sub-states (MSN-style <msnsubstatus>) and states, as RFC 4480 activities.
# berightback/outtolunch follow eXosip2, which published the same states both
# ways: in-transit and meal in its PIDF templates.
_XPIDF_SUBSTATUS_ACTIVITIES: dict[str, tuple[str, ...]] = {
    "online": (),
    "offline": (),
    "busy": ("busy",),
    "onthephone": ("on-the-phone",),
    "away": ("away",),
    "idle": ("away",),
    "berightback": ("in-transit",),
    "outtolunch": ("meal",),
}
_XPIDF_STATUS_ACTIVITIES: dict[str, tuple[str, ...]] = {
    "inuse": ("on-the-phone",),
    "inactive": ("away",),
}

_ET_ERRORS = (ET.ParseError, DefusedXmlException, ValueError, LookupError)


def parse_pidf(
    body: bytes, content_type: str | None, *, max_size: int = MAX_PIDF_SIZE
) -> PidfDocument:
    """Read a presence body (PUBLISH or NOTIFY).

    ``content_type`` is the Content-Type header value (parameters allowed; None
    when the header is missing, then the root element alone decides).
    Raises ``PidfError`` -- and nothing else -- when the body cannot be read;
    its ``status_hint`` is the SIP response to send.  A body-less PUBLISH is a
    refresh (RFC 3903 section 4.1) and must not be passed here: an empty body
    is an error, not a "closed" document.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type not in _ACCEPTED_TYPES:
        raise PidfError(f"Unsupported Media Type: {media_type} is not a presence document", 415)
    root, repairs = parse_untrusted_xml(body, max_size=max_size, repair=True)
    ns, local = _split(root.tag)
    if local != "presence" or ns not in _PIDF_FAMILY:
        raise PidfError(f"Bad Request: root element is {_show(root.tag)}, not a PIDF <presence>")
    if ns == "" and any(_split(child.tag) in {("", "presentity"), ("", "atom")} for child in root):
        doc = _read_xpidf(root)
    else:
        doc = _read_pidf(root)
    if repairs:
        logger.info("presence body repaired before reading: %s", "; ".join(repairs))
        doc = _with_repairs(doc, repairs)
    return doc


def _with_repairs(doc: PidfDocument, repairs: list[str]) -> PidfDocument:
    from dataclasses import replace  # noqa: PLC0415 - only malformed bodies get here

    return replace(doc, repairs=tuple(repairs))


# ---------------------------------------------------------------------------
# XML layer


def parse_untrusted_xml(
    body: bytes, *, max_size: int = MAX_PIDF_SIZE, repair: bool = False
) -> tuple[ET.Element, list[str]]:
    """Rule 1 (and Rule 4 when ``repair``) for any presence-related XML body.

    Returns the root element and the repairs made; raises ``PidfError`` only.
    Shared with ``watcherinfo`` so every XML body from a peer gets the same guards.
    """
    if len(body) > max_size:
        raise PidfError(
            f"Request Entity Too Large: presence body of {len(body)} bytes exceeds {max_size}", 413
        )
    # Leading blank lines before the XML declaration are an XML error, but
    # hand-written SIPp scenarios and templates ship them.
    body = body.lstrip(b" \t\r\n")
    if not body:
        raise PidfError("Bad Request: empty presence body")
    root, repairs = _parse_xml(body, repair=repair)
    _check_depth(root)
    return root, repairs


def _parse_xml(body: bytes, *, repair: bool) -> tuple[ET.Element, list[str]]:
    try:
        return _strict_parse(body), []
    except ET.ParseError as exc:
        first_error = exc
    except _ET_ERRORS as exc:
        raise _xml_error(exc) from None
    if not repair or first_error.code not in _REPAIRABLE_CODES:
        raise _xml_error(first_error) from None
    repaired = _repair_end_tags(body)
    if repaired is None:
        raise _xml_error(first_error) from None
    fixed, repairs = repaired
    try:
        return _strict_parse(fixed), repairs
    except _ET_ERRORS:
        raise _xml_error(first_error) from None


def _strict_parse(body: bytes) -> ET.Element:
    # forbid_dtd stays off: XPIDF carries a DOCTYPE.  Entity declarations and
    # external references are what defusedxml refuses (Rule 1).
    parser = DefusedXMLParser(forbid_dtd=False, forbid_entities=True, forbid_external=True)
    parser.feed(body)
    return parser.close()


def _xml_error(exc: Exception) -> PidfError:
    if isinstance(exc, DefusedXmlException):
        return PidfError(
            f"Bad Request: presence body declares entities or external references ({exc})"
        )
    if isinstance(exc, ET.ParseError):
        return PidfError(f"Bad Request: presence body is not well-formed XML: {exc}")
    return PidfError(f"Bad Request: presence body cannot be decoded: {exc}")


_REPAIRABLE_CODES = frozenset(
    {
        expat.errors.codes[expat.errors.XML_ERROR_INVALID_TOKEN],
        expat.errors.codes[expat.errors.XML_ERROR_TAG_MISMATCH],
    }
)

# Markup tokens, enough to track the element stack (Rule 4); text is skipped.
_TOKEN = re.compile(
    rb"<!--.*?-->"
    rb"|<!\[CDATA\[.*?\]\]>"
    rb"|<\?.*?\?>"
    rb"|<!DOCTYPE(?:[^>\[]|\[[^\]]*\])*>"
    rb"|</(?P<end>[^\s<>/]+)\s*(?P<gt>>?)"
    rb"|<(?P<start>[^\s<>/!?]+)(?:[^<>\"']|\"[^\"]*\"|'[^']*')*?(?P<empty>/?)>",
    re.DOTALL,
)


def _local_of(qname: bytes) -> bytes:
    return qname.rsplit(b":", 1)[-1]


def _shown(name: bytes) -> str:
    return name.decode("ascii", "replace")


def _fixed_end_tag(end: bytes, expected: bytes, gt: bytes, repairs: list[str]) -> bytes | None:
    """The end tag to write instead of ``</end`` + ``gt``; None if it cannot be fixed."""
    if end != expected:
        if _local_of(end) != _local_of(expected):
            return None
        repairs.append(f"end tag </{_shown(end)}> closes <{_shown(expected)}>")
    if not gt:
        repairs.append(f"end tag </{_shown(end)} lacked its '>'")
    return b"</" + expected + b">"


def _repair_end_tags(body: bytes) -> tuple[bytes, list[str]] | None:
    """Fix unterminated end tags and end tags with the wrong prefix (Rule 4).

    Returns None when the body has some other fault, or nothing to fix.
    """
    out: list[bytes] = []
    repairs: list[str] = []
    stack: list[bytes] = []
    pos = 0
    for match in _TOKEN.finditer(body):
        start, end = match.group("start"), match.group("end")
        if start is not None and not match.group("empty"):
            stack.append(start)
        if end is None:
            continue
        if not stack:
            return None
        before = len(repairs)
        fixed = _fixed_end_tag(end, stack.pop(), match.group("gt"), repairs)
        if fixed is None:
            return None
        if len(repairs) > before:
            out += [body[pos : match.start()], fixed]
            pos = match.end()
    if not repairs or len(repairs) > MAX_REPAIRS:
        return None
    out.append(body[pos:])
    return b"".join(out), repairs


def _check_depth(root: ET.Element) -> None:
    stack: list[tuple[ET.Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PidfError(f"Bad Request: presence body nests elements deeper than {MAX_DEPTH}")
        stack.extend((child, depth + 1) for child in element)


def _split(tag: object) -> tuple[str, str]:
    if not isinstance(tag, str):  # comments and processing instructions
        return ("#", "")
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _show(tag: object) -> str:
    ns, local = _split(tag)
    return f"<{local}> in namespace {ns!r}" if ns else f"<{local}> without namespace"


def _text(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def _is(element: ET.Element, family: frozenset[str], *locals_: str) -> bool:
    ns, local = _split(element.tag)
    return local in locals_ and ns in family


def _is_rpid(element: ET.Element, *locals_: str) -> bool:
    ns, local = _split(element.tag)
    return local in locals_ and _is_rpid_ns(ns)


def _is_note(element: ET.Element) -> bool:
    ns, local = _split(element.tag)
    return local == "note" and (ns in _DM_FAMILY or _is_rpid_ns(ns))


def _note(element: ET.Element) -> Note | None:
    text = _text(element)
    if not text:
        return None
    lang = element.get(_XML_LANG)
    return Note(text, lang.strip() or None if lang else None)


def _notes(elements: Iterable[ET.Element]) -> tuple[Note, ...]:
    return tuple(n for n in (_note(e) for e in elements if _is_note(e)) if n is not None)


def _timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _priority(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def _user_input(element: ET.Element) -> str | None:
    for child in element:
        if _is_rpid(child, "user-input"):
            value = _text(child).lower()
            if value in _USER_INPUT_VALUES:
                return value
    return None


# ---------------------------------------------------------------------------
# PIDF


def _read_pidf(root: ET.Element) -> PidfDocument:
    tuples: list[PidfTuple] = []
    persons: list[Person] = []
    devices: list[Device] = []
    for child in root:
        if _is(child, _PIDF_FAMILY, "tuple"):
            tuples.append(_read_tuple(child))
        elif _is(child, _DM_FAMILY, "person") or _is_rpid(child, "person"):
            persons.append(_read_person(child))
        elif _is(child, _DM_FAMILY, "device") or _is_rpid(child, "device"):
            devices.append(_read_device(child))
    return PidfDocument(
        entity=_attr(root, "entity"),
        format=DocumentFormat.PIDF,
        tuples=tuple(tuples),
        persons=tuple(persons),
        devices=tuple(devices),
        notes=_notes(root),
        all_notes=_notes(root.iter()),
    )


def _attr(element: ET.Element, name: str) -> str | None:
    value = element.get(name)
    return value.strip() or None if value is not None else None


def _read_tuple(element: ET.Element) -> PidfTuple:
    basic: str | None = None
    extensions: list[StatusExtension] = []
    activities: list[str] = []
    notes: list[Note] = []
    contact: str | None = None
    priority: float | None = None
    timestamp: datetime | None = None
    device_id: str | None = None
    for child in element:
        if _is(child, _PIDF_FAMILY, "status"):
            basic, status_ext, status_acts, status_notes = _read_status(child)
            extensions.extend(status_ext)
            activities.extend(status_acts)
            notes.extend(status_notes)
        elif _is(child, _PIDF_FAMILY, "contact") and contact is None:
            contact = _text(child) or None
            priority = _priority(child.get("priority"))
        elif _is_note(child):
            note = _note(child)
            if note is not None:
                notes.append(note)
        elif _is(child, _PIDF_FAMILY, "timestamp"):
            timestamp = _timestamp(_text(child))
        elif _is(child, _DM_FAMILY, "deviceID"):
            device_id = _text(child) or None
    return PidfTuple(
        id=_attr(element, "id"),
        basic=basic,
        notes=tuple(notes),
        contact=contact,
        priority=priority,
        timestamp=timestamp,
        activities=tuple(dict.fromkeys(activities)),
        user_input=_user_input(element),
        device_id=device_id,
        status_extensions=tuple(extensions),
    )


def _read_status(
    element: ET.Element,
) -> tuple[str | None, list[StatusExtension], list[str], list[Note]]:
    basic: str | None = None
    extensions: list[StatusExtension] = []
    activities: list[str] = []
    notes: list[Note] = []
    for child in element:
        ns, local = _split(child.tag)
        if local == "basic" and ns in _PIDF_FAMILY:
            value = _text(child).lower()
            # RFC 3863 allows only open/closed; anything else says nothing.
            basic = value if value in {BASIC_OPEN, BASIC_CLOSED} else basic
        elif _is_rpid_ns(ns) and local == "activities":
            activities.extend(_legacy_activities(child))
        elif _is_rpid_ns(ns) and local == "activity":
            activities.extend(_tokens(_text(child)))
        elif _is_note(child):
            note = _note(child)
            if note is not None:
                notes.append(note)
        elif ns != "#":
            extensions.append(StatusExtension(ns, local, _text(child)))
    return basic, extensions, activities, notes


def _tokens(text: str) -> list[str]:
    token = text.strip().lower()
    return [token] if token else []


def _legacy_activities(element: ET.Element) -> list[str]:
    # draft RPID: <activity>away</activity> text tokens; also accept RFC 4480 empty elements.
    tokens: list[str] = []
    for child in element:
        ns, local = _split(child.tag)
        if not _is_rpid_ns(ns) or local == "note":
            continue
        tokens.extend(_tokens(_text(child)) if local == "activity" else [local])
    return tokens


def _read_person(element: ET.Element) -> Person:
    activities: list[str] = []
    others: list[str] = []
    activity_notes: list[Note] = []
    has_activities = False
    # Old RPID drafts nested <activities> inside <status>: look at all descendants.
    for node in element.iter():
        if node is element or not _is_rpid(node, "activities"):
            continue
        has_activities = True
        for child in node:
            ns, local = _split(child.tag)
            if local == "note":
                note = _note(child)
                if note is not None:
                    activity_notes.append(note)
            elif local == "other":
                activities.append("other")
                other = _text(child)
                if other:
                    others.append(other)
            elif local == "activity":
                activities.extend(_tokens(_text(child)))
            elif _is_rpid_ns(ns):
                activities.append(local)
    timestamp = next(
        (_timestamp(_text(c)) for c in element if _is(c, _DM_FAMILY, "timestamp")), None
    )
    return Person(
        id=_attr(element, "id"),
        activities=tuple(dict.fromkeys(activities)),
        other_activities=tuple(others),
        has_activities=has_activities,
        activity_notes=tuple(activity_notes),
        notes=_notes(element),
        user_input=_user_input(element),
        timestamp=timestamp,
    )


def _read_device(element: ET.Element) -> Device:
    device_id = next((_text(c) or None for c in element if _is(c, _DM_FAMILY, "deviceID")), None)
    timestamp = next(
        (_timestamp(_text(c)) for c in element if _is(c, _DM_FAMILY, "timestamp")), None
    )
    return Device(
        id=_attr(element, "id"),
        device_id=device_id,
        user_input=_user_input(element),
        notes=_notes(element),
        timestamp=timestamp,
    )


# ---------------------------------------------------------------------------
# XPIDF (pre-standard; no namespace, everything in attributes)


def _read_xpidf(root: ET.Element) -> PidfDocument:
    entity: str | None = None
    tuples: list[PidfTuple] = []
    for child in root:
        _, local = _split(child.tag)
        if local == "presentity" and entity is None:
            entity = _attr(child, "uri")
        elif local == "atom":
            addresses = [a for a in child if _split(a.tag)[1] == "address"] or [child]
            tuples.extend(_read_xpidf_address(_attr(child, "id"), a) for a in addresses)
    return PidfDocument(
        entity=entity,
        format=DocumentFormat.XPIDF,
        tuples=tuple(tuples),
        all_notes=_notes(root.iter()),
    )


def _read_xpidf_address(atom_id: str | None, address: ET.Element) -> PidfTuple:
    status: str | None = None
    substatus: str | None = None
    extensions: list[StatusExtension] = []
    for child in address:
        _, local = _split(child.tag)
        if local == "status" and status is None:
            status = (child.get("status") or "").strip().lower() or None
        elif local == "msnsubstatus" and substatus is None:
            substatus = (child.get("substatus") or "").strip().lower() or None
            if substatus:
                extensions.append(StatusExtension("", "msnsubstatus", substatus))
    if substatus in _XPIDF_SUBSTATUS_ACTIVITIES:
        activities = _XPIDF_SUBSTATUS_ACTIVITIES[substatus]
    else:
        activities = _XPIDF_STATUS_ACTIVITIES.get(status or "", ())
    basic = None if status is None else (BASIC_CLOSED if status == "closed" else BASIC_OPEN)
    return PidfTuple(
        id=atom_id,
        basic=basic,
        notes=_notes(address),
        contact=_attr(address, "uri"),
        priority=_priority(address.get("priority")),
        activities=activities,
        user_input="idle" if substatus == "idle" else None,
        status_extensions=tuple(extensions),
        xpidf_status=status,
    )


# ---------------------------------------------------------------------------
# Writing
#
# Written by hand rather than with ElementTree because pjsip's parser matches
# the literal names "presence", "tuple", "status", "basic", "note": PIDF
# elements must be unprefixed and the extension prefixes fixed (dm:, rpid:),
# which ElementTree can only do by mutating its process-wide prefix registry.
# Attribute quoting is the standard library's.

# XML 1.0 section 2.2 Char: anything else cannot be written at all.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NCNAME = re.compile(r"[A-Za-z_][\w.-]*\Z")


def xml_text(value: str) -> str:
    """``value`` with the characters XML 1.0 cannot carry removed."""
    return _NOT_XML_CHAR.sub("", value)


def xml_id(prefix: str, value: str) -> str:
    """A stable xs:ID for ``value`` (a resource name, a URI): ``prefix`` + 10 hex digits."""
    return prefix + hashlib.sha1(value.encode("utf-8"), usedforsecurity=False).hexdigest()[:10]


def _esc(value: str) -> str:
    # Only what XML requires: pjsip's parser does not decode entity references,
    # so every one we write is shown literally on pjsip phones ("&gt;").  \r
    # survives only as a character reference: parsers fold a literal one into \n.
    text = xml_text(value).replace("&", "&amp;").replace("<", "&lt;").replace("]]>", "]]&gt;")
    return text.replace("\r", "&#13;")


def _attr_out(value: str) -> str:
    return quoteattr(xml_text(value), {"\r": "&#13;", "\n": "&#10;", "\t": "&#9;"})


def _note_out(tag: str, note: Note, indent: str) -> str:
    lang = f" xml:lang={_attr_out(note.lang)}" if note.lang else ""
    return f"{indent}<{tag}{lang}>{_esc(note.text)}</{tag}>"


def _id_out(value: str | None, prefix: str) -> str:
    if value is None:
        return ""
    safe = value if _NCNAME.match(value) else xml_id(prefix, value)
    return f" id={_attr_out(safe)}"


def _timestamp_out(tag: str, value: datetime | None, indent: str) -> Iterator[str]:
    if value is not None:
        yield f"{indent}<{tag}>{_esc(value.isoformat())}</{tag}>"


def _activities_out(person: Person, indent: str) -> Iterator[str]:
    if not person.has_activities and not person.activities:
        return
    yield f"{indent}<rpid:activities>"
    others = list(person.other_activities)
    for note in person.activity_notes:
        yield _note_out("rpid:note", note, indent + " ")
    for activity in person.activities:
        if activity == "other":
            text = others.pop(0) if others else ""
            yield f"{indent} <rpid:other>{_esc(text)}</rpid:other>"
        elif _NCNAME.match(activity):
            yield f"{indent} <rpid:{activity}/>"
    for text in others:
        yield f"{indent} <rpid:other>{_esc(text)}</rpid:other>"
    yield f"{indent}</rpid:activities>"


def _user_input_out(value: str | None, indent: str) -> Iterator[str]:
    if value in _USER_INPUT_VALUES:
        yield f"{indent}<rpid:user-input>{value}</rpid:user-input>"


def serialize_pidf(doc: PidfDocument) -> bytes:
    """Write ``doc`` as ``application/pidf+xml`` (UTF-8).

    The shape is the one pjsip and the RFC 4480 examples use: unprefixed PIDF
    in the default namespace, ``dm:``/``rpid:`` prefixes, tuples first, then
    ``dm:person``, then ``dm:device``.  Status extensions and XPIDF-only
    fields are not written.
    """
    lines = ['<?xml version="1.0" encoding="UTF-8"?>']
    entity = f" entity={_attr_out(doc.entity)}" if doc.entity else ""
    lines.append(f'<presence xmlns="{PIDF_NS}" xmlns:dm="{DM_NS}" xmlns:rpid="{RPID_NS}"{entity}>')
    for tup in doc.tuples:
        lines.append(f" <tuple{_id_out(tup.id, 't')}>")
        lines.append("  <status>")
        if tup.basic in {BASIC_OPEN, BASIC_CLOSED}:
            lines.append(f"   <basic>{tup.basic}</basic>")
        lines.append("  </status>")
        lines.extend(_user_input_out(tup.user_input, "  "))
        if tup.device_id:
            lines.append(f"  <dm:deviceID>{_esc(tup.device_id)}</dm:deviceID>")
        if tup.contact:
            prio = f" priority={_attr_out(f'{tup.priority:g}')}" if tup.priority is not None else ""
            lines.append(f"  <contact{prio}>{_esc(tup.contact)}</contact>")
        lines.extend(_note_out("note", note, "  ") for note in tup.notes)
        lines.extend(_timestamp_out("timestamp", tup.timestamp, "  "))
        lines.append(" </tuple>")
    lines.extend(_note_out("note", note, " ") for note in doc.notes)
    for person in doc.persons:
        lines.append(f" <dm:person{_id_out(person.id, 'p')}>")
        lines.extend(_activities_out(person, "  "))
        lines.extend(_user_input_out(person.user_input, "  "))
        lines.extend(_note_out("dm:note", note, "  ") for note in person.notes)
        lines.extend(_timestamp_out("dm:timestamp", person.timestamp, "  "))
        lines.append(" </dm:person>")
    for device in doc.devices:
        lines.append(f" <dm:device{_id_out(device.id, 'd')}>")
        lines.extend(_user_input_out(device.user_input, "  "))
        if device.device_id:
            lines.append(f"  <dm:deviceID>{_esc(device.device_id)}</dm:deviceID>")
        lines.extend(_note_out("dm:note", note, "  ") for note in device.notes)
        lines.extend(_timestamp_out("dm:timestamp", device.timestamp, "  "))
        lines.append(" </dm:device>")
    lines.append("</presence>")
    return ("\n".join(lines) + "\n").encode("utf-8")
