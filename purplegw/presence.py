"""Protocol-neutral presence model.

Every adapter maps its network's presence to and from ``Presence``; the SIP
side maps PIDF/RPID documents (``purplegw.sip.presence``) to and from it.
Keeping one neutral model means N adapters + 1 SIP mapping instead of N x M
tables.  The full mapping is documented in docs/presence-mapping.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Status(enum.Enum):
    """What a contact (or the SIP user) is doing, coarse-grained.

    The values follow XMPP's <show/> because it is the richest common
    denominator among IM networks; PIDF basic/RPID activities map onto it.
    """

    OFFLINE = "offline"  # PIDF basic=closed; XMPP unavailable; IRC not on MONITOR list
    AVAILABLE = "available"  # basic=open, no activity; XMPP no <show/>; IRC not away
    CHAT = "chat"  # basic=open, "free for chat"; XMPP show=chat
    AWAY = "away"  # RPID away / appointment / ...; XMPP show=away; IRC away
    EXTENDED_AWAY = "xa"  # RPID vacation/sleeping/...; XMPP show=xa
    BUSY = "dnd"  # RPID busy / on-the-phone / meeting; XMPP show=dnd


@dataclass(frozen=True)
class Presence:
    """One presence state of one presentity (or of one of its devices).

    ``activities`` keeps the RPID activity tokens (RFC 4480 section 3.2,
    e.g. ``"on-the-phone"``, ``"meeting"``) when they are known, so that a
    richer source loses as little as possible on the way through.
    ``idle`` is RPID user-input=idle (the original module mapped it to idle).
    """

    status: Status = Status.OFFLINE
    note: str | None = None
    activities: tuple[str, ...] = ()
    idle: bool = False

    @property
    def is_open(self) -> bool:
        return self.status is not Status.OFFLINE


@dataclass(frozen=True)
class ContactPresence:
    """A contact's presence as seen from one account: one entry per resource.

    XMPP contacts may be online from several devices (resources); PIDF
    carries one <tuple> per device.  ``resources`` maps the resource name
    (``""`` when the network has no such notion) to that device's presence.
    """

    contact: str
    resources: dict[str, Presence] = field(default_factory=dict)

    @property
    def aggregate(self) -> Presence:
        """The most available of the resources (the summary a phone shows)."""
        order = [
            Status.CHAT,
            Status.AVAILABLE,
            Status.AWAY,
            Status.BUSY,
            Status.EXTENDED_AWAY,
            Status.OFFLINE,
        ]
        best = Presence()
        for pres in self.resources.values():
            if order.index(pres.status) < order.index(best.status):
                best = pres
        return best
