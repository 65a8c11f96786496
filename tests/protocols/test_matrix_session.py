"""MatrixSession against a real Synapse, with an independent matrix-nio client as the contact."""

from __future__ import annotations

import itertools
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.presence import Presence, Status
from purplegw.protocols.base import (
    AccountCredentials,
    AuthorizationAnswer,
    BadCredentialsError,
    ConnectionState,
    DeliveryError,
    RosterItem,
    SessionContext,
    TypingState,
)
from purplegw.protocols.matrix import Adapter
from purplegw.protocols.matrix.session import ENCRYPTED_NOTICE, SESSION_KEY_KIND, SINCE_KEY_KIND
from tests.kit.binaries import missing_peer
from tests.kit.synapse import MatrixPeer, MatrixUser, Synapse, shared_synapse, synapse_python

from .xmpp_harness import LoopThread, RecordingEvents

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture(scope="module")
def synapse() -> Synapse:
    if synapse_python() is None:
        missing_peer("Synapse", "matrix-synapse (PyPI, in .venv-synapse)")
    return shared_synapse()


def make_session(
    loop: LoopThread,
    server: Synapse,
    user: MatrixUser,
    *,
    secret: str | None = None,
    derived_keys: dict[str, str] | None = None,
    proxy: Any = None,
    **config: Any,
) -> tuple[Any, RecordingEvents]:
    events = RecordingEvents()
    credentials = AccountCredentials(
        account_id=next(_names),
        sip_user="sip:alice@127.0.0.1",
        ext_user=user.user_id,
        protocol="matrix",
        password=user.password if secret is None else secret,
        derived_keys=derived_keys or {},
    )
    context = SessionContext(
        loop=loop.loop,
        events=events,
        proxy=proxy,
        config={
            "homeserver": server.base_url,
            "sync_timeout": 2,
            "backoff_initial": 0.2,
            "backoff_max": 1,
            "since_interval": 0.1,
            **config,
        },
    )
    return Adapter().create_session(credentials, context), events


@pytest.fixture
def users(synapse: Synapse) -> tuple[MatrixUser, MatrixUser]:
    n = next(_names)
    return synapse.create_user(f"alice{n}"), synapse.create_user(f"bob{n}")


@pytest.fixture
def bob(synapse: Synapse, users: tuple[MatrixUser, MatrixUser]) -> Iterator[MatrixPeer]:
    peer = MatrixPeer(synapse, users[1]).start()
    yield peer
    peer.stop()


@pytest.fixture
def alice(loop: LoopThread, synapse: Synapse, users: tuple[MatrixUser, MatrixUser]):
    session, events = make_session(loop, synapse, users[0])
    loop.run(session.login())
    yield session, events
    loop.run(session.logout())


def test_password_login_reports_a_reusable_token_and_keeps_the_device(
    loop: LoopThread, synapse: Synapse, users: tuple[MatrixUser, MatrixUser]
) -> None:
    session, events = make_session(loop, synapse, users[0])
    loop.run(session.login())
    states = [args[0] for args in events.of("state")]
    assert states == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    keys = dict(events.of("key"))
    record = json.loads(keys[SESSION_KEY_KIND])
    assert record["user_id"] == users[0].user_id
    assert SINCE_KEY_KIND in keys
    devices = synapse.devices(session.client.access_token)
    assert record["device_id"] in devices
    loop.run(session.logout())
    assert events.of("state")[-1][0] is ConnectionState.LOGGED_OUT

    # The next start uses the stored token: no new login, same device.
    again, events2 = make_session(loop, synapse, users[0], derived_keys=keys)
    loop.run(again.login())
    assert again.client.device_id == record["device_id"]
    assert SESSION_KEY_KIND not in dict(events2.of("key"))
    token = again.client.access_token
    loop.run(again.logout())
    assert synapse.devices(token) == devices

    # A changed password makes the record miss: a fresh login, same device id asked for.
    other, events3 = make_session(
        loop,
        synapse,
        users[0],
        derived_keys={SESSION_KEY_KIND: keys[SESSION_KEY_KIND].replace(record["check"], "0" * 64)},
    )
    loop.run(other.login())
    assert SESSION_KEY_KIND in dict(events3.of("key"))
    assert other.client.device_id == record["device_id"]
    assert synapse.devices(other.client.access_token) == devices
    loop.run(other.logout())


