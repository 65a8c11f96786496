"""Who holds a SIP user now, and where that node is: the forwarding's view of the cluster tables.

Rule 1: the holder of a user is the node named in its lease row while the
        lease is unexpired by the database's clock (purplegw.store.cluster);
        a free or expired lease has no holder.
Rule 2: a node's address is its ``advertise`` column (``IP:PORT``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from purplegw.store.cluster import ClusterRepository

if TYPE_CHECKING:
    from purplegw.store.database import Database


class OwnerRepository:
    LEASES = ClusterRepository.LEASES
    NODES = ClusterRepository.NODES

    def __init__(self, db: Database) -> None:
        self.db = db
        self._now = ClusterRepository(db).now_sql

    def holder(self, sip_user: str) -> tuple[str, str] | None:
        """(node, advertise) of the node holding ``sip_user``'s lease now, or None (Rule 1)."""
        row = self.db.fetchone(
            f"SELECT l.node, n.advertise FROM {self.LEASES} l "
            f"JOIN {self.NODES} n ON n.name = l.node "
            f"WHERE l.sip_user = ? AND l.node <> '' AND l.expires > {self._now}",
            (sip_user,),
        )
        return (str(row[0]), str(row[1])) if row else None

    def addresses(self, max_age: float) -> dict[str, str]:
        """advertise -> name of every node whose heartbeat is younger than ``max_age`` s."""
        rows = self.db.fetchall(
            f"SELECT name, advertise FROM {self.NODES} "
            f"WHERE heartbeat > {self._now} - ? AND advertise <> ''",
            (max_age,),
        )
        return {str(r[1]): str(r[0]) for r in rows}
