"""Registrar bindings (REGISTER) in the database: shared by every node, kept across restarts.

Rule 1: ``put`` writes a binding whole (created or refreshed): one row per
        (address of record, contact URI); ``delete`` removes one, ``clear``
        all of an AoR (``Contact: *``).
Rule 2: ``expires_at`` is an absolute time (seconds since the epoch, the
        wall clock of the node that took the REGISTER); ``of_aor(aor, now)``
        and ``live(now)`` return only bindings with ``expires_at > now``,
        ``purge(now)`` drops the others.
Rule 3: ``changed_since(t)`` lists the rows written at or after ``t`` (a
        node learning of REGISTERs another node answered).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from purplegw.store.database import Database


@dataclass(frozen=True)
class StoredBinding:
    aor: str  # "user@domain"
    contact: str  # the Contact as bound: name-addr with its parameters, no expires
    expires_at: float
    call_id: str
    cseq: int
    transport: str  # where the REGISTER came from
    host: str
    port: int
    node: str = ""  # the node that took the REGISTER ('' on a single node)
    updated: float = 0.0  # when it was written, same clock as expires_at


def contact_key(contact_uri: str) -> str:
    """Fixed-width key for a contact URI (they can be long)."""
    return hashlib.sha1(contact_uri.encode(), usedforsecurity=False).hexdigest()


_COLUMNS = [f.name for f in fields(StoredBinding)]


def _binding(row: Sequence[Any]) -> StoredBinding:
    values: dict[str, Any] = dict(zip(_COLUMNS, row, strict=True))
    values["expires_at"] = float(values["expires_at"])
    values["updated"] = float(values["updated"])
    values["cseq"] = int(values["cseq"])
    values["port"] = int(values["port"])
    return StoredBinding(**values)


class BindingRepository:
    TABLE = "purplegw_bindings"

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, binding: StoredBinding, uri: str) -> None:
        """Create or refresh the binding of ``uri`` (the contact's URI, its identity)."""
        key = contact_key(uri)
        with self.db.transaction():
            self.db.execute(
                f"DELETE FROM {self.TABLE} WHERE aor = ? AND contact_key = ?", (binding.aor, key)
            )
            self.db.execute(
                f"INSERT INTO {self.TABLE} (contact_key, {', '.join(_COLUMNS)}) "
                f"VALUES (?, {', '.join('?' * len(_COLUMNS))})",
                (key, *(getattr(binding, name) for name in _COLUMNS)),
            )

    def delete(self, aor: str, uri: str) -> None:
        self.db.execute(
            f"DELETE FROM {self.TABLE} WHERE aor = ? AND contact_key = ?", (aor, contact_key(uri))
        )

    def clear(self, aor: str) -> None:
        self.db.execute(f"DELETE FROM {self.TABLE} WHERE aor = ?", (aor,))

    def of_aor(self, aor: str, now: float) -> list[StoredBinding]:
        rows = self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM {self.TABLE} "
            "WHERE aor = ? AND expires_at > ? ORDER BY updated, contact_key",
            (aor, now),
        )
        return [_binding(row) for row in rows]

    def live(self, now: float) -> list[StoredBinding]:
        rows = self.db.fetchall(
            f"SELECT {', '.join(_COLUMNS)} FROM {self.TABLE} "
            "WHERE expires_at > ? ORDER BY aor, updated, contact_key",
            (now,),
        )
        return [_binding(row) for row in rows]

    def changed_since(self, since: float, now: float) -> list[tuple[str, float, str]]:
        """(aor, updated, node) of live rows written at or after ``since`` (Rule 3)."""
        rows = self.db.fetchall(
            f"SELECT aor, updated, node FROM {self.TABLE} WHERE updated >= ? AND expires_at > ? "
            "ORDER BY updated, aor",
            (since, now),
        )
        return [(str(r[0]), float(r[1]), str(r[2])) for r in rows]

    def purge(self, now: float) -> int:
        return self.db.execute(f"DELETE FROM {self.TABLE} WHERE expires_at <= ?", (now,))

    def count(self) -> int:
        row = self.db.fetchone(f"SELECT COUNT(*) FROM {self.TABLE}")
        return int(row[0]) if row else 0
