"""RFC 6665 notifier subscriptions and the dialog underneath."""

from __future__ import annotations

import itertools

import pytest

from purplegw.sip.actions import CancelTimer, Send, StartTimer, Terminated
from purplegw.sip.dialog import Dialog, DialogId
from purplegw.sip.errors import LocalProtocolError, RemoteProtocolError
from purplegw.sip.message import Request, Response, make_response, serialize
from purplegw.sip.parser import parse_datagram
from purplegw.sip.subscription import ACTIVE, PENDING, TERMINATED, Subscription, subscription_state
from tests.kit.sipmsg import make_request

RR = [("Record-Route", "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")]


def subscribe(
    expires: int | None = 600,
    *,
    cseq: int = 1,
    to_tag: str | None = None,
    contact: str = "<sip:watcher@10.0.0.9:5070>",
    extra: list[tuple[str, str]] | None = None,
) -> Request:
    headers = [("Event", "presence"), ("Contact", contact), *(extra or [])]
    if expires is not None:
        headers.append(("Expires", str(expires)))
    req = make_request(
        "SUBSCRIBE",
        "sip:alice@127.0.0.1",
        from_="<sip:watcher@example.com>",
        from_tag="w1",
        to="<sip:alice@127.0.0.1>",
        to_tag=to_tag,
        call_id="sub-1",
        cseq=cseq,
        extra=headers,
    )
    # through the wire and back: the subscription sees what a peer would send
    msg = parse_datagram(serialize(req))
    assert isinstance(msg, Request)
    return msg


def new_sub() -> Subscription:
    counter = itertools.count(1)
    return Subscription(
        "presence",
        "SIP/2.0/UDP 127.0.0.1:5060",
        lambda: f"z9hG4bKn{next(counter)}",
        min_expires=60,
        max_expires=3600,
    )


def sends(actions: list) -> list:
    return [a.message for a in actions if isinstance(a, Send)]


def test_subscription_state_values() -> None:
    assert subscription_state(ACTIVE, expires=60) == "active;expires=60"
    assert subscription_state(PENDING, expires=5) == "pending;expires=5"
    assert subscription_state(TERMINATED, reason="noresource") == "terminated;reason=noresource"
    with pytest.raises(LocalProtocolError):
        subscription_state(TERMINATED, reason="bogus")


