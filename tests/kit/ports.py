"""Free loopback ports for test servers."""

from __future__ import annotations

import socket


def free_port(kind: str = "both", host: str = "127.0.0.1") -> int:
    """A port that is currently free on ``host`` for UDP, TCP or (``"both"``) both.

    SIP listens on the same number for UDP and TCP, so ``"both"`` retries until
    one port is free for each.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        first = socket.SOCK_DGRAM if kind in ("udp", "both") else socket.SOCK_STREAM
        with socket.socket(family, first) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
            if kind != "both":
                return port
            try:
                with socket.socket(family, socket.SOCK_STREAM) as t:
                    t.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError("no free port found")
