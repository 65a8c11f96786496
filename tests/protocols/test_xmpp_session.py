"""XmppSession against a real Prosody, with an independent slixmpp client as the contact."""

from __future__ import annotations

import itertools
import re
import time
from typing import TYPE_CHECKING, Any

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from purplegw.presence import Presence, Status
from purplegw.protocols.base import (
    AuthorizationAnswer,
    BadCredentialsError,
    ConnectionState,
    DeliveryError,
    RosterItem,
    TransientError,
    TypingState,
)
from purplegw.protocols.xmpp.session import SM_WINDOW, Client, TlsVerificationError
from tests.kit.ports import free_port
from tests.kit.xmpp_peer import XmppPeer

from .xmpp_harness import make_session

if TYPE_CHECKING:
    from tests.kit.prosody import Prosody

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture
def users(prosody: Prosody):
    """Two fresh accounts per test: ours (alice*) and the peer's (bob*)."""
    n = next(_names)
    return prosody.create_user(f"alice{n}"), prosody.create_user(f"bob{n}")


def config(prosody: Prosody, **extra):
    return {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 0, **extra}


@pytest.fixture
def alice(loop, prosody, users):
    session, events = make_session(loop, users[0].jid, users[0].password, config(prosody))
    loop.run(session.login())
    yield session, events
    loop.run(session.logout())


@pytest.fixture
def bob(prosody, users):
    with XmppPeer(
        users[1].jid, users[1].password, prosody.host, prosody.port, ca_file=prosody.ca_file
    ) as peer:
        yield peer


def befriend(loop, session, events, peer, our_jid: str) -> None:
    """Mutual presence subscription, driven through the session's API."""
    loop.run(session.add_contact(peer.jid.partition("/")[0]))
    peer.wait_for(lambda e: e.kind == "subscribe" and e.bare == our_jid)
    peer.answer_subscription(our_jid, allow=True)
    events.wait_for("auth_answer", lambda c, a: a is AuthorizationAnswer.ALLOW)
    peer.subscribe(our_jid)
    events.wait_for("auth_request", lambda c, t: c == peer.jid.partition("/")[0])
    loop.run(session.answer_authorization(peer.jid.partition("/")[0], AuthorizationAnswer.ALLOW))
    peer.wait_for(lambda e: e.kind == "subscribed" and e.bare == our_jid)


# --- login --------------------------------------------------------------------------


def test_login_reports_connecting_then_connected_and_logout_is_idempotent(loop, prosody, users):
    session, events = make_session(loop, users[0].jid, users[0].password, config(prosody))
    loop.run(session.login())
    states = [args[0] for args in events.of("state")]
    assert states == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    loop.run(session.logout())
    loop.run(session.logout())
    assert [args[0] for args in events.of("state")][-1] is ConnectionState.LOGGED_OUT
    assert [args[0] for args in events.of("state")].count(ConnectionState.LOGGED_OUT) == 1
    with pytest.raises(DeliveryError) as info:
        loop.run(session.send_message(users[1].jid, "after logout", "late-1"))
    assert info.value.status_hint == 503


def test_bad_password_is_bad_credentials(loop, prosody, users):
    session, events = make_session(loop, users[0].jid, "wrong-password", config(prosody))
    with pytest.raises(BadCredentialsError, match=users[0].jid):
        loop.run(session.login())
    assert events.of("state")[-1][0] is ConnectionState.BAD_CREDENTIALS


def test_invalid_account_jid_is_bad_credentials(loop, prosody):
    session, events = make_session(loop, "no jid@@", "x", config(prosody))
    with pytest.raises(BadCredentialsError, match="not a valid JID"):
        loop.run(session.login())
    assert events.of("state")[-1][0] is ConnectionState.BAD_CREDENTIALS


def test_unreachable_server_is_transient(loop, users):
    port = free_port("tcp")  # nothing listens there
    # Timeouts far beyond the test's own: a refused connection must be
    # reported as such, not waited out.
    cfg = {"server": f"127.0.0.1:{port}", "keepalive": 0, "connect_timeout": 300}
    session, events = make_session(loop, users[0].jid, users[0].password, cfg)
    with pytest.raises(TransientError, match=f"127.0.0.1:{port}") as info:
        loop.run(session.login(), timeout=100)
    assert "refused" in str(info.value).lower()
    assert events.of("state")[-1][0] is ConnectionState.TRANSIENT_DISCONNECT


