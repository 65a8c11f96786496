"""Presence documents (PIDF/RPID/XPIDF), sans-IO: see docs/presence-mapping.md.

The calls the rest of the gateway needs::

    doc = parse_pidf(body, content_type)        # PUBLISH / NOTIFY body -> PidfDocument
    presence = pidf_to_presence(doc)             # -> purplegw.presence.Presence
    body = presence_to_pidf(entity, contact)     # ContactPresence -> application/pidf+xml

``parse_pidf`` raises only ``PidfError`` (a ``RemoteProtocolError`` with a
``status_hint``).  A body-less PUBLISH is a refresh and is not parsed.
"""

from purplegw.sip.presence.errors import PidfError
from purplegw.sip.presence.mapping import pidf_to_presence, presence_to_pidf
from purplegw.sip.presence.model import PidfDocument
from purplegw.sip.presence.pidf import CONTENT_TYPE_PIDF, parse_pidf, serialize_pidf
from purplegw.sip.presence.watcherinfo import parse_watcherinfo, serialize_watcherinfo

__all__ = [
    "CONTENT_TYPE_PIDF",
    "PidfDocument",
    "PidfError",
    "parse_pidf",
    "parse_watcherinfo",
    "pidf_to_presence",
    "presence_to_pidf",
    "serialize_pidf",
    "serialize_watcherinfo",
]
