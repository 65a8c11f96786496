"""Behind-a-proxy mode: a real Kamailio running etc/kamailio.cfg in front of purplegw.

The phone registers with Kamailio only; Kamailio forwards its MESSAGE for an
XMPP contact to purplegw (a trusted network, no second authentication), and
purplegw's messages go back through Kamailio ([sip] outbound_proxy), which
delivers them to the registered phone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.kamailio import Kamailio, kamailio_binary, shipped_config
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.ports import free_port
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

KAMAILIO_IP = "127.0.0.2"  # its own loopback address: "trusted" must not cover the phone


def shipped_cfg(kamailio_port: int, gateway_port: int) -> str:
    return shipped_config(
        "kamailio.cfg",
        {
            "KAMAILIO_ADDR": f"{KAMAILIO_IP}:{kamailio_port}",
            "GATEWAY_IP": "127.0.0.1",
            "GATEWAY_PORT": str(gateway_port),
            "SIP_DOMAIN": "sip.test",
        },
    )


@pytest.fixture
def deployment(prosody: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if kamailio_binary() is None:
        missing_peer("Kamailio", "kamailio")
    tag = tmp_path.name[-8:].replace("_", "").lower()
    account = prosody.create_user(f"kalice{tag}")
    bob = prosody.create_user(f"kbob{tag}")
    kamailio_port = free_port("both", KAMAILIO_IP)
    # [sip] trusted / outbound_proxy: the values etc/kamailio.cfg asks for.
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


def test_messages_through_kamailio(deployment: dict[str, Any]) -> None:
    gateway, kamailio, peer = deployment["gateway"], deployment["kamailio"], deployment["peer"]
    account, bob, proxy = deployment["account"], deployment["bob"], deployment["kamailio_uri"]
    with PjsuaAgent.start() as agent:
        agent.account("sip:alice@sip.test", registrar=proxy, proxy=f"{proxy};lr")
        assert agent.wait_for(lambda e: e["event"] == "reg")["code"] == 200, kamailio.log_text()

        agent.message(f"sip:{bob.jid}", "via Kamailio ✓")
        status = agent.wait_for(lambda e: e["event"] == "im_status")
        assert status["code"] == 202, (status, kamailio.log_text()[-2000:], gateway.log_text())
        got = peer.wait_for(lambda e: e.kind == "message" and e.body == "via Kamailio ✓")
        assert got.bare == account.jid

        peer.send_message(account.jid, "back through Kamailio ✓")
        im = agent.wait_for(lambda e: e["event"] == "im", timeout=30)
        assert im["body"] == "back through Kamailio ✓"
        assert f"{bob.jid};proto=xmpp" in im["from"]


def test_user_away_behind_kamailio_gets_messages_on_return(deployment: dict[str, Any]) -> None:
    peer, account, proxy = deployment["peer"], deployment["account"], deployment["kamailio_uri"]
    sent = [f"while away {i} ✓" for i in range(5)]
    for text in sent:
        peer.send_message(account.jid, text)  # Kamailio answers 480: nobody registered
    with PjsuaAgent.start() as agent:
        agent.account("sip:alice@sip.test", registrar=proxy, proxy=f"{proxy};lr")
        assert agent.wait_for(lambda e: e["event"] == "reg")["code"] == 200
        # The gateway retries on its own timer in proxy mode (it cannot see the REGISTER).
        for text in sent:
            agent.wait_for(lambda e, t=text: e["event"] == "im" and e["body"] == t, timeout=60)
        assert [e["body"] for e in agent.matching(lambda e: e["event"] == "im")] == sent
