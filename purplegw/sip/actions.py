"""What the state machines ask their driver to do; they never do it themselves.

A machine method returns a list of these; the SIP front (purplegw/actors/front/)
performs them in order: puts bytes on the wire, arms or disarms a timer that
later calls ``on_timer(name)``, hands a message to the transaction user.

They are plain slotted dataclasses, not frozen ones: a frozen dataclass
costs five times as much to build (its ``__init__`` goes through
``object.__setattr__``), and two are built per request on the SIP front's hot
path. Treat them as values all the same; the constant ones are shared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .message import Message

logger = logging.getLogger(__name__)

__all__ = ["Action", "CancelTimer", "DeliverToTU", "Send", "StartTimer", "Terminated"]

Address = tuple[str, int]


@dataclass(slots=True)
class Send:
    """Serialize ``message`` and send it to ``destination`` (None: the peer it came from).

    ``message`` is bytes when the driver handed a response's wire form back
    (``ServerTransaction.keep_wire``): send them as they are.
    """

    message: Message | bytes
    destination: Address | None = None


@dataclass(slots=True)
class StartTimer:
    """Arm (or re-arm) timer ``name`` to fire ``seconds`` from now."""

    name: str
    seconds: float


@dataclass(slots=True)
class CancelTimer:
    name: str


@dataclass(slots=True)
class DeliverToTU:
    """Pass ``message`` up to the transaction user (or report a timeout)."""

    message: Message | None
    timeout: bool = False
    transport_error: bool = False


@dataclass(slots=True)
class Terminated:
    """The machine reached its final state; its owner may forget it."""

    reason: str = ""


Action = Send | StartTimer | CancelTimer | DeliverToTU | Terminated
