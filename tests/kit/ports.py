"""Free loopback ports for test servers.

A port is picked at random below the kernel's ephemeral range
(``net.ipv4.ip_local_port_range``), not by binding port 0: a port from that
range is free when it is picked, but every outgoing connection on the
machine (of the suite, of other runs on a shared machine) draws its local
port from the same range, and one of them can take it in the seconds
before the server binds it ("address already in use").
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10000
# Its own generator: tests that seed the global one (hypothesis) must not make
# every run pick the same ports.
_random = random.Random()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(family: socket.AddressFamily, kind: socket.SocketKind, host: str, port: int) -> bool:
    try:
        with socket.socket(family, kind) as s:
            s.bind((host, port))
    except OSError:
        return False
    return True


def free_port(kind: str = "both", host: str = "127.0.0.1") -> int:
    """A port that is currently free on ``host`` for UDP, TCP or (``"both"``) both.

    SIP listens on the same number for UDP and TCP, so ``"both"`` retries until
    one port is free for each.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kinds = {
        "udp": [socket.SOCK_DGRAM],
        "tcp": [socket.SOCK_STREAM],
        "both": [socket.SOCK_DGRAM, socket.SOCK_STREAM],
    }[kind]
    top = _ephemeral_start()
    if top - _LOWEST >= 1000:
        for _ in range(200):
            port = _random.randrange(_LOWEST, top)
            if all(_bindable(family, k, host, port) for k in kinds):
                return port
    # No room below the ephemeral range: the kernel's pick.
    for _ in range(50):
        with socket.socket(family, kinds[0]) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if all(_bindable(family, k, host, port) for k in kinds[1:]):
            return port
    raise OSError("no free port found")
