"""systemd service notifications: readiness, watchdog, stopping (sd_notify(3)).

Under ``Type=notify`` systemd passes a unix datagram socket in
``$NOTIFY_SOCKET`` (a path, or an abstract name written ``@name``) and waits
for ``READY=1`` before the unit counts as started; with ``WatchdogSec=`` it
also sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``) and kills a service that
sends no ``WATCHDOG=1`` within that interval.  The protocol is one datagram
of ``KEY=VALUE`` lines, so it is written here instead of adding a dependency.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.  A failed
send is logged once and never raised: a notification must not stop the
gateway (systemd then restarts or times the unit out, which is the point).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)


class Notifier:
    """Sends notifications to ``$NOTIFY_SOCKET``; feeds the watchdog at half its interval."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # An abstract socket name is written "@name" and bound with a leading NUL.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval = _watchdog_seconds(environ)
        self._last_watchdog = 0.0
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def notify(self, *fields: str) -> None:
        """Send ``fields`` ("READY=1", "STATUS=...") as one datagram."""
        if not self.address:
            return
        data = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(data, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("systemd notification to %r failed: %s", self.address, exc)

    def ready(self, status: str = "") -> None:
        """The front listens and the accounts are started."""
        self.notify("READY=1", f"STATUS={status}" if status else "STATUS=running")
        self._last_watchdog = time.monotonic()

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping: logging accounts out")

    def watchdog(self, *, healthy: bool = True) -> None:
        """Called from the main loop: ``WATCHDOG=1`` once per half interval while healthy.

        A main loop stuck in a reload, or a caller that reports itself
        unhealthy, stops the pings, and systemd restarts the service.
        """
        if self.watchdog_interval is None or not healthy:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self.watchdog_interval / 2:
            self._last_watchdog = now
            self.notify("WATCHDOG=1")


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """``$WATCHDOG_USEC`` in seconds when it is meant for this process, else None."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000
