"""The SIP front over real loopback sockets: transactions, error answers, stream framing, limits."""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors.front.front import FrontConfig, SipFront, StaticRouter
from purplegw.actors.front.transport import Address, parse_listen
from purplegw.sip.headers import Headers
from purplegw.sip.message import Request, make_response
from purplegw.sip.parser import NEED_DATA, StreamParser, parse_datagram
from tests.kit.certs import write_self_signed_cert
from tests.kit.corpus import corpus_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

TIMEOUT = 10.0


def wait_for(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


def sip_request(
    method: str,
    port: int,
    lport: int,
    *,
    transport: str = "UDP",
    user: str = "alice",
    branch: str = "z9hG4bK-t1",
    call_id: str = "c1@127.0.0.1",
    body: bytes = b"",
    extra: str = "",
    cseq_method: str | None = None,
) -> bytes:
    head = (
        f"{method} sip:{user}@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{lport};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:tester@127.0.0.1:{lport}>;tag=ft1\r\n"
        f"To: <sip:{user}@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class UdpPeer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    def recv(self, timeout: float = TIMEOUT) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(65535)

    def nothing_within(self, seconds: float) -> bool:
        self.sock.settimeout(seconds)
        try:
            self.sock.recv(65535)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def router() -> StaticRouter:
    return StaticRouter(users={"alice"})


@pytest.fixture
def front(router: StaticRouter) -> Iterator[SipFront]:
    config = {
        "listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"],
        "tcp_idle_timeout": 30,
        "max_connections": 8,
    }
    with SipFront(config, router) as f:
        yield f


@pytest.fixture
def peer() -> Iterator[UdpPeer]:
    p = UdpPeer()
    yield p
    p.close()


def port_of(front: SipFront, transport: str) -> int:
    return next(lst.port for lst in front.listeners if lst.transport == transport)


# ---- UDP: transactions and answers ---------------------------------------------


def test_retransmitted_message_gets_same_answer_and_reaches_router_once(front, router, peer):
    port = port_of(front, "udp")
    data = sip_request("MESSAGE", port, peer.port, body=b"hi", extra="Content-Type: text/plain\r\n")
    peer.send(data, port)
    first = peer.recv()
    peer.send(data, port)
    second = peer.recv()
    assert first.startswith(b"SIP/2.0 202 ")
    assert first == second
    assert len(router.received) == 1
    assert router.received[0].body == b"hi"
    assert front.stats["retransmissions"] == 1


def test_response_carries_received_and_rport_and_goes_to_source_port(front, peer):
    port = port_of(front, "udp")
    # the Via claims another host and port; rport asks for the packet's source
    data = sip_request("OPTIONS", port, peer.port).replace(
        f"127.0.0.1:{peer.port};branch".encode(), b"192.0.2.1:5999;branch"
    )
    peer.send(data, port)
    response = parse_datagram(peer.recv())
    via = response.top_via
    assert via.received == "127.0.0.1"
    assert via.rport == peer.port


def test_options_lists_capabilities(front, peer):
    port = port_of(front, "udp")
    peer.send(sip_request("OPTIONS", port, peer.port), port)
    response = parse_datagram(peer.recv())
    assert response.status == 200
    allow = set(response.headers.getall("Allow"))
    assert {"MESSAGE", "SUBSCRIBE", "OPTIONS"} <= allow
    assert "INVITE" not in allow
    assert "application/pidf+xml" in response.headers.getall("Accept")
    assert response.headers.getall("Supported")


def test_invite_is_refused_with_405_and_allow_statelessly(front, peer):
    port = port_of(front, "udp")
    invite = sip_request(
        "INVITE", port, peer.port, branch="z9hG4bK-inv", extra="Contact: <sip:t@127.0.0.1>\r\n"
    )
    peer.send(invite, port)
    response = parse_datagram(peer.recv())
    assert response.status == 405
    assert "MESSAGE" in response.headers.getall("Allow")
    assert "INVITE" not in response.headers.getall("Allow")
    assert response.to.tag
    # a retransmitted INVITE is answered again, the ACK is absorbed silently
    peer.send(invite, port)
    assert parse_datagram(peer.recv()).status == 405
    peer.send(sip_request("ACK", port, peer.port, branch="z9hG4bK-inv"), port)
    assert peer.nothing_within(0.3)


def test_unknown_method_gets_501_with_allow_and_known_unsupported_405(front, peer):
    port = port_of(front, "udp")
    peer.send(sip_request("FROBNICATE", port, peer.port, branch="z9hG4bK-u1"), port)
    response = parse_datagram(peer.recv())
    assert response.status == 501
    assert "MESSAGE" in response.headers.getall("Allow")
    peer.send(sip_request("REFER", port, peer.port, branch="z9hG4bK-u2"), port)
    response = parse_datagram(peer.recv())
    assert response.status == 405
    assert response.headers.getall("Allow")


def test_unknown_user_404(front, peer):
    port = port_of(front, "udp")
    peer.send(sip_request("MESSAGE", port, peer.port, user="nobody"), port)
    assert parse_datagram(peer.recv()).status == 404


@pytest.mark.parametrize(
    ("data", "status", "reason_part"),
    [
        # no Call-ID: the message parses, validation names the missing field
        (
            lambda p, lp: sip_request("MESSAGE", p, lp).replace(b"Call-ID: c1@127.0.0.1\r\n", b""),
            400,
            "Call-ID",
        ),
        (lambda p, lp: sip_request("MESSAGE", p, lp, cseq_method="OPTIONS"), 400, "CSeq"),
        (
            lambda p, lp: sip_request("MESSAGE", p, lp).replace(
                b"CSeq: 1 MESSAGE", b"CSeq: x MESSAGE"
            ),
            400,
            "CSeq",
        ),
        (
            lambda p, lp: sip_request("MESSAGE", p, lp, body=b"hello").replace(
                b"Content-Length: 5", b"Content-Length: 50"
            ),
            400,
            "Content-Length",
        ),
    ],
    ids=["missing-call-id", "cseq-method-mismatch", "bad-cseq-number", "content-length-too-large"],
)
def test_malformed_request_gets_400_naming_the_fault(front, peer, data, status, reason_part):
    port = port_of(front, "udp")
    peer.send(data(port, peer.port), port)
    raw = peer.recv()
    first_line = raw.split(b"\r\n", 1)[0].decode()
    assert first_line.startswith(f"SIP/2.0 {status} ")
    assert reason_part in first_line, first_line
    assert b"Call-ID:" in raw or reason_part == "Call-ID"


def _corpus_request(name: str, port: int, lport: int) -> bytes:
    data = (corpus_dir() / "rfc4475" / f"{name}.dat").read_bytes()
    # answer to our socket, not example.com: rewrite the top Via sent-by
    return re.sub(
        rb"Via: SIP/2.0/\w+ [^;\r\n]+",
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport}".encode(),
        data,
        count=1,
    )


