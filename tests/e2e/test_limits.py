"""Abuse limits of the real daemon: floods, header bombs, endless streams, slow-loris.

Every test floods or abuses from its own loopback address (127.0.0.x: the
loopback interface answers to all of them) while a well-behaved user on
another address keeps working; the per-source limit is keyed by address, so
the tests do not share budgets.  The floods are real packets at full speed
from hand-written requests; the counts of what was served, refused (503) and
left unanswered go to the run summary.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.kit.gateway import GatewayProcess
from tests.kit.raw_ua import RawUA
from tests.kit.tally import report

if TYPE_CHECKING:
    from collections.abc import Iterator

RATE_PER_SOURCE = 20
BURST_PER_SOURCE = 20
RATE_PER_USER = 5
BURST_PER_USER = 10
MESSAGE_TIMEOUT = 1.0  # [sip] tcp_message_timeout
CONNECTIONS_PER_SOURCE = 4
TRUSTED_PROXY = "127.0.0.3"
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path_factory.mktemp("limits"),
        extra_config="[protocols.dummy]\nenabled = true\n",
        sip={
            "trusted": [f"{TRUSTED_PROXY}/32"],
            "rate_per_source": RATE_PER_SOURCE,
            "burst_per_source": BURST_PER_SOURCE,
            "rate_per_user": RATE_PER_USER,
            "burst_per_user": BURST_PER_USER,
            "tcp_message_timeout": MESSAGE_TIMEOUT,
            "max_connections_per_source": CONNECTIONS_PER_SOURCE,
        },
        log_level="INFO",  # a debug line per flooded request would measure the log, not us
    )
    gw.cli("db", "init")
    for user in ("alice", "bob", "carol"):
        gw.cli("users", "add", f"{user}@sip.test", "--password-stdin", stdin=f"{user}pw\n")
        gw.cli(
            "accounts",
            "add",
            f"{user}@sip.test",
            f"{user}@dummy.example",
            "dummy",
            "--password-stdin",
            stdin="x\n",
        )
    gw.start()
    gw.wait_accounts("connected")
    yield gw
    assert gw.stop() == 0, gw.log_text()


class SourcedUA(RawUA):
    """RawUA sending from a chosen loopback address (answers follow rport)."""

    def __init__(self, gateway: GatewayProcess, host: str) -> None:
        super().__init__(gateway)
        self.sock.close()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(TIMEOUT)
        self.port = self.sock.getsockname()[1]


def request_bytes(
    method: str,
    ruri: str,
    from_user: str,
    port: int,
    *,
    transport: str = "UDP",
    extra: list[str] | None = None,
    body: str = "hi",
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{ruri if method != 'REGISTER' else 'sip:' + from_user}>",
        f"Call-ID: {uuid.uuid4().hex}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:{from_user.split('@', maxsplit=1)[0]}@127.0.0.1:{port}>",
        *(extra or []),
        "Content-Type: text/plain",
        f"Content-Length: {len(body.encode())}",
        "",
        body,
    ]
    return "\r\n".join(lines).encode()


class Flood:
    """Sends requests as fast as the socket takes them; counts every answer by status."""

    def __init__(self, gateway: GatewayProcess, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", gateway.port)
        self.statuses: Counter[int] = Counter()
        self.retry_after: list[int] = []
        self.sent = 0
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                continue
            status = int(data.split(" ", 2)[1])
            if status >= 200:
                self.statuses[status] += 1
                if status == 503:
                    match = re.search(r"\r\nRetry-After: (\d+)", data)
                    self.retry_after.append(int(match.group(1)) if match else -1)

    def send(self, packets: Iterator[bytes], seconds: float) -> float:
        """Send ``packets`` spread over ``seconds`` (in bursts); returns the time taken."""
        start = time.monotonic()
        batch = list(packets)
        for i, packet in enumerate(batch):
            self.sock.sendto(packet, self.target)
            self.sent += 1
            if i % 50 == 49:
                delay = start + seconds * (i + 1) / len(batch) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        return time.monotonic() - start

    def settle(self, quiet: float = 1.5) -> None:
        """Wait until no answer arrived for ``quiet`` seconds."""
        last, deadline = -1, time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            total = sum(self.statuses.values())
            if total == last:
                return
            last = total
            time.sleep(quiet)

    def close(self) -> None:
        self._stop.set()
        self._reader.join(5)
        self.sock.close()


def victim(
    gateway: GatewayProcess,
    host: str,
    user: str,
    count: int,
    results: list[int],
    pause: float = 0.15,
) -> None:
    ua = SourcedUA(gateway, host)
    try:
        for _ in range(count):
            status, _ = ua.authorized(
                "MESSAGE", "sip:friend@dummy.example", f"{user}@sip.test", user, f"{user}pw"
            )
            results.append(status)
            time.sleep(pause)
    finally:
        ua.sock.close()


def test_udp_flood_from_one_source_is_limited_and_others_are_served(
    gateway: GatewayProcess,
) -> None:
    flood = Flood(gateway, "127.0.0.10")
    results: list[int] = []
    other = threading.Thread(target=victim, args=(gateway, "127.0.0.2", "bob", 8, results))
    try:
        # The flood claims to be bob, the user who keeps working from another
        # address: requests without valid credentials never count against the
        # user they name, or anyone could lock anyone out.
        packets = (
            request_bytes("MESSAGE", "sip:x@dummy.example", "bob@sip.test", flood.port)
            if i % 2
            else request_bytes("REGISTER", "sip:sip.test", "bob@sip.test", flood.port)
            for i in range(3000)
        )
        other.start()
        elapsed = flood.send(packets, seconds=2.0)
        other.join(TIMEOUT * 2)
        flood.settle()
    finally:
        flood.close()
    # unauthenticated: served means challenged (401 REGISTER / 407 MESSAGE)
    served = flood.statuses[401] + flood.statuses[407]
    refused = flood.statuses[503]
    unanswered = flood.sent - sum(flood.statuses.values())
    report(
        f"limits: UDP flood of {flood.sent} REGISTER/MESSAGE from one source in "
        f"{elapsed:.1f}s (limit {RATE_PER_SOURCE}/s, burst {BURST_PER_SOURCE}): "
        f"{served} served, {refused} refused 503, {unanswered} unanswered; "
        f"another source's user: {results.count(202)}/{len(results)} MESSAGEs accepted"
    )
    assert results == [202] * 8, results
    budget = BURST_PER_SOURCE + RATE_PER_SOURCE * (elapsed + 2.0)  # +2 s: the settling reads
    assert 0 < served <= budget, flood.statuses
    # the answer budget bounds 503s like the service budget bounds service
    assert 0 < refused <= budget, flood.statuses
    assert set(flood.statuses) <= {401, 407, 503}, flood.statuses
    assert flood.retry_after, flood.retry_after
    assert min(flood.retry_after) >= 1, flood.retry_after
    assert unanswered > flood.sent / 2  # far beyond the limit: dropped, not reflected


def test_user_flood_through_trusted_proxy_is_limited_per_user(gateway: GatewayProcess) -> None:
    # A fronting proxy (trusted) carries alice's flood and bob's messages from one
    # address: no per-source limit for it, but alice has her own per-user budget.
    flood = Flood(gateway, TRUSTED_PROXY)
    bob = SourcedUA(gateway, TRUSTED_PROXY)
    bob_results: list[int] = []

    def bob_sends() -> None:
        for _ in range(5):
            bob_results.append(
                bob.request("MESSAGE", "sip:friend@dummy.example", "bob@sip.test")[0]
            )
            time.sleep(0.2)

    other = threading.Thread(target=bob_sends)
    try:
        packets = [
            request_bytes("MESSAGE", "sip:friend@dummy.example", "alice@sip.test", flood.port)
            if i % 4
            else request_bytes("REGISTER", "sip:sip.test", "alice@sip.test", flood.port)
            for i in range(400)
        ]
        other.start()
        elapsed = flood.send(iter(packets), seconds=1.0)
        other.join(TIMEOUT * 2)
        flood.settle()
    finally:
        flood.close()
        bob.sock.close()
    served = flood.statuses[200] + flood.statuses[202]
    refused = flood.statuses[503]
    report(
        f"limits: one user's flood of {flood.sent} REGISTER/MESSAGE through a trusted "
        f"proxy in {elapsed:.1f}s (limit {RATE_PER_USER}/s, burst {BURST_PER_USER}): "
        f"{served} served, {refused} refused 503, "
        f"{flood.sent - served - refused} unanswered; another user through the same proxy: "
        f"{bob_results.count(202)}/{len(bob_results)} accepted"
    )
    assert bob_results == [202] * 5, bob_results
    # the trusted proxy is never limited per source: every request got an answer
    assert served + refused == flood.sent, flood.statuses
    assert served <= BURST_PER_USER + RATE_PER_USER * (elapsed + TIMEOUT), flood.statuses
    assert served >= BURST_PER_USER, flood.statuses
    assert refused >= flood.sent - BURST_PER_USER - RATE_PER_USER * 30, flood.statuses
    assert min(flood.retry_after) >= 1, flood.retry_after


def header_bomb(port: int, transport: str, count: int = 2000) -> bytes:
    # thousands of tiny fields: 5 bytes each, well under max_header_size
    return request_bytes(
        "OPTIONS",
        "sip:sip.test",
        "carol@sip.test",
        port,
        transport=transport,
        extra=["a:1"] * count,
        body="",
    )


def tcp_client(gateway: GatewayProcess, host: str) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", gateway.port), timeout=TIMEOUT, source_address=(host, 0)
    )
    sock.settimeout(TIMEOUT)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65535):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return data


def tcp_options_ok(gateway: GatewayProcess, host: str) -> bool:
    with tcp_client(gateway, host) as sock:
        port = sock.getsockname()[1]
        sock.sendall(
            request_bytes(
                "OPTIONS", "sip:sip.test", "carol@sip.test", port, transport="TCP", body=""
            )
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65535)
            if not chunk:
                return False
            data += chunk
        return data.startswith(b"SIP/2.0 200 ")


def test_header_bomb_gets_400_and_the_daemon_stays_healthy(gateway: GatewayProcess) -> None:
    ua = SourcedUA(gateway, "127.0.0.4")
    try:
        ua.sock.sendto(header_bomb(ua.port, "UDP"), ua.target)
        answer = ua.sock.recv(65535)
        assert answer.startswith(b"SIP/2.0 400 Bad Request: too many header fields"), answer
        with tcp_client(gateway, "127.0.0.4") as sock:
            sock.sendall(header_bomb(sock.getsockname()[1], "TCP"))
            data = read_all(sock)  # answered, then closed: framing is lost
        assert data.startswith(b"SIP/2.0 400 Bad Request: too many header fields"), data
        # a header section over max_header_size (16384 bytes) is 513 Message Too Large
        ua.sock.sendto(
            request_bytes(
                "OPTIONS",
                "sip:sip.test",
                "carol@sip.test",
                ua.port,
                extra=["X-Padding: " + "p" * 100] * 200,
                body="",
            ),
            ua.target,
        )
        assert ua.sock.recv(65535).startswith(b"SIP/2.0 513 ")
        status, _ = ua.authorized(
            "MESSAGE", "sip:friend@dummy.example", "carol@sip.test", "carol", "carolpw"
        )
        assert status == 202
    finally:
        ua.sock.close()
    assert tcp_options_ok(gateway, "127.0.0.5")
    report(
        "limits: header bomb (2000 fields, 10 kB) -> 400 over UDP and TCP; "
        "16 kB+ header section -> 513; daemon kept serving"
    )


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the gateway has closed (or answered and closed) this connection."""
    sock.settimeout(0.05)
    try:
        sock.recv(65535)  # EOF, or the 513 that comes before the close
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    finally:
        sock.settimeout(TIMEOUT)
    return True


