"""The one error a presence document can raise.

A PIDF body comes from the peer, so a fault in it is the peer's: the SIP front
answers ``status_hint`` (400 for a malformed document, 413 for an oversized
one, 415 for a body type that carries no presence) with ``reason`` as the
phrase, which names the fault.
"""

from __future__ import annotations

from purplegw.exceptions import GatewayError

__all__ = ["PidfError"]


class PidfError(GatewayError):
    """The body is not a presence document we can read."""

    status_hint: int
    reason: str

    def __init__(self, reason: str, status_hint: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_hint = status_hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, status_hint={self.status_hint})"
