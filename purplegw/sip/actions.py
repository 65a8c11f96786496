"""What the state machines ask their driver to do; they never do it themselves.

A machine method returns a list of these; the SIP front (purplegw/actors/)
performs them in order: puts bytes on the wire, arms or disarms a timer that
later calls ``on_timer(name)``, hands a message to the transaction user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .message import Message

logger = logging.getLogger(__name__)

__all__ = ["Action", "CancelTimer", "DeliverToTU", "Send", "StartTimer", "Terminated"]

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Send:
    """Serialize ``message`` and send it to ``destination`` (None: the peer it came from)."""

    message: Message
    destination: Address | None = None


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Arm (or re-arm) timer ``name`` to fire ``seconds`` from now."""

    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class DeliverToTU:
    """Pass ``message`` up to the transaction user (or report a timeout)."""

    message: Message | None
    timeout: bool = False
    transport_error: bool = False


@dataclass(frozen=True, slots=True)
class Terminated:
    """The machine reached its final state; its owner may forget it."""

    reason: str = ""


Action = Send | StartTimer | CancelTimer | DeliverToTU | Terminated
