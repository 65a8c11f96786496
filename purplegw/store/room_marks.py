"""Rooms each account is in and the last message delivered from each (upgrade v014)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from purplegw.store.database import Database


class RoomMark(NamedTuple):
    account_id: int
    room: str
    nick: str
    last_at: float | None  # None: joined, nothing delivered yet
    recent: tuple[str, ...] = ()  # fingerprints of the last messages delivered, oldest first


class RoomMarkRepository:
    TABLE = "purplegw_room_marks"

    def __init__(self, db: Database) -> None:
        self.db = db

    def save_many(self, marks: list[RoomMark]) -> None:
        """Store (or replace) every mark in one transaction."""
        now = time.time()
        with self.db.transaction():
            for mark in marks:
                self.db.execute(
                    f"DELETE FROM {self.TABLE} WHERE account_id = ? AND room = ?",
                    (mark.account_id, mark.room),
                )
                self.db.execute(
                    f"INSERT INTO {self.TABLE} (account_id, room, nick, last_at, recent, updated) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        mark.account_id,
                        mark.room,
                        mark.nick,
                        mark.last_at or 0.0,
                        ",".join(mark.recent)[:255],
                        now,
                    ),
                )

    def delete(self, account_id: int, room: str) -> None:
        self.db.execute(
            f"DELETE FROM {self.TABLE} WHERE account_id = ? AND room = ?", (account_id, room)
        )

    def all(self) -> list[RoomMark]:
        return [
            RoomMark(
                int(account_id),
                str(room),
                str(nick),
                float(last_at) or None,
                tuple(f for f in str(recent).split(",") if f),
            )
            for account_id, room, nick, last_at, recent in self.db.fetchall(
                f"SELECT account_id, room, nick, last_at, recent FROM {self.TABLE}"
            )
        ]
