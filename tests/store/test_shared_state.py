"""Registrar bindings and PUBLISH state in the database, on SQLite and on a real MariaDB."""

from __future__ import annotations

from typing import TYPE_CHECKING

from purplegw.store.bindings import StoredBinding
from purplegw.store.publications import StoredPublication

if TYPE_CHECKING:
    from purplegw.store import Store

ALICE = "alice@example.org"
URI = "sip:alice@127.0.0.1:5062;transport=udp"
NOW = 1_800_000_000.0


def binding(uri: str = URI, expires_at: float = NOW + 600, cseq: int = 1) -> StoredBinding:
    return StoredBinding(
        ALICE,
        f'<{uri}>;+sip.instance="<urn:uuid:1>"',
        expires_at,
        "call-1@phone",
        cseq,
        "udp",
        "127.0.0.1",
        5062,
        node="gw1",
        updated=NOW,
    )


def test_bindings_put_refresh_delete(store: Store) -> None:
    repo = store.bindings
    repo.put(binding(), URI)
    repo.put(binding(cseq=2, expires_at=NOW + 900), URI)  # a refresh replaces the row
    other = "sip:alice@127.0.0.1:5064"
    repo.put(binding(other), other)
    rows = repo.of_aor(ALICE, NOW)
    assert [(r.contact.split(">")[0][1:], r.cseq) for r in rows] == [(URI, 2), (other, 1)]
    assert rows[0] == binding(cseq=2, expires_at=NOW + 900)  # every field back as written
    assert repo.of_aor(ALICE, NOW + 700) == [rows[0]]  # expiry by the stored absolute time
    assert [b.aor for b in repo.live(NOW)] == [ALICE, ALICE]
    assert repo.changed_since(NOW, NOW) == [(ALICE, NOW, "gw1"), (ALICE, NOW, "gw1")]
    assert repo.changed_since(NOW + 1, NOW) == []
    repo.delete(ALICE, other)
    assert len(repo.of_aor(ALICE, NOW)) == 1
    assert repo.purge(NOW + 1000) == 1
    assert repo.count() == 0
    repo.put(binding(), URI)
    repo.clear(ALICE)
    assert repo.of_aor(ALICE, NOW) == []


def test_publications_replace_and_expire(store: Store) -> None:
    repo = store.publications
    pidf = b"<?xml version='1.0'?><presence/>\xe2\x9c\x93"
    first = StoredPublication("aa11", ALICE, "presence", pidf, "application/pidf+xml", NOW + 60)
    repo.put(first)
    refreshed = StoredPublication(
        "bb22", ALICE, "presence", pidf, "application/pidf+xml", NOW + 120
    )
    repo.put(refreshed, replaces="aa11")
    second = StoredPublication("cc33", ALICE, "presence", b"x", "", NOW + 30, node="gw2")
    repo.put(second)
    assert repo.of_resource(ALICE, NOW) == [second, refreshed]
    assert repo.live(NOW + 60) == [refreshed]
    assert repo.of_resource("bob@example.org", NOW) == []
    repo.delete("bb22")
    assert repo.purge(NOW + 31) == 1
    assert repo.count() == 0
