"""etc/kamailio-cluster.cfg in front of two real nodes sharing a real MariaDB.

Run twice: with the dispatcher alone, and with -A WITH_OWNER_LOOKUP (Kamailio
reads the user's holder from the lease table and skips the hop).

The cluster runtime gives each user to one node; Kamailio's hash over the
user picks a node of its own.  A pjsua2 phone registers through Kamailio as
a user whose hashed node (X) is not the holder (Y), so her MESSAGE through
Kamailio reaches X and is forwarded to Y (with the owner lookup: straight
to Y), and Y's answer to the phone goes back through Kamailio by the
binding X wrote.  Then X stops: Kamailio's OPTIONS probing (or its failover
on the timeout) sends her next MESSAGE to Y.
"""

from __future__ import annotations

import contextlib
import socket
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.kamailio_front import KAMAILIO_IP, kamailio_in_front
from tests.cluster.two_nodes import DOMAIN, NAMES, Pair, phone, two_nodes
from tests.kit.binaries import missing_peer
from tests.kit.kamailio import kamailio_binary

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.kit.gateway import GatewayProcess
    from tests.kit.pjsua_agent import PjsuaAgent

# Kamailio's hash and the rendezvous rule are independent: among these users
# some are hashed to the node that does not hold them (the test asserts it).
HASHED = ("kamalice", "kamcarol", "kamdave", "kamerin")
LOOKED_UP = "kamfrank"  # the owner lookup's case: a user no phone registered before


@pytest.fixture(scope="module")
def pair(prosody: Any, mariadb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One pair of nodes for both runs (a node a run stopped is started again)."""
    if kamailio_binary() is None:
        missing_peer("Kamailio", "kamailio")
    base = tmp_path_factory.mktemp("kamailio")
    sip = {"trusted": [f"{KAMAILIO_IP}/32"]}
    yield from two_nodes(prosody, mariadb, base, (*HASHED, LOOKED_UP), sip=sip, passwords=False)


@pytest.fixture(params=["dispatcher", "owner_lookup"])
def setup(request: pytest.FixtureRequest, pair: Pair, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``owner_lookup``: Kamailio runs with -A WITH_OWNER_LOOKUP on the cluster's database."""
    pair.running()
    lookup = request.param == "owner_lookup"
    front = kamailio_in_front(pair.nodes, tmp_path, pair.cluster.db_url, owner_lookup=lookup)
    with front as (kamailio, proxy):
        yield {"pair": pair, "kamailio": kamailio, "proxy": proxy, "lookup": lookup}


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


def registered_off_the_holder(
    pair: Pair, proxy: str, stack: contextlib.ExitStack
) -> tuple[str, PjsuaAgent, str, str]:
    """(user, her phone registered through Kamailio, the hashed node, the holder), hashed != holder.

    The REGISTER is never forwarded: the node Kamailio hashed the user to
    answers it and logs it.
    """
    for user in (f"{local}@{DOMAIN}" for local in HASHED):
        holder, _ = pair.holder(user)
        with contextlib.ExitStack() as attempt:
            agent = attempt.enter_context(phone(user, proxy, authenticate=False))
            [hashed] = [n for n in NAMES if f"{user} registered" in pair.nodes[n].log.read_text()]
            if hashed != holder.name:
                stack.enter_context(attempt.pop_all())
                return user, agent, hashed, holder.name
    raise AssertionError(f"Kamailio hashed every one of {HASHED} to its holder")


def test_kamailio_spreads_users_and_nodes_forward_to_the_owner(setup: dict[str, Any]) -> None:
    pair: Pair = setup["pair"]
    nodes, bob, peer, lookup = pair.nodes, pair.bob, pair.peer, setup["lookup"]
    kamailio, proxy = setup["kamailio"], setup["proxy"]
    for node in nodes.values():
        assert options(node) == "SIP/2.0 200 OK"  # what the dispatcher's probe needs
    logged = {name: node.log.stat().st_size for name, node in nodes.items()}

    def log_of_this_run(name: str) -> str:
        with nodes[name].log.open(errors="replace") as log:
            log.seek(logged[name])
            return log.read()

    with contextlib.ExitStack() as stack:
        if lookup:
            # Kamailio sends even the REGISTER to the holder the lease names.
            user = f"{LOOKED_UP}@{DOMAIN}"
            holder, other = pair.holder(user)
            agent = stack.enter_context(phone(user, proxy, authenticate=False))
            assert f"{user} registered" in holder.log.read_text()
            assert f"{user} registered" not in other.log.read_text()
            owner, off = holder.name, other.name
        else:
            user, agent, off, owner = registered_off_the_holder(pair, proxy, stack)
        account = pair.accounts[user]  # the bodies name her: bob's events outlive a run

        # Through Kamailio to the hashed node, forwarded to the owner, sent by the owner;
        # with the owner lookup, straight to the owner: no hop.
        agent.message(f"sip:{bob.jid}", f"via the dispatcher ({user}) ✓")
        status = agent.wait_for(lambda e: e["event"] == "im_status")
        assert status["code"] == 202, (status, kamailio.log_text()[-3000:])
        got = peer.wait_for(
            lambda e: e.kind == "message" and e.body == f"via the dispatcher ({user}) ✓"
        )
        assert got.sender == f"{account.jid}/{owner}", got
        took_the_hop = "forwarded to" in log_of_this_run(off)
        assert took_the_hop != lookup, nodes[off].log_text()

        # The owner reaches the phone through Kamailio, by the binding the REGISTER wrote.
        peer.send_message(f"{account.jid}/{owner}", f"from the owner via Kamailio ({user}) ✓")
        im = agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == f"from the owner via Kamailio ({user}) ✓",
            timeout=30,
        )
        assert f"sip:{bob.jid};proto=xmpp" in im["from"]

        if lookup:
            # The holder stops (drain): the other node takes the user, and
            # Kamailio follows the lease there.
            assert nodes[owner].stop() == 0
            new_holder, _ = pair.holder(user)
            assert new_holder.name == off
            owner = off
        else:
            # The hashed node stops: Kamailio sends the user's requests to the one left.
            assert nodes[off].stop() == 0
        agent.message(f"sip:{bob.jid}", f"with one node down ({user}) ✓")
        status = agent.wait_for(
            lambda e: e["event"] == "im_status" and e["body"] == f"with one node down ({user}) ✓",
            timeout=40,
        )
        assert status["code"] == 202, (status, kamailio.log_text()[-3000:])
        got = peer.wait_for(
            lambda e: e.kind == "message" and e.body == f"with one node down ({user}) ✓"
        )
        assert got.sender == f"{account.jid}/{owner}", got
