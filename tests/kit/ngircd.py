"""Launch an ngIRCd server on loopback for tests.

ngIRCd runs in the foreground (``-n``) with a config written to a temp
directory, listening on a free 127.0.0.1 port.  PAM, IDENT and DNS are off
(PAM would swallow the server password; IDENT and DNS lookups stall every
login by seconds).  As root it keeps running as root: ngIRCd only drops
privileges when ``ServerUID`` is set, which a throw-away test server does not
need.

Usage::

    with Ngircd(password="s3cret") as irc:
        connect(("127.0.0.1", irc.port))

    with Ngircd(tls=True) as irc:       # irc.tls_port, irc.ca_file
        ...

``ngircd_binary()`` is None when the Debian package is missing; the pytest
fixtures in tests/protocols/conftest.py turn that into skip/fail.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Self

from tests.kit.certs import write_self_signed_cert
from tests.kit.launcher import launch, stop_process, wait_listening
from tests.kit.ports import free_port

if TYPE_CHECKING:
    import subprocess

logger = logging.getLogger(__name__)

NGIRCD_BINARY = "/usr/sbin/ngircd"


def ngircd_binary() -> str | None:
    """Path of the ngircd binary, or None when it is not installed."""
    if os.access(NGIRCD_BINARY, os.X_OK):
        return NGIRCD_BINARY
    return shutil.which("ngircd")


class NgircdError(RuntimeError):
    pass


class Ngircd:
    """A running ngIRCd; ``port`` (plaintext) and ``tls_port`` on ``host``."""

    def __init__(
        self,
        *,
        password: str | None = None,
        tls: bool = False,
        host: str = "127.0.0.1",
        server_name: str = "irc.test.invalid",
        ping_timeout: int = 120,
        pong_timeout: int = 20,
    ) -> None:
        self.host = host
        self.password = password
        self.tls = tls
        self.server_name = server_name
        self.ping_timeout = ping_timeout
        self.pong_timeout = pong_timeout
        self.port = free_port("tcp", host)
        self.tls_port = free_port("tcp", host) if tls else None
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def _config(self, run_dir: Path) -> str:
        lines = [
            "[Global]",
            f"Name = {self.server_name}",
            "Info = purplegw test server",
            f"Listen = {self.host}",
            f"Ports = {self.port}",
            "MotdPhrase = purplegw test",
            f"PidFile = {run_dir / 'ngircd.pid'}",
        ]
        if self.password:
            lines.append(f"Password = {self.password}")
        lines += [
            "[Limits]",
            "MaxConnectionsIP = 0",
            "MaxNickLength = 30",
            f"PingTimeout = {self.ping_timeout}",
            f"PongTimeout = {self.pong_timeout}",
            # No flood throttling: tests send bursts (split long messages,
            # PING round trips right after a PRIVMSG).
            "MaxPenaltyTime = 0",
            "[Options]",
            "PAM = no",
            "Ident = no",
            "DNS = no",
            "ConnectIPv6 = no",
        ]
        if self.tls:
            cert, key = run_dir / "cert.pem", run_dir / "key.pem"
            write_self_signed_cert(cert, key, self.host)
            self.ca_file = cert
            lines += [
                "[SSL]",
                f"CertFile = {cert}",
                f"KeyFile = {key}",
                f"Ports = {self.tls_port}",
            ]
        return "\n".join(line for line in lines if line) + "\n"

    def start(self, timeout: float = 15.0) -> Ngircd:
        binary = ngircd_binary()
        if binary is None:
            raise NgircdError("ngircd is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="purplegw-ngircd-")
        run_dir = Path(self._tmp.name)
        conf = run_dir / "ngircd.conf"
        conf.write_text(self._config(run_dir))
        self.log_path = run_dir / "ngircd.log"
        self.proc = launch([binary, "-n", "-f", str(conf)], cwd=run_dir, output=self.log_path)
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        try:
            wait_listening(
                self.proc,
                self.host,
                ports,
                timeout,
                lambda why: NgircdError(f"ngircd {why}:\n{self.log()}"),
            )
        except NgircdError:
            self.stop()
            raise
        logger.debug("ngircd up on %s:%s", self.host, self.port)
        return self

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL): clients see their socket close."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

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


# --- an independent peer and an event recorder for adapter tests ---------------------


class RawIrcClient:
    """A deliberately naive IRC client over plain asyncio streams.

    It shares no code with purplegw's IRC adapter (no parser, no
    serializer): lines are split by hand, so a bug in the adapter's
    protocol module cannot hide itself in the test's peer.
    """

    def __init__(self, host: str, port: int, nick: str, password: str | None = None) -> None:
        self.host, self.port, self.nick, self.password = host, port, nick, password
        self.lines: list[str] = []
        self._reader = None
        self._writer = None
        self._new = None
        self._task = None

    async def connect(self, timeout: float = 20.0) -> RawIrcClient:
        import asyncio

        self._new = asyncio.Event()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._task = asyncio.create_task(self._pump())
        if self.password:
            self.send(f"PASS {self.password}")
        self.send(f"NICK {self.nick}")
        self.send(f"USER {self.nick} 0 * :raw test peer")
        await self.wait_line(
            lambda ln: f" 376 {self.nick} " in ln or f" 422 {self.nick} " in ln, timeout
        )
        return self

    async def _pump(self) -> None:
        assert self._reader is not None
        assert self._new is not None
        while True:
            raw = await self._reader.readline()
            if not raw:
                self.lines.append("<EOF>")
                self._new.set()
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("PING "):
                self.send("PONG " + line[5:])
            self.lines.append(line)
            self._new.set()

    def send(self, line: str) -> None:
        assert self._writer is not None
        self._writer.write(line.encode("utf-8") + b"\r\n")

    async def wait_line(self, predicate, timeout: float = 20.0, start: int = 0) -> str:
        """The first line (from index ``start``) matching ``predicate``."""
        import asyncio

        assert self._new is not None
        async with asyncio.timeout(timeout):
            index = start
            while True:
                while index < len(self.lines):
                    if predicate(self.lines[index]):
                        return self.lines[index]
                    index += 1
                self._new.clear()
                await self._new.wait()

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self.send("QUIT :bye")
                await self._writer.drain()
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


class RecordingEvents:
    """``SessionEvents`` that records every callback; ``wait_for`` polls them.

    ``events`` holds ``(name, args)`` tuples in arrival order.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple]] = []
        self._waiters: list = []

    def _record(self, name: str, *args: object) -> None:
        self.events.append((name, args))
        for waiter in self._waiters:
            waiter.set()

    def on_connection_state(self, state, reason: str = "") -> None:
        self._record("state", state, reason)

    def on_message(self, contact: str, text: str, message_id: str | None = None) -> None:
        self._record("message", contact, text)

    def on_contact_presence(self, presence) -> None:
        self._record("presence", presence.contact, presence.aggregate)

    def on_authorization_request(self, contact: str, text: str = "") -> None:
        self._record("auth_request", contact, text)

    def on_authorization_answer(self, contact: str, answer) -> None:
        self._record("auth_answer", contact, answer)

    def on_typing(self, contact: str, state) -> None:
        self._record("typing", contact, state)

    def on_receipt(self, contact: str, message_id: str) -> None:
        self._record("receipt", contact, message_id)

    def on_roster(self, items) -> None:
        self._record("roster", [item.contact for item in items])

    def on_roster_item(self, item) -> None:
        self._record("roster_item", item.contact, item.subscription)

    def on_roster_removed(self, contact: str) -> None:
        self._record("roster_removed", contact)

    def of(self, name: str) -> list[tuple]:
        return [args for kind, args in self.events if kind == name]

    def mark(self) -> int:
        """Index to pass as ``since`` to wait only for later events."""
        return len(self.events)

    async def wait_for(
        self, name: str, predicate=lambda args: True, timeout: float = 20.0, since: int = 0
    ) -> tuple:
        """The first ``name`` event from index ``since`` whose args match ``predicate``."""
        import asyncio

        event = asyncio.Event()
        self._waiters.append(event)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for kind, args in self.events[since:]:
                        if kind == name and predicate(args):
                            return args
                    event.clear()
                    await event.wait()
        finally:
            self._waiters.remove(event)
