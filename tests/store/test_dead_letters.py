"""Dead letters on both backends: recorded with the reason, listed, retried, dropped."""

from __future__ import annotations

import time

import pytest

from purplegw.exceptions import StoreError
from purplegw.store import Database, Store
from purplegw.store.dead_letters import DeadLetterRepository, Direction
from purplegw.store.sendq import NewSend

ALICE = "alice@example.org"


def test_add_get_list_filters(store: Store) -> None:
    letters = store.dead_letters
    before = time.time()
    first = letters.add(
        direction=Direction.TO_NETWORK,
        sip_user=ALICE,
        protocol="xmpp",
        contact="bob@jabber.example",
        body="héllo \x1b",
        message_id="m-1",
        created=before - 60,
        attempts=3,
        status=488,
        reason="Not Acceptable Here: control character U+001B",
    )
    second = letters.add(
        direction="to_sip",
        sip_user=ALICE,
        protocol="irc",
        account_id=7,
        contact="carol",
        body=b"\xff raw",
        status=403,
        reason="Forbidden",
    )
    other = letters.add(
        direction=Direction.TO_SIP,
        sip_user="zed@example.org",
        protocol="xmpp",
        contact="x@y.example",
        body="z",
        status=480,
        reason="x" * 400,
    )
    got = letters.get(first)
    assert got is not None
    assert (
        got.direction,
        got.sip_user,
        got.protocol,
        got.contact,
        got.text,
        got.message_id,
        got.attempts,
        got.status,
    ) == (Direction.TO_NETWORK, ALICE, "xmpp", "bob@jabber.example", "héllo \x1b", "m-1", 3, 488)
    assert got.created == pytest.approx(before - 60)
    assert got.failed >= before
    assert got.reason.startswith("Not Acceptable Here")
    assert letters.get(second).body == b"\xff raw"  # type: ignore[union-attr]
    assert letters.get(second).account_id == 7  # type: ignore[union-attr]
    assert len(letters.get(other).reason) == 255  # type: ignore[union-attr]
    assert letters.get(other + 1000) is None

    assert [d.id for d in letters.list()] == [first, second, other]
    assert [d.id for d in letters.list(sip_user=ALICE)] == [first, second]
    assert [d.id for d in letters.list(direction="to_sip")] == [second, other]
    assert [d.id for d in letters.list(sip_user=ALICE, protocol="irc")] == [second]
    assert [d.id for d in letters.list(since=time.time() + 10)] == []
    assert [d.id for d in letters.list(limit=1)] == [first]
    assert letters.count() == 3
    assert letters.count(ALICE) == 2
    assert letters.get(first).as_dict()["direction"] == "to_network"  # type: ignore[union-attr]


def test_bury_moves_rows_out_of_their_queue(store: Store) -> None:
    store.sendq.put(
        sip_user=ALICE,
        protocol="xmpp",
        contact="bob@jabber.example",
        body="poison",
        message_id="m-9",
    )
    seq = store.outbox.put(
        sip_user=ALICE,
        account_id=2,
        protocol="xmpp",
        contact="bob@jabber.example",
        body=b"too big",
        content_type="text/plain;charset=UTF-8",
    )
    store.outbox.failed_attempt(seq, "408 Request Timeout")

    sent_id = store.dead_letters.bury_send(
        store.sendq, "m-9", status=500, reason="stream died twice on it", attempts=2
    )
    got_id = store.dead_letters.bury_incoming(
        store.outbox, seq, status=413, reason="Request Entity Too Large", message_id="x1"
    )
    assert store.sendq.pending() == []
    assert store.outbox.pending() == []
    sent = store.dead_letters.get(sent_id)  # type: ignore[arg-type]
    got = store.dead_letters.get(got_id)  # type: ignore[arg-type]
    assert sent is not None
    assert got is not None
    assert (sent.direction, sent.message_id, sent.attempts, sent.status) == (
        Direction.TO_NETWORK,
        "m-9",
        2,
        500,
    )
    assert sent.created > 0
    assert (got.direction, got.account_id, got.body, got.attempts, got.status, got.message_id) == (
        Direction.TO_SIP,
        2,
        b"too big",
        1,
        413,
        "x1",
    )
    # Not queued (any more): nothing to move, nothing invented.
    assert store.dead_letters.bury_send(store.sendq, "m-9", status=500, reason="again") is None
    assert store.dead_letters.bury_incoming(store.outbox, seq, status=500, reason="x") is None
    assert store.dead_letters.count() == 2


