"""Dead letters: messages the gateway gave up on, kept with the reason.

Rule 1: a message leaves its queue (send queue or outbox) for this table in
        the same transaction (``bury_send`` / ``bury_incoming``): at every
        instant it is in exactly one of them, never in none.
Rule 2: ``take_for_retry`` removes a dead letter and puts it back into the
        queue of its direction in one transaction; of two concurrent retries
        of the same letter exactly one gets it.  A ``to_network`` message
        keeps its message id (the network may deduplicate); a ``to_sip``
        message goes to the end of its user's outbox with its attempts reset.
Rule 3: ``drop`` is the only way a dead letter disappears without being sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from purplegw.exceptions import StoreError
from purplegw.store.outbox import NewIncoming, OutboxRepository
from purplegw.store.sendq import NewSend, SendQueueRepository

if TYPE_CHECKING:
    from purplegw.store.database import Database

TEXT_PLAIN = "text/plain;charset=UTF-8"
MAX_REASON = 255


class Direction(StrEnum):
    TO_NETWORK = "to_network"  # SIP user -> external contact (the send queue's side)
    TO_SIP = "to_sip"  # external contact -> SIP user (the outbox's side)


@dataclass(frozen=True)
class DeadLetter:
    id: int
    direction: Direction
    sip_user: str
    protocol: str
    account_id: int
    contact: str
    content_type: str
    body: bytes
    message_id: str
    created: float  # when the gateway accepted it
    failed: float  # when it gave up
    attempts: int
    status: int  # SIP status code, or the closest one for a network failure
    reason: str

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``purplegw messages failed --json``)."""
        return {
            "id": self.id,
            "direction": str(self.direction),
            "sip_user": self.sip_user,
            "protocol": self.protocol,
            "account_id": self.account_id,
            "contact": self.contact,
            "content_type": self.content_type,
            "body": self.text,
            "message_id": self.message_id,
            "created": self.created,
            "failed": self.failed,
            "attempts": self.attempts,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Requeued:
    """What ``take_for_retry`` did: the letter, and its key in the queue it re-entered."""

    letter: DeadLetter
    queue_key: str | int  # send-queue message id (to_network) or outbox seq (to_sip)


_COLUMNS = (
    "id, direction, sip_user, protocol, account_id, contact, content_type, body, "
    "message_id, created, failed, attempts, status, reason"
)


def _row(r: tuple[Any, ...]) -> DeadLetter:
    return DeadLetter(
        int(r[0]),
        Direction(r[1]),
        r[2],
        r[3],
        int(r[4]),
        r[5],
        r[6],
        bytes(r[7]),
        r[8],
        float(r[9]),
        float(r[10]),
        int(r[11]),
        int(r[12]),
        r[13],
    )


class DeadLetterRepository:
    TABLE = "purplegw_dead_letters"

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(  # noqa: PLR0913 - one keyword per column
        self,
        *,
        direction: Direction | str,
        sip_user: str,
        protocol: str,
        contact: str,
        body: bytes | str,
        status: int,
        reason: str,
        message_id: str = "",
        account_id: int = 0,
        content_type: str = TEXT_PLAIN,
        created: float | None = None,
        attempts: int = 0,
        failed: float | None = None,
    ) -> int:
        """Record a message given up on; returns its id."""
        now = time.time()
        data = body.encode("utf-8") if isinstance(body, str) else body
        return self.db.execute(
            f"INSERT INTO {self.TABLE} (direction, sip_user, protocol, account_id, contact, "
            "content_type, body, message_id, created, failed, attempts, status, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                str(Direction(direction)),
                sip_user,
                protocol,
                account_id,
                contact,
                content_type,
                data,
                message_id,
                now if created is None else created,
                now if failed is None else failed,
                attempts,
                status,
                reason[:MAX_REASON],
            ),
        )

    def bury_send(
        self,
        sendq: SendQueueRepository,
        message_id: str,
        *,
        status: int,
        reason: str,
        attempts: int = 1,
    ) -> int | None:
        """Move a send-queue row here (one transaction); None if it was not queued."""
        with self.db.transaction():
            row = sendq.get(message_id)
            if row is None:
                return None
            sendq.done(message_id)
            return self.add(
                direction=Direction.TO_NETWORK,
                sip_user=row.sip_user,
                protocol=row.protocol,
                contact=row.contact,
                body=row.body,
                message_id=row.message_id,
                status=status,
                reason=reason,
                attempts=attempts,
                created=row.created,
            )

    def bury_incoming(
        self, outbox: OutboxRepository, seq: int, *, status: int, reason: str, message_id: str = ""
    ) -> int | None:
        """Move an outbox row here (one transaction); None if it was not queued."""
        with self.db.transaction():
            row = outbox.get(seq)
            if row is None:
                return None
            outbox.done(seq)
            return self.add(
                direction=Direction.TO_SIP,
                sip_user=row.sip_user,
                protocol=row.protocol,
                account_id=row.account_id,
                contact=row.contact,
                content_type=row.content_type,
                body=row.body,
                message_id=message_id,
                status=status,
                reason=reason,
                attempts=row.attempts,
                created=row.created,
            )

    def get(self, letter_id: int) -> DeadLetter | None:
        row = self.db.fetchone(f"SELECT {_COLUMNS} FROM {self.TABLE} WHERE id = ?", (letter_id,))
        return _row(row) if row else None

    def list(
        self,
        *,
        sip_user: str | None = None,
        direction: Direction | str | None = None,
        protocol: str | None = None,
        since: float | None = None,
        limit: int = 1000,
    ) -> list[DeadLetter]:
        """Oldest first, filtered by any of user, direction, protocol, failed-since."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("sip_user", sip_user),
            ("protocol", protocol),
            ("direction", None if direction is None else str(Direction(direction))),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since is not None:
            where.append("failed >= ?")
            params.append(since)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self.db.fetchall(
            f"SELECT {_COLUMNS} FROM {self.TABLE} {clause}ORDER BY id LIMIT {int(limit)}", params
        )
        return [_row(r) for r in rows]

    def count(self, sip_user: str | None = None) -> int:
        where, params = ("WHERE sip_user = ?", (sip_user,)) if sip_user else ("", ())
        row = self.db.fetchone(f"SELECT COUNT(*) FROM {self.TABLE} {where}", params)
        return int(row[0]) if row else 0

    def take_for_retry(
        self, letter_id: int, *, sendq: SendQueueRepository, outbox: OutboxRepository
    ) -> Requeued | None:
        """Remove a letter and put it back into its queue, atomically; None if it is gone."""
        with self.db.transaction():
            letter = self.get(letter_id)
            # The DELETE's row count, not the SELECT, decides who owns the letter:
            # a concurrent retry or drop that got there first leaves 0 rows here.
            if (
                letter is None
                or self.db.execute(f"DELETE FROM {self.TABLE} WHERE id = ?", (letter_id,)) != 1
            ):
                return None
            if letter.direction is Direction.TO_NETWORK:
                [added] = sendq.put_many(
                    [
                        NewSend(
                            letter.sip_user,
                            letter.protocol,
                            letter.contact,
                            letter.text,
                            letter.message_id,
                        )
                    ]
                )
                if not added:
                    raise StoreError(
                        f"message {letter.message_id!r} is already in the send "
                        f"queue; dead letter {letter_id} kept"
                    )
                return Requeued(letter, letter.message_id)
            [seq] = outbox.put_many(
                [
                    NewIncoming(
                        letter.sip_user,
                        letter.account_id,
                        letter.protocol,
                        letter.contact,
                        letter.body,
                        letter.content_type,
                    )
                ]
            )
            return Requeued(letter, seq)

    def drop(self, letter_id: int) -> bool:
        return self.db.execute(f"DELETE FROM {self.TABLE} WHERE id = ?", (letter_id,)) == 1
