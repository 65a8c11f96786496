"""Subscriptions kept in the store, on SQLite and MariaDB."""

from __future__ import annotations

import dataclasses

from purplegw.store import Store, StoredSubscription
from purplegw.store.subscriptions import dialog_key


def _sub(n: int, expires_at: float) -> StoredSubscription:
    call_id = f"{n}-" + "c" * 300  # Call-IDs may be long
    return StoredSubscription(
        dialog_key=dialog_key(call_id, f"lt{n}", f"rt{n}"),
        sip_user="alice@sip.test",
        account_id=1,
        protocol="xmpp",
        contact=f"bob{n}@example.org",
        event_id="",
        call_id=call_id,
        local_tag=f"lt{n}",
        remote_tag=f"rt{n}",
        local_uri=f"sip:bob{n}@example.org",
        remote_uri="sip:alice@sip.test",
        remote_target="sip:alice@127.0.0.1:5062;transport=udp",
        route_set="<sip:127.0.0.1:5070;lr>\n<sip:127.0.0.1:5071;lr>",
        local_contact="<sip:bob@127.0.0.1:5060>",
        local_cseq=1,
        remote_cseq=7,
        state="pending",
        expires_at=expires_at,
        transport="udp",
        host="127.0.0.1",
        port=5062,
    )


def test_save_refresh_advance_delete_and_expiry(store: Store) -> None:
    live, dead = _sub(1, 2000.0), _sub(2, 500.0)
    store.subscriptions.save(live)
    store.subscriptions.save(dead)
    assert store.subscriptions.live(1000.0) == [live]
    refreshed = dataclasses.replace(live, remote_cseq=8, expires_at=3000.0)
    store.subscriptions.save(refreshed)
    store.subscriptions.advance_cseq(live.dialog_key, 5)
    store.subscriptions.advance_cseq(live.dialog_key, 3)  # never goes back
    store.subscriptions.set_state(live.dialog_key, "active")
    assert store.subscriptions.live(1000.0) == [
        dataclasses.replace(refreshed, local_cseq=5, state="active")
    ]
    assert store.subscriptions.purge(1000.0) == 1
    assert store.subscriptions.count() == 1
    store.subscriptions.delete(live.dialog_key)
    assert store.subscriptions.live(0.0) == []
