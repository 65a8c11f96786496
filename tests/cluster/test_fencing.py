"""A node cut off from the database logs its accounts out before its leases expire.

gw3 reaches MariaDB through a TCP relay that stops forwarding (a silent
network, not a refused connection).  It cannot renew; its accounts must be
logged out while its leases are still valid by the database's clock, so no
account is ever logged in on two nodes.  Once the leases expired the two
other nodes take the users; when the relay forwards again gw3 takes its
share back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tests.cluster.nodes import Cluster, wait_until
from tests.kit.tally import report
from tests.kit.tcprelay import TcpRelay

if TYPE_CHECKING:
    from pathlib import Path

USERS = 9


def test_node_cut_off_from_the_database_fences_before_expiry(
    tmp_path: Path, mariadb: Any, prosody: Any
) -> None:
    cluster = Cluster(tmp_path, mariadb, prosody, lease_seconds=9)
    relay = TcpRelay("127.0.0.1", mariadb.port).start()
    through_relay = cluster.db_url.replace(f":{mariadb.port}/", f":{relay.port}/")
    gw1 = cluster.node("gw1")
    cluster.node("gw2")
    gw3 = cluster.node("gw3", db_url=through_relay)
    cluster.add_accounts(gw1, USERS, "fence")
    try:
        cluster.start("gw1", "gw2", "gw3")
        placed = cluster.wait_placed(["gw1", "gw2", "gw3"])
        victims = sorted(u for u, (name, _) in placed.items() if name == "gw3")
        assert victims
        relay.pause()
        cut_at = time.monotonic()
        # gw3 cannot change its leases any more: these expiries are final.
        leases = cluster.leases()
        expires = min(leases[u][1] for u in victims)
        assert all(leases[u][0] == "gw3" for u in victims), leases
        wait_until("gw3 logged its accounts out", lambda: not gw3.accounts(), timeout=60)
        logged_out = cluster.db_now()
        fenced_after = time.monotonic() - cut_at
        assert logged_out < expires, (logged_out, expires, gw3.log_text())
        assert "Cluster: fencing" in gw3.log.read_text(errors="replace")

        cluster.wait_placed(["gw1", "gw2"])
        taken_after = time.monotonic() - cut_at
        taken = cluster.leases()
        for user in victims:  # taken after gw3's lease expired, not before
            assert taken[user][3] >= leases[user][1], (user, leases[user], taken[user])

        relay.resume()
        cluster.wait_placed(["gw1", "gw2", "gw3"])
        report(
            f"cluster fencing: gw3 cut off from MariaDB logged out {len(victims)} users "
            f"{fenced_after:.1f}s after the cut, {expires - logged_out:.1f}s before its leases "
            f"expired (lease {cluster.lease_seconds}s); the others had them after "
            f"{taken_after:.1f}s; gw3 took its share back when the database came back"
        )
    finally:
        relay.resume()
        cluster.stop()
        relay.stop()
