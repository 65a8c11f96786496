"""A large message from XMPP through the shipped etc/kamailio.cfg to a phone.

Over 1,300 bytes the gateway sends the MESSAGE over TCP (RFC 3261 18.1.1),
from an ephemeral source port.  The shipped config used to recognise the
gateway by its exact source port, answered 403 "not our user" and the
gateway kept retrying, holding back every later message to that user.  A
real Kamailio in front of the `purplegw run` daemon, an independent slixmpp
client on Prosody and a pjsua2 phone registered at Kamailio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.test_kamailio_front import KAMAILIO_IP, shipped_cfg
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.kamailio import Kamailio, kamailio_binary
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.ports import free_port
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def deployment(prosody: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if kamailio_binary() is None:
        missing_peer("Kamailio", "kamailio")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    account = prosody.create_user(f"lgalice{tag}")
    bob = prosody.create_user(f"lgbob{tag}")
    kamailio_port = free_port("both", KAMAILIO_IP)
    gateway = GatewayProcess(
        tmp_path,
        extra_config=prosody.gateway_section(),
        sip={
            "trusted": [f"{KAMAILIO_IP}/32"],
            "outbound_proxy": f"sip:{KAMAILIO_IP}:{kamailio_port}",
        },
    )
    gateway.cli("db", "init")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        account.jid,
        "xmpp",
        "--password-stdin",
        stdin=account.password + "\n",
    )
    kamailio = Kamailio(
        shipped_cfg(kamailio_port, gateway.port), port=kamailio_port, host=KAMAILIO_IP
    )
    kamailio.start()
    gateway.start()
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    try:
        gateway.wait_accounts("connected")
        peer.start()
        yield {
            "gateway": gateway,
            "kamailio": kamailio,
            "account": account,
            "bob": bob,
            "peer": peer,
            "kamailio_uri": f"sip:{KAMAILIO_IP}:{kamailio_port}",
        }
    finally:
        peer.stop()
        assert gateway.stop() == 0, gateway.log_text()
        kamailio.stop()


def test_message_over_1300_bytes_reaches_the_phone_through_kamailio(
    deployment: dict[str, Any],
) -> None:
    gateway, kamailio, peer = deployment["gateway"], deployment["kamailio"], deployment["peer"]
    account, bob, proxy = deployment["account"], deployment["bob"], deployment["kamailio_uri"]
    # pjsip reads at most 4000 bytes of a UDP datagram: Kamailio relays to the
    # phone over the UDP binding it registered, so stay between the two limits.
    large = "large ✓ " + "ü" * 900 + " end"  # ~1.8 kB of UTF-8 body
    assert 1300 < len(large.encode()) < 3000
    with PjsuaAgent.start() as agent:
        agent.account("sip:alice@sip.test", registrar=proxy, proxy=f"{proxy};lr")
        assert agent.wait_for(lambda e: e["event"] == "reg")["code"] == 200, kamailio.log_text()

        peer.send_message(account.jid, large)
        peer.send_message(account.jid, "small one after ✓")
        agent.wait_for(
            lambda e: e["event"] == "im" and e["body"] == "small one after ✓", timeout=30
        )
        bodies = [e["body"] for e in agent.matching(lambda e: e["event"] == "im")]
        assert bodies == [large, "small one after ✓"], (
            kamailio.log_text()[-3000:],
            gateway.log_text(),
        )
        assert f"{bob.jid};proto=xmpp" in agent.matching(lambda e: e["event"] == "im")[0]["from"]

    # Kamailio's log says nothing about replies it sends; the gateway's does.
    assert "not delivered (403" not in gateway.log.read_text(errors="replace")
