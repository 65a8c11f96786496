"""etc/kamailio-cluster.cfg in front of two real nodes sharing a real MariaDB.

Run twice: with the dispatcher alone, and with -A WITH_OWNER_LOOKUP (Kamailio
reads the user's holder from the lease table and skips the hop).

A pjsua2 phone registers through Kamailio, which hashes alice to one node
(X); the test gives alice's lease to the other (Y), so her MESSAGE through
Kamailio reaches X and is forwarded to Y, and Y's answer to the phone goes
back through Kamailio by the binding X wrote.  Then X stops: Kamailio's
OPTIONS probing (or its failover on the timeout) sends alice's next
MESSAGE to Y.
"""

from __future__ import annotations

import re
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.two_nodes import NAMES, USER, two_nodes
from tests.kit.binaries import missing_peer
from tests.kit.kamailio import Kamailio, kamailio_binary
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.ports import free_port

# These tests write the leases themselves and expect both nodes to log the
# user's account in; since the cluster runtime (purplegw/actors/cluster.py)
# decides who holds a user and logs in only those accounts, they must let the
# runtime place the user first.  Until they do, they are skipped.
pytestmark = pytest.mark.skip(reason="to be adapted to the cluster runtime's own leases")


if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.kit.gateway import GatewayProcess

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_IP = "127.0.0.2"  # its own loopback address: the nodes trust it, not the phone


def cluster_cfg(kamailio_port: int, dispatcher_list: Path, db_url: str) -> str:
    text = (REPO / "etc" / "kamailio-cluster.cfg").read_text()
    values = {
        "KAMAILIO_ADDR": f"{KAMAILIO_IP}:{kamailio_port}",
        "SIP_DOMAIN": "sip.test",
        "DISPATCHER_LIST": str(dispatcher_list),
        "PING_INTERVAL": "1",
        "CLUSTER_DB": db_url,
    }
    for name, value in values.items():
        text, count = re.subn(
            rf'#!substdef "!{name}![^!]*!g"', f'#!substdef "!{name}!{value}!g"', text
        )
        assert count == 1, name
    return text


@pytest.fixture(scope="module")
def prosody() -> Iterator[Any]:
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server


@pytest.fixture(params=["dispatcher", "owner_lookup"])
def setup(
    request: pytest.FixtureRequest, prosody: Any, mariadb: Any, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """``owner_lookup``: Kamailio runs with -A WITH_OWNER_LOOKUP on the cluster's database."""
    if kamailio_binary() is None:
        missing_peer("Kamailio", "kamailio")
    for found in two_nodes(prosody, mariadb, tmp_path, sip={"trusted": [f"{KAMAILIO_IP}/32"]}):
        nodes = found["nodes"]
        listing = tmp_path / "purplegw-nodes.list"
        listing.write_text("".join(f"1 sip:127.0.0.1:{nodes[n].port}\n" for n in NAMES))
        port = free_port("both", KAMAILIO_IP)
        lookup = request.param == "owner_lookup"
        kamailio = Kamailio(
            cluster_cfg(port, listing, found["cluster"].db_url),
            port=port,
            host=KAMAILIO_IP,
            extra_args=("-A", "WITH_OWNER_LOOKUP") if lookup else (),
        )
        kamailio.start()
        try:
            yield {
                **found,
                "kamailio": kamailio,
                "proxy": f"sip:{KAMAILIO_IP}:{port}",
                "lookup": lookup,
            }
        finally:
            kamailio.stop()


def options(node: GatewayProcess) -> str:
    """The status line of the node's answer to an OPTIONS like Kamailio's probe."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        probe = (
            f"OPTIONS sip:127.0.0.1:{node.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:dispatcher@sip.test>;tag={uuid.uuid4().hex[:8]}\r\n"
            f"To: <sip:127.0.0.1:{node.port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(probe.encode(), ("127.0.0.1", node.port))
        return sock.recv(65535).decode().split("\r\n", 1)[0]


def test_kamailio_spreads_users_and_nodes_forward_to_the_owner(setup: dict[str, Any]) -> None:
    nodes, cluster, account, bob, peer = (
        setup[k] for k in ("nodes", "cluster", "account", "bob", "peer")
    )
    kamailio, proxy = setup["kamailio"], setup["proxy"]
    for node in nodes.values():
        assert options(node) == "SIP/2.0 200 OK"  # what the dispatcher's probe needs
    with PjsuaAgent.start() as agent:
        agent.account(f"sip:{USER}", registrar=proxy, proxy=f"{proxy};lr")
        reg = agent.wait_for(lambda e: e["event"] == "reg")
        assert reg["code"] == 200, (reg, kamailio.log_text()[-3000:])
        [hashed] = [n for n in NAMES if f"{USER} registered" in nodes[n].log.read_text()]
        [owner] = [n for n in NAMES if n != hashed]
        cluster.give(USER, owner)

        # Through Kamailio to the hashed node, forwarded to the owner, sent by the owner.
        agent.message(f"sip:{bob.jid}", "via the dispatcher ✓")
        status = agent.wait_for(lambda e: e["event"] == "im_status")
        assert status["code"] == 202, (status, kamailio.log_text()[-3000:])
        got = peer.wait_for(lambda e: e.kind == "message" and e.body == "via the dispatcher ✓")
        assert got.sender == f"{account.jid}/{owner}", got
        took_the_hop = "forwarded to" in nodes[hashed].log.read_text()
        # With the owner lookup, Kamailio sends it straight to the owner: no hop.
        assert took_the_hop != setup["lookup"], nodes[hashed].log_text()

        # The owner reaches the phone through Kamailio, by the hashed node's binding.
        peer.send_message(f"{account.jid}/{owner}", "from the owner via Kamailio ✓")
        im = agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == "from the owner via Kamailio ✓",
            timeout=30,
        )
        assert f"sip:{bob.jid};proto=xmpp" in im["from"]

        # The hashed node stops: Kamailio sends alice's requests to the one left.
        assert nodes[hashed].stop() == 0
        agent.message(f"sip:{bob.jid}", "with one node down ✓")
        status = agent.wait_for(
            lambda e: e["event"] == "im_status" and e["body"] == "with one node down ✓",
            timeout=40,
        )
        assert status["code"] == 202, (status, kamailio.log_text()[-3000:])
        got = peer.wait_for(lambda e: e.kind == "message" and e.body == "with one node down ✓")
        assert got.sender == f"{account.jid}/{owner}", got
