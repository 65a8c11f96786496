"""XMPP presence <-> the neutral ``Presence`` model, as pure functions.

The table (also in docs/presence-mapping.md, section "XMPP"):

=====================  ===========================  ==============================
XMPP (RFC 6121 4.7)    ``Presence.status``           notes
=====================  ===========================  ==============================
type='unavailable'     OFFLINE                      <status/> kept as ``note``
no <show/>             AVAILABLE
<show>chat</show>      CHAT
<show>away</show>      AWAY
<show>xa</show>        EXTENDED_AWAY
<show>dnd</show>       BUSY
unknown <show/>        AVAILABLE                    RFC 6121 4.7.2.1: treat as absent
<status/>              ``note``                     empty/whitespace -> None
several <status/>      ``note`` = the one without   else the first one
                       its own xml:lang
<idle/> (XEP-0319)     ``idle = True``
=====================  ===========================  ==============================

Outgoing (``presence_to_xmpp``) is the inverse, plus:

* ``note`` None but RPID ``activities`` known: <status/> is the activities as
  words ("on-the-phone" -> "On the phone"), so an XMPP contact still reads why;
* ``idle`` while AVAILABLE or CHAT: <show>away</show> (XMPP clients show idle
  users as away; XEP-0319 calls it auto-away);
* OFFLINE: type='unavailable' with the note as <status/>.

XMPP has no RPID activities, so incoming ``activities`` is always empty.
Nothing here needs slixmpp: functions take plain values or an
``xml.etree.ElementTree.Element`` (namespace-agnostic, so RFC examples
without ``xmlns='jabber:client'`` parse too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

from purplegw.presence import Presence, Status

logger = logging.getLogger(__name__)

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
IDLE_NS = "urn:xmpp:idle:1"

SHOW_TO_STATUS: dict[str | None, Status] = {
    None: Status.AVAILABLE,
    "chat": Status.CHAT,
    "away": Status.AWAY,
    "xa": Status.EXTENDED_AWAY,
    "dnd": Status.BUSY,
}
STATUS_TO_SHOW: dict[Status, str | None] = {
    Status.AVAILABLE: None,
    Status.CHAT: "chat",
    Status.AWAY: "away",
    Status.EXTENDED_AWAY: "xa",
    Status.BUSY: "dnd",
}
# Presence types that carry availability (the others are subscription
# management or errors and do not change what a contact is doing).
AVAILABILITY_TYPES = (None, "", "available", "unavailable")


@dataclass(frozen=True)
class XmppPresence:
    """The presence-relevant parts of one <presence/> stanza, as plain values."""

    type: str | None = None  # None = available; "unavailable", "subscribe", ...
    show: str | None = None
    status: str | None = None
    priority: int = 0
    idle: bool = False


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text or None


def parse_presence(element: Element) -> XmppPresence:
    """Read type/show/status/priority/idle from a <presence/> element."""
    show = None
    statuses: list[tuple[str | None, str]] = []
    priority = 0
    idle = False
    for child in element:
        name = _local(child.tag)
        if name == "show":
            show = _clean(child.text)
        elif name == "status":
            statuses.append((child.get(XML_LANG), child.text or ""))
        elif name == "priority":
            try:
                priority = int((child.text or "0").strip())
            except ValueError:
                logger.debug("ignoring bad <priority/> %r", child.text)
        elif name == "idle" and child.tag.startswith("{" + IDLE_NS):
            idle = True
    return XmppPresence(
        type=element.get("type") or None,
        show=show,
        status=pick_status(statuses),
        priority=priority,
        idle=idle,
    )


def pick_status(statuses: list[tuple[str | None, str]]) -> str | None:
    """The <status/> to show: the one in the stanza's default language, else the first.

    ``statuses`` is ``(explicit xml:lang or None, text)`` in document order.
    """
    for lang, text in statuses:
        if lang is None and _clean(text):
            return _clean(text)
    for _lang, text in statuses:
        if _clean(text):
            return _clean(text)
    return None


def presence_from_xmpp(
    type_: str | None, show: str | None, status: str | None, *, idle: bool = False
) -> Presence:
    """The neutral presence for one resource's availability stanza."""
    note = _clean(status)
    if type_ == "unavailable":
        return Presence(Status.OFFLINE, note=note)
    key = _clean(show)
    if key not in SHOW_TO_STATUS:
        logger.debug("unknown <show>%s</show>, treated as available", show)
        key = None
    return Presence(SHOW_TO_STATUS[key], note=note, idle=idle)


def presence_from_stanza(element: Element) -> Presence:
    """``presence_from_xmpp`` applied to a parsed <presence/> element."""
    parsed = parse_presence(element)
    return presence_from_xmpp(parsed.type, parsed.show, parsed.status, idle=parsed.idle)


def activities_text(activities: tuple[str, ...]) -> str | None:
    """RPID activity tokens as words: ("on-the-phone", "meeting") -> "On the phone, meeting"."""
    words = [a.replace("-", " ") for a in activities if a and a != "unknown"]
    if not words:
        return None
    text = ", ".join(words)
    return text[0].upper() + text[1:]


def presence_to_xmpp(presence: Presence, priority: int = 0) -> XmppPresence:
    """What to send for the SIP user's presence (type, show, status, priority)."""
    status = _clean(presence.note) or activities_text(presence.activities)
    if presence.status is Status.OFFLINE:
        return XmppPresence(type="unavailable", status=status)
    show = STATUS_TO_SHOW[presence.status]
    if presence.idle and presence.status in (Status.AVAILABLE, Status.CHAT):
        show = "away"
    return XmppPresence(type=None, show=show, status=status, priority=priority, idle=presence.idle)
