"""The two error families of the SIP core (STYLE.md rule 5).

``RemoteProtocolError`` means the peer sent something RFC 3261 forbids;
``LocalProtocolError`` means our own code tried to do so.  Both carry a
``status_hint``: the response code a stateless element should answer with
(400, 413, 416, 420, 481, 505, 513...), and a ``reason`` phrase that names the
fault, e.g. ``"Bad Request: missing Call-ID"``.  The SIP front converts them
into responses at one boundary; the core never builds error responses itself.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

__all__ = ["LocalProtocolError", "RemoteProtocolError", "SipError", "SipParseError"]


class SipError(Exception):
    """Base class of every error the SIP core raises."""

    status_hint: int
    reason: str

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status_hint={self.status_hint})"


class RemoteProtocolError(SipError):
    """The peer broke the protocol: answer ``status_hint`` (requests) or drop (responses)."""


class LocalProtocolError(SipError):
    """We were about to break the protocol (a bug or a misuse of the API)."""


SipParseError = RemoteProtocolError
