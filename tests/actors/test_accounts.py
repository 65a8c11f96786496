"""Account actors with the dummy adapter: isolation, queueing, restart policy."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, ClassVar

import pytest

from purplegw.actors import listener
from purplegw.actors.state import ActorsConfig, Outcome
from purplegw.actors.supervisor import LocalAccounts
from purplegw.presence import Presence, Status
from purplegw.protocols.base import (
    AuthorizationAnswer,
    ConnectionState,
    DeliveryError,
    Ignore,
    OutgoingMessage,
    Session,
    SessionContext,
    TransientError,
    TypingState,
)
from purplegw.protocols.dummy import Adapter as DummyAdapter
from purplegw.protocols.dummy import DummySession

from .conftest import FAST, Recorder, row, state_of, wait_for

GOOD = 8
MISBEHAVING = {
    # sip user -> dummy ext_user that misbehaves that way
    "raiser": "raise@dummy",
    "hanger": "hang@dummy",
    "dropper": "drop@dummy",
    "badpass": "badpass@dummy",
    "flaky": "flaky@dummy",
    "sendhang": "sendhang@dummy",
    "sendraise": "sendraise@dummy",
}


def _rows() -> list[Any]:
    rows = [row(n) for n in range(GOOD)]
    for n, (sip_user, ext_user) in enumerate(MISBEHAVING.items(), start=100):
        rows.append(row(n, ext_user=ext_user, sip_user=sip_user))
    return rows


def _exchange_round(accounts: Any, recorder: Recorder, round_no: int) -> None:
    """Every good account sends one message to the next one; all arrive."""
    futures = []
    for n in range(GOOD):
        peer = (n + 1) % GOOD
        handle = accounts.directory.get(f"sip{n}", "dummy")
        futures.append(
            handle.send_message(f"user{peer}@dummy", f"r{round_no} from {n}", f"m{round_no}-{n}")
        )
    assert [f.get(timeout=20) for f in futures] == [Outcome(200, "sent")] * GOOD
    for n in range(GOOD):
        sender = f"user{(n - 1) % GOOD}@dummy"
        wait_for(
            lambda n=n, sender=sender: (
                (sender, f"r{round_no} from {(n - 1) % GOOD}") in recorder.messages_to(f"sip{n}")
            ),
            what=f"round {round_no} message to sip{n}",
        )


@pytest.mark.parametrize("runtime", ["shared_loop", "thread_per_account"])
def test_one_account_failing_never_stops_the_others(
    make_accounts: Any, recorder: Recorder, network: Any, runtime: str
) -> None:
    accounts = make_accounts(runtime=runtime, protocols={"dummy": {"drop_after": 0.1}})
    accounts.apply(_rows())
    wait_for(
        lambda: len(network.online() & {f"user{n}@dummy" for n in range(GOOD)}) == GOOD,
        what="good accounts online",
    )
    wait_for(lambda: {"sendhang@dummy", "sendraise@dummy"} <= network.online())
    # Online at the network is not yet connected at the actor (which queues a
    # send with 202 until it is): wait for what the senders below rely on.
    senders = [f"sip{n}" for n in range(GOOD)] + ["sendhang", "sendraise"]
    wait_for(
        lambda: all(state_of(accounts, u).get("state") == "connected" for u in senders),
        what="senders connected",
    )
    # While the others raise, hang, drop, reconnect and time out, the good
    # ones keep exchanging messages, round after round.
    hanging_sends = [
        accounts.directory.get("sendhang", "dummy").send_message("user0@dummy", "x", f"h{i}")
        for i in range(3)
    ]
    for round_no in range(5):
        _exchange_round(accounts, recorder, round_no)
    raising_send = accounts.directory.get("sendraise", "dummy").send_message(
        "user0@dummy", "x", "r"
    )
    assert raising_send.get(timeout=20).status == 500
    assert [f.get(timeout=20).status for f in hanging_sends] == [504, 504, 504]

    wait_for(lambda: state_of(accounts, "dropper")["reconnects"] >= 2, what="dropper reconnects")
    wait_for(lambda: state_of(accounts, "flaky")["reconnects"] >= 2, what="flaky retries")
    wait_for(lambda: state_of(accounts, "hanger")["reconnects"] >= 1, what="hanger retries")
    states = {e["sip_user"]: e for e in accounts.status()}
    assert states["badpass"]["state"] == "bad_credentials"
    assert "login timed out" in states["hanger"]["last_error"]
    assert "RuntimeError" in states["raiser"]["last_error"]
    assert states["raiser"]["state"] in ("unknown_error", "connecting")
    assert "unreachable" in states["flaky"]["last_error"]
    assert states["sendhang"]["state"] == "connected"
    for n in range(GOOD):
        entry = states[f"sip{n}"]
        assert entry["state"] == "connected"
        assert entry["reconnects"] == 0
        assert entry["messages_out"] == 5
        assert entry["messages_in"] == 5
    _exchange_round(accounts, recorder, 99)


def test_bad_credentials_are_not_retried(
    make_accounts: Any, network: Any, recorder: Recorder
) -> None:
    accounts = make_accounts()
    accounts.apply([row(1, password="wrong"), row(2)])
    wait_for(lambda: state_of(accounts, "sip1").get("state") == "bad_credentials")
    wait_for(lambda: "user2@dummy" in network.online())
    handle = accounts.directory.get("sip1", "dummy")
    assert handle.send_message("user2@dummy", "hi", "m1").get(timeout=10) == Outcome(
        403, "bad credentials"
    )
    # several backoff periods later: still exactly one attempt
    for _ in range(20):
        accounts.directory.get("sip2", "dummy").send_message("echo@dummy", "tick", "t").get(
            timeout=10
        )
    wait_for(lambda: len(recorder.messages_to("sip2")) >= 20)
    assert network.attempts["user1@dummy"] == 1
    reported = [kw["state"].value for kw in recorder.of("on_connection_state", "sip1")]
    assert reported[-1] == "bad_credentials"


def test_flapping_account_gives_up_visibly(make_accounts: Any, network: Any) -> None:
    accounts = make_accounts(
        protocols={"dummy": {"drop_after": 0.01}},
        flap_attempts=3,
        flap_window=30,
        flap_retry_in=0.1,
        flap_max_retry=1,
    )
    accounts.apply([row(1, ext_user="drop@dummy"), row(2)])
    wait_for(lambda: state_of(accounts, "sip1").get("gave_up"), what="give up")
    entry = state_of(accounts, "sip1")
    assert entry["state"] == "unknown_error"
    assert "gave up" in entry["last_error"]
    attempts = network.attempts["drop@dummy"]
    assert attempts == 6  # 2 flapping periods of 3 attempts
    handle = accounts.directory.get("sip1", "dummy")
    assert handle.send_message("x@dummy", "hi", "m").get(timeout=10).status == 480
    assert state_of(accounts, "sip2")["state"] == "connected"
    # A reload (same rows) makes it try again; the healthy account is untouched.
    network.set_behaviour("drop@dummy", "")
    accounts.apply([row(1, ext_user="drop@dummy"), row(2)])
    wait_for(lambda: state_of(accounts, "sip1")["state"] == "connected", what="retry on reload")
    assert not state_of(accounts, "sip1")["gave_up"]
    assert network.attempts["drop@dummy"] == 7
    assert network.logins["user2@dummy"] == 1


def test_state_events_say_when_the_next_try_is_and_a_login_undoes_giving_up(
    make_accounts: Any, network: Any, recorder: Recorder
) -> None:
    accounts = make_accounts(
        protocols={"dummy": {"drop_after": 0.01}},
        flap_attempts=3,
        flap_window=30,
        flap_retry_in=0.1,
        flap_max_retry=0,
    )
    started = time.time()
    accounts.apply([row(1, ext_user="drop@dummy")])
    wait_for(lambda: state_of(accounts, "sip1").get("gave_up"), what="give up")
    events = recorder.of("on_connection_state", "sip1")
    waits = [kw for kw in events if kw["state"].value == "transient_disconnect"]
    assert waits
    for kw in waits:  # POSIX time of the next attempt, within the backoff ahead
        assert started <= kw["retry_at"] <= time.time() + 5, kw
    assert "retry_at" not in events[0]  # connecting: nothing to wait for
    assert events[-1]["state"].value == "unknown_error"
    assert events[-1]["gave_up"] is True
    # The user's relogin (logout, login): a fresh start, and a working one.
    network.set_behaviour("drop@dummy", "")
    handle = accounts.directory.get("sip1", "dummy")
    assert handle.logout().get(timeout=10).status == 200
    assert handle.login().get(timeout=10).status == 202
    wait_for(lambda: state_of(accounts, "sip1")["state"] == "connected", what="relogin")
    assert not state_of(accounts, "sip1")["gave_up"]
    assert handle.send_message("x@dummy", "hi", "m").get(timeout=10).status != 480


def test_messages_queue_while_offline_then_go_out(
    make_accounts: Any, network: Any, recorder: Recorder
) -> None:
    network.set_behaviour("user1@dummy", "flaky")
    accounts = make_accounts(queue_limit=3)
    accounts.apply([row(1), row(2)])
    wait_for(lambda: state_of(accounts, "sip1").get("reconnects", 0) >= 1)
    handle = accounts.directory.get("sip1", "dummy")
    outcomes = [
        handle.send_message("user2@dummy", f"q{i}", f"q{i}").get(timeout=10) for i in range(4)
    ]
    assert [o.status for o in outcomes] == [202, 202, 202, 480]
    assert outcomes[3].reason == "queue full"
    assert handle.send_typing("user2@dummy", TypingState.COMPOSING).get(timeout=10).status == 480
    network.set_behaviour("user1@dummy", None)
    wait_for(lambda: len(recorder.messages_to("sip2")) == 3, what="queued messages delivered")
    assert recorder.messages_to("sip2") == [("user1@dummy", f"q{i}") for i in range(3)]
    results = recorder.of("on_send_result", "sip1")
    assert [(kw["message_id"], kw["outcome"].status) for kw in results] == [
        ("q0", 200),
        ("q1", 200),
        ("q2", 200),
    ]


def test_presence_contacts_typing_and_authorization(
    make_accounts: Any, network: Any, recorder: Recorder
) -> None:
    accounts = make_accounts()
    accounts.apply([row(1), row(2)])
    wait_for(lambda: network.online() == {"user1@dummy", "user2@dummy"})
    one = accounts.directory.get("sip1", "dummy")
    two = accounts.directory.get("sip2", "dummy")
    assert one.add_contact("user2@dummy").get(timeout=10).status == 200
    assert two.set_presence(Presence(Status.AWAY, note="lunch")).get(timeout=10).status == 200
    wait_for(lambda: recorder.of("on_contact_presence", "sip1"))
    presence = recorder.of("on_contact_presence", "sip1")[-1]["presence"]
    assert presence.contact == "user2@dummy"
    assert presence.resources[""].note == "lunch"
    assert two.send_typing("user1@dummy", TypingState.COMPOSING).get(timeout=10).status == 200
    wait_for(lambda: recorder.of("on_typing", "sip1"))
    assert two.answer_authorization("user1@dummy", AuthorizationAnswer.ALLOW).get(timeout=10).ok
    wait_for(lambda: recorder.of("on_authorization_answer", "sip1"))
    assert network.inject("user1@dummy", "on_authorization_request", "carol@dummy", "hi")
    wait_for(lambda: recorder.of("on_authorization_request", "sip1"))
    assert one.remove_contact("user2@dummy").get(timeout=10).ok


def test_presence_set_while_offline_is_applied_at_login(make_accounts: Any, network: Any) -> None:
    network.set_behaviour("user1@dummy", "flaky")
    accounts = make_accounts()
    accounts.apply([row(1)])
    handle = accounts.directory.get("sip1", "dummy")
    assert handle.set_presence(Presence(Status.BUSY)).get(timeout=10).status == 202
    network.set_behaviour("user1@dummy", None)
    wait_for(lambda: network.presences.get("user1@dummy") == Presence(Status.BUSY))


def test_dropped_connection_reconnects_and_keeps_counting(
    make_accounts: Any, network: Any, recorder: Recorder
) -> None:
    accounts = make_accounts()
    accounts.apply([row(1)])
    wait_for(lambda: network.session("user1@dummy"))
    first = network.session("user1@dummy")
    assert network.drop("user1@dummy")
    wait_for(lambda: network.session("user1@dummy") not in (None, first), what="new session")
    entry = state_of(accounts, "sip1")
    assert entry["reconnects"] == 1
    assert entry["last_error"] == "connection reset by test"
    # a late event from the abandoned session is ignored
    first.call_event("on_message", "ghost@dummy", "boo", None)
    handle = accounts.directory.get("sip1", "dummy")
    assert handle.send_message("echo@dummy", "ping", "p1").get(timeout=10).status == 200
    wait_for(lambda: ("echo@dummy", "ping") in recorder.messages_to("sip1"))
    assert ("ghost@dummy", "boo") not in recorder.messages_to("sip1")


def test_unknown_protocol_is_reported_not_fatal(make_accounts: Any, network: Any) -> None:
    accounts = make_accounts()
    odd = row(5)
    odd = dataclasses.replace(odd, protocol="nosuch", sip_user="odd")
    accounts.apply([odd, row(1)])
    wait_for(lambda: "user1@dummy" in network.online())
    entry = state_of(accounts, "odd")
    assert entry["state"] == "unknown_error"
    assert "protocol unavailable" in entry["last_error"]
    assert accounts.directory.get("odd", "nosuch") is None


def test_dead_account_actor_is_replaced_by_the_supervisor(make_accounts: Any, network: Any) -> None:
    import pykka

    accounts = make_accounts()
    accounts.apply([row(1), row(2)])
    wait_for(lambda: network.online() == {"user1@dummy", "user2@dummy"})
    old = accounts.directory.get("sip1", "dummy")
    first_session = network.session("user1@dummy")
    # An unhandled exception in a told message kills the actor (pykka policy).
    old.ref.tell(pykka.messages.ProxyCall(attr_path=("no_such_method",), args=(), kwargs={}))
    wait_for(lambda: accounts.directory.get("sip1", "dummy") is not old, what="replacement")
    wait_for(lambda: network.session("user1@dummy") not in (None, first_session))
    assert network.logins["user1@dummy"] == 2
    assert network.logins["user2@dummy"] == 1
    wait_for(lambda: not first_session._online, what="the dead actor's session logged out")
    new = accounts.directory.get("sip1", "dummy")
    assert new.send_message("echo@dummy", "hi", "m").get(timeout=10).status == 200


# --- adapter exceptions -> outcomes (purplegw.protocols.errors) ---------------

RAISING_OPS = {
    # op -> the arguments an AccountHandle call takes
    "send_message": ("user0@dummy", "hi", "m1"),
    "send_typing": ("user0@dummy", TypingState.COMPOSING),
    "set_presence": (Presence(Status.AWAY),),
    "add_contact": ("user0@dummy",),
    "remove_contact": ("user0@dummy",),
    "answer_authorization": ("user0@dummy", AuthorizationAnswer.ALLOW),
}


class _RaisingSession(DummySession):
    """A dummy session whose requests raise what ``RAISE[op]`` holds."""

    RAISE: ClassVar[dict[str, BaseException]] = {}

    def __getattribute__(self, name: str) -> Any:
        if name in RAISING_OPS and name in _RaisingSession.RAISE:
            error = _RaisingSession.RAISE[name]

            async def raising(*_args: Any) -> None:
                raise error

            return raising
        return super().__getattribute__(name)


class _RaisingAdapter(DummyAdapter):
    def create_session(self, credentials: Any, context: Any) -> DummySession:
        return _RaisingSession(credentials, context)


@pytest.mark.parametrize(
    ("error", "status", "logged"),
    [
        (NotImplementedError(), 501, False),
        (Ignore("duplicate"), 200, False),
        (DeliveryError("no such contact", 404), 404, False),
        (TransientError("server busy"), 503, False),
        (ConnectionResetError("reset"), 503, False),
        (KeyError("adapter bug"), 500, True),
    ],
)
def test_every_adapter_call_maps_its_exception_through_protocols_errors(
    network: Any,
    error: BaseException,
    status: int,
    logged: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """501 for NotImplementedError, drop for Ignore, the hint, 500 + a log line for a bug."""
    del network  # fixture: resets the dummy network around the test
    config = ActorsConfig.from_section({"login_timeout": 5.0, "send_timeout": 5.0})
    accounts = LocalAccounts(config, _Lookup(_RaisingAdapter()), {"dummy": {"enabled": True}})
    try:
        accounts.apply([row(0)])
        wait_for(lambda: state_of(accounts, "sip0").get("state") == "connected")
        handle = accounts.directory.get("sip0", "dummy")
        _RaisingSession.RAISE = dict.fromkeys(RAISING_OPS, error)
        with caplog.at_level(logging.ERROR, logger="purplegw.protocols.errors"):
            outcomes = {
                op: getattr(handle, op)(*args).get(timeout=10) for op, args in RAISING_OPS.items()
            }
        assert {op: o.status for op, o in outcomes.items()} == dict.fromkeys(RAISING_OPS, status)
        errors = {r.getMessage().split(" ")[0] for r in caplog.records}
        assert errors == (set(RAISING_OPS) if logged else set())
        if isinstance(error, Ignore):
            assert all("dropped" in o.reason for o in outcomes.values())
        # Only a bug in the adapter is worth a traceback; none of these ends the connection.
        assert state_of(accounts, "sip0")["state"] == "connected"
        assert state_of(accounts, "sip0")["messages_out"] == 0
    finally:
        _RaisingSession.RAISE = {}
        accounts.stop()


class _Lookup:
    def __init__(self, adapter: Any) -> None:
        self._adapter = adapter

    def get(self, protocol_id: str) -> Any:
        assert protocol_id == "dummy"
        return self._adapter


# --- message pipeline: poison messages, stanza errors, bounce, receipts, sent_at ----


class _LedgerSession(Session):
    """A session with an acknowledgement ledger, as XEP-0198 gives XMPP.

    Writing the text "poison" kills the connection before the server acks
    it (what Prosody does with a stanza it cannot take); "refused" comes back
    as a stanza error; anything else is acknowledged.
    """

    written: ClassVar[list[str]] = []
    contexts: ClassVar[list[SessionContext]] = []
    not_connected_once: ClassVar[set[str]] = set()

    def __init__(self, credentials: Any, context: SessionContext) -> None:
        super().__init__(credentials, context)
        self._unacked: list[OutgoingMessage] = []
        _LedgerSession.contexts.append(context)

    async def login(self) -> None:
        return

    async def logout(self) -> None:
        return

    async def send_message(
        self, contact: str, text: str, message_id: str, receipt: bool = False
    ) -> bool:
        _LedgerSession.written.append(message_id)
        if message_id in _LedgerSession.not_connected_once:
            _LedgerSession.not_connected_once.discard(message_id)
            raise DeliveryError("not connected", 503)
        events, loop = self.context.events, self.context.loop
        if text == "refused":
            loop.call_soon(events.on_message_failed, message_id, 403, "XMPP forbidden")
            return True
        self._unacked.append(OutgoingMessage(contact, text, message_id))
        if text == "poison":
            loop.call_soon(
                events.on_connection_state,
                ConnectionState.TRANSIENT_DISCONNECT,
                "stream closed: not-well-formed",
            )
        else:
            loop.call_soon(self._ack, message_id)
        return True

    def _ack(self, message_id: str) -> None:
        self._unacked = [m for m in self._unacked if m.message_id != message_id]
        self.context.events.on_message_acked(message_id)

    def unacked_messages(self) -> list[OutgoingMessage]:
        return list(self._unacked)


class _LedgerAdapter(DummyAdapter):
    def create_session(self, credentials: Any, context: Any) -> Session:
        return _LedgerSession(credentials, context)


@pytest.fixture
def ledger_accounts(network: Any) -> Any:
    del network
    _LedgerSession.written = []
    _LedgerSession.contexts = []
    config = ActorsConfig.from_section(FAST)
    accounts = LocalAccounts(
        config, _Lookup(_LedgerAdapter()), {"dummy": {"enabled": True, "strangers": "deny"}}
    )
    accounts.apply([row(0)])
    wait_for(lambda: state_of(accounts, "sip0").get("state") == "connected")
    yield accounts
    accounts.stop()


def _results(recorder: Recorder) -> dict[str, Outcome]:
    """Final outcomes by message id (a 202 "written" report may come after the ack)."""
    return {
        kw["message_id"]: kw["outcome"]
        for kw in recorder.of("on_send_result")
        if kw["outcome"].status != 202
    }


def test_a_message_the_stream_dies_on_twice_is_quarantined_and_the_rest_flow(
    ledger_accounts: Any,
    recorder: Recorder,
) -> None:
    handle = ledger_accounts.directory.get("sip0", "dummy")
    outcomes = [
        handle.send_message("bob@dummy", text, mid).get(timeout=10)
        for text, mid in (("before", "m1"), ("poison", "p1"), ("after", "m2"))
    ]
    assert [o.status for o in outcomes] == [202, 202, 202]
    wait_for(
        lambda: "m2" in _results(recorder) and "p1" in _results(recorder),
        what="every message settled",
    )
    results = _results(recorder)
    assert results["p1"] == Outcome(488, "the server closed the stream on this message")
    assert results["m1"].status == results["m2"].status == 200
    # Written once per connection it killed, never a third time.
    assert _LedgerSession.written.count("p1") == 2
    assert _LedgerSession.written.count("m2") == 1
    # The account is back and takes the next message at once.
    assert handle.send_message("bob@dummy", "next", "m3").get(timeout=10).status == 202
    wait_for(lambda: _results(recorder).get("m3") == Outcome(200, "acknowledged by the server"))
    assert state_of(ledger_accounts, "sip0")["state"] == "connected"


def test_a_message_we_own_is_kept_when_the_session_says_not_connected(
    ledger_accounts: Any,
    recorder: Recorder,
) -> None:
    """A 503 for a message already answered 202 is tried again, not reported."""
    handle = ledger_accounts.directory.get("sip0", "dummy")
    assert handle.logout().get(timeout=10).status == 200
    _LedgerSession.not_connected_once.add("n1")
    assert handle.send_message("bob@dummy", "hello", "n1").get(timeout=10).status == 202
    assert handle.login().get(timeout=10).status == 202
    wait_for(lambda: "n1" in _results(recorder))
    assert _results(recorder)["n1"] == Outcome(200, "acknowledged by the server")
    assert _LedgerSession.written.count("n1") == 2
    assert all(kw["outcome"].status != 503 for kw in recorder.of("on_send_result"))


def test_a_stanza_error_fails_the_message_for_good(
    ledger_accounts: Any,
    recorder: Recorder,
) -> None:
    handle = ledger_accounts.directory.get("sip0", "dummy")
    assert handle.send_message("bob@dummy", "refused", "r1").get(timeout=10).status == 202
    wait_for(lambda: "r1" in _results(recorder))
    assert _results(recorder)["r1"] == Outcome(403, "XMPP forbidden")
    assert _LedgerSession.written.count("r1") == 1


def test_bounce_and_send_receipt_default_to_501_and_strangers_reach_the_session(
    ledger_accounts: Any,
) -> None:
    handle = ledger_accounts.directory.get("sip0", "dummy")
    assert handle.bounce("bob@dummy", "x1", 488, "no").get(timeout=10).status == 501
    assert handle.send_receipt("bob@dummy", "x1", "delivered").get(timeout=10).status == 501
    assert _LedgerSession.contexts[-1].strangers == "deny"


def test_sent_at_is_carried_only_when_the_network_gave_it(
    ledger_accounts: Any,
    recorder: Recorder,
) -> None:
    events = _LedgerSession.contexts[-1].events
    loop = _LedgerSession.contexts[-1].loop
    loop.call_soon_threadsafe(events.on_message, "bob@dummy", "old news", "i1", 1_700_000_000.5)
    loop.call_soon_threadsafe(events.on_message, "bob@dummy", "fresh", "i2")
    wait_for(lambda: len(recorder.of("on_message", "sip0")) == 2)
    first, second = recorder.of("on_message", "sip0")
    assert first["sent_at"] == 1_700_000_000.5
    assert "sent_at" not in second  # a sink without the keyword still works


class _OldSink(listener.EventSink):
    def __init__(self) -> None:
        self.got: list[str] = []

    def on_message(self, account: Any, contact: str, text: str, message_id: str | None) -> None:
        del account, contact, message_id
        self.got.append(text)


def test_an_event_sink_without_sent_at_still_gets_messages(
    ledger_accounts: Any,
) -> None:
    sink = _OldSink()
    listener.add_sink(sink)
    try:
        context = _LedgerSession.contexts[-1]
        context.loop.call_soon_threadsafe(context.events.on_message, "bob@dummy", "hi", "i3")
        wait_for(lambda: sink.got == ["hi"])
    finally:
        listener.remove_sink(sink)


class _OldActorSink(listener.EventSink):
    """An EventSink written before ``sent_at``: it must still get delayed messages."""

    def __init__(self) -> None:
        self.got: list[str] = []

    def on_message(self, account: Any, contact: str, text: str, message_id: str | None) -> None:
        del account, contact, message_id
        self.got.append(text)


def test_a_sink_without_sent_at_gets_delayed_messages_too() -> None:
    sink = _OldActorSink()
    sink.on_event(
        "on_message", account=None, contact="bob@dummy", text="late", message_id="i9", sent_at=1.0
    )
    assert sink.got == ["late"]


def test_a_connected_account_takes_a_burst_larger_than_queue_limit(
    make_accounts: Any, recorder: Recorder
) -> None:
    """queue_limit bounds what an offline account keeps, not one group commit's burst."""
    from purplegw.actors.loop import shared_loop

    accounts = make_accounts(queue_limit=3)
    accounts.apply([row(1), row(2)])
    wait_for(lambda: state_of(accounts, "sip1")["state"] == "connected")
    wait_for(lambda: state_of(accounts, "sip2")["state"] == "connected")
    handle = accounts.directory.get("sip1", "dummy")
    futures: list[Any] = []
    burst_sent = threading.Event()

    def burst() -> None:
        # On the loop: all ten requests are queued before the drain runs once.
        futures.extend(handle.send_message("user2@dummy", f"b{i}", f"b{i}") for i in range(10))
        burst_sent.set()

    shared_loop().loop.call_soon_threadsafe(burst)
    assert burst_sent.wait(10)
    assert [f.get(timeout=10).status for f in futures] == [200] * 10
    wait_for(lambda: len(recorder.messages_to("sip2")) == 10, what="burst delivered")
    assert recorder.messages_to("sip2") == [("user1@dummy", f"b{i}") for i in range(10)]