def test_initial_active_then_notify_refresh_unsubscribe() -> None:
    sub = new_sub()
    actions = sub.receive_subscribe(
        subscribe(600, extra=RR),
        now=1000.0,
        local_tag="gw1",
        local_contact="<sip:gw@127.0.0.1:5060>",
    )
    response, notify = sends(actions)
    assert isinstance(response, Response)
    assert response.status == 200
    assert response.headers.get("Expires") == "600"
    assert response.to is not None
    assert response.to.tag == "gw1"
    assert response.headers.getall("Record-Route") == [
        "<sip:p2.example.com;lr>",
        "<sip:p1.example.com;lr>",
    ]
    assert StartTimer("subscription_expires", 600) in actions
    assert isinstance(notify, Request)
    assert notify.method == "NOTIFY"
    assert notify.headers.get("Subscription-State") == "active;expires=600"
    assert notify.headers.get("Event") == "presence"
    # in-dialog request per 12.2.1.1: target = Contact, Route = Record-Route, tags swapped
    assert str(notify.uri) == "sip:watcher@10.0.0.9:5070"
    assert notify.headers.getall("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert notify.from_ is not None
    assert notify.from_.tag == "gw1"
    assert notify.to is not None
    assert notify.to.tag == "w1"
    assert notify.call_id == "sub-1"
    assert notify.cseq == (1, "NOTIFY")
    assert parse_datagram(serialize(notify)).headers.items()[:-1] == notify.headers.items()

    (update,) = sends(sub.notify(1100.0, b"<presence/>"))
    assert update.headers.get("Subscription-State") == "active;expires=500"
    assert update.body == b"<presence/>"
    assert update.headers.get("Content-Type") == "application/pidf+xml"
    assert update.cseq == (2, "NOTIFY")

    refresh = subscribe(1200, cseq=2, to_tag="gw1", contact="<sip:watcher@10.0.0.10:5070>")
    actions = sub.receive_subscribe(refresh, now=1200.0)
    response, notify = sends(actions)
    assert response.status == 200
    assert response.headers.get("Expires") == "1200"
    assert str(notify.uri) == "sip:watcher@10.0.0.10:5070"  # target refreshed
    assert notify.body == b"<presence/>"
    assert StartTimer("subscription_expires", 1200) in actions

    actions = sub.receive_subscribe(subscribe(0, cseq=3, to_tag="gw1"), now=1300.0)
    response, final = sends(actions)
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert Terminated("unsubscribed") in actions
    assert CancelTimer("subscription_expires") in actions
    assert sub.state is TERMINATED
    assert sub.dialog is not None
    assert sub.dialog.state.value == "terminated"
    with pytest.raises(RemoteProtocolError) as exc:  # a late refresh: 481
        sub.dialog.receive_request(subscribe(600, cseq=4, to_tag="gw1"))
    assert exc.value.status_hint == 481
    with pytest.raises(LocalProtocolError):
        sub.dialog.create_request("NOTIFY", via="SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK9")


def test_min_expires_423_and_max_clamp() -> None:
    sub = new_sub()
    (send,) = sub.receive_subscribe(subscribe(30), now=0, local_tag="t")
    assert isinstance(send, Send)
    assert send.message.status == 423
    assert send.message.headers.get("Min-Expires") == "60"
    assert sub.state.value == "init"
    actions = sub.receive_subscribe(subscribe(None), now=0, local_tag="t")
    assert sends(actions)[0].headers.get("Expires") == "3600"
    sub2 = new_sub()
    actions = sub2.receive_subscribe(subscribe(99999), now=0, local_tag="t")
    assert StartTimer("subscription_expires", 3600) in actions


def test_pending_authorize_and_reject() -> None:
    sub = new_sub()
    actions = sub.receive_subscribe(subscribe(600), now=0, local_tag="t", authorized=False)
    response, notify = sends(actions)
    assert response.status == 200  # RFC 6665: no 202 for pending subscriptions
    assert notify.headers.get("Subscription-State") == "pending;expires=600"
    (pending_update,) = sends(sub.notify(1, b"<secret/>"))
    assert pending_update.body == b""  # no state leaks while pending
    (active,) = sends(sub.authorize(10))
    assert active.headers.get("Subscription-State") == "active;expires=590"
    assert active.body == b"<secret/>"
    actions = sub.terminate(20, "rejected")
    (final,) = sends(actions)
    assert final.headers.get("Subscription-State") == "terminated;reason=rejected"
    with pytest.raises(LocalProtocolError):
        sub.notify(30, b"x")


def test_fetch_with_expires_zero() -> None:
    sub = new_sub()
    actions = sub.receive_subscribe(subscribe(0), now=0, local_tag="t")
    response, notify = sends(actions)
    assert response.status == 200
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert sub.state is TERMINATED


def test_expiry_timer_and_notify_failure() -> None:
    sub = new_sub()
    sub.receive_subscribe(subscribe(60), now=0, local_tag="t")
    actions = sub.on_timer("subscription_expires", 60)
    (notify,) = sends(actions)
    assert notify.headers.get("Subscription-State") == "terminated;reason=timeout"
    assert sub.on_timer("subscription_expires", 61) == []

    sub2 = new_sub()
    _, notify2 = sends(sub2.receive_subscribe(subscribe(600), now=0, local_tag="t"))
    assert sub2.receive_notify_response(make_response(notify2, 200)) == []
    (_, upd) = (None, sends(sub2.notify(1, b"x"))[0])
    actions = sub2.receive_notify_response(make_response(upd, 481))
    assert sub2.state is TERMINATED
    assert isinstance(actions[-1], Terminated)


def test_dialog_cseq_order_and_strict_routing() -> None:
    req = subscribe(600, extra=[("Record-Route", "<sip:strict.example.com>")])
    dialog = Dialog.from_request(req, "local")
    assert dialog.id == DialogId("sub-1", "local", "w1")
    assert DialogId.of_incoming(subscribe(cseq=2, to_tag="local")) == dialog.id
    with pytest.raises(RemoteProtocolError) as exc:
        dialog.receive_request(subscribe(cseq=1, to_tag="local"))
    assert exc.value.status_hint == 500
    out = dialog.create_request("NOTIFY", via="SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1")
    assert str(out.uri) == "sip:strict.example.com"
    assert out.headers.getall("Route") == ["<sip:watcher@10.0.0.9:5070>"]
    assert dialog.next_hop().host == "strict.example.com"
    with pytest.raises(RemoteProtocolError):
        Dialog.from_request(make_request("SUBSCRIBE"), "x")  # no Contact