@pytest.mark.parametrize(
    ("name", "status"),
    [("intmeth", 501), ("esc02", 501), ("scalar02", 400), ("badvers", 505), ("ncl", 400)],
)
def test_rfc4475_torture_requests(front, peer, name, status):
    port = port_of(front, "udp")
    peer.send(_corpus_request(name, port, peer.port), port)
    raw = peer.recv()
    assert raw.startswith(f"SIP/2.0 {status} ".encode()), raw[:200]
    if status == 501:
        assert b"Allow:" in raw


def test_router_exception_becomes_500(peer):
    class Broken:
        allow = frozenset({"MESSAGE"})

        def handle(self, request, source, reply):
            raise RuntimeError("boom")

    with SipFront({"listen": ["udp:127.0.0.1:0"]}, Broken()) as f:
        port = port_of(f, "udp")
        peer.send(sip_request("MESSAGE", port, peer.port), port)
        assert parse_datagram(peer.recv()).status == 500
        # and the front keeps serving
        peer.send(sip_request("OPTIONS", port, peer.port, branch="z9hG4bK-after"), port)
        assert parse_datagram(peer.recv()).status == 200


def test_deferred_reply_from_another_thread(peer):
    class Deferred:
        allow = frozenset({"MESSAGE"})

        def handle(self, request, source, reply):
            threading.Timer(0.1, lambda: reply(make_response(request, 202))).start()

    with SipFront({"listen": ["udp:127.0.0.1:0"]}, Deferred()) as f:
        port = port_of(f, "udp")
        data = sip_request("MESSAGE", port, peer.port)
        peer.send(data, port)
        peer.send(data, port)  # retransmission while the answer is pending: absorbed
        assert parse_datagram(peer.recv()).status == 202
        assert peer.nothing_within(0.3)


