"""Non-INVITE transactions driven by a fake clock, alone and back to back."""

from __future__ import annotations

import gc

import pytest

from purplegw.sip.actions import CancelTimer, DeliverToTU, Send, StartTimer, Terminated
from purplegw.sip.errors import LocalProtocolError
from purplegw.sip.message import Request, Response, make_response
from purplegw.sip.parser import parse_datagram
from purplegw.sip.transaction import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientTransaction,
    ServerTransaction,
    State,
    Timers,
    TransactionLayer,
    server_key,
)
from tests.kit.corpus import corpus_dir
from tests.kit.sip_pair import SipPair
from tests.kit.sipmsg import make_request

T = Timers(t1=0.5, t2=4.0, t4=5.0)


def test_tables_are_literal_dicts_of_states() -> None:
    for table in (CLIENT_TRANSITIONS, SERVER_TRANSITIONS):
        assert all(isinstance(s, State) and isinstance(e, str) for s, e in table)
        assert all(isinstance(v, State) for v in table.values())


def test_client_start_unreliable_arms_e_and_f() -> None:
    txn = ClientTransaction(make_request(), ("127.0.0.1", 5060), timers=T)
    actions = txn.start()
    assert isinstance(actions[0], Send)
    assert StartTimer("timer_e", 0.5) in actions
    assert StartTimer("timer_f", 32.0) in actions


def test_client_start_reliable_has_no_timer_e() -> None:
    txn = ClientTransaction(make_request(), None, reliable=True, timers=T)
    assert [a for a in txn.start() if isinstance(a, StartTimer)] == [StartTimer("timer_f", 32.0)]


def test_timer_e_doubles_up_to_t2_then_f_times_out() -> None:
    txn = ClientTransaction(make_request(), None, timers=T)
    txn.start()
    intervals = []
    for _ in range(6):
        actions = txn.on_timer("timer_e")
        assert isinstance(actions[0], Send)
        (timer,) = [a for a in actions if isinstance(a, StartTimer)]
        intervals.append(timer.seconds)
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    actions = txn.on_timer("timer_f")
    assert DeliverToTU(None, timeout=True) in actions
    assert isinstance(actions[-1], Terminated)
    assert txn.state is State.TERMINATED


def test_provisional_then_timer_e_uses_t2() -> None:
    req = make_request()
    txn = ClientTransaction(req, None, timers=T)
    txn.start()
    actions = txn.receive_response(make_response(req, 100))
    assert actions == [DeliverToTU(actions[0].message)]  # type: ignore[union-attr]
    assert txn.state is State.PROCEEDING
    assert StartTimer("timer_e", 4.0) in txn.on_timer("timer_e")


def test_final_response_completes_then_k_terminates_and_absorbs_retransmissions() -> None:
    req = make_request()
    txn = ClientTransaction(req, None, timers=T)
    txn.start()
    ok = make_response(req, 200, to_tag="t")
    actions = txn.receive_response(ok)
    assert actions[0] == DeliverToTU(ok)
    assert CancelTimer("timer_e") in actions
    assert CancelTimer("timer_f") in actions
    assert StartTimer("timer_k", 5.0) in actions
    assert txn.receive_response(ok) == []
    assert txn.on_timer("timer_e") == []  # stale timer after cancel: ignored
    assert txn.on_timer("timer_k") == [Terminated("completed")]


def test_reliable_final_terminates_at_once() -> None:
    req = make_request()
    txn = ClientTransaction(req, None, reliable=True, timers=T)
    txn.start()
    actions = txn.receive_response(make_response(req, 404))
    assert isinstance(actions[-1], Terminated)
    assert txn.state is State.TERMINATED


def test_client_transport_error() -> None:
    txn = ClientTransaction(make_request(), None, timers=T)
    txn.start()
    actions = txn.transport_error()
    assert DeliverToTU(None, transport_error=True) in actions
    assert txn.state is State.TERMINATED


def test_client_refuses_invite() -> None:
    with pytest.raises(LocalProtocolError):
        ClientTransaction(make_request("INVITE"), None)


