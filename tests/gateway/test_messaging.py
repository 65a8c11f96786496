"""The messaging controller on its own: plain objects, fake ports, no threads.

Identity, registrar, address book and messaging are built by hand, as the
Gateway builds them; the worker is the test thread (timers fire when the
test says so), the SIP front and the account are fakes, the store is a
real SQLite database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors.state import Outcome
from purplegw.gateway import messaging as messaging_module
from purplegw.gateway.addressing import AddressBook
from purplegw.gateway.identity import Identity
from purplegw.gateway.messaging import Messaging
from purplegw.gateway.registrar import Registrar
from purplegw.gateway.settings import GatewaySettings
from purplegw.protocols.base import TypingState
from purplegw.sip.message import Request, Response, make_response
from purplegw.store import (
    AccountRepository,
    Database,
    OutboxRepository,
    PasswordCipher,
    Store,
    Tables,
    UserRepository,
)
from purplegw.store.crypto import generate_key_file
from purplegw.store.upgrades import run_upgrades
from tests.gateway.fakes import Clock, Directory, FakeFront, Handle, InlineWorker
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from purplegw.actors.front.transport import Source

USER = "alice@sip.test"
BOB = "bob@example.org"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Database.create(f"sqlite://{tmp_path / 'gw.db'}")
    tables = Tables()
    run_upgrades(db, tables)
    generate_key_file(tmp_path / "key")
    yield Store(
        db=db,
        tables=tables,
        accounts=AccountRepository(db, tables.accounts, PasswordCipher(tmp_path / "key")),
        users=UserRepository(db, tables.subscribers),
        outbox=OutboxRepository(db),
    )
    db.close()


def source(port: int = 5070) -> Source:
    return udp_source(port=port)


class Rig:
    def __init__(self, store: Store) -> None:
        settings = GatewaySettings(domain="sip.test", trusted=["127.0.0.0/8"])
        self.store = store
        self.clock = Clock()
        self.worker = InlineWorker()
        self.front = FakeFront()
        self.handle = Handle(USER, "xmpp", "alice@example.org")
        directory = Directory(self.handle)
        identity = Identity(settings, store.users, self.clock)
        self.registrar = Registrar(settings, identity, self.clock)
        self.messaging = Messaging(
            domain="sip.test",
            identity=identity,
            registrar=self.registrar,
            addresses=AddressBook(
                directory,
                canonical=str.lower,
                user_at_host=lambda p: p == "xmpp",
                gateway_domain="sip.test",
            ),
            store=store,
            directory=directory,
            worker=self.worker,
        )
        self.registrar.on_registered = self.messaging.registered
        self.messaging.front = self.front

    def register(self, port: int = 5070) -> None:
        request = make_request(
            "REGISTER",
            "sip:sip.test",
            from_=f"<sip:{USER}>",
            to=f"<sip:{USER}>",
            extra=[("Contact", f"<sip:alice@127.0.0.1:{port}>"), ("Expires", "600")],
        )
        assert self.registrar.register(request, source(port)).status == 200

    def message(
        self, body: bytes, content_type: str = "text/plain", ruri: str = f"sip:{BOB}"
    ) -> list[Response]:
        replies: list[Response] = []
        request = make_request(
            "MESSAGE",
            ruri,
            from_=f"<sip:{USER}>",
            to=f"<{ruri}>",
            body=body,
            content_type=content_type,
        )
        self.messaging.message(request, source(), replies.append)
        return replies

    def answer(self, request: Request, status: int) -> None:
        for sent, _destination, future in self.front.sent:
            if sent is request:
                future.set_result(make_response(sent, status))


def test_a_received_message_is_stored_first_and_leaves_the_outbox_after_a_2xx(
    store: Store,
) -> None:
    rig = Rig(store)
    rig.messaging.incoming(rig.handle.info, BOB, "hello")
    assert [m.body for m in store.outbox.pending(USER)] == [b"hello"]
    assert rig.front.sent == []  # not registered: it waits

    rig.register()  # the REGISTER wakes the queue
    (first,) = rig.front.requests("MESSAGE", 5070)
    assert first.body == b"hello"
    assert (first.headers.get("From") or "").startswith(f"<sip:{BOB};proto=xmpp>")
    rig.messaging.incoming(rig.handle.info, BOB, "second")
    assert len(rig.front.requests("MESSAGE")) == 1  # one in flight per user: order kept

    rig.answer(first, 200)
    second = rig.front.requests("MESSAGE")[-1]
    assert second.body == b"second"  # at once, before the delivered row is deleted
    assert [m.body for m in store.outbox.pending(USER)] == [b"hello", b"second"]
    assert rig.worker.delete_settled() == 1  # the deletions of a worker turn, together
    assert [m.body for m in store.outbox.pending(USER)] == [b"second"]
    rig.answer(second, 200)
    rig.worker.delete_settled()
    assert store.outbox.pending(USER) == []


def test_an_undelivered_message_waits_for_its_retry_timer(store: Store) -> None:
    rig = Rig(store)
    rig.register()
    rig.messaging.incoming(rig.handle.info, BOB, "hello")
    (first,) = rig.front.requests("MESSAGE")
    rig.answer(first, 480)
    (kept,) = store.outbox.pending(USER)
    assert kept.attempts == 1
    (timer,) = rig.worker.pending()
    assert timer.delay == messaging_module.RETRY_DELAYS[0]

    assert rig.worker.fire() == 1
    again = rig.front.requests("MESSAGE")[-1]
    assert again is not first
    assert again.body == b"hello"
    rig.answer(again, 200)
    rig.worker.delete_settled()
    assert store.outbox.pending(USER) == []


def test_a_sip_message_is_answered_when_the_account_answers(store: Store) -> None:
    rig = Rig(store)
    rig.handle.hold = True
    replies = rig.message(b"hi bob")
    assert replies == []  # the account has not answered yet
    assert rig.handle.calls[0][:3] == ("send_message", BOB, "hi bob")
    assert len(store.sendq.pending()) == 1  # recorded before the account was asked

    rig.handle.futures[0].set(Outcome(202, "queued"))  # on the account's thread, in production
    assert [r.status for r in replies] == [202]
    assert len(store.sendq.pending()) == 1  # still queued at the account

    replies = rig.message(b"and again")
    rig.handle.futures[1].set(Outcome(200, "sent"))
    assert [r.status for r in replies] == [202]
    rig.worker.delete_settled()
    assert len(store.sendq.pending()) == 1  # the sent one left the queue

    replies = rig.message(b"offline")
    rig.handle.futures[2].set(Outcome(480, "account offline"))
    assert [(r.status, r.reason) for r in replies] == [
        (480, "Temporarily Unavailable: account offline")
    ]


def test_message_bodies(store: Store) -> None:
    rig = Rig(store)
    (refused,) = rig.message(b"<b>hi</b>", "text/html")
    assert refused.status == 415
    assert ", ".join(refused.headers.getall("Accept")) == messaging_module.ACCEPT

    typing = (
        b'<?xml version="1.0"?><isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
        b"<state>active</state></isComposing>"
    )
    (answered,) = rig.message(typing, "application/im-iscomposing+xml")
    assert answered.status == 200
    assert rig.handle.calls[-1] == ("send_typing", BOB, TypingState.COMPOSING)

    cpim = b"From: <sip:alice@sip.test>\r\n\r\nContent-Type: text/plain\r\n\r\nvia cpim"
    (accepted,) = rig.message(cpim, "message/cpim")
    assert accepted.status == 202
    assert rig.handle.calls[-1][:3] == ("send_message", BOB, "via cpim")

    (nobody,) = rig.message(b"hi", ruri="sip:sip.test")
    assert nobody.status == 404


def test_typing_towards_sip_is_sent_to_each_contact_and_never_queued(store: Store) -> None:
    rig = Rig(store)
    rig.messaging.typing(rig.handle.info, BOB, TypingState.COMPOSING)
    assert rig.front.sent == []  # not registered: dropped, not queued
    rig.register(5071)
    rig.messaging.typing(rig.handle.info, BOB, TypingState.COMPOSING)
    (sent,) = rig.front.requests("MESSAGE", 5071)
    assert sent.headers.get("Content-Type") == "application/im-iscomposing+xml"
    assert b"<state>active</state>" in sent.body
    assert store.outbox.pending(USER) == []


def test_a_busy_conversation_reads_its_outbox_once_per_window(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next message leaves from the rows read behind the one in flight (Rule 9)."""
    rig = Rig(store)
    for n in range(5):
        rig.messaging.incoming(rig.handle.info, BOB, f"m{n}")
    reads: list[str] = []
    pending = store.outbox.pending

    def counted(sip_user: str | None = None, limit: int = 1000) -> list[Any]:
        reads.append(sip_user or "")
        return pending(sip_user, limit)

    monkeypatch.setattr(store.outbox, "pending", counted)
    rig.register()
    for n in range(5):
        sent = rig.front.requests("MESSAGE")[-1]
        assert sent.body == f"m{n}".encode()  # in order, one at a time
        rig.answer(sent, 200)
    assert len(rig.front.requests("MESSAGE")) == 5
    assert len(reads) == 2  # the REGISTER's read, and the one that found nothing left
    rig.worker.delete_settled()
    assert pending(USER) == []