def test_endless_tcp_stream_is_cut_and_others_are_served(gateway: GatewayProcess) -> None:
    with tcp_client(gateway, "127.0.0.6") as sock:
        port = sock.getsockname()[1]
        # a valid start, then header lines that never end
        start = request_bytes(
            "OPTIONS", "sip:sip.test", "carol@sip.test", port, transport="TCP", body=""
        ).split(b"Content-Type")[0]
        sock.sendall(start)
        sent, cut = len(start), False
        chunk = (b"X-Endless: " + b"e" * 100 + b"\r\n") * 100
        while sent < 64 * 1024 * 1024 and not cut:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            sent += len(chunk)
            cut = sent > 32 * 1024 and closed_by_peer(sock)
        assert cut, f"{sent} bytes of one header section were taken without end"
    assert tcp_options_ok(gateway, "127.0.0.7")
    report(
        f"limits: endless TCP header section cut after {sent // 1024} kB sent "
        "(max_header_size 16 kB; the rest sat in socket buffers); other connections served"
    )


def test_slow_loris_is_cut_after_the_message_timeout(gateway: GatewayProcess) -> None:
    with tcp_client(gateway, "127.0.0.8") as slow:
        partial = request_bytes(
            "OPTIONS",
            "sip:sip.test",
            "carol@sip.test",
            slow.getsockname()[1],
            transport="TCP",
            body="",
        )[:-10]
        began = time.monotonic()
        closed_after = None
        served_meanwhile = False
        for byte in partial:  # never idle, never finished
            try:
                slow.sendall(bytes([byte]))
                slow.settimeout(0.1)
                if slow.recv(100) == b"":
                    closed_after = time.monotonic() - began
                    break
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - began
                break
            if not served_meanwhile and time.monotonic() - began > MESSAGE_TIMEOUT / 2:
                served_meanwhile = tcp_options_ok(gateway, "127.0.0.9")
    assert closed_after is not None, "a trickled, never-finished message kept its connection"
    assert closed_after >= MESSAGE_TIMEOUT
    assert served_meanwhile
    report(
        f"limits: slow-loris TCP connection cut after {closed_after:.1f}s "
        f"(tcp_message_timeout {MESSAGE_TIMEOUT}s); another connection served meanwhile"
    )


