"""Connection slots under a spread-out slow-connection attack (real daemon, raw TCP peers).

17 loopback source addresses each open as many slow TCP connections as the
per-source limit allows (a request head that never ends), more than all the
incoming slots together.  A legitimate client from another address must
still get its OPTIONS and MESSAGE answered, and the gateway must still open
its own TCP connection to a phone to deliver a message.  With eviction
switched off the same attack locks the legitimate client out: the test
checks that too, so it cannot pass without the defence.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.hostile.conftest import SCALE
from tests.kit.gateway import GatewayProcess

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(180)

SOURCES = 17
PER_SOURCE = 8 * SCALE
SLOTS = 64 * SCALE  # fewer than SOURCES * PER_SOURCE
LEGIT = "127.0.0.200"


def request(
    method: str, ruri: str, from_user: str, *, via: str, contact: str = "", body: str = ""
) -> bytes:
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/{via};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{ruri if method != 'REGISTER' else 'sip:' + from_user}>",
        f"Call-ID: {uuid.uuid4().hex}",
        f"CSeq: 1 {method}",
        *([f"Contact: <{contact}>"] if contact else []),
        *(["Content-Type: text/plain"] if body else []),
        f"Content-Length: {len(body.encode())}",
        "",
        body,
    ]
    return "\r\n".join(lines).encode()


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def read_message(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """One SIP message from a stream (head + Content-Length body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


PHONE = "127.0.0.250"


class Phone:
    """A TCP-only SIP endpoint: accepts the gateway's connection, answers 200.

    It registers over TCP from ``PHONE:port``, closes that connection, then
    listens on the same address: the gateway has to open a connection of its
    own to deliver.
    """

    def __init__(self, gateway_port: int) -> None:
        with socket.socket() as reg:
            reg.bind((PHONE, 0))
            reg.settimeout(10)
            reg.connect(("127.0.0.1", gateway_port))
            self.port = reg.getsockname()[1]
            contact = f"sip:fine@{PHONE}:{self.port};transport=tcp"
            reg.sendall(
                request(
                    "REGISTER",
                    "sip:sip.test",
                    "fine@sip.test",
                    via=f"TCP {PHONE}:{self.port}",
                    contact=contact,
                )
            )
            self.registered = status_of(read_message(reg))
            # Reset rather than close: no TIME_WAIT holding the port we listen on next.
            reg.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((PHONE, self.port))
        self.server.listen()
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.server.accept()
            with conn:
                while True:
                    data = read_message(conn, timeout=60)
                    self.received.append(data)
                    head = data.split(b"\r\n\r\n", 1)[0].decode()
                    keep = [
                        ln
                        for ln in head.split("\r\n")[1:]
                        if ln.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
                    ]
                    conn.sendall(
                        (
                            "SIP/2.0 200 OK\r\n"
                            + "\r\n".join(keep)
                            + "\r\nContent-Length: 0\r\n\r\n"
                        ).encode()
                    )

    def close(self) -> None:
        self.server.close()


def slow_connection(source: str, port: int) -> socket.socket | None:
    sock = socket.socket()
    try:
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1\r\n")
    except OSError:
        sock.close()
        return None
    return sock


@pytest.fixture(params=[True, False], ids=["evict", "no-evict"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(
        tmp_path,
        sip={
            "trusted": ["127.0.0.1/32", f"{PHONE}/32"],
            "max_connections": SLOTS,
            "max_connections_per_source": PER_SOURCE,
            "max_outgoing_connections": 8,
            "tcp_message_timeout": 120.0,
            "evict_busiest": request.param,
            "rate_per_source": 0.0,
        },
        extra_config="[protocols.dummy]\nenabled = true",
        log_level="INFO",
    )
    gw.evict = request.param  # type: ignore[attr-defined]
    gw.cli("db", "init")
    gw.cli(
        "accounts", "add", "fine@sip.test", "fine@dummy", "dummy", "--password-stdin", stdin="pw\n"
    )
    gw.start()
    gw.wait_accounts("connected")
    yield gw
    assert gw.stop() == 0, gw.log_text()


def legit_exchange(port: int) -> list[int]:
    """OPTIONS then MESSAGE on one TCP connection from LEGIT; their statuses."""
    with socket.socket() as sock:
        sock.bind((LEGIT, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        statuses = []
        for method in ("OPTIONS", "MESSAGE"):
            sock.sendall(
                request(
                    method,
                    f"sip:echo@127.0.0.1:{port}",
                    "mallory@sip.test",
                    via=f"TCP {LEGIT}:5060",
                    body="hi" if method == "MESSAGE" else "",
                )
            )
            statuses.append(status_of(read_message(sock)))
        return statuses


def test_spread_out_slow_connections_do_not_starve_anyone(gateway: GatewayProcess) -> None:
    port = gateway.port
    attackers = [
        s
        for i in range(SOURCES)
        for _ in range(PER_SOURCE)
        if (s := slow_connection(f"127.0.0.{10 + i}", port)) is not None
    ]
    try:
        assert len(attackers) == SOURCES * PER_SOURCE > SLOTS
        time.sleep(0.5)  # let the gateway register every one of them

        if not gateway.evict:  # type: ignore[attr-defined]
            with pytest.raises(OSError):  # reset or closed: the slots are all taken  # noqa: PT011 - reset or closed: the errno varies
                legit_exchange(port)
            return

        options, message = legit_exchange(port)
        assert options == 200
        assert message == 407  # answered: an untrusted user is challenged

        # The gateway's own outgoing connection: a phone registered over TCP.
        phone = Phone(port)
        try:
            assert phone.registered == 200
            time.sleep(0.3)  # the gateway sees the registration connection close
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", 0))
                udp.settimeout(10)
                udp.sendto(
                    request(
                        "MESSAGE",
                        "sip:echo@dummy",
                        "fine@sip.test",
                        via=f"UDP 127.0.0.1:{udp.getsockname()[1]}",
                        body="echo me",
                    ),
                    ("127.0.0.1", port),
                )
                assert status_of(udp.recv(65535)) == 202
            deadline = time.monotonic() + 20
            while not phone.received and time.monotonic() < deadline:
                time.sleep(0.05)
            assert phone.received, gateway.log_text()
            assert phone.received[0].startswith(f"MESSAGE sip:fine@{PHONE}".encode())
            assert phone.received[0].endswith(b"echo me")
        finally:
            phone.close()
        assert "connection slots full: closing" in gateway.log.read_text()
    finally:
        for sock in attackers:
            sock.close()
