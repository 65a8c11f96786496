"""RFC 3903 compositor store: create, refresh, modify, remove, 412, 423, expiry."""

from __future__ import annotations

import itertools

from purplegw.sip.actions import CancelTimer, StartTimer
from purplegw.sip.publication import PublicationStore

PIDF = b"<presence><tuple id='a'><status><basic>open</basic></status></tuple></presence>"


def store() -> PublicationStore:
    counter = itertools.count()
    return PublicationStore(
        random=lambda n: next(counter).to_bytes(n, "big"),
        min_expires=60,
        max_expires=3600,
        default_expires=3600,
    )


def test_create_refresh_modify_remove() -> None:
    s = store()
    r = s.publish(
        "sip:alice@example.com",
        "presence",
        if_match=None,
        expires=120,
        body=PIDF,
        content_type="application/pidf+xml",
    )
    assert (r.status, r.change, r.expires) == (200, "created", 120)
    assert r.actions == [StartTimer(f"publication:{r.etag}", 120)]
    etag1 = r.etag
    assert etag1 is not None

    refresh = s.publish("sip:alice@example.com", "presence", if_match=etag1, expires=300, body=b"")
    assert (refresh.status, refresh.change) == (200, "refreshed")
    assert refresh.etag != etag1
    assert refresh.publication is not None
    assert refresh.publication.body == PIDF
    assert refresh.actions == [
        CancelTimer(f"publication:{etag1}"),
        StartTimer(f"publication:{refresh.etag}", 300),
    ]
    # the old tag is gone
    assert (
        s.publish(
            "sip:alice@example.com", "presence", if_match=etag1, expires=None, body=b""
        ).status
        == 412
    )

    modified = s.publish(
        "sip:alice@example.com", "presence", if_match=refresh.etag, expires=None, body=b"<closed/>"
    )
    assert (modified.status, modified.change, modified.expires) == (200, "modified", 3600)
    assert [p.body for p in s.states("sip:alice@example.com")] == [b"<closed/>"]

    removed = s.publish(
        "sip:alice@example.com", "presence", if_match=modified.etag, expires=0, body=b""
    )
    assert (removed.status, removed.change, removed.expires) == (200, "removed", 0)
    assert s.states("sip:alice@example.com") == []


def test_errors() -> None:
    s = store()
    brief = s.publish("r", "presence", if_match=None, expires=10, body=PIDF)
    assert (brief.status, brief.min_expires) == (423, 60)
    assert s.publish("r", "presence", if_match="nope", expires=None, body=b"").status == 412
    assert s.publish("r", "presence", if_match=None, expires=None, body=b"").status == 400
    long = s.publish("r", "presence", if_match=None, expires=10**9, body=PIDF)
    assert long.expires == 3600
    # a tag is only valid for its own resource and event
    assert long.etag is not None
    assert s.publish("other", "presence", if_match=long.etag, expires=None, body=b"").status == 412
    assert s.publish("r", "dialog", if_match=long.etag, expires=None, body=b"").status == 412


def test_expiry_timer_removes_state() -> None:
    s = store()
    r = s.publish("r", "presence", if_match=None, expires=60, body=PIDF)
    other = s.publish("r", "presence", if_match=None, expires=60, body=b"<second/>")
    assert len(s.states("r")) == 2
    expired = s.on_timer(f"publication:{r.etag}")
    assert expired is not None
    assert expired.body == PIDF
    assert [p.etag for p in s.states("r")] == [other.etag]
    assert s.on_timer(f"publication:{r.etag}") is None
    assert s.on_timer("unrelated") is None