def test_server_absorbs_then_replays_last_response() -> None:
    req = make_request()
    txn = ServerTransaction(req, ("127.0.0.1", 5070), timers=T)
    assert txn.start() == [DeliverToTU(req)]
    assert txn.receive_request(req) == []  # Trying: absorbed
    trying = make_response(req, 100)
    assert txn.send_response(trying) == [Send(trying, ("127.0.0.1", 5070))]
    assert txn.receive_request(req) == [Send(trying, ("127.0.0.1", 5070))]
    ok = make_response(req, 200, to_tag="x")
    actions = txn.send_response(ok)
    assert actions == [Send(ok, ("127.0.0.1", 5070)), StartTimer("timer_j", 32.0)]
    assert txn.receive_request(req) == [Send(ok, ("127.0.0.1", 5070))]
    with pytest.raises(LocalProtocolError):
        txn.send_response(make_response(req, 500))
    assert txn.on_timer("timer_j") == [Terminated("completed")]
    assert txn.state is State.TERMINATED


def test_server_reliable_final_terminates() -> None:
    req = make_request()
    txn = ServerTransaction(req, None, reliable=True, timers=T)
    txn.start()
    actions = txn.send_response(make_response(req, 200, to_tag="x"))
    assert isinstance(actions[-1], Terminated)