def test_login_by_access_token(
    loop: LoopThread, synapse: Synapse, users: tuple[MatrixUser, MatrixUser]
) -> None:
    login = synapse.login(users[0])
    session, events = make_session(loop, synapse, users[0], secret=f"token:{login['access_token']}")
    loop.run(session.login())
    assert session.client.device_id == login["device_id"]
    assert events.of("state")[-1][0] is ConnectionState.CONNECTED
    assert SESSION_KEY_KIND not in dict(events.of("key"))
    loop.run(session.logout())


@pytest.mark.parametrize("secret", ["wrong password", "token:syt_not_a_token"])
def test_bad_credentials_state(
    loop: LoopThread, synapse: Synapse, users: tuple[MatrixUser, MatrixUser], secret: str
) -> None:
    session, events = make_session(loop, synapse, users[0], secret=secret)
    with pytest.raises(BadCredentialsError):
        loop.run(session.login())
    assert events.of("state")[-1][0] is ConnectionState.BAD_CREDENTIALS


def test_unreachable_homeserver_is_transient(
    loop: LoopThread, synapse: Synapse, users: tuple[MatrixUser, MatrixUser]
) -> None:
    from tests.kit.ports import free_port

    session, events = make_session(
        loop, synapse, users[0], homeserver=f"http://127.0.0.1:{free_port('tcp')}"
    )
    with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
        loop.run(session.login())
    assert type(info.value).__name__ == "TransientError"
    assert events.of("state")[-1][0] is ConnectionState.TRANSIENT_DISCONNECT


def test_first_message_creates_a_direct_room_and_replies_come_back(
    loop: LoopThread, alice: Any, bob: MatrixPeer, users: tuple[MatrixUser, MatrixUser]
) -> None:
    session, events = alice
    bob_contact = users[1].contact
    assert events.of("roster") == [([],)]  # no direct rooms yet: an empty roster at login
    assert loop.run(session.send_message(bob_contact, "hello bob ✓", "msg-1")) is None
    invite = bob.wait_for(lambda e: e.kind == "invite")
    got = bob.wait_for(lambda e: e.kind == "message" and e.body == "hello bob ✓")
    assert got.sender == users[0].user_id
    assert got.room_id == invite.room_id
    # The room is a direct room in alice's m.direct.
    assert session._direct[users[1].user_id] == [got.room_id]
    # ... so bob is on the roster now.
    assert events.of("roster_item") == [(RosterItem(bob_contact, "", "both"),)]
    # Bob's join answers the invitation.
    events.wait_for("auth_answer", lambda c, a: c == bob_contact and a is AuthorizationAnswer.ALLOW)

    bob.send(got.room_id, "hi alice \u202e reversed")
    _contact, text, event_id = events.wait_for("message", lambda c, _t, _i: c == bob_contact)
    assert text == "hi alice  reversed"  # bidi override removed (for_phone)
    assert event_id.startswith("$")

    # A second message reuses the room; the same id twice is sent once (txn id).
    mark = bob.mark()
    loop.run(session.send_message(bob_contact, "again", "msg-2"))
    loop.run(session.send_message(bob_contact, "again", "msg-2"))
    loop.run(session.send_message(bob_contact, "last", "msg-3"))
    bob.wait_for(lambda e: e.kind == "message" and e.body == "last", since=mark)
    # Bob's own reply may come back in his sync after the mark: alice's only.
    received = [e for e in bob.messages(mark) if e.sender == users[0].user_id]
    assert [e.body for e in received] == ["again", "last"]
    assert {e.room_id for e in received} == {got.room_id}

    # Bob reads "last": receipts for everything up to it.
    bob.read(got.room_id, received[-1].data.event_id)
    events.wait_for("receipt", lambda _c, m: m == "msg-3")
    assert [m for _c, m in events.of("receipt")] == ["msg-1", "msg-2", "msg-3"]


