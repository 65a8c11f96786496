"""Two-way traffic while the node that owns the SIP user is SIGKILLed: nothing accepted is lost.

alice's XMPP account runs on gw2 (the rendezvous rule over gw1..gw3 says
so).  Her phone (pjsua2) sends MESSAGEs to bob, each to the node that runs
her account at that moment (the test reads it from the nodes' status, as a
front proxy would from the leases); bob writes back all along.  The nodes
reach the phone through ``[sip] outbound_proxy``.  gw2 is killed in the
middle: whatever a node answered 202, and whatever Prosody acknowledged to
bob, must arrive once gw1 or gw3 has taken alice over.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from purplegw.actors.control import ControlError
from tests.cluster.nodes import Cluster, Node, wait_until
from tests.faults.traffic import (
    CountingPeer,
    Ids,
    Ticker,
    body_for,
    peer_cursor,
    phone_cursor,
    wait_delivered,
)
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.raw_ua import RawUA
from tests.kit.tally import Tally, report

if TYPE_CHECKING:
    from pathlib import Path

USERS = 3


def running(cluster: Cluster, sip_user: str) -> Node | None:
    """The node on which ``sip_user``'s account is connected now, if any."""
    for node in cluster.nodes.values():
        try:
            accounts = node.accounts() if node.alive() else []
        except ControlError:
            continue  # being killed
        if any(a["sip_user"] == sip_user and a["state"] == "connected" for a in accounts):
            return node
    return None


def test_sigkill_under_two_way_traffic_loses_nothing(  # noqa: PLR0915 - one scenario
    tmp_path: Path, mariadb: Any, prosody: Any
) -> None:
    phone = PjsuaAgent.start()
    cluster = Cluster(
        tmp_path,
        mariadb,
        prosody,
        lease_seconds=6,
        sip={"trusted": ["127.0.0.1/32"], "outbound_proxy": f"sip:127.0.0.1:{phone.port}"},
    )
    gw1 = cluster.node("gw1")
    for name in ("gw2", "gw3"):
        cluster.node(name)
    cluster.add_accounts(gw1, USERS * 4, "traffic")
    expected = cluster.expected(["gw1", "gw2", "gw3"])
    alice = next(u for u in cluster.users if expected[u] == "gw2")
    alice_jid = cluster.jids[alice]
    bob = prosody.create_user(f"bob{uuid.uuid4().hex[:6]}")
    to_xmpp = Tally("cluster SIGKILL: SIP -> XMPP")
    to_sip = Tally("cluster SIGKILL: XMPP -> SIP")
    peer = CountingPeer(
        bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file, tally=to_sip
    )
    senders = [RawUA(gw1)]
    out_ids, in_ids = Ids("cluster", "out"), Ids("cluster", "in")
    try:
        phone.account(f"sip:{alice}", register=False)
        cluster.start("gw1", "gw2", "gw3")
        cluster.wait_placed(["gw1", "gw2", "gw3"])
        peer.start()
        cursors = [phone_cursor(phone, None, to_sip), peer_cursor(peer, to_xmpp)]

        def from_phone() -> None:
            node = running(cluster, alice)
            if node is None:
                return  # taken over right now: a phone's proxy would answer 503 meanwhile
            msg_id = out_ids.next()
            to_xmpp.send(msg_id, conversation=bob.jid)
            sender = senders[-1]
            sender.sock.settimeout(2.0)
            sender.target = ("127.0.0.1", node.port)
            try:
                status, _ = sender.request(
                    "MESSAGE", f"sip:{bob.jid}", alice, to=f"sip:{bob.jid}", body=body_for(msg_id)
                )
            except TimeoutError:
                # No answer (the node died under it): not accepted.  A late
                # answer must not pass for the next message's: a new socket.
                sender.sock.close()
                senders.append(RawUA(gw1))
                return
            if status == 202:
                to_xmpp.accept(msg_id)
            else:
                to_xmpp.refuse(msg_id)

        def from_bob() -> None:
            peer.send_counted(alice_jid, in_ids.next())

        with Ticker(from_phone, 0.3), Ticker(from_bob, 0.3):
            wait_until(
                "traffic both ways",
                lambda: len(to_xmpp.accepted) >= 5 and len(to_sip.accepted) >= 5,
            )
            cluster.nodes["gw2"].kill()
            killed_at = time.monotonic()
            cluster.wait_placed(["gw1", "gw3"])
            took = time.monotonic() - killed_at
            accepted_before = len(to_xmpp.accepted)
            wait_until(
                "traffic after the takeover", lambda: len(to_xmpp.accepted) > accepted_before + 3
            )
        wait_delivered([to_xmpp, to_sip], cursors, timeout=60, settle=peer.request_ack)
        report(f"cluster SIGKILL under traffic: alice online elsewhere after {took:.1f}s")
    finally:
        peer.stop()
        phone.stop()
        cluster.stop()
        senders[-1].sock.close()
    to_xmpp.check()
    to_sip.check()