def test_calls_from_other_threads_run_in_order_with_one_wakeup_per_burst(front):
    """call_in_loop batches: one self-pipe write per burst, a failing call stops no other."""
    held, release = threading.Event(), threading.Event()
    front.loop.call_soon_threadsafe(lambda: (held.set(), release.wait(TIMEOUT)))
    assert held.wait(TIMEOUT)  # the front's loop is busy: the burst only queues
    wakeups = []
    real = front.loop.call_soon_threadsafe

    def counting(callback, *args):
        wakeups.append(callback)
        return real(callback, *args)

    ran: list[int] = []

    def call(n: int) -> None:
        if n == 5:
            raise ValueError("one bad call")
        ran.append(n)

    front.loop.call_soon_threadsafe = counting
    try:
        for n in range(100):
            front.call_in_loop(call, n)
    finally:
        front.loop.call_soon_threadsafe = real
        release.set()
    wait_for(lambda: len(ran) == 99, what="the burst")
    assert ran == [n for n in range(100) if n != 5]
    assert len(wakeups) == 1
    done = threading.Event()
    front.call_in_loop(done.set)  # after the burst: a wake-up of its own
    assert done.wait(TIMEOUT)


def test_unanswered_deferred_request_gets_500(peer):
    class Silent:
        allow = frozenset({"MESSAGE"})

        def __init__(self):
            self.replies = []

        def handle(self, request, source, reply):
            self.replies.append((request, reply))

    router = Silent()
    with SipFront({"listen": ["udp:127.0.0.1:0"], "deferred_timeout": 0.2}, router) as f:
        port = port_of(f, "udp")
        data = sip_request("MESSAGE", port, peer.port)
        peer.send(data, port)
        first = peer.recv()
        assert parse_datagram(first).status == 500
        # the transaction answered (its timer_tu): the router's late answer goes nowhere,
        # and a retransmission gets the same 500 again
        request, reply = router.replies[0]
        reply(make_response(request, 202))
        assert peer.nothing_within(0.3)
        peer.send(data, port)
        assert peer.recv() == first
        assert len(router.replies) == 1


def test_transaction_state_lives_in_the_layer(peer):
    """UDP: Completed in wire form until timer J, then gone; TCP: gone with the answer."""
    config = {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], "t1_ms": 40}
    with SipFront(config, StaticRouter()) as f:
        port = port_of(f, "udp")
        data = sip_request("MESSAGE", port, peer.port)
        peer.send(data, port)
        first = peer.recv()
        assert first.startswith(b"SIP/2.0 202 ")
        # filed in wire form right after the send: no message objects kept
        wait_for(lambda: not f.layer.servers and len(f.layer.completed) == 1, what="wire form")
        wait_for(lambda: not f.layer.completed, what="timer J (64*T1 = 2.56 s)")
        assert len(f.timers) == 0  # no timer left behind
        peer.send(data, port)  # the transaction is over: a new one, routed again
        assert peer.recv().startswith(b"SIP/2.0 202 ")
        tport = port_of(f, "tcp")
        with tcp_connect(tport) as sock:
            sock.sendall(
                sip_request("MESSAGE", tport, peer.port, transport="TCP", branch="z9hG4bK-tcp")
            )
            assert read_messages(sock, 1)[0].status == 202
            # reliable: over with its answer (forgotten before the bytes left)
            assert not f.layer.servers