def test_invalid_contact_is_refused(loop: LoopThread, alice: Any) -> None:
    session, _events = alice
    with pytest.raises(DeliveryError) as info:
        loop.run(session.send_message("no spaces allowed@matrix.test", "x", "m-bad"))
    assert info.value.status_hint == 404


def test_stranger_invite_is_an_authorization_request(
    loop: LoopThread, alice: Any, bob: MatrixPeer, users: tuple[MatrixUser, MatrixUser]
) -> None:
    session, events = alice
    room_id = bob.direct_room(users[0].user_id)
    contact, _text = events.wait_for("auth_request")
    assert contact == users[1].contact
    # Nothing from that room reaches the phone before the answer; what the
    # contact wrote with the invite arrives once the user allowed it.
    bob.send(room_id, "before the answer")
    time.sleep(0.5)
    assert events.of("message") == []
    loop.run(session.answer_authorization(contact, AuthorizationAnswer.ALLOW))
    bob.wait_for(lambda e: e.kind == "member" and e.sender == users[0].user_id and e.body == "join")
    bob.send(room_id, "after the answer")
    events.wait_for("message", lambda _c, t, _i: t == "after the answer")
    assert [t for _c, t, _i in events.of("message")] == ["before the answer", "after the answer"]
    # Replies go to that room, not to a new one.
    mark = bob.mark()
    loop.run(session.send_message(contact, "thanks", "m-thanks"))
    assert bob.wait_for(lambda e: e.body == "thanks", since=mark).room_id == room_id


def test_denied_invite_is_rejected(
    loop: LoopThread, alice: Any, bob: MatrixPeer, users: tuple[MatrixUser, MatrixUser]
) -> None:
    session, events = alice
    room_id = bob.direct_room(users[0].user_id)
    contact, _text = events.wait_for("auth_request")
    loop.run(session.answer_authorization(contact, AuthorizationAnswer.DENY))
    bob.wait_for(
        lambda e: (
            e.kind == "member"
            and e.room_id == room_id
            and e.sender == users[0].user_id
            and e.body == "leave"
        )
    )


def test_presence_and_typing_both_ways(
    loop: LoopThread, alice: Any, bob: MatrixPeer, users: tuple[MatrixUser, MatrixUser]
) -> None:
    session, events = alice
    bob_contact = users[1].contact
    loop.run(session.add_contact(bob_contact))  # creates the room; bob joins
    events.wait_for("auth_answer")
    room_id = session._direct[users[1].user_id][0]

    # Matrix -> SIP
    mark = events.mark()
    bob.set_presence("unavailable", "in a meeting")
    presence = events.wait_for(
        "presence",
        lambda p: p.contact == bob_contact and p.aggregate.status is Status.AWAY,
        since=mark,
    )[0]
    assert presence.aggregate.note == "in a meeting"
    bob.typing(room_id, on=True)
    events.wait_for("typing", lambda c, s: c == bob_contact and s is TypingState.COMPOSING)
    bob.typing(room_id, on=False)
    events.wait_for("typing", lambda c, s: c == bob_contact and s is TypingState.PAUSED)

    # SIP -> Matrix
    mark = bob.mark()
    loop.run(session.set_presence(Presence(Status.BUSY, note="On the phone")))
    got = bob.wait_for(
        lambda e: e.kind == "presence" and e.sender == users[0].user_id and e.body == "unavailable",
        since=mark,
    )
    assert got.data == "On the phone"
    loop.run(session.send_typing(bob_contact, TypingState.COMPOSING))
    bob.wait_for(lambda e: e.kind == "typing" and users[0].user_id in e.data, since=mark)
    loop.run(session.send_typing(bob_contact, TypingState.PAUSED))
    bob.wait_for(lambda e: e.kind == "typing" and users[0].user_id not in e.data, since=mark)


