"""Launch a Kamailio instance with a given config text on loopback.

The config may contain the placeholder ``LISTEN``; it is replaced with
``127.0.0.1:<free port>`` (or pass ``port=`` to pick one). Kamailio runs in the
foreground (``-DD -E``) as the current user in a temporary run directory and is
stopped with SIGTERM.

Usage::

    with Kamailio(cfg_text) as kam:
        send_to(("127.0.0.1", kam.port))

In a pytest fixture, call :func:`require_kamailio` first (fail under CI,
skip elsewhere when the binary is missing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Self

from tests.kit.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

KAMAILIO_BINARY = "/usr/sbin/kamailio"
REPO = Path(__file__).resolve().parents[2]


def shipped_config(name: str, values: Mapping[str, str]) -> str:
    """``etc/NAME`` as shipped, each ``#!substdef "!KEY!...!g"`` of ``values`` set.

    Every key must be defined exactly once in the file: a renamed define
    fails here rather than testing the file's default.
    """
    text = (REPO / "etc" / name).read_text()
    for key, value in values.items():
        text, count = re.subn(
            rf'#!substdef "!{key}![^!]*!g"', f'#!substdef "!{key}!{value}!g"', text
        )
        assert count == 1, key
    return text


def kamailio_binary() -> str | None:
    """Path of the kamailio binary, or None when it is not installed."""
    if os.access(KAMAILIO_BINARY, os.X_OK):
        return KAMAILIO_BINARY
    return shutil.which("kamailio")


def require_kamailio() -> str:
    """The kamailio binary; a test fails under CI and skips elsewhere when it is missing."""
    binary = kamailio_binary()
    if binary is None:
        from tests.kit.binaries import missing_peer  # pytest only in tests

        missing_peer("kamailio", "kamailio")
    assert binary is not None
    return binary


class KamailioError(RuntimeError):
    pass


class Kamailio:
    """A running Kamailio; ``port`` is its SIP port on 127.0.0.1."""

    def __init__(
        self,
        cfg_text: str,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        cpu: int | None = None,
        shm_mb: int = 64,
        extra_args: tuple[str, ...] = (),
        command_prefix: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port("udp", host)
        self.cfg_text = cfg_text.replace("LISTEN", f"{host}:{self.port}")
        self.cpu = cpu
        self.shm_mb = shm_mb
        self.extra_args = extra_args
        self.command_prefix = command_prefix  # e.g. ("chrt", "-f", "10") for benchmarks
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.log_path: Path | None = None

    def start(self, timeout: float = 15.0) -> Kamailio:
        binary = kamailio_binary()
        if binary is None:
            raise KamailioError("kamailio is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="purplegw-kamailio-")
        run_dir = Path(self._tmp.name)
        cfg = run_dir / "kamailio.cfg"
        cfg.write_text(self.cfg_text)
        self.log_path = run_dir / "kamailio.log"
        cmd = [
            binary,
            "-f",
            str(cfg),
            "-DD",
            "-E",
            "-m",
            str(self.shm_mb),
            "-M",
            "8",
            "-Y",
            str(run_dir),
            "-w",
            str(run_dir),
            "-P",
            str(run_dir / "kamailio.pid"),
            *self.extra_args,
        ]
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        cmd = [*self.command_prefix, *cmd]
        logger.debug("starting %s", cmd)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Poll with OPTIONS until Kamailio answers (it binds before its children start)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((self.host, 0))
            sock.settimeout(0.2)
            lport = sock.getsockname()[1]
            n = 0
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise KamailioError(
                        f"kamailio exited with {self.proc.returncode}: {self.log_text()[-2000:]}"
                    )
                n += 1
                probe = (
                    f"OPTIONS sip:{self.host}:{self.port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP {self.host}:{lport};branch=z9hG4bKprobe{n}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:probe@{self.host}>;tag=p{n}\r\n"
                    f"To: <sip:{self.host}>\r\n"
                    f"Call-ID: probe{n}@{self.host}\r\n"
                    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode()
                sock.sendto(probe, (self.host, self.port))
                try:
                    data = sock.recv(65535)
                except OSError:
                    continue
                if data.startswith(b"SIP/2.0 "):
                    return
        raise KamailioError(f"kamailio did not answer within {timeout}s: {self.log_text()[-2000:]}")

    def log_text(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # Kamailio forks children into its own session; signal the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