def test_timer_j_queue_ends_each_transaction_in_answer_order(peer):
    """Wire-form transactions wait in one queue for timer J; a retransmission still gets
    its answer, and the revived transaction ends on its timer J too."""
    with SipFront({"listen": ["udp:127.0.0.1:0"], "t1_ms": 100}, StaticRouter()) as f:
        port = port_of(f, "udp")
        first = sip_request("MESSAGE", port, peer.port, branch="z9hG4bK-first")
        peer.send(first, port)
        answer = peer.recv()
        second = sip_request("MESSAGE", port, peer.port, branch="z9hG4bK-second")
        peer.send(second, port)
        assert peer.recv().startswith(b"SIP/2.0 202 ")
        # both in wire form, one queue entry each and a single timer for the queue
        wait_for(
            lambda: len(f.layer.completed) == 2 and len(f._expiring) == 2 and len(f.timers) == 1,
            what="both in wire form",
        )
        peer.send(first, port)  # brought back as a machine to answer it again
        assert peer.recv() == answer
        wait_for(
            lambda: not f.layer.completed and not f.layer.servers and not f._expiring,
            what="timer J (64*T1 = 6.4 s) of both",
        )
        wait_for(lambda: len(f.timers) == 0, what="no timer left behind")
        peer.send(first, port)  # over: a new transaction, routed again
        assert peer.recv().startswith(b"SIP/2.0 202 ")


def test_timer_j_queue_survives_a_failing_end(peer):
    """An exception ending one queued transaction is logged; the next ones still end."""
    with SipFront({"listen": ["udp:127.0.0.1:0"], "t1_ms": 20}, StaticRouter()) as f:
        port = port_of(f, "udp")
        real = f._server_timer_fired
        ended: list[Any] = []

        def flaky(timer_key: Any) -> None:
            ended.append(timer_key)
            if len(ended) == 1:
                raise RuntimeError("broken end")
            real(timer_key)

        f._on_server_timer = flaky
        for branch in ("z9hG4bK-one", "z9hG4bK-two"):
            peer.send(sip_request("MESSAGE", port, peer.port, branch=branch), port)
            assert peer.recv().startswith(b"SIP/2.0 202 ")
        wait_for(lambda: len(ended) == 2 and not f._expiring, what="both timer J ends")
        # the broken end left its entry; the other one is gone
        wait_for(lambda: list(f.layer.completed) == [ended[0][0]], what="the second ended")
        wait_for(lambda: len(f.timers) == 0, what="no timer left behind")


# ---- streams ---------------------------------------------------------------------


def tcp_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def read_messages(sock: socket.socket, count: int) -> list[Any]:
    parser = StreamParser()
    out: list[Any] = []
    while len(out) < count:
        data = sock.recv(65535)
        if not data:
            break
        parser.feed(data)
        while (msg := parser.next_message()) is not NEED_DATA:
            out.append(msg)
    return out


def test_tcp_framing_across_partial_writes_and_pipelining(front, router):
    port = port_of(front, "tcp")
    with tcp_connect(port) as sock:
        lport = sock.getsockname()[1]
        one = sip_request(
            "MESSAGE", port, lport, transport="TCP", branch="z9hG4bK-p1", body=b"part"
        )
        for i in range(0, len(one), 7):  # dribble the message in 7-byte writes
            sock.sendall(one[i : i + 7])
            time.sleep(0.002)
        two = sip_request(
            "MESSAGE", port, lport, transport="TCP", branch="z9hG4bK-p2", call_id="c2", body=b"b2"
        )
        three = sip_request(
            "OPTIONS", port, lport, transport="TCP", branch="z9hG4bK-p3", call_id="c3"
        )
        sock.sendall(b"\r\n\r\n" + two + three)  # a keep-alive, then two messages in one write
        responses = read_messages(sock, 3)
    assert [r.status for r in responses] == [202, 202, 200]
    assert [r.call_id for r in responses] == ["c1@127.0.0.1", "c2", "c3"]
    assert [r.body for r in router.received] == [b"part", b"b2"]


