"""The gateway as a SIP contact (purplegw.gateway.contact_service), driven through the Gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from purplegw.actors.state import Outcome
from purplegw.gateway.messaging import GATEWAY_PROTOCOL
from purplegw.gateway.model import AccountRef
from purplegw.protocols.base import AuthorizationAnswer, ConnectionState
from purplegw.sip.presence import parse_pidf
from tests.gateway.fakes import Directory, FakeFront, Handle, InlineWorker
from tests.gateway.test_core import USER, rig, source
from tests.kit.sipmsg import make_request

if TYPE_CHECKING:
    from purplegw.gateway import Gateway
    from purplegw.sip.message import Response

GATEWAY = "sip:gateway@sip.test"


def setup() -> tuple[Gateway, Any, Handle, Handle, FakeFront]:
    worker = InlineWorker()
    gateway, store, xmpp = rig(worker)
    irc = Handle(USER, "irc", "alice@irc.example.net", account_id=2)
    gateway.messaging.directory.handles.append(irc)  # type: ignore[attr-defined]
    front = FakeFront()
    gateway.attach(front)
    return gateway, store, xmpp, irc, front


def send(gateway: Gateway, text: str) -> Response:
    replies: list[Response] = []
    request = make_request(
        "MESSAGE",
        GATEWAY,
        from_=f"<sip:{USER}>",
        to=f"<{GATEWAY}>",
        body=text.encode(),
        content_type="text/plain",
    )
    gateway.dispatch(request, source(), replies.append)
    (reply,) = replies
    return reply


def said(store: Any) -> list[str]:
    """What the gateway contact told the user (its outbox rows)."""
    rows = [r for r in store.outbox.rows if r["protocol"] == GATEWAY_PROTOCOL]
    assert all(r["contact"] == GATEWAY and r["sip_user"] == USER for r in rows)
    return [r["body"].decode() for r in rows]


def state(
    gateway: Gateway, handle: Handle, value: ConnectionState, reason: str = "", **kw: Any
) -> None:
    gateway.on_event("on_connection_state", account=handle.info, state=value, reason=reason, **kw)


def tuples(body: bytes) -> list[tuple[str, list[str]]]:
    doc = parse_pidf(body, "application/pidf+xml")
    return [(t.basic or "", [n.text for n in t.notes]) for t in doc.tuples]


def test_subscribe_shows_one_tuple_per_account_and_each_change() -> None:
    gateway, _store, xmpp, irc, front = setup()
    state(gateway, xmpp, ConnectionState.CONNECTED)
    state(gateway, irc, ConnectionState.CONNECTING)
    replies: list[Response] = []
    subscribe = make_request(
        "SUBSCRIBE",
        GATEWAY,
        from_=f"<sip:{USER}>",
        to=f"<{GATEWAY}>",
        extra=[
            ("Event", "presence"),
            ("Expires", "600"),
            ("Contact", "<sip:alice@127.0.0.1:5070>"),
        ],
    )
    gateway.dispatch(subscribe, source(), replies.append)
    assert [r.status for r in replies] == [200]
    (notify,) = front.notifies()
    assert (notify.headers.get("Subscription-State") or "").startswith("active")
    assert tuples(notify.body) == [
        ("open", ["xmpp alice@example.org: connected"]),
        ("closed", ["irc alice@irc.example.net: connecting"]),
    ]
    front.answer_all()
    state(gateway, xmpp, ConnectionState.BAD_CREDENTIALS, "not-authorized")
    state(gateway, irc, ConnectionState.TRANSIENT_DISCONNECT, "refused", retry_at=0.0)
    last = front.notifies()[-1]
    # Sorted by protocol; an open one would come first (what a phone shows).
    assert tuples(last.body) == [
        (
            "closed",
            [
                (
                    "irc alice@irc.example.net: server unreachable (refused),"
                    " backing off until 00:00 UTC"
                )
            ],
        ),
        ("closed", ["xmpp alice@example.org: bad credentials (not-authorized)"]),
    ]
    assert len(front.notifies()) == 3
    # Not another user's subscription, not another event package.
    other = make_request(
        "SUBSCRIBE", GATEWAY, from_=f"<sip:{USER}>", extra=[("Event", "message-summary")]
    )
    gateway.dispatch(other, source(), replies.append)
    assert replies[-1].status == 489


def test_states_before_the_first_event_come_from_the_status_board() -> None:
    gateway, _store, xmpp, _irc, _front = setup()
    board = [
        {
            "account_id": 1,
            "sip_user": USER,
            "protocol": "xmpp",
            "ext_user": "alice@example.org",
            "state": "transient_disconnect",
            "last_error": "timed out",
            "next_retry_in": 60.0,
            "since": 3600.0,
            "gave_up": False,
        },
        {
            "account_id": 7,
            "sip_user": USER,
            "protocol": "matrix",
            "ext_user": "@alice:m.example",
            "state": "unknown_error",
            "last_error": "protocol unavailable: protocol 'matrix' is disabled",
        },
    ]
    gateway.contact.statuses = lambda user: board if user == USER else []
    assert send(gateway, "status").status == 200
    assert said(_store)[-1] == (
        "irc alice@irc.example.net: connecting\n"
        "matrix @alice:m.example: disabled (protocol 'matrix' is disabled)\n"
        "xmpp alice@example.org: server unreachable (timed out), backing off until 01:01 UTC"
    )
    state(gateway, xmpp, ConnectionState.CONNECTED)  # the event is newer than the board
    send(gateway, "status")
    assert "xmpp alice@example.org: connected" in said(_store)[-1]


def test_commands_are_answered_200_then_by_a_message() -> None:
    gateway, store, xmpp, irc, _front = setup()
    assert send(gateway, "help").status == 200
    assert said(store)[-1].startswith("Commands")
    assert send(gateway, "what?").status == 200
    assert said(store)[-1].startswith("Unknown command 'what?'. Commands: help, status,")

    send(gateway, "add bob@example.org")
    assert xmpp.calls[-1] == ("add_contact", "bob@example.org")
    assert said(store)[-1] == (
        "Added bob@example.org to your xmpp account alice@example.org"
        " and asked to see their presence."
    )
    irc.outcome = Outcome(480, "account offline and its queue full")
    send(gateway, "add sip:b%7Cb@irc.example.net;proto=irc")
    assert irc.calls[-1] == ("add_contact", "b|b")
    assert said(store)[-1] == (
        "Could not add b|b on your irc account alice@irc.example.net:"
        " account offline and its queue full."
    )
    send(gateway, "remove bob@example.org")
    assert xmpp.calls[-1] == ("remove_contact", "bob@example.org")
    assert said(store)[-1] == "Removed bob@example.org from your xmpp account alice@example.org."
    send(gateway, "add bob icq")
    assert said(store)[-1] == "You have no icq account."  # the rig's canonical takes any id

    calls = len(xmpp.calls)
    send(gateway, "relogin xmpp")
    assert xmpp.calls[calls:] == [("logout",), ("login",)]
    assert said(store)[-1] == "Logging in again: xmpp alice@example.org."
    send(gateway, "relogin")
    assert irc.calls[-2:] == [("logout",), ("login",)]


def test_allow_and_deny_answer_the_open_request() -> None:
    gateway, store, xmpp, _irc, _front = setup()
    send(gateway, "allow bob@example.org")
    assert said(store)[-1] == "No open request from bob@example.org. Open requests: none."
    gateway.on_event(
        "on_authorization_request", account=xmpp.info, contact="Bob@example.org", text=""
    )
    assert "asks to see your presence" in store.outbox.rows[-1]["body"].decode()
    send(gateway, "allow sip:bob@example.org;proto=xmpp")
    assert xmpp.calls[-1] == ("answer_authorization", "Bob@example.org", AuthorizationAnswer.ALLOW)
    assert said(store)[-1] == "Bob@example.org allowed to see your presence (xmpp)."
    send(gateway, "deny bob@example.org")  # answered already
    assert said(store)[-1].startswith("No open request from bob@example.org.")


def test_trouble_notice_once_then_again_only_after_connected_and_the_interval() -> None:
    gateway, store, xmpp, _irc, _front = setup()
    clock = [10_000.0]
    gateway.contact.clock = lambda: clock[0]
    state(gateway, xmpp, ConnectionState.CONNECTED)
    state(gateway, xmpp, ConnectionState.BAD_CREDENTIALS, "not-authorized")
    state(gateway, xmpp, ConnectionState.LOGGED_OUT, "relogin")
    state(gateway, xmpp, ConnectionState.CONNECTING)
    state(gateway, xmpp, ConnectionState.BAD_CREDENTIALS, "not-authorized")
    assert said(store) == [
        (
            "Your xmpp account alice@example.org stopped: bad credentials (not-authorized)."
            " Ask your administrator to update the password, then send 'relogin'."
        )
    ]
    clock[0] += 3601
    state(gateway, xmpp, ConnectionState.CONNECTED)
    state(
        gateway,
        xmpp,
        ConnectionState.UNKNOWN_ERROR,
        "gave up after 3 flapping pauses: x",
        gave_up=True,
    )
    assert len(said(store)) == 2
    assert "gave up after flapping" in said(store)[-1]
    gateway.contact.settings.notify_account_trouble = False
    clock[0] += 3601
    state(gateway, xmpp, ConnectionState.CONNECTED)
    state(gateway, xmpp, ConnectionState.BAD_CREDENTIALS, "x")
    assert len(said(store)) == 2


def test_the_gateways_messages_come_from_its_uri_and_bounce_to_nobody() -> None:
    gateway, _store, _xmpp, _irc, _front = setup()
    request = gateway.messaging._outgoing(  # the From of a gateway row
        AccountRef(0, USER, GATEWAY_PROTOCOL, ""),
        GATEWAY,
        "sip:alice@127.0.0.1:5070",
        b"hi",
        "text/plain",
    )
    assert (request.headers.get("From") or "").startswith(f"<{GATEWAY}>;tag=")


def test_an_empty_contact_user_leaves_the_uri_to_the_networks() -> None:
    gateway, store, xmpp, _irc, _front = setup()
    gateway.contact.user = ""
    assert not gateway.contact.addressed(make_request("MESSAGE", GATEWAY).ruri)
    state(gateway, xmpp, ConnectionState.BAD_CREDENTIALS, "x")
    assert said(store) == []
    assert isinstance(gateway.messaging.directory, Directory)


def test_notifies_go_to_the_accounts_owner_only_and_end_with_the_subscription() -> None:
    gateway, _store, xmpp, _irc, front = setup()
    reads: list[str] = []

    def statuses(user: str) -> list[dict[str, Any]]:
        reads.append(user)
        return []

    gateway.contact.statuses = statuses
    other = Handle("bob@sip.test", "xmpp", "bob@example.org", account_id=9)
    gateway.messaging.directory.handles.append(other)  # type: ignore[attr-defined]
    replies: list[Response] = []
    headers = [("Event", "presence"), ("Contact", "<sip:alice@127.0.0.1:5070>")]
    subscribe = make_request(
        "SUBSCRIBE",
        GATEWAY,
        from_=f"<sip:{USER}>",
        to=f"<{GATEWAY}>",
        extra=[*headers, ("Expires", "600")],
    )
    gateway.dispatch(subscribe, source(), replies.append)
    front.answer_all()
    assert len(front.notifies()) == 1
    assert reads == [USER]  # the SUBSCRIBE read the board
    state(gateway, other, ConnectionState.CONNECTED)
    assert len(front.notifies()) == 1  # bob's account: not alice's business
    state(gateway, xmpp, ConnectionState.CONNECTED)
    assert len(front.notifies()) == 2
    assert reads == [USER]  # events do not read the board again
    front.answer_all()
    notify = front.notifies()[0]
    to_tag = notify.from_.tag if notify.from_ is not None else None
    unsubscribe = make_request(
        "SUBSCRIBE",
        GATEWAY,
        from_=f"<sip:{USER}>",
        to=f"<{GATEWAY}>",
        to_tag=to_tag,
        call_id=subscribe.call_id,
        cseq=2,
        extra=[*headers, ("Expires", "0")],
    )
    gateway.dispatch(unsubscribe, source(), replies.append)
    assert [r.status for r in replies] == [200, 200]
    final = front.notifies()[-1]
    assert (final.headers.get("Subscription-State") or "").startswith("terminated")
    front.answer_all()
    count = len(front.notifies())
    state(gateway, xmpp, ConnectionState.CONNECTING)
    assert len(front.notifies()) == count
    assert gateway.contact.watches == {}
    assert gateway.presence.watch_count == {}
