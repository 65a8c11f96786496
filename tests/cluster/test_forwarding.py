"""Forwarding between two real nodes sharing a real MariaDB, with a pjsua2 phone and Prosody.

The cluster runtime gives each user to one node (the holder); the phone
registers with the other node and sends everything there.  That node answers
the REGISTER itself (the binding goes to the shared database) and passes
MESSAGE, PUBLISH and SUBSCRIBE on to the holder, whose XMPP session (its
resource is the node's name) carries them; the holder delivers a message
from the contact to the phone through the binding the other node wrote.
One pair of nodes serves the module, one SIP user per case.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.cluster.two_nodes import DOMAIN, Pair, phone, two_nodes

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

USERS = ("fwdalice", "fwdcarol", "fwddave")


@pytest.fixture(scope="module")
def pair(prosody: Any, mariadb: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base: Path = tmp_path_factory.mktemp("forwarding")
    yield from two_nodes(prosody, mariadb, base, USERS)


def test_requests_reaching_the_other_node_are_forwarded_to_the_owner(pair: Pair) -> None:
    user = f"fwdalice@{DOMAIN}"
    account, bob, peer = pair.accounts[user], pair.bob, pair.peer
    owner, other = pair.holder(user)
    with phone(user, other.uri, publish=True) as agent:
        assert f"{user} registered" in other.log.read_text()  # answered by the other node
        assert f"{user} registered" not in owner.log.read_text()

        # Phone -> other -> owner -> XMPP: sent by the owner's session, the 202 relayed back.
        agent.message(f"sip:{bob.jid}", "through the other node ✓")
        status = agent.wait_for(lambda e: e["event"] == "im_status")
        assert status["code"] == 202, (status, other.log_text(), owner.log_text())
        got = peer.wait_for(lambda e: e.kind == "message" and e.body == "through the other node ✓")
        assert got.sender == f"{account.jid}/{owner.name}", got

        # The contact answers at the owner: it reaches the phone by the other's binding.
        peer.send_message(f"{account.jid}/{owner.name}", "back from the owner ✓")
        im = agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == "back from the owner ✓", timeout=30
        )
        assert f"sip:{bob.jid};proto=xmpp" in im["from"]

        # PUBLISH goes to the owner too: the owner's session shows the phone's presence.
        peer.subscribe(account.jid)
        ask = agent.wait_for(
            lambda e: e["event"] == "im" and "asks to see your presence" in e["body"], timeout=30
        )
        agent.message(ask["from"].strip("<>"), "Allow")
        peer.wait_for(lambda e: e.kind == "subscribed" and e.bare == account.jid, timeout=30)
        agent.publish(online=True, activity="away", note="published at the other node")
        away = peer.wait_for(
            lambda e: e.kind == "presence" and e.status == "published at the other node",
            timeout=30,
        )
        assert away.sender == f"{account.jid}/{owner.name}", away
        assert away.show == "away"
    for node in (owner, other):
        assert "Traceback" not in node.log.read_text(), node.log_text()


def test_messages_waiting_at_the_owner_go_when_the_phone_registers_at_the_other_node(
    pair: Pair,
) -> None:
    user = f"fwdcarol@{DOMAIN}"
    account, peer = pair.accounts[user], pair.peer
    owner, other = pair.holder(user)
    waiting = [f"waiting at the owner {i} ✓" for i in range(3)]
    for text in waiting:
        peer.send_message(f"{account.jid}/{owner.name}", text)
    # The owner has them in its outbox: the phone is not registered yet.
    deadline = time.monotonic() + 30
    outbox = "SELECT COUNT(*) FROM purplegw_outbox WHERE sip_user = %s"
    while pair.cluster.sql(outbox, (user,))[0][0] < len(waiting):
        assert time.monotonic() < deadline, owner.log_text()
        time.sleep(0.1)
    with phone(user, other.uri) as agent:
        # The owner learns of the REGISTER the other answered from the database and delivers.
        for text in waiting:
            agent.wait_for(lambda e, t=text: e["event"] == "im" and e["body"] == t, timeout=30)
        peer.send_message(f"{account.jid}/{owner.name}", "after them ✓")
        agent.wait_for(lambda e: e["event"] == "im" and e["body"] == "after them ✓", timeout=30)
        got = [e["body"] for e in agent.matching(lambda e: e["event"] == "im")]
        assert got == [*waiting, "after them ✓"], got  # in order, each once
    assert f"{user} registered" not in owner.log.read_text()


def test_a_presence_subscription_through_the_other_node_lives_at_the_owner(pair: Pair) -> None:
    user = f"fwddave@{DOMAIN}"
    account, bob, peer = pair.accounts[user], pair.bob, pair.peer
    owner, other = pair.holder(user)
    uri = f"sip:{bob.jid}"

    def buddy(agent: Any, **want: str) -> dict[str, Any]:
        return agent.wait_for(
            lambda e: (
                e["event"] == "buddy"
                and e["uri"] == uri
                and all(e.get(k) == v for k, v in want.items())
            ),
            timeout=30,
        )

    with phone(user, other.uri) as agent:
        agent.subscribe(uri)
        buddy(agent, sub_state="PENDING")
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == account.jid, timeout=30)
        peer.answer_subscription(account.jid, allow=True)
        buddy(agent, sub_state="ACTIVE", status="online")
        peer.send_presence(show="away", status="seen through the owner")
        buddy(agent, activity="away", note="seen through the owner")
        assert f"{user} subscribes to" in owner.log.read_text()
        assert f"{user} subscribes to" not in other.log.read_text()
        # The unsubscribe is an in-dialog request: through the other node to the owner as well.
        agent.unsubscribe(uri)
        buddy(agent, sub_state="TERMINATED")
        deadline = time.monotonic() + 10
        subscriptions = "SELECT COUNT(*) FROM purplegw_subscriptions WHERE sip_user = %s"
        while pair.cluster.sql(subscriptions, (user,))[0][0]:
            assert time.monotonic() < deadline, owner.log_text()
            time.sleep(0.1)