def test_tcp_stream_error_answers_and_closes(front):
    port = port_of(front, "tcp")
    with tcp_connect(port) as sock:
        lport = sock.getsockname()[1]
        bad = sip_request("MESSAGE", port, lport, transport="TCP").replace(
            b"Content-Length: 0\r\n", b""
        )
        sock.sendall(bad)
        data = b""
        while chunk := sock.recv(65535):
            data += chunk
    assert data.startswith(b"SIP/2.0 400 ")
    assert b"Content-Length" in data.split(b"\r\n", 1)[0]


def test_connection_cap():
    with SipFront({"listen": ["tcp:127.0.0.1:0"], "max_connections": 2}, StaticRouter()) as f:
        port = port_of(f, "tcp")
        keep = [tcp_connect(port), tcp_connect(port)]
        wait_for(lambda: len(f.transports.connections) == 2, what="two connections registered")
        extra = tcp_connect(port)
        assert extra.recv(100) == b""  # closed by the front at once
        assert f.transports.rejected_connections == 1
        # the admitted connections still work
        lport = keep[0].getsockname()[1]
        keep[0].sendall(sip_request("OPTIONS", port, lport, transport="TCP"))
        assert read_messages(keep[0], 1)[0].status == 200
        for s in [*keep, extra]:
            s.close()


def test_oversized_message_and_slow_loris_are_cut_off():
    config = {"listen": ["tcp:127.0.0.1:0"], "max_message_size": 2048, "tcp_idle_timeout": 0.5}
    with SipFront(config, StaticRouter()) as f:
        port = port_of(f, "tcp")
        with tcp_connect(port) as big:
            lport = big.getsockname()[1]
            big.sendall(sip_request("MESSAGE", port, lport, transport="TCP", body=b"x" * 4096))
            data = b""
            while chunk := big.recv(65535):
                data += chunk
            assert data.startswith(b"SIP/2.0 513 ")
        with tcp_connect(port) as slow:
            start = time.monotonic()
            partial = sip_request("MESSAGE", port, 1, transport="TCP")[:60]
            closed = False
            for byte in partial:  # keep the connection busy, never finish the message
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                slow.settimeout(0.1)
                try:
                    if slow.recv(100) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                except ConnectionResetError:  # closed with our bytes unread: the kernel resets
                    closed = True
                    break
            assert closed, "a never-finished message kept its connection open"
            assert time.monotonic() - start < TIMEOUT
        with tcp_connect(port) as idle:
            idle.settimeout(TIMEOUT)
            assert idle.recv(100) == b""  # idle connection closed after the timeout


# ---- TLS and IPv6 ------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed_cert(cert_path, key_path, "127.0.0.1")
    return str(cert_path), str(key_path)


def test_tls_listener_answers(tmp_path):
    cert, key = _self_signed(tmp_path)
    config = {"listen": ["tls:127.0.0.1:0"], "tls_certificate": cert, "tls_private_key": key}
    with SipFront(config, StaticRouter(users={"alice"})) as f:
        port = port_of(f, "tls")
        ctx = ssl.create_default_context(cafile=cert)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            lport = sock.getsockname()[1]
            sock.sendall(sip_request("MESSAGE", port, lport, transport="TLS"))
            assert read_messages(sock, 1)[0].status == 202


def test_ipv6_udp_listener(router):
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with SipFront({"listen": ["udp:[::1]:0"]}, router) as f:
        assert f.listen[0].startswith("udp:[::1]:")
        port = port_of(f, "udp")
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
            sock.settimeout(TIMEOUT)
            lport = sock.getsockname()[1]
            data = sip_request("OPTIONS", port, lport).replace(b"127.0.0.1", b"[::1]")
            sock.sendto(data, ("::1", port))
            raw = sock.recv(65535)
            assert raw.startswith(b"SIP/2.0 200 ")
            # RFC 5118 4.5: received carries the bare IPv6 literal
            assert f";rport={lport};received=::1".encode() in raw


