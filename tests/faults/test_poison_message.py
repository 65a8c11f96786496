"""A message the XMPP server kills the stream on, in the middle of two-way traffic.

Prosody closes a client's whole stream on a stanza larger than its
``c2s_stanza_size_limit`` (policy-violation).  Here the limit is 10,000
bytes and the account's ``max_text_bytes`` is set far above it (a message
queued under a larger cap, or a server stricter than configured): the
poison message passes every check of ours and really kills the stream.

The account actor (real XMPP adapter, real Prosody) sends the phone's side
of the traffic; bob, an independent slixmpp client, sends the other side.
The poison message is written, the stream dies, the account reconnects and
resends it (the server never acknowledged it), the stream dies again: then
it is quarantined -- reported once with a permanent on_send_result (488) --
and every other message, before and after it, both ways, arrives.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors import listener
from purplegw.actors.state import ActorsConfig
from purplegw.actors.supervisor import LocalAccounts
from purplegw.protocols.base import AccountCredentials
from purplegw.protocols.loader import load_adapters
from tests.faults.traffic import CountingPeer, Ids, body_for, ids_in, peer_cursor, wait_until
from tests.kit.prosody import Prosody, prosody_binary
from tests.kit.tally import Tally

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(180)

STANZA_LIMIT = 10000  # Prosody's smallest allowed c2s_stanza_size_limit
POISON_TEXT = "x" * (2 * STANZA_LIMIT)
BURST = 20  # messages each way before and after the poison


@pytest.fixture
def strict_prosody() -> Iterator[Prosody]:
    if prosody_binary() is None:
        pytest.skip("prosody is not installed")
    server = Prosody()
    server.start()
    server.stop()
    config = server.config_path.read_text()
    limit = f"\nc2s_stanza_size_limit = {STANZA_LIMIT}\n\nVirtualHost"
    config = config.replace("\nVirtualHost", limit, 1)
    server.config_path.write_text(config)
    with server:  # starts it again, with the limit; stops it and removes its files after
        yield server


class _Phone(listener.EventSink):
    """What the SIP side would see: deliveries from bob and send results."""

    def __init__(self, received: Tally) -> None:
        self.received = received
        self.results: list[tuple[str, Any]] = []

    def on_event(self, event: str, **kwargs: Any) -> None:
        if event == "on_message":
            for msg_id in ids_in(kwargs["text"]):
                self.received.deliver(msg_id)
        elif event == "on_send_result":
            self.results.append((kwargs["message_id"], kwargs["outcome"]))


def test_a_poison_message_is_quarantined_and_nothing_else_is_lost(  # noqa: PLR0915 - one story
    strict_prosody: Prosody,
) -> None:
    prosody = strict_prosody
    account, bob = prosody.create_user("alice"), prosody.create_user("bob")
    sip_to_xmpp, xmpp_to_sip = Tally("poison: SIP -> XMPP"), Tally("poison: XMPP -> SIP")
    phone = _Phone(xmpp_to_sip)
    listener.add_sink(phone)
    protocols = {"xmpp": {**_section(prosody), "max_text_bytes": 1_000_000}}
    accounts = LocalAccounts(
        ActorsConfig.from_section(
            {"backoff_initial": 0.1, "backoff_max": 0.5, "flap_retry_in": 1.0}
        ),
        load_adapters(protocols),
        protocols,
    )
    peer = CountingPeer(
        bob.jid,
        bob.password,
        prosody.host,
        prosody.port,
        ca_file=prosody.ca_file,
        tally=xmpp_to_sip,
    )
    try:
        accounts.apply(
            [AccountCredentials(1, "alice", account.jid, "xmpp", account.password, "xmpp")]
        )
        wait_until(lambda: _state(accounts) == "connected", 30, "alice connected")
        peer.start()
        handle = accounts.directory.get("alice", "xmpp")
        bob_cursor = peer_cursor(peer, sip_to_xmpp)
        out_ids, in_ids = Ids("poison", "sip"), Ids("poison", "xmpp")

        def send_out() -> None:
            msg_id = out_ids.next()
            sip_to_xmpp.send(msg_id)
            outcome = handle.send_message(bob.jid, body_for(msg_id), msg_id).get(timeout=30)
            if outcome.status in (200, 202):
                sip_to_xmpp.accept(msg_id)
            else:
                sip_to_xmpp.refuse(msg_id)

        for _ in range(BURST):
            send_out()
            peer.send_counted(account.jid, in_ids.next())
        poison = handle.send_message(bob.jid, POISON_TEXT, "poison-1").get(timeout=30)
        assert poison.status == 202, poison  # written; the server's answer comes later
        for _ in range(BURST):
            send_out()
            peer.send_counted(account.jid, in_ids.next())
            time.sleep(0.02)

        def settled() -> bool:
            peer.request_ack()
            bob_cursor.poll()
            return (
                not sip_to_xmpp.missing()
                and not xmpp_to_sip.missing()
                and any(m == "poison-1" for m, _o in phone.results)
            )

        try:
            wait_until(settled, 60, "traffic settled and the poison message reported")
        except TimeoutError as exc:
            raise AssertionError(
                f"{sip_to_xmpp.line()} missing {sip_to_xmpp.missing()}; "
                f"{xmpp_to_sip.line()} missing {xmpp_to_sip.missing()}; "
                f"{_status(accounts)} "
                f"{[(m, o) for m, o in phone.results if m == 'poison-1']}"
            ) from exc
        # (202 "written" reports are not outcomes: the ack or the ledger settles them.)
        poison_results = [o for m, o in phone.results if m == "poison-1" and o.status != 202]
        assert [(o.status, o.reason) for o in poison_results] == [
            (488, "the server closed the stream on this message")
        ]
        # It really killed the stream, twice, and no more than twice.
        assert 2 <= _status(accounts)["reconnects"] <= 3, _status(accounts)
        assert _state(accounts) == "connected"
        assert not any(e.body == POISON_TEXT for e in peer.snapshot())
        sip_to_xmpp.check()
        xmpp_to_sip.check()
        # The account still carries the next message at once.
        send_out()
        wait_until(settled, 30, "the next message")
    finally:
        listener.remove_sink(phone)
        peer.stop()
        accounts.stop()


def _section(prosody: Prosody) -> dict[str, Any]:
    return {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 0}


def _status(accounts: LocalAccounts) -> dict[str, Any]:
    return accounts.status()[0]


def _state(accounts: LocalAccounts) -> str:
    return accounts.status()[0].get("state", "")