def test_encrypted_room_gets_no_plaintext_and_one_notice(
    loop: LoopThread, alice: Any, bob: MatrixPeer, users: tuple[MatrixUser, MatrixUser]
) -> None:
    session, events = alice
    bob.direct_room(users[0].user_id, encrypted=True)
    contact, _ = events.wait_for("auth_request")
    loop.run(session.answer_authorization(contact, AuthorizationAnswer.ALLOW))
    deadline = time.monotonic() + 20
    rooms = session._direct
    while not any(session._encrypted(r) for r in rooms.get(users[1].user_id, [])):
        assert time.monotonic() < deadline, "room state never arrived"
        time.sleep(0.05)
    mark = bob.mark()
    for n in range(2):
        with pytest.raises(DeliveryError) as info:
            loop.run(session.send_message(contact, "secret", f"m-enc-{n}"))
        assert info.value.status_hint == 488
    notices = [t for c, t, _i in events.of("message") if t == ENCRYPTED_NOTICE]
    assert notices == [ENCRYPTED_NOTICE]
    time.sleep(0.5)
    assert bob.messages(mark) == []


def test_since_token_means_no_replay_and_nothing_missed(
    loop: LoopThread, synapse: Synapse, bob: MatrixPeer, users: tuple[MatrixUser, MatrixUser]
) -> None:
    first, events = make_session(loop, synapse, users[0])
    loop.run(first.login())
    loop.run(first.send_message(users[1].contact, "hi", "m-0"))
    room_id = bob.wait_for(lambda e: e.kind == "message").room_id
    bob.send(room_id, "seen by the first session")
    events.wait_for("message", lambda _c, t, _i: t == "seen by the first session")
    loop.run(first.logout())
    keys = dict(events.of("key"))

    bob.send(room_id, "sent while the gateway was down")
    second, events2 = make_session(loop, synapse, users[0], derived_keys=keys)
    loop.run(second.login())
    events2.wait_for("message", lambda _c, t, _i: t == "sent while the gateway was down")
    assert [t for _c, t, _i in events2.of("message")] == ["sent while the gateway was down"]
    loop.run(second.logout())


def test_rate_limit_is_honoured(
    loop: LoopThread,
    synapse: Synapse,
    alice: Any,
    bob: MatrixPeer,
    users: tuple[MatrixUser, MatrixUser],
) -> None:
    session, _events = alice
    warm = bob.mark()
    loop.run(session.send_message(users[1].contact, "warm-up", "rl-0"))
    # bob must have it before the mark below, or it counts among the limited ones
    bob.wait_for(lambda e: e.body == "warm-up", since=warm)
    synapse.override_ratelimit(users[0].user_id, per_second=2, burst=1)
    mark = bob.mark()
    started = time.monotonic()
    for n in range(1, 5):
        assert loop.run(session.send_message(users[1].contact, f"limited {n}", f"rl-{n}")) is None
    elapsed = time.monotonic() - started
    bob.wait_for(lambda e: e.body == "limited 4", since=mark)
    assert [e.body for e in bob.messages(mark)] == [f"limited {n}" for n in range(1, 5)]
    assert elapsed > 1.0, elapsed  # 429s were waited out, not failed
    assert "429" in synapse.log_text() or "ratelimit" in synapse.log_text().lower()


