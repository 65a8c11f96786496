"""Watcher information documents (RFC 3858) for the ``presence.winfo`` event package (RFC 3857).

A SIP user who subscribes to ``presence.winfo`` learns who watches their
presence and in what state: this is how an authorization request from an
IM contact (an XMPP ``subscribe``) can reach a SIP client, as a ``pending``
watcher.  Pure functions, the same XML guards as ``pidf`` (defusedxml, size
and depth limits), errors are ``PidfError``.

RFC 3858 section 4:
    watcherinfo   = version (counter, per subscription), state ("full" | "partial")
                    and watcher-list*
    watcher-list  = resource (URI), package ("presence"), watcher*
    watcher       = its URI as text; id, status and event required;
                    display-name, expiration, duration-subscribed, xml:lang optional
Deviation: unknown status/event values are kept as read (lower-cased)
rather than refused, and unparsable numbers are dropped; a watcher without
an id gets "" instead of failing the whole document.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.pidf import MAX_PIDF_SIZE, parse_untrusted_xml, xml_text

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

logger = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE_WATCHERINFO",
    "WATCHERINFO_NS",
    "WATCHER_EVENTS",
    "WATCHER_STATUSES",
    "Watcher",
    "WatcherInfo",
    "WatcherList",
    "parse_watcherinfo",
    "serialize_watcherinfo",
]

WATCHERINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
CONTENT_TYPE_WATCHERINFO = "application/watcherinfo+xml"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

WATCHER_STATUSES = frozenset({"pending", "active", "waiting", "terminated"})
WATCHER_EVENTS = frozenset(
    {
        "subscribe",
        "approved",
        "deactivated",
        "probation",
        "rejected",
        "timeout",
        "giveup",
        "noresource",
    }
)


@dataclass(frozen=True)
class Watcher:
    uri: str
    id: str
    status: str  # WATCHER_STATUSES
    event: str  # WATCHER_EVENTS: what brought the watcher into this status
    display_name: str | None = None
    expiration: int | None = None
    duration_subscribed: int | None = None
    lang: str | None = None


@dataclass(frozen=True)
class WatcherList:
    resource: str
    package: str = "presence"
    watchers: tuple[Watcher, ...] = ()


@dataclass(frozen=True)
class WatcherInfo:
    version: int
    state: str = "full"  # "full" or "partial"
    lists: tuple[WatcherList, ...] = ()


def _local(tag: object) -> str | None:
    """The local name of an element in the watcherinfo namespace, else None."""
    prefix = f"{{{WATCHERINFO_NS}}}"
    if isinstance(tag, str) and tag.startswith(prefix):
        return tag[len(prefix) :]
    return None


def _count(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def parse_watcherinfo(
    body: bytes, content_type: str = CONTENT_TYPE_WATCHERINFO, *, max_size: int = MAX_PIDF_SIZE
) -> WatcherInfo:
    """Read an ``application/watcherinfo+xml`` body; raises only ``PidfError``."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in {CONTENT_TYPE_WATCHERINFO, "application/xml", "text/xml", ""}:
        raise PidfError(f"Unsupported Media Type: {media_type} is not watcher information", 415)
    root, _ = parse_untrusted_xml(body, max_size=max_size)
    if _local(root.tag) != "watcherinfo":
        raise PidfError(f"Bad Request: root element {root.tag!r} is not RFC 3858 <watcherinfo>")
    version = _count(root.get("version"))
    if version is None:
        raise PidfError("Bad Request: <watcherinfo> lacks a numeric version")
    state = (root.get("state") or "").strip().lower()
    if state not in {"full", "partial"}:
        raise PidfError(f"Bad Request: <watcherinfo> state {state!r} is neither full nor partial")
    lists = tuple(_read_list(el) for el in root if _local(el.tag) == "watcher-list")
    return WatcherInfo(version=version, state=state, lists=lists)


def _read_list(element: ET.Element) -> WatcherList:
    watchers = tuple(_read_watcher(el) for el in element if _local(el.tag) == "watcher")
    return WatcherList(
        resource=(element.get("resource") or "").strip(),
        package=(element.get("package") or "").strip(),
        watchers=watchers,
    )


def _read_watcher(element: ET.Element) -> Watcher:
    return Watcher(
        uri="".join(element.itertext()).strip(),
        id=(element.get("id") or "").strip(),
        status=(element.get("status") or "").strip().lower(),
        event=(element.get("event") or "").strip().lower(),
        display_name=element.get("display-name") or None,
        expiration=_count(element.get("expiration")),
        duration_subscribed=_count(element.get("duration-subscribed")),
        lang=element.get(_XML_LANG) or None,
    )


def _attr(name: str, value: str | int | None) -> str:
    if value is None:
        return ""
    return f" {name}={quoteattr(xml_text(str(value)))}"


def _text(value: str) -> str:
    return xml_text(value).replace("&", "&amp;").replace("<", "&lt;").replace("]]>", "]]&gt;")


def serialize_watcherinfo(info: WatcherInfo) -> bytes:
    """Write ``info`` as ``application/watcherinfo+xml`` (UTF-8)."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        (
            f'<watcherinfo xmlns="{WATCHERINFO_NS}"{_attr("version", info.version)}'
            f"{_attr('state', info.state)}>"
        ),
    ]
    for wlist in info.lists:
        lines.append(
            f" <watcher-list{_attr('resource', wlist.resource)}{_attr('package', wlist.package)}>"
        )
        for w in wlist.watchers:
            attrs = (
                _attr("id", w.id)
                + _attr("status", w.status)
                + _attr("event", w.event)
                + _attr("display-name", w.display_name)
                + _attr("expiration", w.expiration)
                + _attr("duration-subscribed", w.duration_subscribed)
                + _attr("xml:lang", w.lang)
            )
            lines.append(f"  <watcher{attrs}>{_text(w.uri)}</watcher>")
        lines.append(" </watcher-list>")
    lines.append("</watcherinfo>")
    return ("\n".join(lines) + "\n").encode("utf-8")
