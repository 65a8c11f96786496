"""Matrix presence <-> the neutral ``Presence`` model, as pure functions.

The table (also in docs/matrix.md and docs/presence-mapping.md's logic):

==========================  ==========================  =========================
Matrix ``m.presence``       ``Presence.status``          notes
==========================  ==========================  =========================
``online``                  AVAILABLE                    ``currently_active`` false
                                                         and ``last_active_ago``
                                                         over 5 min: ``idle``
``unavailable``             AWAY                         Matrix's "idle/away"
``offline``                 OFFLINE
``busy`` (MSC3026)          BUSY                         servers that support it
``status_msg``              ``note``                     empty -> None
==========================  ==========================  =========================

Outgoing is the inverse with Matrix's three states: AVAILABLE and CHAT ->
``online`` (``unavailable`` when ``idle``), AWAY, EXTENDED_AWAY and BUSY ->
``unavailable``, OFFLINE -> ``offline``.  ``status_msg`` is the note, else
the RPID activities as words (as for XMPP), so "on the phone" still reads
as such on the Matrix side.
"""

from __future__ import annotations

from dataclasses import dataclass

from purplegw.presence import Presence, Status
from purplegw.protocols.xmpp.presence_map import activities_text

IDLE_AFTER_MS = 5 * 60 * 1000

_FROM_MATRIX = {
    "online": Status.AVAILABLE,
    "unavailable": Status.AWAY,
    "offline": Status.OFFLINE,
    "busy": Status.BUSY,
    "org.matrix.msc3026.busy": Status.BUSY,
}


@dataclass(frozen=True)
class MatrixPresence:
    presence: str  # "online" | "unavailable" | "offline"
    status_msg: str | None = None


def _clean(text: str | None) -> str | None:
    text = (text or "").strip()
    return text or None


def presence_from_matrix(
    presence: str | None,
    status_msg: str | None = None,
    *,
    currently_active: bool | None = None,
    last_active_ago: int | None = None,
) -> Presence:
    """The neutral presence for one ``m.presence`` event (unknown states: OFFLINE)."""
    status = _FROM_MATRIX.get((presence or "").lower(), Status.OFFLINE)
    idle = (
        status is Status.AVAILABLE
        and currently_active is False
        and last_active_ago is not None
        and last_active_ago > IDLE_AFTER_MS
    )
    return Presence(status, note=_clean(status_msg), idle=idle)


def presence_to_matrix(presence: Presence) -> MatrixPresence:
    """What to set for the SIP user's presence."""
    status_msg = _clean(presence.note) or activities_text(presence.activities)
    if presence.status is Status.OFFLINE:
        return MatrixPresence("offline", status_msg)
    if presence.status in (Status.AVAILABLE, Status.CHAT) and not presence.idle:
        return MatrixPresence("online", status_msg)
    return MatrixPresence("unavailable", status_msg)
