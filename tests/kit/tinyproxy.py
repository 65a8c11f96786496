"""Launch tinyproxy (HTTP CONNECT proxy) on loopback for tests.

tinyproxy runs in the foreground (``-d``) with a config in a temp
directory: listens on a free 127.0.0.1 port, ``Allow 127.0.0.1`` only,
CONNECT restricted to ``connect_ports``, optional ``BasicAuth``.  Its log
(``LogLevel Connect``) is readable through ``log()`` so a test can show
that traffic really went through the proxy.

Usage::

    with Tinyproxy(connect_ports=[6667], auth=("u", "p")) as proxy:
        ... ProxySettings("127.0.0.1", proxy.port, "u", "p") ...
        assert proxy.saw_connect("127.0.0.1", 6667)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Self

from tests.kit.launcher import launch, stop_process, wait_listening
from tests.kit.ports import free_port

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

TINYPROXY_BINARY = "/usr/bin/tinyproxy"


def tinyproxy_binary() -> str | None:
    """Path of the tinyproxy binary, or None when it is not installed."""
    if os.access(TINYPROXY_BINARY, os.X_OK):
        return TINYPROXY_BINARY
    return shutil.which("tinyproxy")


class TinyproxyError(RuntimeError):
    pass


class Tinyproxy:
    """A running tinyproxy; ``port`` on ``host``."""

    def __init__(
        self,
        *,
        connect_ports: Iterable[int] = (),
        auth: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = free_port("tcp", host)
        self.connect_ports = list(connect_ports)
        self.auth = auth
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def _config(self, run_dir: Path) -> str:
        lines = [
            f"Port {self.port}",
            f"Listen {self.host}",
            "Timeout 60",
            f'LogFile "{run_dir / "tinyproxy.log"}"',
            # Connect level logs each CONNECT request with its target.
            "LogLevel Connect",
            f'PidFile "{run_dir / "tinyproxy.pid"}"',
            "MaxClients 50",
            "Allow 127.0.0.1",
            "DisableViaHeader Yes",
        ]
        # Without any ConnectPort line tinyproxy allows CONNECT to every port;
        # listing them is what makes a refusal (403) testable.
        lines += [f"ConnectPort {p}" for p in self.connect_ports]
        if self.auth:
            lines.append(f"BasicAuth {self.auth[0]} {self.auth[1]}")
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> Tinyproxy:
        binary = tinyproxy_binary()
        if binary is None:
            raise TinyproxyError("tinyproxy is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="purplegw-tinyproxy-")
        run_dir = Path(self._tmp.name)
        conf = run_dir / "tinyproxy.conf"
        conf.write_text(self._config(run_dir))
        self.log_path = run_dir / "tinyproxy.log"
        self._stdout = run_dir / "stdout.log"
        self.proc = launch([binary, "-d", "-c", str(conf)], cwd=run_dir, output=self._stdout)
        try:
            wait_listening(
                self.proc,
                self.host,
                [self.port],
                timeout,
                lambda why: TinyproxyError(
                    f"tinyproxy {why}:\n{self._stdout.read_text(errors='replace')}\n{self.log()}"
                ),
            )
        except TinyproxyError:
            self.stop()
            raise
        return self

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def saw_connect(self, host: str, port: int) -> bool:
        """True when the log shows a CONNECT to ``host:port`` (tinyproxy's own words)."""
        return f"CONNECT {host}:{port}" in self.log()

    def stop(self) -> None:
        stop_process(self.proc)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
