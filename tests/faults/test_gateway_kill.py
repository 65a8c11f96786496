"""The whole gateway killed with SIGKILL and started again on the same data.

What docs/messaging.md and docs/presence.md promise across a restart, checked
after a kill that gives the daemon no chance to save anything:

* XMPP -> SIP messages waiting in the outbox (the phone unregistered) are
  delivered when the user registers again;
* SIP -> XMPP messages answered 202 while the account was reconnecting
  (Prosody down: they sit in the send queue) go out once the account is
  back;
* a presence subscription (SUBSCRIBE to bob, authorized) is restored: bob's
  next presence change reaches the phone as a NOTIFY in the same dialog,
  without the phone subscribing again.

Then it is killed once more in the middle of live traffic both ways: what
was accepted on either side of the kill is delivered too.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tests.faults.traffic import (
    CountingPeer,
    Cursor,
    Ids,
    Ticker,
    body_for,
    gateway_for,
    kill_gateway,
    peer_cursor,
    phone_cursor,
    registered_phone,
    wait_delivered,
    wait_until,
)
from tests.kit.tally import Tally

if TYPE_CHECKING:
    from pathlib import Path

    from tests.kit.gateway import GatewayProcess
    from tests.kit.pjsua_agent import PjsuaAgent


def buddy(agent: PjsuaAgent, uri: str, **want: str) -> dict[str, Any]:
    return agent.wait_for(
        lambda e: (
            e["event"] == "buddy"
            and e["uri"] == uri
            and all(e.get(k) == v for k, v in want.items())
        ),
        timeout=30,
    )


def account_state(gateway: GatewayProcess) -> str:
    return gateway.status()[0]["state"]


def test_gateway_sigkill_restart_keeps_queues_and_subscriptions(  # noqa: PLR0915 - one story
    own_prosody: Any,
    tmp_path: Path,
) -> None:
    prosody = own_prosody
    account, bob = prosody.create_user("alice"), prosody.create_user("bob")
    sip_to_xmpp = Tally("gateway SIGKILL: SIP -> XMPP")
    xmpp_to_sip = Tally("gateway SIGKILL: XMPP -> SIP")
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
    phones: list[PjsuaAgent] = []
    uri = f"sip:{bob.jid}"
    try:
        gateway.wait_accounts("connected")
        peer.start()
        phone = registered_phone(gateway, "alice")
        phones.append(phone)
        cursors = [phone_cursor(phone, sip_to_xmpp, xmpp_to_sip), peer_cursor(peer, sip_to_xmpp)]

        # A subscription to bob, authorized by him.
        phone.subscribe(uri)
        peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == account.jid, timeout=30)
        peer.answer_subscription(account.jid, allow=True)
        buddy(phone, uri, sub_state="ACTIVE", status="online")
        peer.send_presence(show="away", status="before the kill")
        buddy(phone, uri, note="before the kill")

        out_ids, in_ids = Ids("gk", "sip"), Ids("gk", "xmpp")

        def from_phone() -> None:
            msg_id = out_ids.next()
            sip_to_xmpp.send(msg_id)
            phone.message(uri, body_for(msg_id))

        def from_bob() -> None:
            peer.send_counted(account.jid, in_ids.next())

        # 1. Both ways while everything is up.
        with Ticker(from_phone), Ticker(from_bob):
            time.sleep(1.5)
        # 2. The phone goes away: bob's messages wait in the gateway's outbox.
        phone.unregister()
        phone.wait_for(lambda e: e["event"] == "reg" and not e["active"])
        with Ticker(from_bob):
            time.sleep(1.5)
        # Every stanza Prosody acknowledged has reached the gateway's account.
        wait_until(lambda: _all_acked(peer, xmpp_to_sip), 30, "Prosody acknowledged bob's messages")
        wait_until(
            lambda: gateway.status()[0]["messages_in"] >= len(xmpp_to_sip.accepted),
            30,
            "the gateway received bob's messages",
        )
        # 3. Prosody down: the account reconnects, the phone's messages are queued (202).
        prosody.stop()
        wait_until(lambda: account_state(gateway) != "connected", 30, "account noticed the outage")
        with Ticker(from_phone):
            time.sleep(1.5)
        wait_until(
            lambda: not _unanswered(sip_to_xmpp, cursors[0]), 60, "every phone MESSAGE answered"
        )
        assert sip_to_xmpp.accepted, "nothing was accepted"

        # 4. SIGKILL with messages of both directions accepted and undelivered.
        for cursor in cursors:
            cursor.poll()
        assert sip_to_xmpp.missing(), "no SIP -> XMPP message waited in the send queue"
        assert xmpp_to_sip.missing(), "no XMPP -> SIP message waited in the outbox"
        buddy_events_before = len(phone.matching(lambda e: e["event"] == "buddy"))
        kill_gateway(gateway)
        prosody.start()
        gateway.start()
        gateway.wait_accounts("connected")
        wait_until(lambda: peer.online, 60, "bob back online")

        # The subscription came back: bob's next change reaches the phone.
        peer.send_presence(show="dnd", status="after the kill ✓")
        buddy(phone, uri, note="after the kill ✓", sub_state="ACTIVE")
        after = phone.matching(lambda e: e["event"] == "buddy")[buddy_events_before:]
        assert all(e["sub_state"] == "ACTIVE" for e in after), after

        # The outbox comes back when alice registers again.
        again = registered_phone(gateway, "alice")
        phones.append(again)
        cursors.append(phone_cursor(again, sip_to_xmpp, xmpp_to_sip))
        wait_delivered([sip_to_xmpp, xmpp_to_sip], cursors, timeout=60, settle=peer.request_ack)
        assert not sip_to_xmpp.missing(), "first kill"
        assert not xmpp_to_sip.missing(), "first kill"

        # 5. SIGKILL again, this time in the middle of live traffic both ways
        #    with Prosody up.  The phone's unanswered MESSAGEs retransmit into
        #    the new process; bob's stanzas to the dead connection are
        #    Prosody's to keep (its session waits for a resumption that never
        #    comes, then gives way to the new login).
        def from_again() -> None:
            msg_id = out_ids.next()
            sip_to_xmpp.send(msg_id)
            again.message(uri, body_for(msg_id))

        with Ticker(from_again), Ticker(from_bob):
            time.sleep(1.0)
            kill_gateway(gateway)
            time.sleep(0.5)
            gateway.start()
            gateway.wait_accounts("connected")
            time.sleep(1.0)
        # Bindings live in memory: what waits in the outbox goes to the next REGISTER.
        third = registered_phone(gateway, "alice")
        phones.append(third)
        cursors.append(phone_cursor(third, None, xmpp_to_sip))
        wait_delivered([sip_to_xmpp, xmpp_to_sip], cursors, timeout=60, settle=peer.request_ack)
        sip_to_xmpp.check()
        xmpp_to_sip.check()
    finally:
        for agent in phones:
            agent.stop()
        peer.stop()
        code = gateway.stop()
        assert code == 0, gateway.log_text()


def _all_acked(peer: CountingPeer, tally: Tally) -> bool:
    peer.request_ack()
    return len(tally.accepted) == len(tally.sent)


def _unanswered(tally: Tally, cursor: Cursor) -> list[str]:
    cursor.poll()
    return sorted(set(tally.sent) - tally.accepted - tally.refused)