def test_an_idle_account_keeps_no_drain_and_the_next_request_starts_one(
    make_accounts: Any, network: Any, recorder: Recorder
) -> None:
    # The outbox drain is a task only while there is work (~0.8 KiB less per
    # idle account than a task parked on a waiter for the connection's life).
    accounts = make_accounts()
    accounts.apply([row(1), row(2)])
    wait_for(lambda: state_of(accounts, "sip1")["state"] == "connected")
    wait_for(lambda: state_of(accounts, "sip2")["state"] == "connected")
    handle = accounts.directory.get("sip1", "dummy")
    actor = handle.ref._actor_weakref()
    for round_no in range(3):
        wait_for(lambda: actor._drain_task is None, what="drain ended")
        outcome = handle.send_message("user2@dummy", f"r{round_no}", f"r{round_no}")
        assert outcome.get(timeout=10).status == 200
    wait_for(lambda: len(recorder.messages_to("sip2")) == 3, what="three rounds delivered")
    assert recorder.messages_to("sip2") == [("user1@dummy", f"r{n}") for n in range(3)]
    wait_for(lambda: actor._drain_task is None, what="drain ended")
    # Lost and back: the new connection drains what comes next.
    first = network.session("user1@dummy")
    assert network.drop("user1@dummy")
    wait_for(lambda: network.session("user1@dummy") not in (None, first), what="new session")
    wait_for(lambda: state_of(accounts, "sip1")["state"] == "connected")
    assert handle.send_message("user2@dummy", "late", "late").get(timeout=10).status == 200
    wait_for(lambda: ("user1@dummy", "late") in recorder.messages_to("sip2"), what="late one")
    wait_for(lambda: actor._drain_task is None, what="drain ended")