def test_take_for_retry_requeues_each_direction_once(store: Store) -> None:
    letters = store.dead_letters
    out_id = letters.add(
        direction=Direction.TO_NETWORK,
        sip_user=ALICE,
        protocol="xmpp",
        contact="bob@jabber.example",
        body="again please",
        message_id="m-2",
        status=503,
        reason="Service Unavailable",
        attempts=5,
    )
    in_id = letters.add(
        direction=Direction.TO_SIP,
        sip_user=ALICE,
        protocol="xmpp",
        account_id=4,
        contact="bob@jabber.example",
        body=b"to the phone",
        status=480,
        reason="Temporarily Unavailable",
        attempts=9,
    )
    older = store.outbox.put(
        sip_user=ALICE, account_id=4, protocol="xmpp", contact="c", body=b"queued meanwhile"
    )

    requeued = letters.take_for_retry(out_id, sendq=store.sendq, outbox=store.outbox)
    assert requeued is not None
    assert requeued.queue_key == "m-2"
    assert [(p.message_id, p.body, p.contact) for p in store.sendq.pending()] == [
        ("m-2", "again please", "bob@jabber.example")
    ]

    back = letters.take_for_retry(in_id, sendq=store.sendq, outbox=store.outbox)
    assert back is not None
    assert back.letter.attempts == 9
    queued = store.outbox.pending(ALICE)
    assert [m.seq for m in queued] == [older, back.queue_key]  # the end of the queue
    assert (queued[1].body, queued[1].account_id, queued[1].attempts) == (b"to the phone", 4, 0)

    assert letters.count() == 0
    assert letters.take_for_retry(out_id, sendq=store.sendq, outbox=store.outbox) is None
    assert letters.drop(in_id) is False


def test_take_for_retry_is_all_or_nothing(store: Store) -> None:
    # The message id is queued again already (sent by hand, say): the retry must
    # neither lose the letter nor queue the message twice.
    letters = store.dead_letters
    letter_id = letters.add(
        direction=Direction.TO_NETWORK,
        sip_user=ALICE,
        protocol="xmpp",
        contact="bob@jabber.example",
        body="dup",
        message_id="m-3",
        status=500,
        reason="x",
    )
    store.sendq.put_many([NewSend(ALICE, "xmpp", "bob@jabber.example", "dup", "m-3")])
    with pytest.raises(StoreError, match="already in the send queue"):
        letters.take_for_retry(letter_id, sendq=store.sendq, outbox=store.outbox)
    assert letters.get(letter_id) is not None
    assert len(store.sendq.pending()) == 1


def test_a_letter_taken_elsewhere_is_not_taken_twice(store: Store, db_url: str) -> None:
    # Two processes (CLI and daemon, or two CLIs) on their own connections.
    letter_id = store.dead_letters.add(
        direction=Direction.TO_SIP,
        sip_user=ALICE,
        protocol="xmpp",
        contact="b",
        body="once",
        status=480,
        reason="x",
    )
    other_db = Database.create(db_url)
    try:
        other = DeadLetterRepository(other_db)
        assert other.get(letter_id) is not None
        assert other.drop(letter_id) is True
    finally:
        other_db.close()
    assert (
        store.dead_letters.take_for_retry(letter_id, sendq=store.sendq, outbox=store.outbox) is None
    )
    assert store.outbox.pending() == []


def test_drop(store: Store) -> None:
    letter_id = store.dead_letters.add(
        direction=Direction.TO_SIP,
        sip_user=ALICE,
        protocol="xmpp",
        contact="b",
        body="bye",
        status=603,
        reason="Decline",
    )
    assert store.dead_letters.drop(letter_id) is True
    assert store.dead_letters.drop(letter_id) is False
    assert store.dead_letters.list() == []