def test_one_source_cannot_take_every_connection(gateway: GatewayProcess) -> None:
    held = [tcp_client(gateway, "127.0.0.12") for _ in range(CONNECTIONS_PER_SOURCE * 3)]
    try:
        # a refused connection is closed at once: no answer to a request on it
        served = sum(tcp_options_ok_on(sock) for sock in held)
        assert served == CONNECTIONS_PER_SOURCE
        assert tcp_options_ok(gateway, "127.0.0.13")
        through_proxy = [
            tcp_client(gateway, TRUSTED_PROXY) for _ in range(CONNECTIONS_PER_SOURCE * 2)
        ]
        try:
            assert all(tcp_options_ok_on(sock) for sock in through_proxy)
        finally:
            for sock in through_proxy:
                sock.close()
    finally:
        for sock in held:
            sock.close()
    report(
        f"limits: {len(held)} TCP connections from one address, "
        f"{CONNECTIONS_PER_SOURCE} served (max_connections_per_source); other addresses and "
        "the trusted proxy unaffected"
    )


def tcp_options_ok_on(sock: socket.socket) -> bool:
    try:
        sock.sendall(
            request_bytes(
                "OPTIONS",
                "sip:sip.test",
                "carol@sip.test",
                sock.getsockname()[1],
                transport="TCP",
                body="",
            )
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65535)
            if not chunk:
                return False
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return False
    return data.startswith(b"SIP/2.0 200 ")
