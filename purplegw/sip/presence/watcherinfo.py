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
``WatcherInfoNotifier`` (at the end) is the notifier's side: the full and
partial documents of one subscription, with its version counter.
Deviation: unknown status/event values are kept as read (lower-cased)
rather than refused, and unparsable numbers are dropped; a watcher without
an id gets "" instead of failing the whole document.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.pidf import MAX_PIDF_SIZE, parse_untrusted_xml, xml_text

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET
    from collections.abc import Iterable, Mapping

logger = logging.getLogger(__name__)

__all__ = [
    "CONTENT_TYPE_WATCHERINFO",
    "WATCHERINFO_NS",
    "WATCHER_EVENTS",
    "WATCHER_STATUSES",
    "Watcher",
    "WatcherInfo",
    "WatcherInfoNotifier",
    "WatcherList",
    "active_watcher",
    "parse_watcherinfo",
    "pending_watcher",
    "serialize_watcherinfo",
    "watcher_id",
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


# --- the notifier's side: one presence.winfo subscription's documents ----------------


def watcher_id(uri: str) -> str:
    """A stable watcher id for ``uri``: the same in every document (RFC 3858 5.4)."""
    return "w" + hashlib.sha256(uri.encode()).hexdigest()[:12]


def pending_watcher(uri: str, display_name: str | None = None) -> Watcher:
    """A watcher asking for authorization (status pending, event subscribe)."""
    return Watcher(uri, watcher_id(uri), "pending", "subscribe", display_name or None)


def active_watcher(uri: str, display_name: str | None = None) -> Watcher:
    """A watcher the user authorized (status active, event approved)."""
    return Watcher(uri, watcher_id(uri), "active", "approved", display_name or None)


class WatcherInfoNotifier:
    """The documents of one ``presence.winfo`` subscription, sans-IO.

    Rules (RFC 3857 section 5.3, RFC 3858 section 4):

    1. ``full(watchers)`` is a ``state="full"`` document listing every
       current watcher; ``partial(watchers)`` a ``state="partial"`` one
       listing only the watchers whose status, event or name changed since
       the last document, or None when nothing did.
    2. A watcher that was in the last document and is no longer current is
       listed once more, ``terminated``, with the event the caller gives for
       its URI in ``gone`` (``rejected`` for a refusal), else
       ``deactivated``; after that it is forgotten.
    3. ``version`` starts at 0 and grows by one per document.
    4. The caller gives current watchers only (pending or active): a
       terminated one is said by leaving it out (Rule 2).
    """

    def __init__(self, resource: str, package: str = "presence") -> None:
        self.resource = resource
        self.package = package
        self.version = -1
        self._sent: dict[str, Watcher] = {}

    def full(self, watchers: Iterable[Watcher]) -> bytes:
        current = {w.id: w for w in watchers}
        self._sent = current
        return self._document("full", list(current.values()))

    def partial(
        self, watchers: Iterable[Watcher], gone: Mapping[str, str] | None = None
    ) -> bytes | None:
        current = {w.id: w for w in watchers}
        changed = [w for key, w in current.items() if self._sent.get(key) != w]
        changed += [
            replace(w, status="terminated", event=(gone or {}).get(w.uri, "deactivated"))
            for key, w in self._sent.items()
            if key not in current
        ]
        if not changed:
            return None
        self._sent = current
        return self._document("partial", changed)

    def _document(self, state: str, watchers: list[Watcher]) -> bytes:
        self.version += 1
        watchers.sort(key=lambda w: (w.uri, w.id))
        wlist = WatcherList(self.resource, self.package, tuple(watchers))
        return serialize_watcherinfo(WatcherInfo(self.version, state, (wlist,)))
