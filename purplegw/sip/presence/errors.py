"""The one error a presence document can raise.

A PIDF body comes from the peer, so a fault in it is the peer's: ``PidfError``
is a ``RemoteProtocolError`` and the SIP front converts it like any other, by
answering ``status_hint`` (400 for a malformed document, 413 for an oversized
one, 415 for a body type that carries no presence) with ``reason``, which
names the fault, as the phrase.
"""

from __future__ import annotations

from purplegw.sip.errors import RemoteProtocolError

__all__ = ["PidfError"]


class PidfError(RemoteProtocolError):
    """The body is not a presence document we can read."""