def test_untrusted_certificate_fails_naming_the_host(loop, prosody, users):
    cfg = config(prosody)
    del cfg["ca_file"]  # system CAs only: the self-signed cert is not trusted
    session, events = make_session(loop, users[0].jid, users[0].password, cfg)
    with pytest.raises(TlsVerificationError) as info:
        loop.run(session.login())
    message = str(info.value)
    assert "localhost" in message
    assert prosody.address in message
    assert "certificate" in message.lower()
    assert events.of("state")[-1][0] is ConnectionState.TRANSIENT_DISCONNECT


def test_plaintext_login_for_loopback_tests(loop, prosody, users, bob):
    cfg = config(prosody, require_tls=False, allow_plaintext=True, ca_file="")
    session, _events = make_session(loop, users[0].jid, users[0].password, cfg)
    loop.run(session.login())
    try:
        assert session.client.transport.get_extra_info("ssl_object") is None
        loop.run(session.send_message(bob.jid.partition("/")[0], "in the clear", "plain-1"))
        bob.wait_for(lambda e: e.kind == "message" and e.body == "in the clear")
    finally:
        loop.run(session.logout())


def test_direct_tls_login(loop, prosody, users):
    cfg = config(prosody, server=f"{prosody.host}:{prosody.tls_port}", direct_tls=True)
    session, events = make_session(loop, users[0].jid, users[0].password, cfg)
    loop.run(session.login())
    try:
        assert session.client.transport.get_extra_info("ssl_object") is not None
        assert events.of("state")[-1][0] is ConnectionState.CONNECTED
    finally:
        loop.run(session.logout())


def test_sessions_share_one_ssl_context(loop, prosody, users):
    shared: dict = {}
    other = prosody.create_user(f"carol{next(_names)}")
    s1, _ = make_session(loop, users[0].jid, users[0].password, config(prosody), shared=shared)
    s2, _ = make_session(loop, other.jid, other.password, config(prosody), shared=shared)
    loop.run(s1.login())
    loop.run(s2.login())
    try:
        assert s1.client.ssl_context is s2.client.ssl_context
        assert len([k for k in shared if k[0] == "xmpp.ssl_context"]) == 1
        assert s1.client.transport.get_extra_info("ssl_object") is not None
    finally:
        loop.run(s1.logout())
        loop.run(s2.logout())


# --- messages -----------------------------------------------------------------------


def test_a_burst_is_acknowledged_behind_one_ack_request(loop, alice, users):
    """Messages written in one turn of the loop share an <r/>; every one is acknowledged."""
    session, events = alice
    theirs = users[1].jid
    client = session.client
    requests: list[str] = []
    send_raw = client.send_raw

    def counting(data: Any, *args: Any, **kwargs: Any) -> Any:
        if re.search(r"<r\s+xmlns=.urn:xmpp:sm:3.\s*/>", str(data)):
            requests.append(str(data))
        return send_raw(data, *args, **kwargs)

    client.send_raw = counting

    async def burst() -> list[bool]:
        return [await session.send_message(theirs, f"burst {n}", f"burst-{n}") for n in range(40)]

    assert loop.run(burst()) == [True] * 40
    for n in range(40):
        events.wait_for("acked", lambda mid, n=n: mid == f"burst-{n}")
    assert session.unacked_messages() == []
    # One behind the burst, plus slixmpp's own every SM_WINDOW stanzas (was one per message).
    assert len(requests) <= 1 + 40 // SM_WINDOW + 1


