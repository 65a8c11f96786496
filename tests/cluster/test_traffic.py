"""Nodes join, restart and die under two-way traffic: nothing accepted is lost.

Three nodes behind the shipped etc/kamailio-cluster.cfg (a real Kamailio, its
dispatcher over gw1..gw3), the users' accounts on Prosody, the cluster's
state in MariaDB.  alice's phone (pjsua2) registers through Kamailio and
sends MESSAGEs to bob through it all along; bob (on Prosody) writes back
all along.  Kamailio takes each of her requests to the node its hash names
(the node forwards to alice's holder) and, when that node is down, to
another.  alice is one of the users the rendezvous rule gives to gw3, so
both cases move her.

* join: gw1 and gw2 run; gw3 starts under traffic and takes its share, and
  only that share, from the others (bounded movement); lost = 0 both ways.
* rolling restart: each node in turn is SIGTERMed (drain: it hands its users
  over at once), its users come up on the two others, it starts again and
  takes its share back; lost = 0 both ways.
* SIGKILL: the node holding alice dies; whatever a node answered 202, and
  whatever Prosody acknowledged to bob, arrives once another node has taken
  her over (its leases expire first); lost = 0 both ways.

The cases share the module's cluster; each first brings it to the state
it starts from, so either runs alone as well.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.kamailio_front import KAMAILIO_IP, kamailio_in_front
from tests.cluster.nodes import Cluster, wait_until
from tests.cluster.two_nodes import phone
from tests.faults.traffic import (
    CountingPeer,
    Cursor,
    Ids,
    Ticker,
    body_for,
    peer_cursor,
    phone_cursor,
    wait_delivered,
)
from tests.kit.tally import Tally, report

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.kit.pjsua_agent import PjsuaAgent
    from tests.kit.prosody import XmppUser

NAMES = ("gw1", "gw2", "gw3")
USERS = 9


@dataclass
class Rig:
    cluster: Cluster
    proxy: str  # Kamailio's SIP URI
    alice: str  # the SIP user of the traffic
    prosody: Any

    def running(self, *names: str) -> dict[str, tuple[str, dict[str, Any]]]:
        """Exactly ``names`` run (others drained, these started); every user placed."""
        for name, node in self.cluster.nodes.items():
            if name not in names and node.alive():
                assert node.stop() == 0, node.log_text()
        for name in names:
            if not self.cluster.nodes[name].alive():
                self.cluster.nodes[name].start()
        return self.cluster.wait_placed(names)


@pytest.fixture(scope="module")
def rig(prosody: Any, mariadb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    base = tmp_path_factory.mktemp("rolling")
    cluster = Cluster(
        base, mariadb, prosody, lease_seconds=6, sip={"trusted": [f"{KAMAILIO_IP}/32"]}
    )
    for name in NAMES:
        cluster.node(name)
    cluster.add_accounts(cluster.nodes["gw1"], USERS, "roll")
    expected = cluster.expected(NAMES)
    alice = next(u for u in cluster.users if expected[u] == "gw3")
    try:
        with kamailio_in_front(cluster.nodes, base, cluster.db_url) as (_, proxy):
            yield Rig(cluster, proxy, alice, prosody)
    finally:
        cluster.stop()


class Traffic:
    """alice's phone -> bob and bob -> alice, every 0.3 s each, counted in two tallies."""

    def __init__(
        self,
        rig: Rig,
        case: str,
        agent: PjsuaAgent,
        bob: XmppUser,
        peer: CountingPeer,
        to_xmpp: Tally,
    ) -> None:
        self.to_xmpp, self.to_sip = to_xmpp, peer.tally
        self.cursors: list[Cursor] = [
            phone_cursor(agent, self.to_xmpp, self.to_sip),
            peer_cursor(peer, self.to_xmpp),
        ]
        out_ids, in_ids = Ids(case, "out"), Ids(case, "in")
        alice_jid = rig.cluster.jids[rig.alice]

        def from_phone() -> None:
            msg_id = out_ids.next()
            self.to_xmpp.send(msg_id, conversation=bob.jid)
            agent.message(f"sip:{bob.jid}", body_for(msg_id))

        def from_bob() -> None:
            peer.send_counted(alice_jid, in_ids.next())

        self.tickers = (Ticker(from_phone, 0.3), Ticker(from_bob, 0.3))
        self.peer = peer

    def poll(self) -> None:
        for cursor in self.cursors:
            cursor.poll()

    def answered(self) -> None:
        """Wait until the phone has a final answer to every MESSAGE it sent."""

        def done() -> bool:
            self.poll()
            to_xmpp = self.to_xmpp
            return set(to_xmpp.sent) <= to_xmpp.accepted | to_xmpp.refused

        wait_until("answers to the phone's MESSAGEs", done, timeout=60)

    def flowing(self, more: int = 3) -> None:
        """Wait until ``more`` messages were accepted each way from now on."""
        self.poll()
        out, back = len(self.to_xmpp.accepted), len(self.to_sip.accepted)

        def moved() -> bool:
            self.poll()
            return (
                len(self.to_xmpp.accepted) >= out + more
                and len(self.to_sip.accepted) >= back + more
            )

        wait_until("traffic both ways", moved, timeout=60)