def test_layer_matches_retransmission_by_branch_and_sent_by() -> None:
    layer = TransactionLayer(T)
    req = make_request(branch="z9hG4bK-abc")
    first = layer.receive_request(req, ("127.0.0.1", 5070))
    assert [a for _, a in first] == [DeliverToTU(req)]
    again = parse_datagram(
        b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-abc\r\n"
        b"From: <sip:x@y>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\nCall-ID: other\r\nCSeq: 9 MESSAGE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert isinstance(again, Request)
    assert layer.receive_request(again, ("127.0.0.1", 5070)) == []  # same key: absorbed
    # a different sent-by with the same branch is a different transaction (17.2.3)
    other = make_request(branch="z9hG4bK-abc", via="SIP/2.0/UDP 127.0.0.2:5070")
    assert len(layer.receive_request(other, None)) == 1
    assert len(layer.servers) == 2


def test_rfc2543_fallback_key_for_badbranch() -> None:
    msg = parse_datagram((corpus_dir() / "rfc4475" / "badbranch.dat").read_bytes())
    assert isinstance(msg, Request)
    key = server_key(msg)
    assert key[0] == "2543"
    assert msg.call_id in key
    layer = TransactionLayer(T)
    assert len(layer.receive_request(msg, None)) == 1
    assert layer.receive_request(msg, None) == []  # matched by the fallback key


def test_layer_drops_unmatched_response() -> None:
    layer = TransactionLayer(T)
    assert layer.receive_response(make_response(make_request(), 200)) == []


def test_pair_round_trip_and_timer_k_cleanup() -> None:
    pair = SipPair(T)
    pair.server.on_request = lambda r: [make_response(r, 200, to_tag="srv")]
    req = make_request(body=b"hi", content_type="text/plain")
    pair.send_request(req)
    (got,) = pair.server.delivered
    assert isinstance(got.message, Request)
    assert got.message.body == b"hi"
    (resp,) = [d for d in pair.client.delivered if d.message is not None]
    assert isinstance(resp.message, Response)
    assert resp.message.status == 200
    assert resp.message.to is not None
    assert resp.message.to.tag == "srv"
    assert pair.client.layer.clients  # Completed, waiting for timer K
    pair.advance(5.0)
    assert not pair.client.layer.clients
    pair.advance(32.0)
    assert not pair.server.layer.servers


def test_pair_lost_request_is_retransmitted_on_schedule() -> None:
    pair = SipPair(T)
    pair.server.on_request = lambda r: [make_response(r, 202)]
    lost = {"n": 3}

    def drop(ep, msg):
        if ep is pair.client and lost["n"]:
            lost["n"] -= 1
            return True
        return False

    pair.drop = drop
    pair.send_request(make_request())
    pair.advance(10)
    times = [t for t, _ in pair.client.sent]
    assert times == [0.0, 0.5, 1.5, 3.5]  # E = 0.5, 1, 2 ... then it got through
    assert [d.message.status for d in pair.client.delivered if d.message] == [202]  # type: ignore[union-attr]


def test_pair_lost_response_is_replayed_from_server_transaction() -> None:
    pair = SipPair(T)
    calls = []

    def respond(r: Request) -> list[Response]:
        calls.append(r)
        return [make_response(r, 200, to_tag="a")]

    pair.server.on_request = respond
    dropped = {"n": 1}

    def drop(ep, msg):
        if ep is pair.server and dropped["n"]:
            dropped["n"] -= 1
            return True
        return False

    pair.drop = drop
    pair.send_request(make_request())
    pair.advance(0.5)  # timer E retransmits; server replays its 200
    assert len(calls) == 1  # the TU saw the request once
    assert len(pair.server.sent) == 2
    assert [d.message.status for d in pair.client.delivered if d.message] == [200]  # type: ignore[union-attr]


def test_pair_timeout_reaches_tu_at_64_t1() -> None:
    pair = SipPair(T)
    pair.drop = lambda ep, msg: True
    pair.send_request(make_request())
    pair.advance(31.9)
    assert pair.client.delivered == []
    pair.advance(0.2)
    assert pair.client.delivered == [DeliverToTU(None, timeout=True)]
    assert not pair.client.layer.clients
    # 0, .5, 1.5, 3.5, 7.5, 11.5, ... every 4 s up to 32
    assert [t for t, _ in pair.client.sent] == [
        0,
        0.5,
        1.5,
        3.5,
        7.5,
        11.5,
        15.5,
        19.5,
        23.5,
        27.5,
        31.5,
    ]


def test_pair_reliable_has_no_retransmissions() -> None:
    pair = SipPair(T, reliable=True)
    pair.drop = lambda ep, msg: True
    pair.send_request(make_request())
    pair.advance(40)
    assert len(pair.client.sent) == 1
    assert pair.client.delivered == [DeliverToTU(None, timeout=True)]


# ---- the driver methods the SIP front uses ---------------------------------


def test_driver_server_lifecycle_with_context_and_wire_form() -> None:
    layer = TransactionLayer(T)
    req = make_request(branch="z9hG4bK-drv")
    key = server_key(req)
    assert layer.find_server(key) is None
    source = object()
    txn = layer.create_server(req, key, context=source)
    assert layer.find_server(key) is txn
    assert txn.context is source
    assert txn.key == key
    assert layer.start(txn) == [DeliverToTU(req)]
    assert layer.retransmitted(txn, req) == []  # Trying absorbs
    ok = make_response(req, 202, to_tag="x")
    assert layer.respond(txn, ok) == [Send(ok), StartTimer("timer_j", 32.0)]
    assert txn.answered
    assert layer.retransmitted(txn, req) == [Send(ok)]
    wire = b"SIP/2.0 202 Accepted\r\n\r\n"
    layer.keep_wire(txn, wire, ("127.0.0.1", 5070))
    assert txn.request is None
    assert txn.last_response is wire
    assert txn.state is State.TERMINATED
    assert txn.answered
    # filed as a tuple the garbage collector leaves alone, the machine let go
    assert not layer.servers
    assert layer.has_server(key)
    gc.collect()
    assert not gc.is_tracked(layer.completed[key])
    assert layer.completed[key] == (wire, "127.0.0.1", 5070)  # flat
    again = layer.find_server(key)  # a retransmission brings it back as a machine
    assert again is not None
    assert again is not txn
    assert again.state is State.COMPLETED
    assert again.context is None
    assert again.key == key
    assert layer.retransmitted(again, req) == [Send(wire, ("127.0.0.1", 5070))]
    with pytest.raises(LocalProtocolError):
        layer.respond(again, make_response(req, 500))
    assert layer.fire(again, "timer_j") == [Terminated("completed")]
    assert layer.find_server(key) is None  # forgotten before the driver sees Terminated
    assert not layer.has_server(key)


def test_wire_form_completed_ends_on_timer_j_without_a_machine() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    txn = layer.create_server(req)
    layer.start(txn)
    layer.respond(txn, make_response(req, 200))
    layer.keep_wire(txn, b"bytes", ("127.0.0.1", 5070))
    assert layer.end_completed(txn.key, "timer_x")  # taken, nothing to do
    assert layer.has_server(txn.key)
    assert layer.end_completed(txn.key, "timer_j")
    assert not layer.has_server(txn.key)
    assert not layer.completed
    assert not layer.end_completed(txn.key, "timer_j")  # not such an entry (any more)
    # the key-based face ends it the same way
    other = make_request(branch="z9hG4bK-kb")
    layer.receive_request(other, None)
    layer.send_response(other, make_response(other, 200))
    moved = layer.find_server(server_key(other))
    assert moved is not None
    layer.keep_wire(moved, b"ok")
    assert layer.on_timer(moved.key, "timer_e") == []
    assert layer.on_timer(moved.key, "timer_j") == [(moved.key, Terminated("completed"))]
    assert not layer.has_server(moved.key)


def test_keep_wire_before_the_final_response_changes_nothing() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    txn = layer.create_server(req)
    layer.start(txn)
    layer.keep_wire(txn, b"bytes")
    assert txn.request is req
    assert txn.last_response is None
    assert layer.find_server(txn.key) is txn
    assert not layer.completed


def test_create_server_refuses_a_second_transaction_and_invite() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    layer.create_server(req)
    with pytest.raises(LocalProtocolError):
        layer.create_server(req)
    with pytest.raises(LocalProtocolError):
        layer.create_server(make_request("INVITE"))


def test_reliable_final_response_forgets_the_transaction() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    txn = layer.create_server(req, reliable=True)
    layer.start(txn)
    actions = layer.respond(txn, make_response(req, 200, to_tag="x"))
    assert actions[-1] == Terminated("completed")
    assert not layer.servers


def test_tu_deadline_answers_500_and_completes() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    txn = layer.create_server(req)
    layer.start(txn)
    assert layer.expect_answer(txn, 30.0) == [StartTimer("timer_tu", 30.0)]
    actions = layer.fire(txn, "timer_tu")
    assert actions[0] == DeliverToTU(None, timeout=True)
    (send,) = [a for a in actions if isinstance(a, Send)]
    assert isinstance(send.message, Response)
    assert send.message.status == 500
    assert actions[-1] == StartTimer("timer_j", 32.0)
    assert txn.state is State.COMPLETED
    with pytest.raises(LocalProtocolError):  # the TU's late answer is refused
        layer.respond(txn, make_response(req, 202))
    assert layer.retransmitted(txn, req) == [send]


def test_tu_deadline_is_cancelled_by_the_answer_and_a_late_timer_is_ignored() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    txn = layer.create_server(req)
    layer.start(txn)
    layer.expect_answer(txn, 30.0)
    ok = make_response(req, 202)
    assert layer.respond(txn, ok) == [
        Send(ok),
        CancelTimer("timer_tu"),
        StartTimer("timer_j", 32.0),
    ]
    assert layer.fire(txn, "timer_tu") == []
    assert layer.expect_answer(txn, 30.0) == []  # answered already
    # never armed: a stray timer_tu in Trying sends nothing
    other = layer.create_server(make_request(branch="z9hG4bK-other"))
    layer.start(other)
    assert layer.fire(other, "timer_tu") == []


def test_server_transport_error_forgets_and_cancels_the_deadline() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    txn = layer.create_server(req, reliable=True)
    layer.start(txn)
    layer.expect_answer(txn, 30.0)
    actions = layer.transport_error(txn)
    assert CancelTimer("timer_tu") in actions
    assert DeliverToTU(None, transport_error=True) in actions
    assert not layer.servers


def test_driver_client_lifecycle() -> None:
    layer = TransactionLayer(T)
    req = make_request(branch="z9hG4bK-out")
    future = object()
    txn = layer.create_client(req, context=future)
    assert layer.find_client(txn.key) is txn
    assert txn.context is future
    assert isinstance(layer.start(txn)[0], Send)
    with pytest.raises(LocalProtocolError):  # the branch is taken
        layer.create_client(req)
    ok = make_response(req, 200, to_tag="t")
    assert layer.response_received(txn, ok)[0] == DeliverToTU(ok)
    assert layer.fire(txn, "timer_k") == [Terminated("completed")]
    assert layer.find_client(txn.key) is None
    other = layer.create_client(make_request(branch="z9hG4bK-out2"))
    layer.start(other)
    assert layer.transport_error(other)[-1] == Terminated("transport error")
    assert not layer.clients


def test_discard_forgets_only_the_transaction_filed() -> None:
    layer = TransactionLayer(T)
    req = make_request()
    txn = layer.create_server(req)
    layer.discard(txn)
    assert layer.find_server(txn.key) is None
    again = layer.create_server(req)
    layer.discard(txn)  # the old object: the new transaction under its key stays
    assert layer.find_server(again.key) is again