def test_a_burst_leaves_in_one_transport_write_and_arrives_in_order(loop, alice, bob, users):
    """What slixmpp writes in one turn of the loop is one TLS record, one syscall."""
    session, events = alice
    client = session.client
    transport = client.transport
    writes: list[bytes] = []
    write = transport.write

    def recording(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    transport.write = recording
    try:

        async def burst() -> None:
            for n in range(20):
                await session.send_message(users[1].jid, f"in order {n}", f"order-{n}")

        loop.run(burst())
        for n in range(20):
            events.wait_for("acked", lambda mid, n=n: mid == f"order-{n}")
    finally:
        del transport.write
    carrying = [w for w in writes if b"in order" in w]
    assert len(carrying) == 1, [w.count(b"<message") for w in carrying]
    assert carrying[0].count(b"<message") == 20
    bob.wait_for(lambda e: e.kind == "message" and e.msg_id == "order-19")
    got = [e.msg_id for e in bob.snapshot() if e.kind == "message" and e.msg_id]
    assert got == [f"order-{n}" for n in range(20)]


def test_login_writes_enable_roster_request_and_presence_together(
    loop, prosody, alice, bob, users, monkeypatch
):
    """Pipelined once bound; the roster is still reported before any contact's presence."""
    session, events = alice
    befriend(loop, session, events, bob, users[0].jid)
    loop.run(session.logout())
    flushed: list[bytes] = []
    flush = Client.flush_writes

    def recording(self: Client) -> None:
        pending = self._write_buffer  # the list flush_writes writes (and may add to)
        flush(self)
        flushed.append(b"".join(pending))

    monkeypatch.setattr(Client, "flush_writes", recording)
    again, again_events = make_session(
        loop, users[0].jid, users[0].password, config(prosody, resource="pipelined")
    )
    loop.run(again.login())
    try:
        together = [w for w in flushed if b"jabber:iq:roster" in w]
        assert len(together) == 1
        assert re.search(rb"<enable [^>]*urn:xmpp:sm:3.*jabber:iq:roster.*<presence", together[0])
        # Their ack is asked once <enabled/> was read, not behind <enable/>.
        assert b"<r " not in together[0]
        later = flushed[flushed.index(together[0]) + 1 :]
        assert any(w.startswith(b"<r xmlns='urn:xmpp:sm:3'/>") for w in later)
        bob_bare = users[1].jid
        again_events.wait_for("presence", lambda p: p.contact == bob_bare)
        names = [e.name for e in again_events.events]
        assert names.index("roster") < names.index("presence")
        assert [item.contact for item in again_events.of("roster")[0][0]] == [bob_bare]
        # The contact saw our initial presence.
        bob.wait_for(
            lambda e: e.kind == "presence" and e.ptype is None and e.sender.endswith("/pipelined")
        )
    finally:
        loop.run(again.logout())


def test_negotiation_handlers_are_set_aside_once_logged_in(loop, alice, bob, users):
    """Features, STARTTLS, SASL and XEP-0198 answers are not offered every stanza after login."""
    session, events = alice
    client = session.client
    names = {handler.name for handler in client._handler_list()}
    assert not names & Client.NEGOTIATION_HANDLERS
    assert {"Stream Error", "Stream Management Ack", "purplegw message"} <= names
    assert client.plugin["xep_0198"].enabled_in  # <enabled/> was read before they went
    assert loop.run(session.send_message(users[1].jid, "still heard", "aside-1")) is True
    events.wait_for("acked", lambda mid: mid == "aside-1")
    bob.wait_for(lambda e: e.kind == "message" and e.msg_id == "aside-1")


def test_messages_both_ways_with_ids_and_receipts(loop, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    # Nobody waits for a receipt of this one: none is asked of bob's client.
    assert loop.run(session.send_message(theirs, "no receipt <&> asked", "sip-msg-0")) is True
    # Written, and the server's XEP-0198 acknowledgement is announced later.
    assert loop.run(session.send_message(theirs, "hello bob", "sip-msg-1", receipt=True)) is True
    assert events.wait_for("acked", lambda mid: mid == "sip-msg-0") == ("sip-msg-0",)
    assert events.wait_for("acked", lambda mid: mid == "sip-msg-1") == ("sip-msg-1",)
    plain = bob.wait_for(lambda e: e.kind == "message" and e.body == "no receipt <&> asked")
    assert plain.msg_id == "sip-msg-0"
    assert not plain.receipt_requested
    assert plain.chat_state == "active"  # XEP-0085, on every message as before
    got = bob.wait_for(lambda e: e.kind == "message" and e.body == "hello bob")
    assert got.msg_id == "sip-msg-1"
    assert got.receipt_requested
    assert got.bare == ours
    # bob's client answered the receipt request: reported with our id
    assert events.wait_for("receipt", lambda c, mid: mid == "sip-msg-1")[0] == theirs
    # bob answers in order: a receipt for the first message would have come before.
    assert [e.args for e in events.events if e.name == "receipt"] == [(theirs, "sip-msg-1")]
    # the server acknowledged it, nothing left to resend
    deadline = time.monotonic() + 10
    while session.unacked_messages() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert session.unacked_messages() == []

    mid = bob.send_message(ours, "hi alice, ünïcode ✓", request_receipt=True)
    contact, text, message_id = events.wait_for("message")
    assert (contact, text, message_id) == (theirs, "hi alice, ünïcode ✓", mid)
    # bob's receipt request is answered once the phone reports delivery
    loop.run(session.send_receipt(theirs, mid, "delivered"))
    bob.wait_for(lambda e: e.kind == "receipt" and e.receipt_for == mid)


def test_what_a_sender_asked_is_reported_and_honoured_without_the_sessions_memory(
    loop, alice, bob, users
):
    """on_message says what the sender asked; send_receipt works from that after a restart."""
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    mid = bob.send_message(ours, "remember me", request_receipt=True)
    assert events.wait_for("receipts", lambda m, _r: m == mid) == (mid, "receipt")
    session._asked.clear()  # what a new session (a restarted gateway) knows
    loop.run(session.send_receipt(theirs, mid, "delivered", "receipt"))  # kept with the row
    bob.wait_for(lambda e: e.kind == "receipt" and e.receipt_for == mid)


def test_contacts_can_discover_and_ping_the_gateway_connection(alice, bob):
    """disco#info and ping are answered without slixmpp's per-client plugins (features.py)."""
    session, _events = alice
    ours = session.client.boundjid.full
    peer = bob._client

    async def ask(kind: str, node: str | None = None):
        iq = peer.make_iq_get(ito=ours)
        if kind == "disco":
            iq.enable("disco_info")
            if node:
                iq["disco_info"]["node"] = node
        elif kind == "ping":
            iq.enable("ping")
        else:  # a request nobody here implements
            iq.enable("disco_items")
            iq.xml[0].tag = "{urn:example:unknown}query"
        try:
            return await iq.send(timeout=10)
        except IqError as exc:
            return exc.iq

    info = bob._run(ask("disco"), 20)
    assert info["type"] == "result"
    assert set(info["disco_info"]["features"]) == {
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/chatstates",
        "urn:xmpp:receipts",
        "urn:xmpp:ping",
        "http://jabber.org/protocol/xhtml-im",
    }
    assert ("client", "pc", None, "purplegw") in info["disco_info"]["identities"]
    unknown_node = bob._run(ask("disco", node="urn:example#caps"), 20)
    assert unknown_node["type"] == "error"
    assert unknown_node["error"]["condition"] == "item-not-found"
    assert bob._run(ask("ping"), 20)["type"] == "result"
    unknown = bob._run(ask("other"), 20)
    assert unknown["error"]["condition"] == "feature-not-implemented"
    # asked twice: the shared feature list is unchanged by serving it
    assert set(bob._run(ask("disco"), 20)["disco_info"]["features"]) == set(
        info["disco_info"]["features"]
    )


def test_keepalive_pings_answered_by_a_live_server_keep_the_session(loop, prosody, users, bob):
    """The keepalive's XEP-0199 ping (built without the slixmpp plugin) gets results, not errors."""
    session, events = make_session(
        loop, users[0].jid, users[0].password, config(prosody, keepalive=0.3)
    )
    loop.run(session.login())
    try:
        client = session.client
        answers: list[str] = []

        def count(iq):
            answers.append(iq["type"])

        # Every iq result or error addressed to us passes this handler too.
        client.register_handler(Callback("ping answers", MatchXPath("{jabber:client}iq"), count))
        deadline = time.monotonic() + 20
        while answers.count("result") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answers.count("result") >= 3, answers
        assert "error" not in answers
        assert [a[0] for a in events.of("state")] == [
            ConnectionState.CONNECTING,
            ConnectionState.CONNECTED,
        ]
        loop.run(session.send_message(users[1].jid, "still here", "ka-1"))
        bob.wait_for(lambda e: e.kind == "message" and e.body == "still here")
    finally:
        loop.run(session.logout())


def test_a_logged_in_client_keeps_its_instance_dict_small(alice):
    """slixmpp fills ~80 attributes; ours are slots (session.py, ``Client.__slots__``).

    CPython 3.11 grows a dict of more than 85 entries to 256 slots (~3.3 KiB
    here) where 85 fit in 128 (~1.6 KiB): one attribute too many per
    account is ~1.7 KiB at 10,000 accounts times over.
    """
    import sys

    session, _events = alice
    client = session.client
    assert client.authenticated
    assert client.stored_scram_key is not None  # a slot, set by the login
    assert len(client.__dict__) <= 85, sorted(client.__dict__)
    assert sys.getsizeof(client.__dict__) < 2048


def test_a_logged_in_stream_drops_the_parsed_peer_certificate(alice):
    # ~1.8 KiB of nested tuples per account, read by nobody after the handshake.
    session, _events = alice
    transport = session.client.transport
    assert transport.get_extra_info("peercert") is None
    assert transport.get_extra_info("cipher") is not None  # the rest of the TLS details stay
    cert = transport.get_extra_info("ssl_object").getpeercert()
    assert cert  # still there on demand, verified at the handshake
    assert "subject" in cert


def test_a_logged_in_stream_queues_its_tls_writes_in_a_list(loop, alice, bob, users):
    # asyncio's deque is ~0.7 KiB empty, and empty between writes (session.py).
    session, _events = alice
    protocol = session.client.transport._ssl_protocol
    assert type(protocol._write_backlog) is list
    text = "long " * 12_000  # several TLS records (16 KiB each), one write
    loop.run(session.send_message(users[1].jid, text, "backlog-1"))
    loop.run(session.send_message(users[1].jid, "and after it", "backlog-2"))
    got = bob.wait_for(lambda e: e.kind == "message" and e.msg_id == "backlog-2")
    assert got
    first = bob.wait_for(lambda e: e.kind == "message" and e.msg_id == "backlog-1")
    assert first.body == text
    assert protocol._write_backlog == []


def test_a_logged_in_client_schedules_no_whitespace_keepalive(alice):
    # The session pings (keepalive); slixmpp's timer would be a second one.
    session, _events = alice
    assert session.client.authenticated
    assert "Whitespace Keepalive" not in session.client.scheduled_events


def test_an_idle_session_keeps_no_stanza_waiting_for_an_ack(loop, prosody, users):
    """A write that carries stanzas ends with an <r/>: the server's <a/> lets them go.

    slixmpp asks only every 32 stanzas and keeps each one until it is
    acknowledged: an idle account kept its login's roster request and
    presence, and one keepalive ping a minute, up to 31 of them.
    """
    session, _events = make_session(
        loop, users[0].jid, users[0].password, config(prosody, keepalive=0.5, resource="idle")
    )
    loop.run(session.login())
    try:
        sm = session.client.plugin["xep_0198"]
        assert sm.enabled_out
        login_count = sm.seq
        assert login_count >= 2  # the roster request and the initial presence at least
        deadline = time.monotonic() + 20
        while sm.unacked_queue and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not sm.unacked_queue, [s.name for _seq, s in sm.unacked_queue]
        # Three keepalive pings later, none of them waits either.
        while sm.seq < login_count + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sm.seq >= login_count + 3
        while sm.unacked_queue and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not sm.unacked_queue, [s.name for _seq, s in sm.unacked_queue]
    finally:
        loop.run(session.logout())


def test_a_message_larger_than_the_tls_read_buffer_arrives_whole(loop, alice, bob, users):
    """The shrunken TLS read buffer (2 KiB) only means more reads, never a cut stanza."""
    from purplegw.protocols.xmpp.session import TLS_READ_BUFFER

    _session, events = alice
    text = "".join(f"{n:06d}ü " for n in range(3 * TLS_READ_BUFFER // 8))  # ~6 KB of UTF-8
    assert len(text.encode()) > 3 * TLS_READ_BUFFER
    bob.send_message(users[0].jid, text)
    contact, got, _ = events.wait_for("message")
    assert (contact, got) == (users[1].jid, text)


def test_the_login_parser_is_replaced_between_stanzas_and_the_stream_reads_on(
    loop, alice, bob, users
):
    """After login the stream gets a fresh XML parser (stream_parser.py); nothing is lost."""
    from purplegw.protocols.xmpp.stream_parser import StreamParser

    session, events = alice
    bob.send_message(users[0].jid, "first")
    assert events.wait_for("message")[1] == "first"
    # A chunk ending in </message> is a stanza boundary: swapped by now at the latest.
    assert not isinstance(session.client.parser, StreamParser)
    assert session.client.compact_parser_due is False
    for n in range(20):
        bob.send_message(users[0].jid, f"after {n} <&> 'q'")
    events.wait_for("message", lambda _c, text, _id: text == "after 19 <&> 'q'")
    texts = [e.args[1] for e in events.snapshot() if e.name == "message"]
    assert texts == ["first"] + [f"after {n} <&> 'q'" for n in range(20)]
    assert loop.run(session.send_message(users[1].jid, "still writing", "sip-after")) is True
    bob.wait_for(lambda e: e.kind == "message" and e.body == "still writing")


def test_an_idle_stream_parks_its_parser_and_reads_on_when_a_stanza_comes(
    loop, prosody, users, bob, monkeypatch
):
    """Idle between stanzas, a stream drops its parser and TLS read buffer; a read makes them."""
    from purplegw.protocols.xmpp import session as session_module

    monkeypatch.setattr(session_module, "PARSER_IDLE", 0.2)
    session, events = make_session(
        loop, users[0].jid, users[0].password, config(prosody, keepalive=0, resource="parks")
    )
    loop.run(session.login())
    try:
        client = session.client
        bob.send_message(users[0].jid, "wake the parser")
        assert events.wait_for("message")[1] == "wake the parser"

        def parked() -> bool:
            # The parser and the TLS read buffer both go (the loop runs in another thread).
            tls = client.transport._ssl_protocol
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if client.parser is None and len(tls._ssl_buffer) == 0:
                    return True
                time.sleep(0.02)
            return False

        for round_no in range(3):
            assert parked(), "not parked"
            for n in range(5):
                bob.send_message(users[0].jid, f"round {round_no} <{n}> & 'q'")
            events.wait_for("message", lambda _c, t, _i, r=round_no: t == f"round {r} <4> & 'q'")
        texts = [e.args[1] for e in events.snapshot() if e.name == "message"]
        assert texts == ["wake the parser"] + [
            f"round {r} <{n}> & 'q'" for r in range(3) for n in range(5)
        ]
        # Parked again, the stream still writes, and reads the server's acks.
        assert parked()
        assert loop.run(session.send_message(users[1].jid, "from a parked stream", "park-1"))
        events.wait_for("acked", lambda mid: mid == "park-1")
        bob.wait_for(lambda e: e.kind == "message" and e.body == "from a parked stream")
    finally:
        loop.run(session.logout())


def test_xhtml_im_bodies_become_plain_text(loop, alice, bob, users):
    _session, events = alice
    ours = users[0].jid
    bob.send_message(
        ours, None, msg_id="x-only", xhtml="<p>Hello <strong>bold</strong> world</p><p>line 2</p>"
    )
    _c, text, _m = events.wait_for("message", lambda c, t, m: m == "x-only")
    assert text == "Hello bold world\nline 2"
    bob.send_message(ours, "the plain body", msg_id="x-both", xhtml="<p><em>the</em> rich body</p>")
    _c, text, _m = events.wait_for("message", lambda c, t, m: m == "x-both")
    assert text == "the plain body"


def test_chat_states_both_ways(loop, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    bob.send_chat_state(ours, "composing")
    assert events.wait_for("typing") == (theirs, TypingState.COMPOSING)
    bob.send_chat_state(ours, "paused")
    events.wait_for("typing", lambda c, s: s is TypingState.PAUSED)
    loop.run(session.send_typing(theirs, TypingState.COMPOSING))
    got = bob.wait_for(lambda e: e.kind == "chat_state")
    assert (got.bare, got.chat_state, got.body) == (ours, "composing", None)


def test_invalid_contact_is_a_delivery_error(loop, alice):
    session, _events = alice
    with pytest.raises(DeliveryError) as info:
        loop.run(session.send_message("not a jid@@", "x", "bad-1"))
    assert info.value.status_hint == 404


# --- roster and presence ----------------------------------------------------------------


def test_subscription_request_and_approval_both_directions(loop, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    # we ask: roster add + subscribe reach bob; bob approves
    loop.run(session.add_contact(theirs))
    assert theirs in session.client.client_roster
    bob.wait_for(lambda e: e.kind == "subscribe" and e.bare == ours)
    bob.answer_subscription(ours, allow=True)
    assert events.wait_for("auth_answer") == (theirs, AuthorizationAnswer.ALLOW)
    # bob asks with a text; the SIP user allows
    bob.subscribe(ours, status="may I?")
    assert events.wait_for("auth_request") == (theirs, "may I?")
    loop.run(session.answer_authorization(theirs, AuthorizationAnswer.ALLOW))
    bob.wait_for(lambda e: e.kind == "subscribed" and e.bare == ours)


def test_subscription_refusals_both_directions(loop, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    loop.run(session.add_contact(theirs))
    bob.wait_for(lambda e: e.kind == "subscribe" and e.bare == ours)
    bob.answer_subscription(ours, allow=False)
    assert events.wait_for("auth_answer") == (theirs, AuthorizationAnswer.DENY)
    bob.subscribe(ours)
    events.wait_for("auth_request")
    loop.run(session.answer_authorization(theirs, AuthorizationAnswer.DENY))
    bob.wait_for(lambda e: e.kind == "unsubscribed" and e.bare == ours)
    # refused: bob never sees our presence
    loop.run(session.set_presence(Presence(Status.BUSY, note="secret")))
    # A message sent after the presence is routed after it: once bob has
    # the message, a presence broadcast to him would have arrived too.
    loop.run(session.send_message(theirs, "barrier", "barrier-1"))
    bob.wait_for(lambda e: e.kind == "message" and e.msg_id == "barrier-1")
    assert not [e for e in bob.snapshot() if e.kind == "presence" and e.status == "secret"]


def test_presence_with_show_status_and_note_both_ways(loop, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    befriend(loop, session, events, bob, ours)

    loop.run(session.set_presence(Presence(Status.BUSY, note="On the phone")))
    got = bob.wait_for(lambda e: e.kind == "presence" and e.bare == ours and e.show == "dnd")
    assert got.status == "On the phone"
    loop.run(session.set_presence(Presence(Status.AWAY, activities=("on-the-phone",))))
    got = bob.wait_for(lambda e: e.kind == "presence" and e.bare == ours and e.show == "away")
    assert got.status == "On the phone"
    loop.run(session.set_presence(Presence(Status.EXTENDED_AWAY, note="on holiday")))
    bob.wait_for(lambda e: e.kind == "presence" and e.show == "xa" and e.status == "on holiday")

    bob.send_presence(show="away", status="lunch")
    (cp,) = events.wait_for(
        "presence", lambda p: p.contact == theirs and p.aggregate.status is Status.AWAY
    )
    assert cp.resources == {"peer": Presence(Status.AWAY, note="lunch")}
    bob.send_presence(show="chat", status="talk to me")
    events.wait_for("presence", lambda p: p.aggregate == Presence(Status.CHAT, note="talk to me"))
    mark = events.mark()
    bob.send_presence(ptype="unavailable", status="bye for now")
    (cp,) = events.wait_for("presence", lambda p: p.aggregate.status is Status.OFFLINE, since=mark)
    assert cp.resources == {"peer": Presence(Status.OFFLINE, note="bye for now")}
    bob.send_presence()  # back online: the server sends him presence again

    # idle (RPID user-input) reads as away on XMPP; offline is type=unavailable
    loop.run(session.set_presence(Presence(Status.AVAILABLE, idle=True)))
    bob.wait_for(
        lambda e: e.kind == "presence" and e.bare == ours and e.show == "away" and not e.status
    )
    loop.run(session.set_presence(Presence(Status.OFFLINE, note="gone home")))
    got = bob.wait_for(lambda e: e.kind == "presence" and e.status == "gone home")
    assert (got.bare, got.ptype, got.show) == (ours, "unavailable", None)


def test_contact_presence_has_one_entry_per_resource(loop, prosody, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    befriend(loop, session, events, bob, ours)
    bob.send_presence(show="dnd", status="desk")
    events.wait_for(
        "presence", lambda p: p.resources.get("peer") == Presence(Status.BUSY, note="desk")
    )
    with XmppPeer(
        f"{theirs}/phone", users[1].password, prosody.host, prosody.port, ca_file=prosody.ca_file
    ) as phone:
        phone.send_presence(show="away", status="pocket")
        (cp,) = events.wait_for(
            "presence",
            lambda p: (
                set(p.resources) == {"peer", "phone"} and p.resources["phone"].note == "pocket"
            ),
        )
        assert cp.resources == {
            "phone": Presence(Status.AWAY, note="pocket"),
            "peer": Presence(Status.BUSY, note="desk"),
        }
        assert cp.aggregate.status is Status.AWAY  # away beats dnd in the summary order
        mark = events.mark()
    (cp,) = events.wait_for("presence", lambda p: set(p.resources) == {"peer"}, since=mark)
    assert cp.resources["peer"].status is Status.BUSY


def test_remove_contact_unsubscribes(loop, alice, bob, users):
    session, events = alice
    ours, theirs = users[0].jid, users[1].jid
    befriend(loop, session, events, bob, ours)
    loop.run(session.remove_contact(theirs))
    bob.wait_for(lambda e: e.kind == "unsubscribe" and e.bare == ours)


def test_gtalk_rows_use_the_configured_server(loop, prosody, users):
    cfg = {"ca_file": prosody.ca_file, "keepalive": 0, "gtalk_server": prosody.address}
    session, _events = make_session(
        loop, users[0].jid, users[0].password, cfg, original_protocol="gtalk"
    )
    assert session.server_address() == (prosody.host, prosody.port)
    loop.run(session.login())
    loop.run(session.logout())
    plain, _ = make_session(loop, users[0].jid, users[0].password, {}, original_protocol="gtalk")
    assert plain.server_address() == ("talk.google.com", 5222)


def test_roster_at_login_and_pushes_from_another_client(loop, prosody, alice, users):
    _session, events = alice
    ours = users[0].jid
    assert events.wait_for("roster") == ([],)  # a new account: an empty roster, said once
    other = XmppPeer(
        f"{ours}/phone", users[0].password, prosody.host, prosody.port, ca_file=prosody.ca_file
    )
    with other:
        mark = events.mark()
        other.set_roster_item("dave@example.org", "Dave <D&D>")
        (item,) = events.wait_for("roster_item", since=mark)
        assert item == RosterItem("dave@example.org", "Dave <D&D>", "none", pending_out=False)
        mark = events.mark()
        other.set_roster_item("dave@example.org", "David")
        assert events.wait_for("roster_item", since=mark)[0].name == "David"
        # A new login reports the whole roster, names included.
        again, again_events = make_session(
            loop, ours, users[0].password, config(prosody, resource="again")
        )
        loop.run(again.login())
        try:
            assert again_events.wait_for("roster") == (
                [RosterItem("dave@example.org", "David", "none")],
            )
        finally:
            loop.run(again.logout())
        mark = events.mark()
        other.set_roster_item("dave@example.org", remove=True)
        assert events.wait_for("roster_removed", since=mark) == ("dave@example.org",)
