"""Gateway (core.py): every request and every account event is handed to the worker."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from purplegw.actors.state import Outcome
from purplegw.gateway import Gateway, GatewaySettings
from purplegw.protocols.base import ConnectionState
from purplegw.store.sendq import PendingSend
from tests.gateway.fakes import Directory, FakeFront, Handle, InlineWorker
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.actors.front.transport import Source
    from purplegw.sip.message import Response

USER = "alice@sip.test"


class QueuedWorker(InlineWorker):
    """Keeps submitted work until the test runs it: shows what ran on the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., object], /, *args: Any) -> None:
        self.queue.append((fn, args))

    def run(self) -> int:
        ran = 0
        while self.queue:
            fn, args = self.queue.pop(0)
            fn(*args)
            ran += 1
        return ran


class Outbox:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def put(self, **row: Any) -> int:
        self.rows.append(row)
        return len(self.rows)

    def put_many(self, messages: list[Any]) -> list[int]:
        return [self.put(**vars(m)) for m in messages]

    def pending(self, sip_user: str | None = None, limit: int = 1000) -> list[Any]:
        return []

    def users_with_pending(self) -> list[str]:
        return []


class SendQueue:
    def __init__(self) -> None:
        self.done_ids: list[str] = []

    def pending(self) -> list[Any]:
        return []

    def awaiting_receipt(self, since: float) -> list[Any]:
        return []

    def done(self, message_id: str) -> None:
        self.done_ids.append(message_id)

    def done_many(self, message_ids: list[str]) -> int:
        self.done_ids.extend(message_ids)
        return len(message_ids)

    def acked_many(self, message_ids: list[str]) -> int:
        return 0

    def receipts_done(self, message_ids: list[str]) -> int:
        return 0


def rig(worker: InlineWorker) -> tuple[Gateway, SimpleNamespace, Handle]:
    handle = Handle(USER, "xmpp", "alice@example.org")
    store = SimpleNamespace(
        db=SimpleNamespace(transaction=contextlib.nullcontext),
        users=SimpleNamespace(get=lambda *_: None),
        outbox=Outbox(),
        sendq=SendQueue(),
        subscriptions=SimpleNamespace(
            purge=lambda _now: 0, live=lambda _now: [], of_user=lambda _user, _now: []
        ),
        publications=SimpleNamespace(of_resource=lambda _user, _now: []),
        room_marks=SimpleNamespace(all=list, save_many=lambda _marks: None),
    )
    gateway = Gateway(
        settings=GatewaySettings(domain="sip.test", trusted=["127.0.0.0/8"]),
        store=store,
        directory=Directory(handle),
        worker=worker,  # type: ignore[arg-type]
        canonical=str.lower,
        user_at_host=lambda p: p == "xmpp",
    )
    gateway.attach(FakeFront())
    return gateway, store, handle


def source() -> Source:
    return udp_source()


def test_requests_and_events_only_submit_and_the_worker_runs_them() -> None:
    worker = QueuedWorker()
    gateway, store, handle = rig(worker)
    worker.run()  # attach's restore and outbox start
    replies: list[Response] = []
    gateway.handle(
        make_request("OPTIONS", "sip:sip.test", from_=f"<sip:{USER}>"), source(), replies.append
    )
    gateway.on_event(
        "on_message", account=handle.info, contact="bob@example.org", text="hi", message_id=None
    )
    assert replies == []  # nothing ran on the caller's (front's, account's) thread
    assert store.outbox.rows == []
    assert worker.run() == 3  # the request, the event, then the outbox's group commit
    (refused,) = replies
    assert refused.status == 405
    allowed = {m.strip() for v in refused.headers.getall("Allow") for m in v.split(",")}
    assert allowed == {"REGISTER", "MESSAGE", "PUBLISH", "SUBSCRIBE"}
    assert [row["body"] for row in store.outbox.rows] == [b"hi"]


def test_events_the_gateway_does_not_use_are_ignored_and_errors_are_contained() -> None:
    worker = InlineWorker()
    gateway, store, handle = rig(worker)
    gateway.on_event("on_receipt", account=handle.info, contact="bob", message_id="m1")
    gateway.on_event("stop")  # not an event name: never a method call
    assert not worker.stopped
    gateway.on_event("on_message", account=handle.info)  # missing arguments: logged
    gateway.on_event(
        "on_send_result", account=handle.info, message_id="m2", outcome=Outcome(200, "sent")
    )
    assert worker.delete_settled() == 1
    assert store.sendq.done_ids == ["m2"]
    gateway.on_event(
        "on_connection_state", account=handle.info, state=ConnectionState.CONNECTED, reason=""
    )
    assert store.outbox.rows == []


def test_a_cluster_node_sends_the_queue_of_users_it_takes_over() -> None:
    """adopt: the send-queue rows of the taken users, read now, go when the account is up."""
    worker = InlineWorker()
    gateway, store, handle = rig(worker)
    stale = PendingSend(1, USER, "xmpp", "bob@example.org", "sent by the other node", "m1")
    fresh = PendingSend(2, USER, "xmpp", "bob@example.org", "accepted there, not sent", "m2")
    other = PendingSend(3, "carol@sip.test", "xmpp", "bob@example.org", "not ours", "m3")
    gateway.messaging._unsent[(USER, "xmpp")] = [stale]  # read at start, sent since by another node
    store.sendq.pending_of = lambda users: [r for r in (fresh, other) if r.sip_user in users]
    gateway.adopt([USER])
    gateway.on_event(
        "on_connection_state", account=handle.info, state=ConnectionState.CONNECTED, reason=""
    )
    assert [c for c in handle.calls if c[0] == "send_message"] == [
        ("send_message", "bob@example.org", "accepted there, not sent", "m2")
    ]
    # Given up: what is left of the user's queue is the new owner's to send.
    gateway.messaging._unsent[(USER, "xmpp")] = [fresh]
    gateway.disown([USER])
    assert (USER, "xmpp") not in gateway.messaging._unsent