def test_listen_strings():
    assert parse_listen("udp:127.0.0.1:5060") == Address("udp", "127.0.0.1", 5060)
    assert parse_listen("tcp:[::1]:5070") == Address("tcp", "::1", 5070)
    assert parse_listen("TLS:127.0.0.1:5061") == Address("tls", "127.0.0.1", 5061)
    for bad in ("127.0.0.1:5060", "sctp:127.0.0.1:5060", "udp:127.0.0.1", "udp::5060"):
        with pytest.raises(ValueError, match=r"."):
            parse_listen(bad)


# ---- outgoing requests -----------------------------------------------------------------


def _outgoing(to_port: int, method: str = "MESSAGE") -> Request:
    headers = Headers()
    headers.add("From", "<sip:gw@127.0.0.1>;tag=gw1")
    headers.add("To", f"<sip:alice@127.0.0.1:{to_port}>")
    headers.add("Call-ID", f"out-{time.monotonic_ns()}@127.0.0.1")
    headers.add("CSeq", f"1 {method}")
    headers.add("Content-Type", "text/plain")
    return Request(method, f"sip:alice@127.0.0.1:{to_port}", headers, b"from the gateway")


def test_send_request_udp_gets_final_response(front, peer):
    future = front.send_request(_outgoing(peer.port), Address("udp", "127.0.0.1", peer.port))
    request = parse_datagram(peer.recv())
    assert request.method == "MESSAGE"
    assert request.body == b"from the gateway"
    assert request.top_via.branch.startswith("z9hG4bK")
    peer.send(
        b"SIP/2.0 200 OK\r\n" + _echo_headers(request) + b"Content-Length: 0\r\n\r\n",
        port_of(front, "udp"),
    )
    assert future.result(TIMEOUT).status == 200


def _echo_headers(request: Request) -> bytes:
    return "".join(
        f"{name}: {request.headers.get(name)}\r\n"
        for name in ("Via", "From", "To", "Call-ID", "CSeq")
    ).encode()


def test_send_request_times_out_with_408(peer):
    # T1 = 10 ms: timer F (64*T1) fires after 0.64 s
    with SipFront({"listen": ["udp:127.0.0.1:0"], "t1_ms": 10, "t2_ms": 40}, StaticRouter()) as f:
        future = f.send_request(_outgoing(peer.port), Address("udp", "127.0.0.1", peer.port))
        assert future.result(TIMEOUT).status == 408
        # timer E retransmitted the request meanwhile
        first = peer.recv()
        assert peer.recv() == first


def test_send_request_tcp_opens_connection_and_reuses_it(front):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(TIMEOUT)
        uport = server.getsockname()[1]
        futures = [front.send_request(_outgoing(uport), f"tcp:127.0.0.1:{uport}") for _ in range(2)]
        conn, _ = server.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            requests = read_messages(conn, 2)
            for request in requests:
                conn.sendall(
                    b"SIP/2.0 202 Accepted\r\n"
                    + _echo_headers(request)
                    + b"Content-Length: 0\r\n\r\n"
                )
            assert [fut.result(TIMEOUT).status for fut in futures] == [202, 202]
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # both requests shared one connection


def test_send_request_connection_refused_gives_503(front):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    future = front.send_request(_outgoing(closed_port), Address("tcp", "127.0.0.1", closed_port))
    assert future.result(TIMEOUT).status == 503


def test_front_from_config_section():
    config = FrontConfig.from_section(
        {"listen": "udp:127.0.0.1:0", "domain": "example.test", "unknown_key": 1}
    )
    with SipFront(config, StaticRouter(users=())) as front:
        assert front.listen[0].startswith("udp:127.0.0.1:")
        assert front.config.domain == "example.test"


