"""SIP users (Kamailio subscriber layout) and the durable outbox, on both backends."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from purplegw.exceptions import StoreError

if TYPE_CHECKING:
    from purplegw.store import Store


def test_users_store_kamailio_compatible_ha1(store: Store) -> None:
    store.users.add("alice", "example.org", "pw")
    row = store.db.fetchone("SELECT username, domain, password, ha1, ha1b FROM subscriber")
    assert row == (
        "alice",
        "example.org",
        "",
        hashlib.md5(b"alice:example.org:pw").hexdigest(),  # noqa: S324 - RFC 2617
        hashlib.md5(b"alice@example.org:example.org:pw").hexdigest(),  # noqa: S324
    )
    user = store.users.get("alice", "EXAMPLE.org")
    assert user is not None
    assert user.aor == "alice@example.org"
    assert user.password == ""
    assert "ha1" not in repr(user) or user.ha1 not in repr(user)


def test_users_add_list_remove(store: Store) -> None:
    store.users.add("bob", "example.org", "pw", keep_plaintext=True)
    store.users.add("alice", "example.org", "pw")
    with pytest.raises(StoreError, match="already exists"):
        store.users.add("bob", "example.org", "other")
    with pytest.raises(StoreError, match="invalid SIP username"):
        store.users.add("bad user", "example.org", "pw")
    assert [u.aor for u in store.users.list()] == ["alice@example.org", "bob@example.org"]
    assert store.users.get("bob", "example.org").password == "pw"  # type: ignore[union-attr]
    assert store.users.remove("bob", "example.org") is True
    assert store.users.remove("bob", "example.org") is False
    assert store.users.get("bob", "example.org") is None


def test_plaintext_only_rows_still_authenticate(store: Store) -> None:
    # kamctl with STORE_PLAINTEXT_PW=1 and calculate_ha1: password set, ha1 empty.
    store.db.execute(
        "INSERT INTO subscriber (username, domain, password, ha1, ha1b) "
        "VALUES ('carol', 'example.org', 'cpw', '', '')"
    )
    user = store.users.get("carol", "example.org")
    assert user is not None
    assert user.ha1 == hashlib.md5(b"carol:example.org:cpw").hexdigest()  # noqa: S324


def test_outbox_keeps_order_and_utf8_until_done(store: Store) -> None:
    bodies = [f"message {i} — ünïcödé ✓".encode() for i in range(5)]
    seqs = [
        store.outbox.put(
            sip_user="alice@example.org",
            account_id=1,
            protocol="xmpp",
            contact="bob@jabber.example",
            body=b,
        )
        for b in bodies
    ]
    store.outbox.put(
        sip_user="zed@example.org", account_id=2, protocol="irc", contact="n", body=b"other user"
    )
    pending = store.outbox.pending("alice@example.org")
    assert [m.seq for m in pending] == seqs
    assert [m.body for m in pending] == bodies
    assert store.outbox.users_with_pending() == ["alice@example.org", "zed@example.org"]
    store.outbox.failed_attempt(seqs[0], "408 Request Timeout")
    assert store.outbox.pending("alice@example.org")[0].attempts == 1
    store.outbox.done(seqs[0])
    assert [m.seq for m in store.outbox.pending("alice@example.org")] == seqs[1:]
    assert store.outbox.count() == 5


def test_large_bodies_survive(store: Store) -> None:
    body = ("x" * 9999 + "é").encode()
    store.outbox.put(
        sip_user="a@example.org", account_id=1, protocol="xmpp", contact="b@x", body=body
    )
    assert store.outbox.pending()[0].body == body


def test_send_queue_records_once_until_done(store: Store) -> None:
    assert (
        store.sendq.put(
            sip_user="a@example.org",
            protocol="xmpp",
            contact="b@x.example",
            body="hé ✓",
            message_id="m1",
        )
        is True
    )
    assert (
        store.sendq.put(
            sip_user="a@example.org",
            protocol="xmpp",
            contact="b@x.example",
            body="hé ✓",
            message_id="m1",
        )
        is False
    )  # a resend, not a new message
    store.sendq.put(
        sip_user="a@example.org", protocol="irc", contact="n", body="2", message_id="m2"
    )
    assert [(p.message_id, p.body) for p in store.sendq.pending()] == [("m1", "hé ✓"), ("m2", "2")]
    store.sendq.done("m1")
    assert [p.message_id for p in store.sendq.pending()] == ["m2"]


def test_send_queue_of_some_users(store: Store) -> None:
    """A cluster node taking users over reads their rows only, oldest first."""
    for n, user in enumerate(["a", "b", "a", "c"]):
        store.sendq.put(
            sip_user=f"{user}@example.org",
            protocol="xmpp",
            contact="x@x.example",
            body=str(n),
            message_id=f"m{n}",
        )
    rows = store.sendq.pending_of(["a@example.org", "c@example.org", "z@example.org"])
    assert [p.message_id for p in rows] == ["m0", "m2", "m3"]
    assert store.sendq.pending_of([]) == []
