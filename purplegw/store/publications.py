"""Phones' PUBLISH state (RFC 3903 publications) in the database.

Rule 1: a publication is keyed by its entity tag; every successful PUBLISH
        issues a new tag, so ``put(pub, replaces=old_tag)`` removes the row
        of the tag it refreshed or modified and writes the new one.
Rule 2: ``expires_at`` is absolute (seconds since the epoch, the wall clock
        of the node that took the PUBLISH); ``live(now)`` and
        ``of_resource`` return only unexpired rows, ``purge(now)`` drops the
        others.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from purplegw.store.database import Database


@dataclass(frozen=True)
class StoredPublication:
    etag: str
    resource: str  # "user@domain"
    event: str
    body: bytes
    content_type: str
    expires_at: float
    node: str = ""


_COLUMNS = [f.name for f in fields(StoredPublication)]


def _publication(row: Sequence[Any]) -> StoredPublication:
    values: dict[str, Any] = dict(zip(_COLUMNS, row, strict=True))
    values["body"] = bytes(values["body"])
    values["expires_at"] = float(values["expires_at"])
    return StoredPublication(**values)


class PublicationRepository:
    TABLE = "purplegw_publications"

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, publication: StoredPublication, replaces: str | None = None) -> None:
        with self.db.transaction():
            tags = {publication.etag, replaces} - {None}
            for tag in sorted(tags):  # type: ignore[type-var]
                self.db.execute(f"DELETE FROM {self.TABLE} WHERE etag = ?", (tag,))
            self.db.execute(
                f"INSERT INTO {self.TABLE} ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                tuple(getattr(publication, name) for name in _COLUMNS),
            )

    def delete(self, etag: str) -> None:
        self.db.execute(f"DELETE FROM {self.TABLE} WHERE etag = ?", (etag,))

    def of_resource(self, resource: str, now: float) -> list[StoredPublication]:
        rows = self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM {self.TABLE} "
            "WHERE resource = ? AND expires_at > ? ORDER BY expires_at, etag",
            (resource, now),
        )
        return [_publication(row) for row in rows]

    def live(self, now: float) -> list[StoredPublication]:
        rows = self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM {self.TABLE} "
            "WHERE expires_at > ? ORDER BY resource, expires_at, etag",
            (now,),
        )
        return [_publication(row) for row in rows]

    def purge(self, now: float) -> int:
        return self.db.execute(f"DELETE FROM {self.TABLE} WHERE expires_at <= ?", (now,))

    def count(self) -> int:
        row = self.db.fetchone(f"SELECT COUNT(*) FROM {self.TABLE}")
        return int(row[0]) if row else 0
