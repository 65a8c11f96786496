"""Forwarding in a cluster (gateway/forwarding.py): a request of a user another node holds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from purplegw.exceptions import StoreError
from purplegw.gateway import Gateway, GatewaySettings
from purplegw.gateway.forwarding import FORWARD_TIMEOUT, parse_advertise
from purplegw.sip.message import Response, make_response
from tests.gateway.fakes import Directory, FakeFront, Handle, InlineWorker
from tests.gateway.test_core import Outbox, SendQueue
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    from purplegw.actors.front.transport import Source

USER = "alice@sip.test"
GW1 = ("127.0.0.11", 5071)  # the owner
GW2 = ("127.0.0.12", 5072)  # this node


class Owners:
    def __init__(self) -> None:
        self.holders: dict[str, tuple[str, str]] = {USER: ("gw1", "127.0.0.11:5071")}
        self.lookups = 0
        self.down = False

    def holder(self, sip_user: str) -> tuple[str, str] | None:
        self.lookups += 1
        if self.down:
            raise StoreError("database down")
        return self.holders.get(sip_user)

    def addresses(self, max_age: float) -> dict[str, str]:
        return {"127.0.0.11:5071": "gw1", "127.0.0.12:5072": "gw2"}


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def rig(
    has_accounts: Any = None,
) -> tuple[Gateway, FakeFront, Owners, InlineWorker, Clock]:
    worker = InlineWorker()
    owners = Owners()
    store = SimpleNamespace(
        users=SimpleNamespace(get=lambda *_: None),
        outbox=Outbox(),
        sendq=SendQueue(),
        subscriptions=SimpleNamespace(
            purge=lambda _now: 0, live=lambda _now: [], of_user=lambda _user, _now: []
        ),
        room_marks=SimpleNamespace(all=list, save_many=lambda _marks: None),
        publications=SimpleNamespace(of_resource=lambda _user, _now: []),
        owners=owners,
    )
    gateway = Gateway(
        settings=GatewaySettings(domain="sip.test", trusted=["127.0.0.1/32"]),
        store=store,  # type: ignore[arg-type]
        directory=Directory(Handle(USER, "xmpp", "alice@example.org")),
        worker=worker,  # type: ignore[arg-type]
        canonical=str.lower,
        user_at_host=lambda p: p == "xmpp",
        node="gw2",
        advertise="127.0.0.12:5072",
        has_accounts=has_accounts,
    )
    clock = Clock()
    assert gateway.forwarding is not None
    gateway.forwarding.clock = clock
    front = FakeFront()
    gateway.attach(front)
    return gateway, front, owners, worker, clock


def source(host: str = "127.0.0.1", port: int = 5090) -> Source:
    return udp_source(host, port, sent_by=f"{GW2[0]}:{GW2[1]}")


def message(user: str = USER, **kwargs: Any) -> Any:
    return make_request(
        "MESSAGE",
        "sip:bob@example.org",
        from_=f"<sip:{user}>",
        body=b"hi",
        content_type="text/plain",
        **kwargs,
    )


def test_a_request_of_a_user_held_elsewhere_goes_to_its_node_and_the_answer_comes_back() -> None:
    gateway, front, _owners, _worker, _clock = rig()
    replies: list[Response] = []
    request = message(extra=[("Route", "<sip:127.0.0.12:5072;lr>")])
    gateway.dispatch(request, source(), replies.append)
    [(forwarded, destination, future)] = front.sent
    assert (destination.transport, destination.host, destination.port) == ("udp", *GW1)
    assert forwarded is not request
    assert forwarded.max_forwards == 69
    assert forwarded.headers.getall("Route") == []  # our own Route is consumed
    assert forwarded.body == b"hi"
    assert replies == []
    # The owner answers through the hop's Via (added by the front's client transaction).
    forwarded.headers.add("Via", "SIP/2.0/UDP 127.0.0.12:5072;branch=z9hG4bKhop", first=True)
    future.set_result(make_response(forwarded, 202, to_tag="owner"))
    [answer] = replies
    assert answer.status == 202
    assert answer.headers.getall("Via") == request.headers.getall("Via")
    assert answer.to is not None
    assert answer.to.tag == "owner"


def test_requests_handled_here_register_own_users_free_leases_and_other_nodes() -> None:
    gateway, front, owners, _worker, clock = rig()
    replies: list[Response] = []
    register = make_request(
        "REGISTER",
        "sip:sip.test",
        from_=f"<sip:{USER}>",
        to=f"<sip:{USER}>",
        extra=[("Contact", "<sip:alice@127.0.0.1:5090>")],
    )
    gateway.dispatch(register, source(), replies.append)
    assert [r.status for r in replies] == [200]  # any node answers REGISTER
    handled: list[str] = []
    gateway._routes["MESSAGE"] = lambda request, src, _reply: handled.append(
        f"{gateway.identity.identify(request, src)} from {src.host}"
    )
    # A request another node forwarded is handled here, its From trusted (one hop).
    gateway.dispatch(message(), source(*GW1), replies.append)
    assert handled == [f"{USER} from 127.0.0.11"]
    # This node holds the user, or nobody does: handled here.
    owners.holders[USER] = ("gw2", "127.0.0.12:5072")
    clock.now += 2  # past the owner cache
    gateway.dispatch(message(), source(), replies.append)
    owners.holders.clear()
    clock.now += 2
    gateway.dispatch(message(), source(), replies.append)
    owners.down = True
    clock.now += 2
    gateway.dispatch(message(), source(), replies.append)
    assert front.sent == []
    assert len(handled) == 4
    assert replies[1:] == []  # the handler stand-in answers nothing


def test_a_request_waits_for_its_users_hand_over_then_goes_where_the_user_is_held() -> None:
    gateway, front, owners, worker, clock = rig(has_accounts=lambda user: user == USER)
    gateway.store.sendq.pending_of = lambda _users: []  # type: ignore[attr-defined]
    handled: list[str] = []
    gateway._routes["MESSAGE"] = lambda request, src, _reply: handled.append(
        f"{request.call_id} {gateway.identity.identify(request, src)}"
    )
    replies: list[Response] = []

    def waiting_here(timer: Any) -> bool:
        return bool(timer.fn == gateway._resume)

    owners.holders.clear()  # released by its last holder, not yet acquired by the next
    waiting = message()
    gateway.dispatch(waiting, source(), replies.append)
    assert (replies, handled, front.sent) == ([], [], [])  # it waits
    assert worker.fire(waiting_here) == 1
    assert (replies, handled, front.sent) == ([], [], [])  # still nobody holds the user
    owners.holders[USER] = ("gw1", "127.0.0.11:5071")  # gw1 took it: forwarded there
    assert worker.fire(waiting_here) == 1
    [(_forwarded, destination, _future)] = front.sent
    assert (destination.host, destination.port) == GW1
    front.sent.clear()

    # A user without accounts anywhere is not being handed over: handled (and refused) here.
    gateway.dispatch(message("nobody@sip.test"), source(), replies.append)
    assert len(handled) == 1

    owners.holders.clear()
    clock.now += 2  # past the owner cache
    gateway.dispatch(waiting := message(), source(), replies.append)
    gateway.adopt([USER])  # this node took the lease: handled here, identified once
    assert worker.fire(waiting_here) == 1
    assert handled[1:] == [f"{waiting.call_id} {USER}"]

    # Held here, its accounts logging out (a drain): it waits for the next holder too.
    directory = gateway._directory
    running = list(directory.of_user(USER))
    directory.handles = []  # type: ignore[attr-defined]
    gateway.dispatch(message(), source(), replies.append)
    assert worker.fire(waiting_here) == 1
    assert len(handled) == 2
    directory.handles = running  # type: ignore[attr-defined]
    assert worker.fire(waiting_here) == 1
    assert len(handled) == 3

    gateway.disown([USER])  # given up, and nobody takes it: 503 after HANDOVER_WAIT
    gateway.dispatch(message(), source(*GW1), replies.append)  # even when forwarded to us
    while worker.fire(waiting_here):
        pass
    [refused] = replies
    assert (refused.status, refused.headers.get("Retry-After")) == (503, "2")
    assert "handed over" in refused.reason
    assert len(handled) == 3
    assert front.sent == []


def test_owners_are_cached_for_a_second() -> None:
    gateway, front, owners, _worker, clock = rig()
    for _ in range(5):
        gateway.dispatch(message(), source(), lambda _r: None)
    assert owners.lookups == 1
    clock.now += 1.5
    gateway.dispatch(message(), source(), lambda _r: None)
    assert owners.lookups == 2
    assert len(front.sent) == 6


def test_an_owner_that_never_answers_gets_503_and_too_many_hops_483() -> None:
    gateway, front, _owners, worker, _clock = rig()
    replies: list[Response] = []
    gateway.dispatch(message(), source(), replies.append)
    assert worker.fire(lambda t: t.delay == FORWARD_TIMEOUT) == 1
    [answer] = replies
    assert answer.status == 503
    assert answer.headers.get("Retry-After") == "5"
    front.sent[0][2].set_result(make_response(front.sent[0][0], 202))  # too late: dropped
    assert len(replies) == 1
    looping = message()
    looping.headers.set("Max-Forwards", "0")
    gateway.dispatch(looping, source(), replies.append)
    assert replies[-1].status == 483
    assert len(front.sent) == 1


def test_unauthenticated_requests_are_challenged_before_any_forwarding() -> None:
    gateway, front, _owners, _worker, _clock = rig()
    replies: list[Response] = []
    gateway.dispatch(message(), source("127.0.0.5"), replies.append)  # not trusted
    assert [r.status for r in replies] == [407]
    assert front.sent == []


def test_advertise_addresses() -> None:
    address = parse_advertise("10.0.0.1:5060")
    assert address is not None
    assert (address.transport, address.host, address.port) == ("udp", "10.0.0.1", 5060)
    v6 = parse_advertise("[2001:db8::1]:5070")
    assert v6 is not None
    assert (v6.host, v6.port) == ("2001:db8::1", 5070)
    assert parse_advertise("10.0.0.1") is None
    assert parse_advertise(":5060") is None


def test_notifies_of_a_forwarded_subscribe_go_to_the_phone_not_to_the_forwarding_node() -> None:
    gateway, _front, _owners, _worker, _clock = rig()
    request = make_request(
        "SUBSCRIBE",
        "sip:bob@example.org",
        from_=f"<sip:{USER}>",
        via="SIP/2.0/UDP phone.invalid:5060;received=127.0.0.9;rport=5099",
        extra=[("Event", "presence"), ("Contact", "<sip:alice@phone.invalid>")],
    )
    request.headers.add("Via", "SIP/2.0/UDP 127.0.0.11:5071;branch=z9hG4bKhop", first=True)
    forwarded = gateway.presence.destination(request, source(*GW1))
    assert (forwarded.transport, forwarded.host, forwarded.port) == ("udp", "127.0.0.9", 5099)
    direct = gateway.presence.destination(request, source("127.0.0.1", 5090))
    assert (direct.host, direct.port) == ("127.0.0.1", 5090)  # as before: where it came from
