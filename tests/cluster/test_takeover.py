"""Three nodes share the users; one is killed, then joins again.

* Spread: every user's account runs on exactly the node the rendezvous rule
  names, and ``purplegw status --json`` says which node.
* SIGKILL: the dead node's users come up on the two others (each where the
  rule over the survivors puts it) once their leases expired, and a message
  the dead node had accepted (its send-queue row) is sent by the taker;
  every other user stays where it was, on the same connection.
* Join: the node starts again and takes back its share, and only that.

gw1 and gw2 run their accounts in a worker process (``[actors] workers =
1``), gw3 in its main process: a takeover goes both ways between the two.
When gw2 is SIGKILLed, its worker process logs out and ends as well.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from tests.cluster.nodes import Cluster, wait_until
from tests.kit.tally import report
from tests.kit.xmpp_peer import XmppPeer

USERS = 12


def children(pid: int) -> set[int]:
    return {
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    }


def running(pid: int) -> bool:
    """Not gone, and not a zombie waiting for a parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_kill_a_node_then_it_joins_again(tmp_path: Path, mariadb: Any, prosody: Any) -> None:
    cluster = Cluster(tmp_path, mariadb, prosody, lease_seconds=6)
    # gw1 and gw2 run their accounts in a worker process ([actors] workers), gw3 in its own.
    gw1, gw2 = cluster.node("gw1", workers=1), cluster.node("gw2", workers=1)
    cluster.node("gw3")
    cluster.add_accounts(gw1, USERS, "kill")
    bob = prosody.create_user(f"bob{uuid.uuid4().hex[:6]}")
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    try:
        cluster.start("gw1", "gw2", "gw3")
        placed = cluster.wait_placed(["gw1", "gw2", "gw3"])
        for user, (name, status) in placed.items():
            assert status["node"] == name, (user, status)
        assert {name for name, _ in placed.values()} == {"gw1", "gw2", "gw3"}
        on_cli = gw1.status()  # `purplegw status --json` carries the node too
        assert on_cli
        assert all(entry["node"] == "gw1" for entry in on_cli), on_cli
        listed = {n["name"]: n for n in json.loads(gw1.cli("cluster", "status", "--json").stdout)}
        for name in ("gw1", "gw2", "gw3"):
            owned = sum(1 for at, _ in placed.values() if at == name)
            assert (listed[name]["state"], listed[name]["accounts"]) == ("live", owned), listed

        peer.start()
        victims = sorted(u for u, (name, _) in placed.items() if name == "gw2")
        assert victims
        assert gw2.process is not None
        workers = children(gw2.process.pid)
        assert workers, "gw2 runs its accounts in a worker process"
        gw2.kill()
        # Its worker process sees the pipe close and logs out: never a second login.
        wait_until("gw2's worker process gone", lambda: not any(map(running, workers)), 30)
        killed_at = time.monotonic()
        # A message gw2 answered 202 and never sent: its row is all that is left.
        body = f"queued on gw2 {uuid.uuid4().hex}"
        cluster.sql(
            "INSERT INTO purplegw_sendq (sip_user, protocol, contact, body, message_id, created) "
            "VALUES (%s, 'xmpp', %s, %s, %s, %s)",
            (victims[0], bob.jid, body, uuid.uuid4().hex, time.time()),
        )
        after_kill = cluster.wait_placed(["gw1", "gw3"])
        took = time.monotonic() - killed_at
        for user, (name, status) in after_kill.items():
            if user not in victims:  # untouched: same node, same connection
                assert name == placed[user][0], (user, name)
                assert status["since"] == placed[user][1]["since"], (user, status)
        arrived = peer.wait_for(lambda e: e.kind == "message" and e.body == body, timeout=30)
        assert arrived.bare == cluster.jids[victims[0]]
        wait_until("the send queue empty", lambda: not cluster.sql("SELECT * FROM purplegw_sendq"))

        gw2.start()
        joined_at = time.monotonic()
        rejoined = cluster.wait_placed(["gw1", "gw2", "gw3"])
        rebalanced = time.monotonic() - joined_at
        moved = sorted(u for u in rejoined if rejoined[u][0] != after_kill[u][0])
        assert moved == victims  # bounded movement: only gw2's share goes back
        for user in set(rejoined) - set(moved):
            assert rejoined[user][1]["since"] == after_kill[user][1]["since"], user
        report(
            f"cluster: {len(victims)}/{USERS} users of a SIGKILLed node online elsewhere after "
            f"{took:.1f}s (lease {cluster.lease_seconds}s); a rejoining node had its share "
            f"back after {rebalanced:.1f}s"
        )
    finally:
        peer.stop()
        cluster.stop()
