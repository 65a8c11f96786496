"""Two cluster nodes on one real MariaDB and one Prosody: the forwarding and Kamailio cases.

Each node is a real ``purplegw run`` in cluster mode (``tests/cluster/nodes.py``):
the cluster runtime decides which node holds each SIP user (the rendezvous
rule over the live nodes), takes the lease and logs the user's account in
there only.  A test asks which node the runtime chose (:meth:`Pair.holder`:
the lease row and that node's status agree) and sends the phone's requests
to the other one.  Each node logs in with its own XMPP resource (``gw1``,
``gw2``), so the contact sees which node sent a message or a presence.
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from purplegw.actors.control import ControlError
from tests.cluster.nodes import Cluster, Node, wait_until
from tests.e2e.deployment import SIP_PASSWORD
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from tests.kit.prosody import XmppUser

NAMES = ("gw1", "gw2")
DOMAIN = "sip.test"


@dataclass
class Pair:
    cluster: Cluster
    accounts: dict[str, XmppUser]  # sip user -> its XMPP account
    bob: XmppUser
    peer: XmppPeer

    @property
    def nodes(self) -> dict[str, Node]:
        return self.cluster.nodes

    def running(self) -> None:
        """Both nodes run (a stopped one is started again), every user held by one."""
        for node in self.nodes.values():
            if not node.alive():
                node.start()
        for sip_user in self.accounts:
            self.holder(sip_user)

    def holder(self, sip_user: str, timeout: float = 60.0) -> tuple[Node, Node]:
        """(the node the runtime gave ``sip_user`` to, the other node).

        Waits until the user's lease names a node and that node, and only
        that one, runs the user's account connected.
        """

        def look() -> str | None:
            lease = self.cluster.leases().get(sip_user)
            if lease is None or lease[0] not in NAMES:
                return None
            running = set()
            for name in NAMES:
                node = self.nodes[name]
                try:
                    accounts = node.accounts() if node.alive() else []
                except (OSError, ControlError):
                    return None  # still starting
                if any(a["sip_user"] == sip_user and a["state"] == "connected" for a in accounts):
                    running.add(name)
            return lease[0] if running == {lease[0]} else None

        name = wait_until(f"{sip_user} held by one node", look, timeout)
        [other] = [n for n in NAMES if n != name]
        return self.nodes[name], self.nodes[other]


@contextlib.contextmanager
def phone(
    sip_user: str, via: str, *, authenticate: bool = True, publish: bool = False
) -> Iterator[PjsuaAgent]:
    """A pjsua2 phone registered as ``sip_user`` at ``via``, which also is its outbound proxy.

    ``authenticate``: answer digest challenges with the user's SIP password
    (a node asks; Kamailio in front of trusting nodes does not).
    """
    agent = PjsuaAgent.start()
    try:
        agent.account(
            f"sip:{sip_user}",
            registrar=via,
            username=sip_user.split("@", 1)[0] if authenticate else "",
            password=SIP_PASSWORD if authenticate else "",
            proxy=f"{via};lr",
            publish=publish,
        )
        reg = agent.wait_for(lambda e: e["event"] == "reg")
        assert reg["code"] == 200, reg
        yield agent
    finally:
        agent.stop()


def two_nodes(
    prosody: Any,
    mariadb: Any,
    base: Path,
    users: Iterable[str],
    *,
    sip: dict[str, Any] | None = None,
    passwords: bool = True,
) -> Iterator[Pair]:
    """gw1 and gw2 running ``users`` (local parts; one XMPP account each); both must exit 0.

    ``passwords``: the users get the SIP password ``phone()`` answers digest
    challenges with (not needed behind a trusted proxy).

    Yields once every user is held by one node.
    """
    cluster = Cluster(base, mariadb, prosody, lease_seconds=6, sip=sip)
    for name in NAMES:
        cluster.node(name, resource=name)
    first = cluster.nodes[NAMES[0]]
    first.cli("db", "init")
    accounts: dict[str, XmppUser] = {}
    tag = base.name[-8:].replace("_", "").lower()
    table = base / "accounts.csv"
    with table.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["sip_user", "ext_user", "ext_prot", "ext_pass"])
        for local in users:
            sip_user = f"{local}@{DOMAIN}"
            account = prosody.create_user(f"c{local}{tag}")
            writer.writerow([sip_user, account.jid, "xmpp", account.password])
            accounts[sip_user] = account
            cluster.users.append(sip_user)
            cluster.jids[sip_user] = account.jid
            if passwords:
                password = SIP_PASSWORD + "\n"
                first.cli("users", "add", sip_user, "--password-stdin", stdin=password)
    first.cli("accounts", "import", str(table))
    bob = prosody.create_user(f"cbob{tag}")
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    pair = Pair(cluster, accounts, bob, peer)
    try:
        pair.running()
        peer.start()
        yield pair
    finally:
        peer.stop()
        codes = cluster.stop()
        assert set(codes.values()) <= {0}, {n: cluster.nodes[n].log_text() for n in codes}
