"""The daemon speaks systemd's notify protocol (etc/purplegw.service, Type=notify).

The test plays systemd: it binds the unix datagram socket named by
$NOTIFY_SOCKET, sets $WATCHDOG_USEC, and reads what ``purplegw run`` sends.
"""

from __future__ import annotations

import itertools
import signal
import socket
import time
from typing import TYPE_CHECKING

import pytest

from tests.kit.gateway import GatewayProcess
from tests.kit.raw_ua import RawUA

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

WATCHDOG_USEC = 1_000_000  # pings expected every 0.5 s


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield sock, path


def receive(sock: socket.socket, timeout: float) -> tuple[float, dict[str, str]]:
    sock.settimeout(timeout)
    data = sock.recv(4096).decode()
    return time.monotonic(), dict(line.split("=", 1) for line in data.splitlines())


@pytest.mark.slow
def test_ready_after_front_and_accounts_then_watchdog_then_stopping(
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    gw = GatewayProcess(
        tmp_path,
        sip={"trusted": ["127.0.0.1/32"]},
        extra_config="[protocols.dummy]\nenabled = true\n",
    )
    gw.cli("db", "init")
    gw.cli(
        "accounts",
        "add",
        "alice@sip.test",
        "alice@dummy",
        "dummy",
        "--password-stdin",
        stdin="pw\n",
    )
    gw.start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    try:
        _, first = receive(sock, 60)
        assert first.get("READY") == "1", (first, gw.log_text())
        # Ready means: the SIP front answers and the account actors exist.
        status, _ = RawUA(gw).request("OPTIONS", gw.uri, "probe@sip.test")
        assert status == 200
        assert [a["ext_user"] for a in gw.status()] == ["alice@dummy"]

        # Pings sent while the checks above ran wait in the socket: drop them,
        # then time the next ones as they arrive.
        sock.setblocking(False)
        while True:
            try:
                assert sock.recv(4096) == b"WATCHDOG=1"
            except BlockingIOError:
                break
        start = time.monotonic()
        pings = [start]
        while time.monotonic() - start < 3.0:
            when, fields = receive(sock, 5)
            assert fields == {"WATCHDOG": "1"}, fields
            pings.append(when)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # Never a whole WATCHDOG_USEC without a ping (systemd would restart
        # the service), and about half of it between two: 6 in 3 s.
        assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
        assert 4 <= len(pings) - 1 <= 8, gaps

        assert gw.process is not None
        gw.process.send_signal(signal.SIGTERM)
        while True:
            _, fields = receive(sock, 30)
            if "WATCHDOG" not in fields:
                break
        assert fields.get("STOPPING") == "1", fields
    finally:
        assert gw.stop() == 0, gw.log_text()


def test_no_notify_socket_no_messages(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """Outside systemd the daemon sends nothing (and does not fail)."""
    sock, _ = notify_socket
    gw = GatewayProcess(tmp_path)
    gw.cli("db", "init")
    gw.start()
    try:
        status, _ = _options_when_listening(gw)
        assert status == 200
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(4096)
    finally:
        assert gw.stop() == 0, gw.log_text()


def _options_when_listening(gw: GatewayProcess) -> tuple[int, str]:
    ua = RawUA(gw)
    ua.sock.settimeout(0.5)
    deadline = time.monotonic() + 60
    while True:
        try:
            return ua.request("OPTIONS", gw.uri, "probe@sip.test")
        except (TimeoutError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise
