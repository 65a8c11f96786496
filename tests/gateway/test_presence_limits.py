"""Per-user limits of presence and the lifetime of roster requests (Rules 3 and 6).

Same rig as test_presence_service.py: the real Gateway and SQLite store,
fake front, worker and accounts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.gateway import PresenceSettings
from purplegw.gateway.presence import contact_checker
from purplegw.protocols.base import AuthorizationAnswer
from purplegw.protocols.loader import load_adapters
from tests.gateway.fakes import Handle
from tests.gateway.test_presence_service import BOB, USER, Rig, open_store, pidf
from tests.kit.sipmsg import make_request

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from purplegw.sip.message import Response
    from purplegw.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from open_store(tmp_path)


def subscribe_to(rig: Rig, target: str, port: int, *, expires: int = 600) -> Response:
    return rig.request(
        make_request(
            "SUBSCRIBE",
            target,
            from_=f"<sip:{USER}>",
            from_tag=f"ft{port}",
            to=f"<{target}>",
            call_id=f"sub-{port}",
            extra=[
                ("Event", "presence"),
                ("Expires", str(expires)),
                ("Contact", f"<sip:alice@127.0.0.1:{port}>"),
            ],
        ),
        port=port,
    )


def test_new_publications_beyond_the_cap_get_403_refreshes_still_pass(store: Store) -> None:
    rig = Rig(store, PresenceSettings(max_publications_per_user=3))
    etags = []
    for _ in range(3):
        answer = rig.publish(pidf("open"))
        assert answer.status == 200
        etags.append(answer.headers.get("SIP-ETag"))
    refused = rig.publish(pidf("open", note="one more"))
    assert (refused.status, refused.reason) == (403, "Forbidden: at most 3 publications per user")
    assert len(rig.presence.publications.states(USER)) == 3
    # The phones that have one keep refreshing and modifying it.
    assert rig.publish(etag=etags[0]).status == 200
    assert rig.publish(pidf("closed"), etag=etags[1]).status == 200
    # Removing one makes room for a new one.
    assert rig.publish(etag=etags[2], expires=0).status == 200
    assert rig.publish(pidf("open")).status == 200


def test_new_subscriptions_beyond_the_cap_get_403_and_nothing_is_kept(store: Store) -> None:
    rig = Rig(store, PresenceSettings(max_subscriptions_per_user=3))
    tags = [rig.subscribe(port).to.tag for port in (5071, 5072, 5073)]
    refused = rig.subscribe(5074)
    assert (refused.status, refused.reason) == (403, "Forbidden: at most 3 subscriptions per user")
    assert store.subscriptions.count() == 3
    assert not rig.front.notifies(5074)
    # Refreshes pass, and an unsubscribe frees a slot.
    assert rig.subscribe(5071, to_tag=tags[0], call_id="sub-5071", cseq=2).status == 200
    assert rig.subscribe(5072, expires=0, to_tag=tags[1], call_id="sub-5072", cseq=2).status == 200
    assert rig.subscribe(5074).status == 200
    assert rig.presence.watch_count == {USER: 3}


def test_the_cap_counts_restored_subscriptions(store: Store) -> None:
    settings = PresenceSettings(max_subscriptions_per_user=2)
    rig = Rig(store, settings)
    rig.subscribe(5071)
    rig.subscribe(5072)
    restarted = Rig(store, settings)
    assert restarted.presence.watch_count == {USER: 2}
    assert restarted.subscribe(5073).status == 403


def test_an_unanswered_request_is_withdrawn_when_its_last_subscription_ends(
    store: Store,
) -> None:
    rig = Rig(store)
    first = rig.subscribe(5071)
    second = rig.subscribe(5072)
    assert rig.calls("add_contact") == [("add_contact", BOB)] * 2
    rig.subscribe(5071, expires=0, to_tag=first.to.tag, call_id="sub-5071", cseq=2)
    assert rig.calls("remove_contact") == []  # another phone still waits for the answer
    rig.subscribe(5072, expires=0, to_tag=second.to.tag, call_id="sub-5072", cseq=2)
    assert rig.calls("remove_contact") == [("remove_contact", BOB)]


def test_a_refused_request_is_withdrawn_an_authorized_contact_stays(store: Store) -> None:
    rig = Rig(store)
    rig.subscribe(5071)
    rig.gateway.on_authorization_answer(rig.account(), BOB, AuthorizationAnswer.DENY)
    assert rig.calls("remove_contact") == [("remove_contact", BOB)]

    rig = Rig(store)
    answer = rig.subscribe(5072)
    rig.gateway.on_authorization_answer(rig.account(), BOB, AuthorizationAnswer.ALLOW)
    rig.subscribe(5072, expires=0, to_tag=answer.to.tag, call_id="sub-5072", cseq=2)
    assert rig.calls("remove_contact") == []


def test_an_expired_pending_subscription_restored_after_a_restart_is_withdrawn(
    store: Store,
) -> None:
    Rig(store).subscribe(5071, expires=120)
    restarted = Rig(store)
    restarted.clock.now += 121
    restarted.fire(lambda k: k[0] == "presence" and not isinstance(k[1], str))
    assert restarted.calls("remove_contact") == [("remove_contact", BOB)]


def test_an_invalid_irc_nick_gets_404_before_anything_is_kept(store: Store) -> None:
    irc = Handle(USER, "irc", "alice@irc.test", account_id=2)
    rig = Rig(store, handles=[irc])
    rig.presence.contact_error = contact_checker(load_adapters(check_environment=False).canonical)
    for port, nick in enumerate(("bad%0D%0AQUIT", "has%20space", "%23chan", "x" * 65), 5071):
        refused = subscribe_to(rig, f"sip:{nick}@irc.test;proto=irc", port)
        assert (refused.status, refused.reason) == (404, "Not Found: not a valid IRC nick")
    assert irc.calls == []
    assert store.subscriptions.count() == 0
    assert rig.presence.presentities == {}
    assert subscribe_to(rig, "sip:bob@irc.test;proto=irc", 5080).status == 200
    assert irc.calls == [("add_contact", "bob")]


def test_without_a_registry_nothing_is_checked_here() -> None:
    assert contact_checker(str.lower)("irc", "bad\r\nnick") is None
