"""purplegw.actors.systemd against a socket bound by the test (systemd's side)."""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING

import pytest

from purplegw.actors.systemd import Notifier

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"purplegw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        yield sock, "@" + name


def test_ready_and_stopping_reach_an_abstract_socket(
    abstract_socket: tuple[socket.socket, str],
) -> None:
    sock, address = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    notifier.ready("3 accounts")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 accounts"
    notifier.stopping()
    assert sock.recv(4096).startswith(b"STOPPING=1\n")


def test_watchdog_pings_at_half_the_interval_and_only_while_healthy(
    abstract_socket: tuple[socket.socket, str],
) -> None:
    sock, address = abstract_socket
    notifier = Notifier(
        {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert notifier.watchdog_interval == pytest.approx(0.2)
    notifier.watchdog()  # nothing sent yet: the first ping is due at once
    assert sock.recv(4096) == b"WATCHDOG=1"
    notifier.watchdog()  # within 0.1 s of the last one: not sent
    notifier._last_watchdog -= 0.1
    notifier.watchdog(healthy=False)
    sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        sock.recv(4096)
    notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    notifier = Notifier(
        {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert notifier.watchdog_interval is None


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.stopping()


def test_an_unreachable_socket_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": f"@purplegw-nobody-{uuid.uuid4().hex}"})
    notifier.ready()
    notifier.ready()
    assert len([r for r in caplog.records if "notification" in r.message]) == 1
