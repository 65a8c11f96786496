"""Durable queue of messages from external contacts to SIP users.

Rule 1: ``put`` commits before the caller acknowledges anything upstream.
Rule 2: ``pending(user)`` returns a user's messages in arrival order; the
        delivering code sends them one at a time, in that order.
Rule 3: ``done(seq)`` only after the SIP side answered 2xx; a crash in
        between means the message is sent again (at-least-once).
Rule 4: ``put_many``/``done_many`` write a batch in one transaction (one
        commit, one fsync): all of it is durable or none of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

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
    message_id: str = ""  # the network's id of the message ("" if none)
    receipts: str = ""  # what its sender asked to be told: "receipt,markable"


@dataclass(frozen=True)
class NewIncoming:
    """A received message to queue (``put_many``)."""

    sip_user: str
    account_id: int
    protocol: str
    contact: str
    body: bytes
    content_type: str = "text/plain;charset=UTF-8"
    message_id: str = ""
    receipts: str = ""


_COLUMNS = (
    "seq, sip_user, account_id, protocol, contact, content_type, body, created, attempts, "
    "message_id, receipts"
)


def _row(r: tuple[Any, ...]) -> QueuedMessage:
    return QueuedMessage(
        int(r[0]),
        r[1],
        int(r[2]),
        r[3],
        r[4],
        r[5],
        bytes(r[6]),
        float(r[7]),
        int(r[8]),
        r[9] or "",
        r[10] or "",
    )


class OutboxRepository:
    TABLE = "purplegw_outbox"

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(  # noqa: PLR0913 - columns
        self,
        *,
        sip_user: str,
        account_id: int,
        protocol: str,
        contact: str,
        body: bytes,
        content_type: str = "text/plain;charset=UTF-8",
    ) -> int:
        return self.put_many(
            [NewIncoming(sip_user, account_id, protocol, contact, body, content_type)]
        )[0]

    def put_many(self, messages: Sequence[NewIncoming]) -> list[int]:
        """Queue a batch in one transaction, in the given order; returns their seqs."""
        now = time.time()
        with self.db.transaction():
            return [
                self.db.execute(
                    f"INSERT INTO {self.TABLE} (sip_user, account_id, protocol, contact, "
                    "content_type, body, created, message_id, receipts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.sip_user,
                        m.account_id,
                        m.protocol,
                        m.contact,
                        m.content_type,
                        m.body,
                        now,
                        m.message_id,
                        m.receipts,
                    ),
                )
                for m in messages
            ]

    def get(self, seq: int) -> QueuedMessage | None:
        row = self.db.fetchone(f"SELECT {_COLUMNS} FROM {self.TABLE} WHERE seq = ?", (seq,))
        return _row(row) if row else None

    def pending(self, sip_user: str | None = None, limit: int = 1000) -> list[QueuedMessage]:
        where, params = ("WHERE sip_user = ? ", (sip_user,)) if sip_user else ("", ())
        rows = self.db.fetchall(
            f"SELECT {_COLUMNS} FROM {self.TABLE} {where}ORDER BY seq LIMIT {int(limit)}", params
        )
        return [_row(r) for r in rows]

    def users_with_pending(self) -> list[str]:
        return [
            r[0]
            for r in self.db.fetchall(
                f"SELECT DISTINCT sip_user FROM {self.TABLE} ORDER BY sip_user"
            )
        ]

    def failed_attempt(self, seq: int, error: str) -> None:
        self.db.execute(
            f"UPDATE {self.TABLE} SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
            (error[:255], seq),
        )

    def done(self, seq: int) -> None:
        self.done_many([seq])

    def done_many(self, seqs: Iterable[int]) -> int:
        """Remove a batch of delivered messages in one transaction; returns how many went."""
        removed = 0
        with self.db.transaction():
            for seq in seqs:
                removed += self.db.execute(f"DELETE FROM {self.TABLE} WHERE seq = ?", (seq,))
        return removed

    def count(self) -> int:
        row = self.db.fetchone(f"SELECT COUNT(*) FROM {self.TABLE}")
        return int(row[0]) if row else 0
