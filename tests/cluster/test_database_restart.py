"""MariaDB restarted under a running cluster: shorter than the fencing time, it changes nothing.

The database stays down until a node has failed a renewal.  Every node keeps
every account on the same connection (no fencing, no user moves), and every
node heartbeats again once the database is back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tests.cluster.nodes import Cluster, wait_until
from tests.kit.tally import report

if TYPE_CHECKING:
    from pathlib import Path

USERS = 6
NODES = ("gw1", "gw2", "gw3")


def test_mariadb_restart_moves_nobody(tmp_path: Path, own_mariadb: Any, prosody: Any) -> None:
    # 21 s: fencing after 14 s, far longer than a restart of a loopback MariaDB.
    cluster = Cluster(tmp_path, own_mariadb, prosody, lease_seconds=21)
    first = cluster.node("gw1")
    for name in NODES[1:]:
        cluster.node(name)
    cluster.add_accounts(first, USERS, "dbrestart")
    try:
        cluster.start(*NODES)
        placed = cluster.wait_placed(NODES)
        stopped = time.monotonic()
        own_mariadb.stop()
        # Down until a node has missed a renewal: the outage is seen, not slept through.
        wait_until(
            "a renewal failed",
            lambda: any(
                "Cluster: database unreachable" in node.log.read_text(errors="replace")
                for node in cluster.nodes.values()
            ),
            timeout=30,
        )
        own_mariadb.start()
        outage = time.monotonic() - stopped
        back = cluster.db_now()

        def all_beat_again() -> bool:
            rows = cluster.sql("SELECT name, heartbeat FROM purplegw_nodes")
            return len(rows) == len(NODES) and all(float(r[1]) > back for r in rows)

        wait_until("every node heartbeating again", all_beat_again, timeout=60)
        after = cluster.wait_placed(NODES)
        for user, (name, status) in after.items():
            assert name == placed[user][0], user
            assert status["since"] == placed[user][1]["since"], (user, status)
        for node in cluster.nodes.values():
            assert "Cluster: fencing" not in node.log.read_text(errors="replace")
        report(
            f"cluster: MariaDB restarted in {outage:.1f}s under 3 nodes (fencing after "
            f"{cluster.lease_seconds * 2 / 3:.0f}s): no account moved or reconnected"
        )
    finally:
        cluster.stop()
