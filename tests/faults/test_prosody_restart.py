"""Prosody stopped and restarted while messages flow both ways.

The real daemon, a pjsua2 phone registered as alice and an independent XMPP
client bob.  The phone sends a MESSAGE to bob every tick and bob one to
alice's XMPP account; Prosody is stopped for a few seconds in the middle
(SIGTERM: it closes every stream; SIGKILL after a second of SIGSTOP: a hang
then a crash, whatever was written to it meanwhile is gone) and started
again on the same port with the same data.  Every message the gateway
answered 202, and every stanza Prosody acknowledged to bob, must reach the
other side after the reconnects (duplicates are allowed and counted).
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.faults.traffic import (
    CountingPeer,
    Ids,
    Ticker,
    body_for,
    gateway_for,
    kill_server,
    peer_cursor,
    phone_cursor,
    registered_phone,
    wait_delivered,
    wait_until,
)
from tests.kit.tally import Tally

if TYPE_CHECKING:
    from pathlib import Path

FLOW = 2.5  # seconds of traffic before the stop, during the outage, after the start
FREEZE = 1.0  # seconds Prosody hangs (SIGSTOP) before SIGKILL


def stop(prosody: Any, how: str) -> None:
    if how == "SIGTERM":
        prosody.stop()
        return
    # A hung then crashed server: what the gateway writes while it is frozen
    # is never read, never acknowledged, and dies with it.
    prosody.proc.send_signal(signal.SIGSTOP)
    time.sleep(FREEZE)
    kill_server(prosody)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_prosody_restart_mid_traffic_loses_nothing(
    own_prosody: Any, tmp_path: Path, how: str
) -> None:
    prosody = own_prosody
    account, bob = prosody.create_user("alice"), prosody.create_user("bob")
    sip_to_xmpp = Tally(f"prosody {how}+restart: SIP -> XMPP")
    xmpp_to_sip = Tally(f"prosody {how}+restart: XMPP -> SIP")
    # The test kit's fast backoff makes an outage of seconds look like
    # flapping; a short flapping pause keeps the case about delivery.
    gateway = gateway_for(
        prosody, tmp_path, {"alice": account}, actors={"flap_retry_in": 1.0}
    ).start()
    peer = CountingPeer(
        bob.jid,
        bob.password,
        prosody.host,
        prosody.port,
        ca_file=prosody.ca_file,
        tally=xmpp_to_sip,
    )
    agent = None
    try:
        gateway.wait_accounts("connected")
        peer.start()
        agent = registered_phone(gateway, "alice")
        cursors = [phone_cursor(agent, sip_to_xmpp, xmpp_to_sip), peer_cursor(peer, sip_to_xmpp)]
        out_ids, in_ids = Ids("pr", "sip"), Ids("pr", "xmpp")

        def tick() -> None:
            msg_id = out_ids.next()
            sip_to_xmpp.send(msg_id)
            agent.message(f"sip:{bob.jid}", body_for(msg_id))
            peer.send_counted(account.jid, in_ids.next())

        with Ticker(tick, interval=0.1):
            time.sleep(FLOW)
            stop(prosody, how)
            time.sleep(FLOW)
            prosody.start()
            time.sleep(FLOW)
        # Both clients must come back by themselves.
        wait_until(lambda: peer.online, 60, "bob back online")
        gateway.wait_accounts("connected")
        wait_delivered([sip_to_xmpp, xmpp_to_sip], cursors, timeout=60, settle=peer.request_ack)
        assert peer.sessions_started >= 2, "bob never logged in again"
        # The outage really cut the gateway's connection mid-traffic.
        assert gateway.status()[0]["reconnects"] >= 1, gateway.status()
        sip_to_xmpp.check()
        xmpp_to_sip.check()
    finally:
        if agent is not None:
            agent.stop()
        peer.stop()
        code = gateway.stop()
        assert code == 0, gateway.log_text()
