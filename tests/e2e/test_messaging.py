"""Messages end to end: a pjsua2 phone <-> purplegw daemon <-> Prosody <-> an XMPP user.

Every part is real: pjsip's SIP stack (not ours) registers with digest
authentication and sends/receives MESSAGE; the gateway runs as the
`purplegw run` daemon; the XMPP side is Prosody and an independent slixmpp
client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.deployment import deployment, phone

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def setup(prosody: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield from deployment(prosody, tmp_path)


def test_phone_to_xmpp_and_back(setup: dict[str, Any]) -> None:
    gateway, account, bob, peer = (setup[k] for k in ("gateway", "account", "bob", "peer"))
    with phone(gateway) as agent:
        text = "héllo ✓ from a SIP phone"
        agent.message(f"sip:{bob.jid}", text)
        status = agent.wait_for(lambda e: e["event"] == "im_status")
        assert status["code"] == 202, (status, gateway.log_text())
        got = peer.wait_for(lambda e: e.kind == "message" and e.body == text)
        assert got.bare == account.jid

        # Over 1300 bytes: the gateway moves it to TCP (RFC 3261 18.1.1).  pjsip
        # reads at most 4000 bytes per message, so 10 kB bodies are tested with sipp.
        reply = "ünïcödé reply ✓ " + "x" * 3000
        peer.send_message(account.jid, reply)
        im = agent.wait_for(lambda e: e["event"] == "im", timeout=30)
        assert im["body"] == reply
        assert f"sip:{bob.jid};proto=xmpp" in im["from"]

        # The phone answers the contact in the form it was given: same route back.
        agent.message(im["from"].strip("<>"), "answer ✓ " + "y" * 3000)
        peer.wait_for(lambda e: e.kind == "message" and e.body == "answer ✓ " + "y" * 3000)


def test_no_account_for_contact_is_404_and_unknown_type_is_415(setup: dict[str, Any]) -> None:
    with phone(setup["gateway"]) as agent:
        agent.message("sip:nick@irc.example;proto=irc", "nobody")
        status = agent.wait_for(lambda e: e["event"] == "im_status")
        assert status["code"] == 404
        agent.message(f"sip:{setup['bob'].jid}", "<b>x</b>", content_type="text/html")
        status = agent.wait_for(lambda e: e["event"] == "im_status" and e["code"] != 404)
        assert status["code"] == 415


def test_offline_user_gets_every_message_in_order_across_a_restart(
    setup: dict[str, Any],
) -> None:
    gateway, account, peer = setup["gateway"], setup["account"], setup["peer"]
    sent = [f"queued message {i:02d} ✓" for i in range(20)]
    for text in sent[:10]:
        peer.send_message(account.jid, text)
    # Wait until the gateway has taken them (they sit in its outbox).
    import time

    deadline = time.monotonic() + 30
    while "queued message 09" not in gateway.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gateway.stop() == 0
    for text in sent[10:]:  # the gateway is down: Prosody keeps them
        peer.send_message(account.jid, text)
    gateway.start()
    gateway.wait_accounts("connected")
    with phone(gateway) as agent:
        for text in sent:
            agent.wait_for(lambda e, t=text: e["event"] == "im" and e["body"] == t, timeout=60)
        received = [e["body"] for e in agent.matching(lambda e: e["event"] == "im")]
        assert received == sent


def test_typing_both_ways(setup: dict[str, Any]) -> None:
    gateway, account, bob, peer = (setup[k] for k in ("gateway", "account", "bob", "peer"))
    with phone(gateway) as agent:
        # RFC 3994 is-composing from the phone -> XEP-0085 <composing/> at the contact.
        agent.typing(f"sip:{bob.jid}", composing=True)
        got = peer.wait_for(lambda e: e.kind == "chat_state" and e.chat_state == "composing")
        assert got.bare == account.jid
        # XEP-0085 from the contact -> is-composing at the phone.
        peer.send_chat_state(account.jid, "composing")
        event = agent.wait_for(lambda e: e["event"] == "typing" and e["composing"])
        assert f"{bob.jid};proto=xmpp" in event["from"]
        peer.send_chat_state(account.jid, "paused")
        agent.wait_for(lambda e: e["event"] == "typing" and not e["composing"])


def test_cpim_body_is_unwrapped(setup: dict[str, Any]) -> None:
    gateway, bob, peer = setup["gateway"], setup["bob"], setup["peer"]
    cpim = (
        "From: <sip:alice@sip.test>\r\nTo: <sip:" + bob.jid + ">\r\n\r\n"
        "Content-Type: text/plain;charset=utf-8\r\n\r\nwrapped in CPIM ✓"
    )
    with phone(gateway) as agent:
        agent.message(f"sip:{bob.jid}", cpim, content_type="message/cpim")
        assert agent.wait_for(lambda e: e["event"] == "im_status")["code"] == 202
        peer.wait_for(lambda e: e.kind == "message" and e.body == "wrapped in CPIM ✓")


def test_accepted_message_survives_outage_and_restart(prosody: Any, setup: dict[str, Any]) -> None:
    """202 while the XMPP server is down, then a gateway restart: still delivered."""
    gateway, account, bob, peer = (setup[k] for k in ("gateway", "account", "bob", "peer"))
    import time

    with phone(gateway) as agent:
        prosody.stop()
        try:
            deadline = time.monotonic() + 30
            while gateway.status()[0]["state"] == "connected" and time.monotonic() < deadline:
                time.sleep(0.1)
            agent.message(f"sip:{bob.jid}", "accepted while the server was down ✓")
            status = agent.wait_for(lambda e: e["event"] == "im_status")
            assert status["code"] == 202, status
            assert gateway.stop() == 0
        finally:
            prosody.start()
    gateway.start()
    gateway.wait_accounts("connected")
    got = peer.wait_for(
        lambda e: e.kind == "message" and e.body == "accepted while the server was down ✓",
        timeout=60,
    )
    assert got.bare == account.jid


def test_a_receipt_is_asked_of_the_contact_only_when_the_phone_wants_delivery_reports(
    setup: dict[str, Any],
) -> None:
    """XEP-0184 is requested for an IMDN positive-delivery only; its receipt becomes the IMDN."""
    gateway, bob, peer = setup["gateway"], setup["bob"], setup["peer"]
    with phone(gateway) as agent:
        agent.message(f"sip:{bob.jid}", "nobody waits for a receipt ✓")
        assert agent.wait_for(lambda e: e["event"] == "im_status")["code"] == 202
        plain = peer.wait_for(lambda e: e.kind == "message" and e.body.startswith("nobody"))
        assert not plain.receipt_requested
        assert plain.chat_state == "active"

        cpim = (
            "From: <sip:alice@sip.test>\r\nTo: <sip:" + bob.jid + ">\r\n"
            "NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: e2e-Rc1\r\n"
            "imdn.Disposition-Notification: positive-delivery\r\n\r\n"
            "Content-Type: text/plain;charset=utf-8\r\n\r\ntell me when it arrives ✓"
        )
        agent.message(f"sip:{bob.jid}", cpim, content_type="message/cpim")
        asked = peer.wait_for(lambda e: e.kind == "message" and e.body.startswith("tell me"))
        assert asked.receipt_requested
        # The contact's client answered (tests/kit/xmpp_peer.py): the phone gets "delivered".
        report = agent.wait_for(lambda e: e["event"] == "im" and "e2e-Rc1" in e["body"], timeout=30)
        assert report["content_type"].startswith("message/cpim")
        assert "<delivered/>" in report["body"]
        assert f"sip:{bob.jid};proto=xmpp" in report["from"]
