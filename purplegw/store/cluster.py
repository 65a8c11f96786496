"""Cluster membership and per-user ownership leases, on the shared database's clock.

Rule 1: every time is read from the database (``now``), never from a node:
        the nodes' clocks may differ, the database's is the one they share.
Rule 2: a lease is taken by one compare-and-set ``UPDATE`` that matches only a
        free row (node '') or an expired one (``expires <= now``) and bumps the
        epoch.  Of any number of nodes trying at once, the database lets
        exactly one statement match; the others change nothing.
Rule 3: renewal and release name the epoch the node holds: a node can only
        extend or give up the very lease it acquired, never a later one taken
        after its own expired.  An expired lease is not renewed: it is gone,
        and taking it again is an acquisition with a new epoch.
Rule 4: rows are created (free) in their own statement before the
        compare-and-set, so that no transaction needs two locks: InnoDB would
        otherwise deadlock two nodes that both insert a missing user's row.
Rule 5: release keeps the row (node '', expires 0): the epoch never goes back.

MySQL/MariaDB (InnoDB) is what a cluster runs on; SQLite serves the unit
tests and a single node (where these tables stay empty).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from purplegw.store.database import Database

# The database's clock in seconds since the epoch, as a SQL expression that
# stays the same through one statement.  UTC_TIMESTAMP, not NOW(): NOW() is in
# the session's time zone and repeats an hour when daylight saving ends.
_NOW = {
    "mysql": "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) / 1000000)",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_INSERT_IGNORE = {"mysql": "INSERT IGNORE", "sqlite": "INSERT OR IGNORE"}
_CHUNK = 200  # users per statement: keeps statements well under max_allowed_packet


class NodeState(StrEnum):
    LIVE = "live"  # takes its share of users
    DRAINING = "draining"  # handing its users over (SIGTERM); takes none
    GONE = "gone"  # stopped cleanly; kept for `cluster status` until removed


@dataclass(frozen=True)
class Node:
    name: str
    advertise: str
    state: NodeState
    heartbeat: float  # database time of the last heartbeat
    started: float  # database time of the first heartbeat of this run
    age: float  # seconds since the heartbeat, by the database clock
    leases: int  # unexpired leases held

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "advertise": self.advertise,
            "state": str(self.state),
            "heartbeat": self.heartbeat,
            "started": self.started,
            "age": self.age,
            "leases": self.leases,
        }


@dataclass(frozen=True)
class Lease:
    sip_user: str
    node: str  # '' when free
    expires: float  # database time
    epoch: int  # fencing token: grows by one at every acquisition


class ClusterRepository:
    NODES = "purplegw_nodes"
    LEASES = "purplegw_leases"

    def __init__(self, db: Database) -> None:
        self.db = db
        self._now = _NOW[db.dialect]

    @property
    def now_sql(self) -> str:
        """The database clock as a SQL expression (Rule 1), for queries built elsewhere."""
        return self._now

    def now(self) -> float:
        row = self.db.fetchone(f"SELECT {self._now}")
        return float(row[0]) if row else 0.0

    # --- nodes -------------------------------------------------------------

    def heartbeat(self, name: str, advertise: str, state: NodeState = NodeState.LIVE) -> None:
        """Record that ``name`` is up now (created on the first one)."""
        state = NodeState(state)
        columns = "name, advertise, state, heartbeat, started"
        insert = f"INSERT INTO {self.NODES} ({columns}) VALUES (?, ?, ?, {self._now}, {self._now}) "
        if self.db.dialect == "mysql":
            upsert = insert + (
                "ON DUPLICATE KEY UPDATE advertise = VALUES(advertise), "
                "state = VALUES(state), heartbeat = VALUES(heartbeat)"
            )
        else:
            upsert = insert + (
                "ON CONFLICT (name) DO UPDATE SET advertise = excluded.advertise, "
                "state = excluded.state, heartbeat = excluded.heartbeat"
            )
        self.db.execute(upsert, (name, advertise, str(state)))

    def set_state(self, name: str, state: NodeState) -> bool:
        """Change a node's state without a heartbeat (an operator marking a dead node gone)."""
        return (
            self.db.execute(
                f"UPDATE {self.NODES} SET state = ? WHERE name = ?",
                (str(NodeState(state)), name),
            )
            == 1
        )

    def remove_node(self, name: str) -> bool:
        query = f"DELETE FROM {self.NODES} WHERE name = ?"
        return self.db.execute(query, (name,)) == 1

    def nodes(self) -> list[Node]:
        """Every node, by name, with its heartbeat age and its count of unexpired leases."""
        rows = self.db.fetchall(
            "SELECT n.name, n.advertise, n.state, n.heartbeat, n.started, "
            f"{self._now} - n.heartbeat, "
            f"(SELECT COUNT(*) FROM {self.LEASES} l WHERE l.node = n.name "
            f"AND l.expires > {self._now}) "
            f"FROM {self.NODES} n ORDER BY n.name"
        )
        return [
            Node(r[0], r[1], NodeState(r[2]), float(r[3]), float(r[4]), float(r[5]), int(r[6]))
            for r in rows
        ]

    def live_nodes(self, max_age: float) -> list[str]:
        """Names of the nodes in state live whose heartbeat is younger than ``max_age`` s."""
        rows = self.db.fetchall(
            f"SELECT name FROM {self.NODES} WHERE state = ? "
            f"AND heartbeat > {self._now} - ? ORDER BY name",
            (str(NodeState.LIVE), max_age),
        )
        return [str(r[0]) for r in rows]

    # --- leases ------------------------------------------------------------

    def acquire(self, sip_user: str, node: str, lease_seconds: float) -> Lease | None:
        """Take ``sip_user`` if its lease is free or expired; None if another node holds it.

        A node that still holds the lease does not get it again through this
        (Rule 3): it renews, or waits for its own old lease to expire.
        """
        self.ensure([sip_user])
        with self.db.transaction():
            # The one compare-and-set (Rule 2); the row lock it takes lasts
            # until the commit, so the SELECT below reads what it wrote.
            taken = self.db.execute(
                f"UPDATE {self.LEASES} SET node = ?, expires = {self._now} + ?, "
                f"epoch = epoch + 1, acquired = {self._now} "
                f"WHERE sip_user = ? AND (node = '' OR expires <= {self._now})",
                (node, lease_seconds, sip_user),
            )
            if taken != 1:
                return None
            return self.lease(sip_user)

    def acquire_many(self, users: Iterable[str], node: str, lease_seconds: float) -> dict[str, int]:
        """Take every lease of ``users`` that is free or expired; user -> new epoch.

        Rule 2 over up to 200 users per statement: one compare-and-set
        ``UPDATE`` per chunk instead of one transaction per user (a takeover
        of thousands of users).  The rows it took carry ``acquired`` = the
        database time read just before, which no earlier acquisition can
        have, so the ``SELECT`` in the same transaction (the UPDATE's row
        locks still held) tells them from leases an earlier run of this node
        still holds.
        """
        pending = sorted(set(users))  # one lock order for every node: no deadlocks
        self.ensure(pending)
        taken: dict[str, int] = {}
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            with self.db.transaction():
                stamp = self.now()
                self.db.execute(
                    f"UPDATE {self.LEASES} SET node = ?, expires = {self._now} + ?, "
                    f"epoch = epoch + 1, acquired = ? "
                    f"WHERE sip_user IN ({marks}) AND (node = '' OR expires <= {self._now})",
                    [node, lease_seconds, stamp, *chunk],
                )
                rows = self.db.fetchall(
                    f"SELECT sip_user, epoch FROM {self.LEASES} "
                    f"WHERE sip_user IN ({marks}) AND node = ? AND acquired = ?",
                    [*chunk, node, stamp],
                )
            taken.update((str(r[0]), int(r[1])) for r in rows)
        return taken

    def leases_of(self, users: Iterable[str]) -> dict[str, Lease]:
        """The lease rows of ``users`` that exist (free ones included), by user."""
        pending = sorted(set(users))
        found: dict[str, Lease] = {}
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = self.db.fetchall(
                f"SELECT sip_user, node, expires, epoch FROM {self.LEASES} "
                f"WHERE sip_user IN ({marks})",
                chunk,
            )
            for r in rows:
                found[str(r[0])] = Lease(str(r[0]), str(r[1]), float(r[2]), int(r[3]))
        return found

    def ensure(self, users: Iterable[str]) -> None:
        """Create missing lease rows, free (Rule 4); each chunk commits on its own."""
        pending = list(dict.fromkeys(users))
        insert = _INSERT_IGNORE[self.db.dialect]
        for start in range(0, len(pending), _CHUNK):
            chunk = pending[start : start + _CHUNK]
            values = ", ".join(["(?, '', 0, 0, 0)"] * len(chunk))
            self.db.execute(
                f"{insert} INTO {self.LEASES} "
                f"(sip_user, node, expires, epoch, acquired) VALUES {values}",
                chunk,
            )

    def renew(self, node: str, held: Mapping[str, int], lease_seconds: float) -> dict[str, float]:
        """Extend the unexpired leases ``node`` holds at these epochs; user -> new expiry.

        A user missing from the answer is no longer this node's: its lease
        expired (or was taken after expiry): log its accounts out.
        """
        renewed: dict[str, float] = {}
        items = list(held.items())
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            match = " OR ".join(["(sip_user = ? AND epoch = ?)"] * len(chunk))
            params = [value for pair in chunk for value in pair]
            with self.db.transaction():
                self.db.execute(
                    f"UPDATE {self.LEASES} SET expires = {self._now} + ? "
                    f"WHERE node = ? AND expires > {self._now} AND ({match})",
                    [lease_seconds, node, *params],
                )
                # Rows still this node's, at its epoch and unexpired, are the ones
                # the UPDATE extended: time only moves forward.
                rows = self.db.fetchall(
                    f"SELECT sip_user, expires FROM {self.LEASES} "
                    f"WHERE node = ? AND expires > {self._now} AND ({match})",
                    [node, *params],
                )
            renewed.update((str(r[0]), float(r[1])) for r in rows)
        return renewed

    def release(self, node: str, held: Mapping[str, int]) -> int:
        """Free these leases at once (drain; the accounts are logged out first); how many."""
        released = 0
        items = list(held.items())
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            match = " OR ".join(["(sip_user = ? AND epoch = ?)"] * len(chunk))
            released += self.db.execute(
                f"UPDATE {self.LEASES} SET node = '', expires = 0 WHERE node = ? AND ({match})",
                [node, *(value for pair in chunk for value in pair)],
            )
        return released

    def lease(self, sip_user: str) -> Lease | None:
        row = self.db.fetchone(
            f"SELECT sip_user, node, expires, epoch FROM {self.LEASES} WHERE sip_user = ?",
            (sip_user,),
        )
        return Lease(str(row[0]), str(row[1]), float(row[2]), int(row[3])) if row else None

    def leases(self, node: str | None = None, *, unexpired: bool = False) -> list[Lease]:
        """Held leases (node not ''), by user; of one node, or only the unexpired ones."""
        where = ["node <> ''"]
        params: list[Any] = []
        if node is not None:
            where.append("node = ?")
            params.append(node)
        if unexpired:
            where.append(f"expires > {self._now}")
        rows = self.db.fetchall(
            f"SELECT sip_user, node, expires, epoch FROM {self.LEASES} "
            f"WHERE {' AND '.join(where)} ORDER BY sip_user",
            params,
        )
        return [Lease(str(r[0]), str(r[1]), float(r[2]), int(r[3])) for r in rows]
