"""Durable queue of messages from external contacts to SIP users.

Rule 1: ``put`` commits before the caller acknowledges anything upstream.
Rule 2: ``pending(user)`` returns a user's messages in arrival order; the
        delivering code sends them one at a time, in that order.
Rule 3: ``done(seq)`` only after the SIP side answered 2xx; a crash in
        between means the message is sent again (at-least-once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from purplegw.store.database import Database


@dataclass(frozen=True)
class QueuedMessage:
    seq: int
    sip_user: str
    account_id: int
    protocol: str
    contact: str
    content_type: str
    body: bytes
    created: float
    attempts: int


class OutboxRepository:
    TABLE = "purplegw_outbox"

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, *, sip_user: str, account_id: int, protocol: str, contact: str,
            body: bytes, content_type: str = "text/plain;charset=UTF-8") -> int:
        return self.db.execute(
            f"INSERT INTO {self.TABLE} (sip_user, account_id, protocol, contact, "  # noqa: S608
            "content_type, body, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sip_user, account_id, protocol, contact, content_type, body, time.time()))

    def pending(self, sip_user: str | None = None, limit: int = 1000) -> list[QueuedMessage]:
        where, params = ("WHERE sip_user = ? ", (sip_user,)) if sip_user else ("", ())
        rows = self.db.fetchall(
            f"SELECT seq, sip_user, account_id, protocol, contact, content_type, body, "  # noqa: S608
            f"created, attempts FROM {self.TABLE} {where}ORDER BY seq LIMIT {int(limit)}", params)
        return [QueuedMessage(int(r[0]), r[1], int(r[2]), r[3], r[4], r[5], bytes(r[6]),
                              float(r[7]), int(r[8])) for r in rows]

    def users_with_pending(self) -> list[str]:
        return [r[0] for r in self.db.fetchall(
            f"SELECT DISTINCT sip_user FROM {self.TABLE} ORDER BY sip_user")]  # noqa: S608

    def failed_attempt(self, seq: int, error: str) -> None:
        self.db.execute(f"UPDATE {self.TABLE} SET attempts = attempts + 1, last_error = ? "  # noqa: S608
                        "WHERE seq = ?", (error[:255], seq))

    def done(self, seq: int) -> None:
        self.db.execute(f"DELETE FROM {self.TABLE} WHERE seq = ?", (seq,))  # noqa: S608

    def count(self) -> int:
        row = self.db.fetchone(f"SELECT COUNT(*) FROM {self.TABLE}")  # noqa: S608
        return int(row[0]) if row else 0
