"""Durable record of SIP -> external messages accepted but not yet sent.

Rule 1: ``put`` before the account actor is asked, so a crash right after
        the 202 still finds the message.
Rule 2: ``done`` once the account reported a final outcome (sent, or a
        refusal the SIP sender was told about).
Rule 3: rows still present at start-up were accepted by an earlier run and
        are handed to their account again when it is online (at-least-once;
        the network sees the same message id).
Rule 4: ``put_many``/``done_many`` write a batch in one transaction (one
        commit, one fsync): all of it is durable or none of it.  Group commit
        (``purplegw.store.groupcommit``) builds on them.
Rule 5: a message whose phone asked for a delivery notification (IMDN
        positive-delivery) is not forgotten when the network took it: it is
        marked ``acked`` (``acked_many``) and waits for the contact's receipt
        (``awaiting_receipt``); ``pending`` never returns it again (it is not
        sent twice).  ``receipts_done`` forgets such rows only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from purplegw.store.database import Database


@dataclass(frozen=True)
class PendingSend:
    seq: int
    sip_user: str
    protocol: str
    contact: str
    body: str
    message_id: str
    created: float = 0.0  # when it was accepted (time.time())
    imdn_id: str = ""  # the phone's IMDN Message-ID, if it asked for notifications
    notify: str = ""  # its Disposition-Notification: "positive-delivery, negative-delivery"


@dataclass(frozen=True)
class NewSend:
    """A message to record (``put_many``)."""

    sip_user: str
    protocol: str
    contact: str
    body: str
    message_id: str
    imdn_id: str = ""
    notify: str = ""


_COLUMNS = "seq, sip_user, protocol, contact, body, message_id, created, imdn_id, notify"


def _row(r: tuple[Any, ...]) -> PendingSend:
    return PendingSend(int(r[0]), r[1], r[2], r[3], r[4], r[5], float(r[6]), r[7] or "", r[8] or "")


class SendQueueRepository:
    TABLE = "purplegw_sendq"

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self, *, sip_user: str, protocol: str, contact: str, body: str, message_id: str
    ) -> bool:
        """Record a message; False if that message id is already recorded (a resend)."""
        return self.put_many([NewSend(sip_user, protocol, contact, body, message_id)])[0]

    def put_many(self, sends: Sequence[NewSend]) -> list[bool]:
        """Record a batch in one transaction; per message, False if its id was recorded already."""
        if not sends:
            return []
        now = time.time()
        with self.db.transaction():
            seen = self._recorded([s.message_id for s in sends])
            result = []
            for send in sends:
                if send.message_id in seen:
                    result.append(False)
                    continue
                seen.add(send.message_id)
                self.db.execute(
                    f"INSERT INTO {self.TABLE} (sip_user, protocol, contact, body, "
                    "message_id, created, imdn_id, notify) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        send.sip_user,
                        send.protocol,
                        send.contact,
                        send.body,
                        send.message_id,
                        now,
                        send.imdn_id,
                        send.notify,
                    ),
                )
                result.append(True)
        return result

    def _recorded(self, message_ids: Sequence[str]) -> set[str]:
        marks = ", ".join("?" * len(message_ids))
        return {
            str(r[0])
            for r in self.db.fetchall(
                f"SELECT message_id FROM {self.TABLE} WHERE message_id IN ({marks})", message_ids
            )
        }

    def done(self, message_id: str) -> None:
        self.done_many([message_id])

    def done_many(self, message_ids: Iterable[str]) -> int:
        """Forget a batch of messages in one transaction; returns how many rows went."""
        removed = 0
        with self.db.transaction():
            for message_id in message_ids:
                removed += self.db.execute(
                    f"DELETE FROM {self.TABLE} WHERE message_id = ?", (message_id,)
                )
        return removed

    def acked_many(self, message_ids: Sequence[str]) -> int:
        """The network took these messages; their rows wait for the contact's receipt (Rule 5)."""
        if not message_ids:
            return 0
        marks = ", ".join("?" * len(message_ids))
        return self.db.execute(
            f"UPDATE {self.TABLE} SET acked = 1 WHERE message_id IN ({marks})", message_ids
        )

    def receipts_done(self, message_ids: Sequence[str]) -> int:
        """Forget sent messages no receipt is awaited for any more (Rule 5)."""
        if not message_ids:
            return 0
        marks = ", ".join("?" * len(message_ids))
        return self.db.execute(
            f"DELETE FROM {self.TABLE} WHERE acked = 1 AND message_id IN ({marks})", message_ids
        )

    def awaiting_receipt(self, since: float) -> list[PendingSend]:
        """Sent messages still waiting for a receipt; older ones than ``since`` are forgotten."""
        with self.db.transaction():
            self.db.execute(f"DELETE FROM {self.TABLE} WHERE acked = 1 AND created < ?", (since,))
            rows = self.db.fetchall(
                f"SELECT {_COLUMNS} FROM {self.TABLE} WHERE acked = 1 ORDER BY seq"
            )
        return [_row(r) for r in rows]

    def get(self, message_id: str) -> PendingSend | None:
        row = self.db.fetchone(
            f"SELECT {_COLUMNS} FROM {self.TABLE} WHERE message_id = ?", (message_id,)
        )
        return _row(row) if row else None

    def pending(self) -> list[PendingSend]:
        rows = self.db.fetchall(f"SELECT {_COLUMNS} FROM {self.TABLE} WHERE acked = 0 ORDER BY seq")
        return [_row(r) for r in rows]

    def pending_after(self, seq: int) -> list[PendingSend]:
        """Rows recorded after ``seq`` (a running daemon picking up re-queued messages)."""
        rows = self.db.fetchall(
            f"SELECT {_COLUMNS} FROM {self.TABLE} WHERE seq > ? AND acked = 0 ORDER BY seq",
            (seq,),
        )
        return [_row(r) for r in rows]

    def pending_of(self, sip_users: Iterable[str]) -> list[PendingSend]:
        """Rows of these users (a cluster node taking them over from another node)."""
        pending = sorted(set(sip_users))
        found: list[PendingSend] = []
        for start in range(0, len(pending), 200):
            chunk = pending[start : start + 200]
            marks = ", ".join("?" * len(chunk))
            rows = self.db.fetchall(
                f"SELECT {_COLUMNS} FROM {self.TABLE} WHERE sip_user IN ({marks})", chunk
            )
            found += [_row(r) for r in rows]
        return sorted(found, key=lambda row: row.seq)
