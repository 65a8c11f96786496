"""A user's presence state moving between nodes: ``Gateway.adopt`` and ``Gateway.release``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from purplegw.gateway import Gateway, GatewaySettings
from purplegw.gateway.core import REGISTRATION_POLL
from purplegw.presence import ContactPresence, Presence, Status
from purplegw.store.publications import StoredPublication
from purplegw.store.subscriptions import StoredSubscription, dialog_key
from tests.gateway.fakes import Clock, Directory, FakeFront, Handle, InlineWorker
from tests.gateway.test_presence_service import pidf

if TYPE_CHECKING:
    from purplegw.store import Store

USER = "alice@sip.test"


class Owners:
    def __init__(self) -> None:
        self.holder_of: dict[str, tuple[str, str]] = {}

    def holder(self, sip_user: str) -> tuple[str, str] | None:
        return self.holder_of.get(sip_user)

    def addresses(self, max_age: float) -> dict[str, str]:
        return {}


def subscription(expires_at: float) -> StoredSubscription:
    return StoredSubscription(
        dialog_key=dialog_key("call-1", "lt", "rt"),
        sip_user=USER,
        account_id=1,
        protocol="xmpp",
        contact="bob@example.org",
        event_id="",
        call_id="call-1",
        local_tag="lt",
        remote_tag="rt",
        local_uri="sip:bob@example.org",
        remote_uri=f"sip:{USER}",
        remote_target="sip:alice@127.0.0.1:5062",
        route_set="",
        local_contact="<sip:bob@127.0.0.1:5060>",
        local_cseq=5,
        remote_cseq=1,
        state="active",
        expires_at=expires_at,
        transport="udp",
        host="127.0.0.1",
        port=5062,
    )


def test_adopt_loads_the_users_state_and_release_forgets_it(store: Store) -> None:
    clock = Clock()
    owners = Owners()
    owners.holder_of[USER] = ("gw2", "127.0.0.1:5072")  # at start another node holds alice
    store.subscriptions.save(subscription(clock.now + 600))
    store.publications.put(
        StoredPublication(
            "etag1",
            USER,
            "presence",
            pidf("open", "away", "stored"),
            "application/pidf+xml",
            clock.now + 300,
        )
    )
    store.owners = owners  # type: ignore[assignment]
    handle = Handle(USER, "xmpp", "alice@example.org")
    worker = InlineWorker()
    front = FakeFront()
    gateway = Gateway(
        settings=GatewaySettings(domain="sip.test", trusted=["127.0.0.0/8"]),
        store=store,
        directory=Directory(handle),
        worker=worker,
        canonical=str.lower,
        user_at_host=lambda p: p == "xmpp",
        clock=clock,
        shared=None,
        node="gw1",
        advertise="127.0.0.1:5071",
    )
    gateway.presence.shared = object()  # type: ignore[assignment]  # restore reads the store
    gateway.attach(front)
    presence = gateway.presence
    assert presence.watches == {}  # gw2's user: not restored here
    assert presence.publications.states(USER) == []

    owners.holder_of[USER] = ("gw1", "127.0.0.1:5071")
    gateway.adopt([USER])
    assert len(presence.watches) == 1
    [publication] = presence.publications.states(USER)
    assert publication.etag == "etag1"
    [(_op, told)] = [c for c in handle.calls if c[0] == "set_presence"]
    assert isinstance(told, Presence)
    assert told.note == "stored"
    # The adopted dialog is NOTIFYed, above the stored CSeq.
    presence.contact_presence(
        handle.info, ContactPresence("bob@example.org", {"r": Presence(Status.AWAY)})
    )
    [notify] = front.notifies(5062)
    assert notify.cseq is not None
    assert notify.cseq.number > 5
    gateway.adopt([USER])  # twice: nothing doubles
    assert len(presence.watches) == 1
    assert len(presence.publications.states(USER)) == 1

    gateway.disown([USER])
    assert presence.watches == {}
    assert presence.publications.states(USER) == []
    assert presence.watch_count == {}
    # ...kept in the database for the next holder.
    assert [s.call_id for s in store.subscriptions.of_user(USER, clock.now)] == ["call-1"]
    assert [p.etag for p in store.publications.of_resource(USER, clock.now)] == ["etag1"]
    # No expiry timer of alice's dialog or publication is left: only the registrations poll.
    assert [t.delay for t in worker.pending()] == [REGISTRATION_POLL]