def test_tcp_response_after_the_connection_closed_goes_to_via_port():
    class Late:
        allow = frozenset({"MESSAGE"})

        def __init__(self):
            self.pending = []

        def handle(self, request, source, reply):
            self.pending.append((request, reply))

    router = Late()
    with SipFront({"listen": ["tcp:127.0.0.1:0"]}, router) as f, socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(TIMEOUT)
        via_port = server.getsockname()[1]
        port = port_of(f, "tcp")
        with tcp_connect(port) as sock:
            sock.sendall(
                sip_request("MESSAGE", port, via_port, transport="TCP").replace(b";rport", b"")
            )
            wait_for(lambda: router.pending, what="request routed")
        wait_for(lambda: not f.transports.connections, what="connection gone")
        request, reply = router.pending[0]
        reply(make_response(request, 202))
        conn, _ = server.accept()  # the front connected to the Via sent-by port
        with conn:
            conn.settimeout(TIMEOUT)
            assert read_messages(conn, 1)[0].status == 202


@pytest.mark.parametrize("deferred", [False, True], ids=["direct", "deferred"])
def test_unsendable_router_response_gives_500_and_no_stuck_transaction(peer, deferred):
    class BadHeaders:
        allow = frozenset({"MESSAGE"})

        def handle(self, request, source, reply):
            response = make_response(request, 200, "OK\r\nInjected: header")  # serialize refuses it
            if deferred:
                threading.Thread(target=reply, args=(response,)).start()
                return None
            return response

    with SipFront({"listen": ["udp:127.0.0.1:0"]}, BadHeaders()) as f:
        port = port_of(f, "udp")
        peer.send(sip_request("MESSAGE", port, peer.port), port)
        assert parse_datagram(peer.recv()).status == 500
        wait_for(lambda: not f.layer.servers, what="transaction forgotten")


def test_send_request_over_tls_verifies_the_peer(tmp_path):
    cert, key = _self_signed(tmp_path)
    config = {
        "listen": ["tls:127.0.0.1:0"],
        "tls_certificate": cert,
        "tls_private_key": key,
        "tls_ca_certificates": cert,
    }
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    with SipFront(config, StaticRouter()) as f, socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(TIMEOUT)
        uport = server.getsockname()[1]
        future = f.send_request(_outgoing(uport), Address("tls", "127.0.0.1", uport))
        raw, _ = server.accept()
        with server_ctx.wrap_socket(raw, server_side=True) as conn:
            conn.settimeout(TIMEOUT)
            request = read_messages(conn, 1)[0]
            assert request.top_via.transport == "TLS"
            conn.sendall(
                b"SIP/2.0 200 OK\r\n" + _echo_headers(request) + b"Content-Length: 0\r\n\r\n"
            )
            assert future.result(TIMEOUT).status == 200


def test_oversized_udp_request_gets_513(peer):
    with SipFront({"listen": ["udp:127.0.0.1:0"], "max_message_size": 1024}, StaticRouter()) as f:
        port = port_of(f, "udp")
        peer.send(sip_request("MESSAGE", port, peer.port, body=b"x" * 2000), port)
        assert peer.recv().startswith(b"SIP/2.0 513 ")


def test_answers_are_counted_by_method_and_class(front, peer):
    from purplegw import metrics

    def count(method: str, klass: str) -> float:
        value = metrics.REGISTRY.get_sample_value(
            "purplegw_sip_requests_total", {"method": method, "status_class": klass}
        )
        return value or 0.0

    port = port_of(front, "udp")
    options, invites = count("OPTIONS", "2xx"), count("INVITE", "4xx")
    peer.send(sip_request("OPTIONS", port, peer.port, branch="z9hG4bK-m1"), port)
    assert parse_datagram(peer.recv()).status == 200
    peer.send(sip_request("INVITE", port, peer.port, branch="z9hG4bK-m2"), port)
    assert parse_datagram(peer.recv()).status == 405
    assert count("OPTIONS", "2xx") == options + 1
    assert count("INVITE", "4xx") == invites + 1