def test_synapse_restart_mid_traffic_loses_nothing(
    loop: LoopThread,
    synapse: Synapse,
    alice: Any,
    bob: MatrixPeer,
    users: tuple[MatrixUser, MatrixUser],
) -> None:
    import threading

    session, events = alice
    bob_contact = users[1].contact
    loop.run(session.send_message(bob_contact, "before", "r-start"))
    room_id = bob.wait_for(lambda e: e.kind == "message" and e.body == "before").room_id
    events.wait_for("auth_answer")
    mark = bob.mark()
    out = [f"out {i:02d}" for i in range(24)]
    into = [f"in {i:02d}" for i in range(24)]
    restart = threading.Thread(target=synapse.restart)
    taken = []
    for i, (text_out, text_in) in enumerate(zip(out, into, strict=True)):
        if i == 6:
            restart.start()
        if session.state is ConnectionState.TRANSIENT_DISCONNECT:
            pytest.fail(f"the session gave up during a short restart: {events.of('state')}")
        result = loop.run(session.send_message(bob_contact, text_out, f"r-{i}"))
        if result is True:
            taken.append(f"r-{i}")
        bob.send(room_id, text_in)  # matrix-nio retries until Synapse is back
        time.sleep(0.1)
    restart.join(60)
    assert taken, "no message was sent while Synapse was down: the test proved nothing"
    bob.wait_for(lambda e: e.body == out[-1], since=mark, timeout=60)
    assert [e.body for e in bob.messages(mark) if e.sender == users[0].user_id] == out
    events.wait_for("message", lambda _c, t, _i: t == into[-1], timeout=60)
    assert [t for c, t, _i in events.of("message") if t.startswith("in ")] == into
    events.wait_for("acked", lambda m: m == taken[-1])
    assert [m for (m,) in events.of("acked")] == taken
    states = [s for s, _r in events.of("state")]
    assert ConnectionState.CONNECTING in states[2:]
    assert states[-1] is ConnectionState.CONNECTED


def test_login_and_message_through_http_connect_proxy(
    loop: LoopThread, synapse: Synapse, bob: MatrixPeer, users: tuple[MatrixUser, MatrixUser]
) -> None:
    from purplegw.protocols.base import ProxySettings
    from tests.kit.tinyproxy import Tinyproxy, tinyproxy_binary

    if tinyproxy_binary() is None:
        missing_peer("tinyproxy", "tinyproxy")
    with Tinyproxy(connect_ports=[synapse.port], auth=("pu", "pp")) as proxy:
        session, events = make_session(
            loop, synapse, users[0], proxy=ProxySettings("127.0.0.1", proxy.port, "pu", "pp")
        )
        loop.run(session.login())
        try:
            assert proxy.saw_connect("127.0.0.1", synapse.port), proxy.log()
            loop.run(session.send_message(users[1].contact, "via the proxy", "px-1"))
            bob.wait_for(lambda e: e.body == "via the proxy")
        finally:
            loop.run(session.logout())
        wrong, _ = make_session(
            loop, synapse, users[0], proxy=ProxySettings("127.0.0.1", proxy.port, "pu", "nope")
        )
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
            loop.run(wrong.login())
        assert type(info.value).__name__ == "TransientError", info.value
    assert events.of("state")[-1][0] is ConnectionState.LOGGED_OUT


def test_homeserver_discovery_through_well_known(
    loop: LoopThread, synapse: Synapse, tmp_path: Any
) -> None:
    """``homeserver`` empty: https://<server>/.well-known/matrix/client names the API."""
    import ssl

    from aiohttp import web

    from tests.kit.certs import write_self_signed_cert
    from tests.kit.ports import free_port

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed_cert(cert, key, "localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    port = free_port("tcp")
    asked = []

    async def well_known(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response({"m.homeserver": {"base_url": synapse.base_url + "/"}})

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/.well-known/matrix/client", well_known)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
        return runner

    runner = loop.run(serve())
    try:
        user = MatrixUser("alice", "pw")
        session, _ = make_session(loop, synapse, user, homeserver="", ca_file=str(cert))
        assert loop.run(session._discover(f"localhost:{port}")) == synapse.base_url
        assert asked == ["/.well-known/matrix/client"]
        # Nothing there (connection refused): the server name itself, over https.
        other = free_port("tcp")
        assert loop.run(session._discover(f"localhost:{other}")) == f"https://localhost:{other}"
    finally:
        loop.run(runner.cleanup())
