"""The XMPP side of the message pipeline against a real Prosody.

The contact is the independent slixmpp client of tests/kit/xmpp_peer.py: it
sees the error stanzas of bounces and strangers' refusals, the receipts and
markers, and sends delayed messages and messages to users that do not exist.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING

import pytest

from purplegw.protocols.base import DeliveryError
from purplegw.protocols.xmpp import errors
from tests.kit.xmpp_peer import XmppPeer

from .xmpp_harness import make_session

if TYPE_CHECKING:
    from tests.kit.prosody import Prosody

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture
def users(prosody: Prosody):
    n = next(_names)
    return prosody.create_user(f"pipe_a{n}"), prosody.create_user(f"pipe_b{n}")


def _config(prosody: Prosody, **extra):
    return {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 0, **extra}


@pytest.fixture
def alice(loop, prosody, users):
    session, events = make_session(loop, users[0].jid, users[0].password, _config(prosody))
    loop.run(session.login())
    yield session, events
    loop.run(session.logout())


@pytest.fixture
def bob(prosody, users):
    with XmppPeer(
        users[1].jid, users[1].password, prosody.host, prosody.port, ca_file=prosody.ca_file
    ) as peer:
        yield peer


@pytest.mark.parametrize(
    ("status", "condition", "etype"),
    [
        (404, "item-not-found", "cancel"),
        (410, "recipient-unavailable", "wait"),
        (403, "forbidden", "auth"),
        (413, "not-acceptable", "modify"),
        (488, "not-acceptable", "modify"),
        (429, "resource-constraint", "wait"),
        (errors.POLICY_STATUS, "policy-violation", "modify"),
    ],
)
def test_bounce_reaches_the_sender_as_an_error_with_its_id(
    loop,
    alice,
    bob,
    users,
    status,
    condition,
    etype,
):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    mid = bob.send_message(ours, "will not arrive", msg_id=f"bob-{status}")
    events.wait_for("message", lambda c, t, i: i == mid)
    loop.run(session.bounce(theirs, mid, status, "the phone refused it"))
    got = bob.wait_for(lambda e: e.kind == "error" and e.msg_id == mid)
    assert (got.status, got.ptype, got.body) == (condition, etype, "the phone refused it")
    assert got.bare == ours


def test_receipts_and_markers_only_where_the_contact_asked(loop, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    plain = bob.send_message(ours, "no receipt asked", msg_id="plain-1")
    asked = bob.send_message(ours, "receipt asked", msg_id="asked-1", request_receipt=True)
    events.wait_for("message", lambda c, t, i: i == asked)
    # Nothing goes out before the phone reports it.
    loop.run(session.send_receipt(theirs, plain, "delivered"))
    loop.run(session.send_receipt(theirs, asked, "delivered"))
    bob.wait_for(lambda e: e.kind == "receipt" and e.receipt_for == asked)
    # In order: a receipt for the plain message would have come first.
    assert [e.receipt_for for e in bob.snapshot() if e.kind == "receipt"] == [asked]

    # XEP-0333: a markable message gets "displayed" when the phone shows it.
    bob.send_raw(
        f"<message to='{ours}' type='chat' id='mark-1'><body>markable</body>"
        "<markable xmlns='urn:xmpp:chat-markers:0'/></message>"
    )
    events.wait_for("message", lambda c, t, i: i == "mark-1")
    loop.run(session.send_receipt(theirs, "mark-1", "displayed"))
    marker = bob.wait_for(lambda e: e.kind == "marker" and e.bare == ours)
    assert (marker.chat_state, marker.receipt_for) == ("displayed", "mark-1")


def test_a_stranger_is_refused_with_policy_violation_when_strangers_deny(
    loop,
    prosody,
    users,
    bob,
):
    ours = users[0].jid
    session, events = make_session(
        loop, ours, users[0].password, _config(prosody), strangers="deny"
    )
    loop.run(session.login())
    try:
        mid = bob.send_message(ours, "hello stranger", msg_id="stranger-1")
        got = bob.wait_for(lambda e: e.kind == "error" and e.msg_id == mid)
        assert got.status == "policy-violation"
        assert got.ptype == "modify"
        assert events.of("message") == []
    finally:
        loop.run(session.logout())


def test_strangers_allowed_by_default(alice, bob, users):
    _session, events = alice
    mid = bob.send_message(users[0].jid, "hello", msg_id="allowed-1")
    assert events.wait_for("message", lambda c, t, i: i == mid)[1] == "hello"


def test_a_delay_stamp_becomes_sent_at(alice, bob, users):
    _session, events = alice
    ours = users[0].jid
    bob.send_raw(
        f"<message to='{ours}' type='chat' id='late-1'><body>from the past</body>"
        "<delay xmlns='urn:xmpp:delay' from='localhost' stamp='2020-01-02T03:04:05.5Z'/>"
        "</message>"
    )
    bob.send_message(ours, "now", msg_id="now-1")
    events.wait_for("message", lambda c, t, i: i == "now-1")
    assert events.of("sent_at") == [("late-1", 1577934245.5)]


def test_a_stanza_error_for_a_sent_message_fails_it_for_good(loop, alice, prosody):
    session, events = alice
    nobody = f"nobody{next(_names)}@{prosody.domain}"
    loop.run(session.send_message(nobody, "to nobody", "sip-nobody-1"))
    message_id, status, reason = events.wait_for("failed")
    assert (message_id, status) == ("sip-nobody-1", 404)
    assert "service-unavailable" in reason
    # Not resent after a lost connection: it left the ledger.
    deadline = time.monotonic() + 5
    while session.unacked_messages() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [m.message_id for m in session.unacked_messages()] == []


def test_text_xml_cannot_carry_is_refused_before_it_reaches_the_stream(loop, alice, bob, users):
    session, _events = alice
    theirs = users[1].jid
    with pytest.raises(DeliveryError) as info:
        loop.run(session.send_message(theirs, "esc \x1b[31m red", "bad-1"))
    assert info.value.status_hint == 488
    assert "U+001B" in str(info.value)
    # The stream is still up: the next message arrives.
    loop.run(session.send_message(theirs, "still here", "good-1"))
    bob.wait_for(lambda e: e.kind == "message" and e.body == "still here")
