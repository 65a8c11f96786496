"""Durable record of SIP -> external messages accepted but not yet sent.

Rule 1: ``put`` before the account actor is asked, so a crash right after
        the 202 still finds the message.
Rule 2: ``done`` once the account reported a final outcome (sent, or a
        refusal the SIP sender was told about).
Rule 3: rows still present at start-up were accepted by an earlier run and
        are handed to their account again when it is online (at-least-once;
        the network sees the same message id).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from purplegw.store.database import Database


@dataclass(frozen=True)
class PendingSend:
    seq: int
    sip_user: str
    protocol: str
    contact: str
    body: str
    message_id: str


class SendQueueRepository:
    TABLE = "purplegw_sendq"

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, *, sip_user: str, protocol: str, contact: str, body: str,
            message_id: str) -> bool:
        """Record a message; False if that message id is already recorded (a resend)."""
        if self.db.fetchone(f"SELECT seq FROM {self.TABLE} WHERE message_id = ?",  # noqa: S608
                            (message_id,)):
            return False
        self.db.execute(
            f"INSERT INTO {self.TABLE} (sip_user, protocol, contact, body, message_id, created) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?)", (sip_user, protocol, contact, body, message_id, time.time()))
        return True

    def done(self, message_id: str) -> None:
        self.db.execute(f"DELETE FROM {self.TABLE} WHERE message_id = ?", (message_id,))  # noqa: S608

    def pending(self) -> list[PendingSend]:
        rows = self.db.fetchall(
            f"SELECT seq, sip_user, protocol, contact, body, message_id FROM {self.TABLE} "  # noqa: S608
            "ORDER BY seq")
        return [PendingSend(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]
