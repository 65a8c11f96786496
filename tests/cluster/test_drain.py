"""SIGTERM: a node hands its users over at once instead of letting the leases run out.

The leases of the stopped node's users are taken by the other nodes before
the moment they would have expired (database times, read from the leases
table): the takers did not wait for expiry.  The stopped node shows as gone.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from tests.cluster.nodes import Cluster
from tests.kit.tally import report

if TYPE_CHECKING:
    from pathlib import Path

USERS = 9


def test_sigterm_drains_without_waiting_for_expiry(
    tmp_path: Path, mariadb: Any, prosody: Any
) -> None:
    # The default lease, longer than the others' 6 s: the leases read below end at
    # least 11 s later (renewed every 3.75 s), a drain hands them over within a few
    # seconds, so a takeover that waited for expiry could not pass.  A longer lease
    # only slows every tick (the first placement took 12 s with 20 s).
    cluster = Cluster(tmp_path, mariadb, prosody, lease_seconds=15)
    gw1, _, gw3 = (cluster.node(name) for name in ("gw1", "gw2", "gw3"))
    cluster.add_accounts(gw1, USERS, "drain")
    try:
        cluster.start("gw1", "gw2", "gw3")
        placed = cluster.wait_placed(["gw1", "gw2", "gw3"])
        victims = sorted(u for u, (name, _) in placed.items() if name == "gw3")
        assert victims
        before = cluster.leases()
        assert all(before[u][0] == "gw3" for u in victims), before
        stopped_at = time.monotonic()
        assert gw3.stop() == 0, gw3.log_text()
        after = cluster.wait_placed(["gw1", "gw2"])
        took = time.monotonic() - stopped_at
        leases = cluster.leases()
        for user in victims:
            node, _, epoch, acquired = leases[user]
            assert node == after[user][0], (user, leases[user])
            assert epoch == before[user][2] + 1, (user, before[user], leases[user])
            assert acquired < before[user][1], (user, before[user], leases[user])
        for user in set(placed) - set(victims):
            assert after[user][1]["since"] == placed[user][1]["since"], user
        nodes = {n["name"]: n for n in json.loads(gw1.cli("cluster", "status", "--json").stdout)}
        assert (nodes["gw3"]["state"], nodes["gw3"]["accounts"]) == ("gone", 0), nodes
        report(
            f"cluster drain: {len(victims)}/{USERS} users of a SIGTERMed node online elsewhere "
            f"{took:.1f}s after the signal (lease {cluster.lease_seconds}s: not waited for)"
        )
    finally:
        cluster.stop()
