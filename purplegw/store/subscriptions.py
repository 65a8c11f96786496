"""Presence subscriptions (SUBSCRIBE dialogs) that outlive the process.

Rule 1: ``save`` writes the whole dialog (create and every refresh);
        ``advance_cseq`` records each NOTIFY's CSeq, so that after a restart
        the next NOTIFY still carries a higher CSeq than the phone has seen.
Rule 2: ``delete`` when the subscription terminates (unsubscribe, expiry,
        refusal, a NOTIFY answered with an error).
Rule 3: ``live(now)`` returns only subscriptions that have not expired;
        ``purge(now)`` drops the others.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from purplegw.store.database import Database


@dataclass(frozen=True)
class StoredSubscription:
    dialog_key: str
    sip_user: str
    account_id: int
    protocol: str
    contact: str
    event_id: str
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str
    remote_uri: str
    remote_target: str
    route_set: str  # Record-Route values, one per line, in order
    local_contact: str
    local_cseq: int
    remote_cseq: int
    state: str  # "pending" | "active"
    expires_at: float
    transport: str  # where the SUBSCRIBE came from
    host: str
    port: int


def dialog_key(call_id: str, local_tag: str, remote_tag: str) -> str:
    """Fixed-width primary key for a dialog id (Call-IDs can be long)."""
    return hashlib.sha1(
        f"{call_id}\0{local_tag}\0{remote_tag}".encode(), usedforsecurity=False
    ).hexdigest()


_COLUMNS = [f.name for f in fields(StoredSubscription)]
_INTS = {"account_id", "local_cseq", "remote_cseq", "port"}


def _typed(row: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = dict(zip(_COLUMNS, row, strict=True))
    for name in _INTS:
        out[name] = int(out[name])
    out["expires_at"] = float(out["expires_at"])
    return out


class SubscriptionRepository:
    TABLE = "purplegw_subscriptions"

    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, sub: StoredSubscription) -> None:
        values = tuple(getattr(sub, name) for name in _COLUMNS)
        with self.db.transaction():
            self.db.execute(
                f"DELETE FROM {self.TABLE} WHERE dialog_key = ?",
                (sub.dialog_key,),
            )
            self.db.execute(
                f"INSERT INTO {self.TABLE} ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                values,
            )

    def advance_cseq(self, key: str, local_cseq: int) -> None:
        self.db.execute(
            f"UPDATE {self.TABLE} SET local_cseq = ? WHERE dialog_key = ? AND local_cseq < ?",
            (local_cseq, key, local_cseq),
        )

    def set_state(self, key: str, state: str) -> None:
        self.db.execute(
            f"UPDATE {self.TABLE} SET state = ? WHERE dialog_key = ?",
            (state, key),
        )

    def delete(self, key: str) -> None:
        self.db.execute(f"DELETE FROM {self.TABLE} WHERE dialog_key = ?", (key,))

    def live(self, now: float) -> list[StoredSubscription]:
        rows = self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM {self.TABLE} "
            "WHERE expires_at > ? ORDER BY sip_user, dialog_key",
            (now,),
        )
        return [StoredSubscription(**_typed(row)) for row in rows]

    def of_user(self, sip_user: str, now: float) -> list[StoredSubscription]:
        """The live subscriptions of one SIP user (a cluster node taking the user over)."""
        rows = self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM {self.TABLE} "
            "WHERE sip_user = ? AND expires_at > ? ORDER BY dialog_key",
            (sip_user, now),
        )
        return [StoredSubscription(**_typed(row)) for row in rows]

    def purge(self, now: float) -> int:
        return self.db.execute(f"DELETE FROM {self.TABLE} WHERE expires_at <= ?", (now,))

    def count(self) -> int:
        row = self.db.fetchone(f"SELECT COUNT(*) FROM {self.TABLE}")
        return int(row[0]) if row else 0
