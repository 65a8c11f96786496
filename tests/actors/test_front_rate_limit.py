"""The SIP front's per-source rate limit over real loopback sockets (in-process front)."""

from __future__ import annotations

import re
import socket
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from purplegw.actors.front.front import SipFront, StaticRouter

if TYPE_CHECKING:
    from collections.abc import Iterator

TIMEOUT = 10.0


def request(
    method: str, port: int, lport: int, *, transport: str = "UDP", branch: str | None = None
) -> bytes:
    branch = branch or f"z9hG4bK{uuid.uuid4().hex}"
    return (
        f"{method} sip:alice@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{lport};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:tester@127.0.0.1:{lport}>;tag=ft1\r\n"
        f"To: <sip:alice@127.0.0.1:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Peer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]

    def ask(self, data: bytes, port: int, timeout: float = TIMEOUT) -> bytes | None:
        self.sock.sendto(data, ("127.0.0.1", port))
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65535)
        except TimeoutError:
            return None


def status(answer: bytes | None) -> int | None:
    return None if answer is None else int(answer.split(b" ", 2)[1])


def front_with(**config: object) -> SipFront:
    return SipFront(
        {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], **config}, StaticRouter(users={"alice"})
    )


def port_of(front: SipFront, transport: str) -> int:
    return next(lst.port for lst in front.listeners if lst.transport == transport)


@pytest.fixture
def limited() -> Iterator[SipFront]:
    # one token per 100 s: nothing refills while a test runs
    with front_with(rate_per_source=0.01, burst_per_source=2) as front:
        yield front


def test_over_the_limit_503_with_retry_after_then_silence(limited: SipFront) -> None:
    port, peer = port_of(limited, "udp"), Peer()
    router = limited.router
    answers = [peer.ask(request("MESSAGE", port, peer.port), port, timeout=0.5) for _ in range(5)]
    assert [status(a) for a in answers] == [202, 202, 503, 503, None]
    assert answers[2] is not None
    assert re.search(rb"\r\nRetry-After: (\d+)\r\n", answers[2])
    assert b"Server: purplegw" in answers[2]
    assert len(router.received) == 2  # the router never saw the refused ones
    assert limited.stats["rate_limited"] == 2
    # dropped ones are dropped before parsing: garbage from the source is not even an error
    errors = limited.stats["errors"]
    for _ in range(20):
        peer.sock.sendto(b"garbage that would be a 400\r\n\r\n", ("127.0.0.1", port))
    assert peer.ask(request("OPTIONS", port, peer.port), port, timeout=0.5) is None
    assert limited.stats["errors"] == errors
    assert limited.transports.gated_datagrams >= 21


def test_other_sources_keep_their_own_budget(limited: SipFront) -> None:
    port, flood, other = port_of(limited, "udp"), Peer("127.0.0.1"), Peer("127.0.0.2")
    for _ in range(6):
        flood.ask(request("MESSAGE", port, flood.port), port, timeout=0.2)
    assert status(other.ask(request("MESSAGE", port, other.port), port)) == 202


def test_retransmission_over_the_limit_is_dropped_not_refused(limited: SipFront) -> None:
    port, peer = port_of(limited, "udp"), Peer()
    first = request("MESSAGE", port, peer.port)
    assert status(peer.ask(first, port)) == 202
    assert status(peer.ask(request("MESSAGE", port, peer.port), port)) == 202
    # the budget is spent: a retransmission must not get a 503 after its 202
    assert peer.ask(first, port, timeout=0.5) is None
    assert status(peer.ask(request("MESSAGE", port, peer.port), port)) == 503


def test_trusted_source_is_not_limited() -> None:
    with front_with(rate_per_source=0.01, burst_per_source=1, trusted=["127.0.0.0/24"]) as front:
        port, peer = port_of(front, "udp"), Peer()
        statuses = [status(peer.ask(request("MESSAGE", port, peer.port), port)) for _ in range(10)]
        assert statuses == [202] * 10
        other = Peer("127.0.1.1")  # outside the trusted /24
        statuses = [
            status(other.ask(request("MESSAGE", port, other.port), port, timeout=0.5))
            for _ in range(3)
        ]
        assert statuses == [202, 503, None]


def test_tcp_over_the_limit_is_always_answered(limited: SipFront) -> None:
    # a TCP source is not spoofed, and an unanswered request would wait 32 s for timer F
    port = port_of(limited, "tcp")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        lport = sock.getsockname()[1]
        got = []
        for _ in range(5):
            sock.sendall(request("MESSAGE", port, lport, transport="TCP"))
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65535)
            got.append(status(data))
        assert got == [202, 202, 503, 503, 503]


def test_no_limit_by_default() -> None:
    with front_with() as front:
        assert front.source_limiter is None
        port, peer = port_of(front, "udp"), Peer()
        assert [
            status(peer.ask(request("OPTIONS", port, peer.port), port)) for _ in range(300)
        ] == [200] * 300


def test_source_keys_ipv6_by_64_and_trusted_none() -> None:
    front = SipFront(
        {"trusted": ["10.0.0.0/8", "2001:db8:1::/48"], "rate_per_source": 1}, StaticRouter()
    )
    try:
        assert front._source_key("2001:db8::1") == "2001:db8::/64"
        assert front._source_key("2001:db8::ffff:1") == "2001:db8::/64"
        assert front._source_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
        assert front._source_key("2001:db8:1::5") is None
        assert front._source_key("10.1.2.3") is None
        assert front._source_key("192.0.2.7") == "192.0.2.7"
    finally:
        front.loop.close()


def accepted(sock: socket.socket, port: int) -> bool:
    """Whether the front serves this connection (a refused one is closed at once)."""
    try:
        sock.sendall(request("OPTIONS", port, sock.getsockname()[1], transport="TCP"))
        sock.settimeout(TIMEOUT)
        return sock.recv(65535).startswith(b"SIP/2.0 200 ")
    except (ConnectionResetError, BrokenPipeError):
        return False


def connect(port: int, host: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(host, 0))


def test_connections_per_source_are_bounded() -> None:
    with front_with(max_connections_per_source=2, trusted=["127.0.0.3/32"]) as front:
        port = port_of(front, "tcp")
        first, second, third = (connect(port, "127.0.0.1") for _ in range(3))
        assert accepted(first, port)
        assert accepted(second, port)
        assert not accepted(third, port)
        others = [connect(port, "127.0.0.2"), *(connect(port, "127.0.0.3") for _ in range(4))]
        assert all(accepted(sock, port) for sock in others)  # other and trusted sources
        first.close()
        deadline = time.monotonic() + TIMEOUT
        while len(front.transports.connections) != 6:  # the front saw the close
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with connect(port, "127.0.0.1") as again:
            assert accepted(again, port)
        for sock in [second, third, *others]:
            sock.close()