@contextlib.contextmanager
def two_way_traffic(rig: Rig, case: str) -> Iterator[Traffic]:
    """Traffic for the body of the ``with``; then every accepted message must arrive."""
    to_xmpp, to_sip = Tally(f"cluster {case}: SIP -> XMPP"), Tally(f"cluster {case}: XMPP -> SIP")
    prosody = rig.prosody
    bob = prosody.create_user(
        f"bob{uuid.uuid4().hex[:6]}"
    )  # his own: no late mail of a case before
    peer = CountingPeer(
        bob.jid,
        bob.password,
        "127.0.0.1",
        prosody.port,
        ca_file=prosody.ca_file,
        tally=to_sip,
    )
    try:
        with phone(rig.alice, rig.proxy, authenticate=False) as agent:
            peer.start()
            traffic = Traffic(rig, case, agent, bob, peer, to_xmpp)
            with traffic.tickers[0], traffic.tickers[1]:
                traffic.flowing()
                yield traffic
                traffic.flowing()  # and after the last change as well
            traffic.answered()
            wait_delivered([to_xmpp, to_sip], traffic.cursors, timeout=60, settle=peer.request_ack)
            refusals = Counter(
                f"{e['code']} {e['reason']}"
                for e in agent.matching(lambda e: e["event"] == "im_status" and e["code"] != 202)
            )
            report(f"cluster {case}: the phone's refused MESSAGEs: {dict(refusals) or 'none'}")
    finally:
        peer.stop()
    to_xmpp.check()
    to_sip.check()


def test_a_node_joins_under_traffic(rig: Rig) -> None:
    cluster = rig.cluster
    before = rig.running("gw1", "gw2")
    share = sorted(u for u, name in cluster.expected(NAMES).items() if name == "gw3")
    assert rig.alice in share
    with two_way_traffic(rig, "join"):
        started = time.monotonic()
        cluster.nodes["gw3"].start()
        after = cluster.wait_placed(NAMES)
        took = time.monotonic() - started
    moved = sorted(u for u in after if after[u][0] != before[u][0])
    assert moved == share  # bounded movement: gw3's share, from the others, and nothing else
    for user in set(after) - set(moved):
        assert after[user][1]["since"] == before[user][1]["since"], user  # same connection
    report(
        f"cluster join under traffic: {len(share)}/{USERS} users on the new node "
        f"{took:.1f}s after it started (lease {cluster.lease_seconds}s)"
    )


def test_rolling_restart_under_traffic(rig: Rig) -> None:
    cluster = rig.cluster
    placed = rig.running(*NAMES)
    took: list[str] = []
    with two_way_traffic(rig, "rolling") as traffic:
        for name in NAMES:
            node = cluster.nodes[name]
            rest = [n for n in NAMES if n != name]
            stopped = time.monotonic()
            assert node.stop() == 0, node.log_text()
            drained = cluster.wait_placed(rest)
            away = time.monotonic() - stopped
            for user, (at, _) in drained.items():
                if placed[user][0] != name:  # only the stopped node's users moved
                    assert at == placed[user][0], (user, name, at)
            node.start()
            placed = cluster.wait_placed(NAMES)
            took.append(f"{name} {away:.1f}s/{time.monotonic() - stopped:.1f}s")
            traffic.flowing()
    report(
        "cluster rolling restart under traffic (users elsewhere / back, after SIGTERM): "
        + ", ".join(took)
    )


def test_sigkill_of_the_users_node_under_traffic(rig: Rig) -> None:
    cluster = rig.cluster
    placed = rig.running(*NAMES)
    victim = placed[rig.alice][0]
    rest = [n for n in NAMES if n != victim]
    with two_way_traffic(rig, "sigkill"):
        killed = time.monotonic()
        cluster.nodes[victim].kill()
        after = cluster.wait_placed(rest)
        took = time.monotonic() - killed
    for user, (at, status) in after.items():
        if placed[user][0] != victim:  # untouched: same node, same connection
            assert (at, status["since"]) == (placed[user][0], placed[user][1]["since"]), user
    report(
        f"cluster SIGKILL under traffic: alice online on another node {took:.1f}s after "
        f"the kill (lease {cluster.lease_seconds}s)"
    )
