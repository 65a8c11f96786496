"""The end-to-end set-up shared by the messaging and presence tests.

One SIP user ``alice@sip.test`` (digest password ``sippw``) with one XMPP
account on Prosody, the real `purplegw run` daemon, and an independent XMPP
client ``bob`` on the same Prosody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tests.kit.gateway import GatewayProcess
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SIP_PASSWORD = "sippw"


def deployment(
    prosody: Any, tmp_path: Path, prefix: str = "", extra_config: str = ""
) -> Iterator[dict[str, Any]]:
    """Yields {"gateway", "account", "bob", "peer"}; the daemon must exit 0 at the end."""
    tag = tmp_path.name[-8:].replace("_", "").lower()
    account = prosody.create_user(f"{prefix}alice{tag}")
    bob = prosody.create_user(f"{prefix}bob{tag}")
    gateway = GatewayProcess(tmp_path, extra_config=prosody.gateway_section() + "\n" + extra_config)
    gateway.cli("db", "init")
    gateway.cli("users", "add", "alice@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        account.jid,
        "xmpp",
        "--password-stdin",
        stdin=account.password + "\n",
    )
    gateway.start()
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    try:
        gateway.wait_accounts("connected")
        peer.start()
        yield {"gateway": gateway, "account": account, "bob": bob, "peer": peer}
    finally:
        peer.stop()
        code = gateway.stop()
        assert code == 0, gateway.log_text()


def phone(gateway: GatewayProcess, *, publish: bool = False) -> PjsuaAgent:
    """A pjsua2 phone registered as alice with the gateway (which is also its proxy)."""
    agent = PjsuaAgent.start()
    agent.account(
        "sip:alice@sip.test",
        registrar=gateway.uri,
        username="alice",
        password=SIP_PASSWORD,
        proxy=f"{gateway.uri};lr",
        publish=publish,
    )
    event = agent.wait_for(lambda e: e["event"] == "reg")
    assert event["code"] == 200, event
    return agent
