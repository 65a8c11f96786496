"""The gateway dies while the XMPP server still owes it acknowledgements.

Prosody hangs (SIGSTOP); the phone's MESSAGEs are written to the stuck
stream and answered 202 at once; then the gateway is killed with SIGKILL and
Prosody too (what it never read dies with it).  Only the gateway's send
queue still knows those messages: a row settles when the server
acknowledges the message (XEP-0198), not when it was written, so after both
restart every one of them reaches bob.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Any

from tests.faults.traffic import (
    CountingPeer,
    Ids,
    body_for,
    gateway_for,
    kill_gateway,
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

WRITTEN = 5  # messages written to the hung server


def test_messages_written_to_a_hung_server_survive_a_gateway_crash(
    own_prosody: Any, tmp_path: Path
) -> None:
    prosody = own_prosody
    account, bob = prosody.create_user("alice"), prosody.create_user("bob")
    tally = Tally("hung server + gateway SIGKILL: SIP -> XMPP")
    gateway = gateway_for(
        prosody, tmp_path, {"alice": account}, actors={"flap_retry_in": 1.0}
    ).start()
    peer = CountingPeer(
        bob.jid,
        bob.password,
        prosody.host,
        prosody.port,
        ca_file=prosody.ca_file,
        tally=Tally("unused"),
    )
    agent = None
    try:
        gateway.wait_accounts("connected")
        peer.start()
        agent = registered_phone(gateway, "alice")
        cursors = [phone_cursor(agent, tally, None), peer_cursor(peer, tally)]
        ids = Ids("hung", "sip")

        def send() -> str:
            msg_id = ids.next()
            tally.send(msg_id)
            agent.message(f"sip:{bob.jid}", body_for(msg_id))
            return msg_id

        send()  # one through a healthy server first
        wait_delivered([tally], cursors, timeout=30)
        assert len(tally.delivered) == 1, tally.line()

        prosody.proc.send_signal(signal.SIGSTOP)
        written = [send() for _ in range(WRITTEN)]

        def all_answered() -> bool:
            for cursor in cursors:
                cursor.poll()
            return all(m in tally.accepted or m in tally.refused for m in written)

        wait_until(all_answered, 30, "the phone's MESSAGEs answered while the server hangs")
        assert all(m in tally.accepted for m in written), tally.line()
        assert not any(m in tally.delivered for m in written)

        kill_gateway(gateway)
        kill_server(prosody)
        prosody.start()
        gateway.start()
        gateway.wait_accounts("connected")
        wait_until(lambda: peer.online, 60, "bob back online")
        wait_delivered([tally], cursors, timeout=60)
        tally.check()
    finally:
        if agent is not None:
            agent.stop()
        peer.stop()
        if prosody.proc is not None and prosody.proc.poll() is None:
            prosody.proc.send_signal(signal.SIGCONT)
        code = gateway.stop()
        assert code == 0, gateway.log_text()
