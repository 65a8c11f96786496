"""The gateway while its database is unreachable.

A real Gateway on a real SQLite store whose connection is cut and cannot be
reopened (what a stopped MariaDB looks like to the store): messages from
the external network must not be dropped, and SIP requests get a 503 at
once.  tests/faults/test_mariadb_outage.py plays the same through the daemon
with a MariaDB that is really stopped.
"""

from __future__ import annotations

import re
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from purplegw.actors.listener import AccountInfo
from purplegw.actors.worker import Worker
from purplegw.exceptions import StoreError
from purplegw.gateway import Gateway, GatewaySettings
from purplegw.gateway import core as core_module
from purplegw.gateway import messaging as messaging_module
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
from purplegw.store.outbox import QueuedMessage
from purplegw.store.upgrades import run_upgrades
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from purplegw.sip.message import Response

ALICE = AccountInfo(1, "alice@sip.test", "xmpp", "alice@example.org")


class Outage:
    """Cuts the store's connection and makes every reconnect fail until ``end()``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(self) -> None:
        def refuse() -> None:
            raise StoreError("cannot connect: Connection refused")

        self.db.close()
        self.db.connect = refuse  # type: ignore[method-assign]

    def end(self) -> None:
        del self.db.connect  # the class's connect() again


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


@pytest.fixture
def gateway(store: Store) -> Iterator[Gateway]:
    gw = Gateway(
        settings=GatewaySettings(domain="sip.test"),
        store=store,
        directory=SimpleNamespace(get=lambda *_: None, all=list),
        worker=Worker(),
        canonical=str.lower,
        user_at_host=lambda p: p == "xmpp",
    )
    yield gw
    gw.stop()


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_messages_received_while_the_store_is_down_reach_the_outbox_in_order(
    store: Store,
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(messaging_module, "STORE_RETRY_DELAY", 0.05)
    gateway.on_message(ALICE, "bob@example.org", "before", None)
    _wait(lambda: store.outbox.count() == 1)

    outage = Outage(store.db)
    outage.begin()
    for n in range(3):
        gateway.on_message(ALICE, "bob@example.org", f"during {n}", None)
    _wait(lambda: len(gateway.messaging.unstored) == 3)  # held, not dropped
    time.sleep(0.2)  # a few retries fail while it is down
    assert len(gateway.messaging.unstored) == 3
    outage.end()

    gateway.on_message(ALICE, "carol@example.org", "after", None)
    _wait(lambda: store.outbox.count() == 5)
    bodies = [m.body.decode() for m in store.outbox.pending(ALICE.sip_user)]
    assert bodies == ["before", "during 0", "during 1", "during 2", "after"]


def test_retry_timer_writes_held_messages_without_new_traffic(
    store: Store,
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(messaging_module, "STORE_RETRY_DELAY", 0.05)
    outage = Outage(store.db)
    outage.begin()
    gateway.on_message(ALICE, "bob@example.org", "held", None)
    _wait(lambda: len(gateway.messaging.unstored) == 1)
    outage.end()
    _wait(lambda: store.outbox.count() == 1)
    assert not gateway.messaging.unstored


def test_sip_request_while_the_store_is_down_is_answered_503_at_once(
    store: Store,
    gateway: Gateway,
) -> None:
    Outage(store.db).begin()
    source = udp_source()
    for method, ruri, header in (
        ("MESSAGE", "sip:bob@example.org", "Proxy-Authorization"),
        ("REGISTER", "sip:sip.test", "Authorization"),
    ):
        replies: list[Response] = []

        def request(
            extra: list[tuple[str, str]],
            method: str = method,
            ruri: str = ruri,
            replies: list[Response] = replies,
        ) -> None:
            gateway.dispatch(  # on the test thread: skip the worker hop
                make_request(
                    method,
                    ruri,
                    from_="<sip:alice@sip.test>",
                    to="<sip:alice@sip.test>",
                    body=b"hi",
                    content_type="text/plain",
                    extra=extra,
                ),
                source,
                replies.append,
            )

        request([])  # the challenge needs no store
        nonce = re.search(r'nonce="([^"]+)"', str(replies[0].headers)).group(1)  # type: ignore[union-attr]
        credentials = (
            f'Digest username="alice", realm="sip.test", nonce="{nonce}", '
            f'uri="{ruri}", response="{"0" * 32}", algorithm=MD5, qop=auth, '
            'nc=00000001, cnonce="c0ffee"'
        )
        request([(header, credentials)])
        assert [r.status for r in replies] == [401 if method == "REGISTER" else 407, 503]
        assert replies[1].headers.get("Retry-After") == str(core_module.STORE_RETRY_AFTER)


def test_outbox_queue_is_woken_again_when_the_store_fails_around_a_delivery(
    store: Store,
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delivery attempt or its bookkeeping failing on the store re-arms the retry timer.

    Without it the user's queue slept until the next REGISTER (up to an hour).
    """
    monkeypatch.setattr(messaging_module, "RETRY_DELAYS", (3600.0,))
    gateway.messaging.front = SimpleNamespace()  # type: ignore[assignment] - flush needs one
    Outage(store.db).begin()
    gateway.messaging.flush(ALICE.sip_user)  # reading the queue fails
    assert (ALICE.sip_user, "") in gateway.messaging.retry_timers
    gateway.messaging.retry_timers.pop((ALICE.sip_user, "")).cancel()

    conversation = (ALICE.sip_user, "bob@example.org")
    message = QueuedMessage(
        1,
        ALICE.sip_user,
        1,
        "xmpp",
        "bob@example.org",
        "text/plain;charset=UTF-8",
        b"hi",
        time.time(),
        0,
    )
    gateway.messaging.in_flight.add(conversation)
    # The deletion (its own turn, Rule 9) and the read of the next message both fail.
    gateway.messaging.delivered(message, ok=True, status=200, text="200 OK")
    turn = threading.Event()
    gateway.worker.submit(turn.set)  # after the deletion, submitted before it
    assert turn.wait(10)
    assert conversation not in gateway.messaging.in_flight
    assert (ALICE.sip_user, "") in gateway.messaging.retry_timers  # the queue is read again
    assert gateway.messaging._cleanup_timer is not None  # and the deletion tried again
    assert 1 in gateway.messaging._deleting  # never sent again by this run meanwhile
