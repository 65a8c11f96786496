"""The control socket: ``purplegw status`` / ``purplegw reload`` talk to a daemon.

A Unix stream socket (mode 0600, so only the daemon's user can use it; no
network exposure), one JSON object per line each way:

    -> {"command": "status"}
    <- {"ok": true, "result": [{"sip_user": ..., "state": "connected", ...}, ...]}
    -> {"command": "reload"}
    <- {"ok": true, "result": {"added": [...], "removed": [...], "changed": [...], "unchanged": 7}}

Unknown commands and failures answer ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable

logger = logging.getLogger(__name__)

MAX_LINE = 64 * 1024


class ControlError(RuntimeError):
    """The daemon could not be reached or refused the command."""


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        for raw in self.rfile:
            if len(raw) > MAX_LINE:
                self._answer({"ok": False, "error": "request too long"})
                return
            try:
                request = json.loads(raw)
                command = request["command"]
                handler = self.server.commands[command]
            except (ValueError, KeyError, TypeError):
                self._answer({"ok": False, "error": f"bad request: {raw[:100]!r}"})
                continue
            try:
                self._answer({"ok": True, "result": handler()})
            except Exception as exc:
                logger.exception("Control command %s failed", command)
                self._answer({"ok": False, "error": repr(exc)})

    def _answer(self, response: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(response, default=str).encode() + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    commands: dict[str, Callable[[], Any]]


class ControlServer:
    """Serves ``commands`` (name -> zero-argument callable) on ``path``."""

    def __init__(
        self, path: str | os.PathLike[str], commands: dict[str, Callable[[], Any]]
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()  # left over by a daemon that was killed
        old_umask = os.umask(0o177)  # born 0600: no window where others can connect
        try:
            self._server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old_umask)
        self.path.chmod(0o600)
        self._server.commands = dict(commands)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control-socket", daemon=True
        )

    def start(self) -> ControlServer:
        self._thread.start()
        logger.info("Control socket at %s", self.path)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self.path.unlink(missing_ok=True)


def call(path: str | os.PathLike[str], command: str, timeout: float = 30.0) -> Any:
    """Send one command to the daemon listening on ``path``; return its result."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fspath(path))
            sock.sendall(json.dumps({"command": command}).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline()
    except OSError as exc:
        msg = f"cannot reach the gateway at {path}: {exc}"
        raise ControlError(msg) from exc
    if not line:
        msg = f"the gateway at {path} closed the connection"
        raise ControlError(msg)
    response = json.loads(line)
    if not response.get("ok"):
        raise ControlError(response.get("error", "unknown error"))
    return response["result"]


def select_status(
    entries: Iterable[dict[str, Any]],
    *,
    states: Collection[str] = (),
    sip_user: str | None = None,
) -> list[dict[str, Any]]:
    """The entries in one of ``states`` (all if empty) of ``sip_user`` (all if None).

    ``sip_user`` is compared as stored (``normalize_sip_user`` form); without
    an ``@`` it matches the user part alone, so ``--user alice`` finds
    ``alice@example.org``.
    """
    wanted = {state.lower() for state in states}
    selected = []
    for entry in entries:
        if wanted and entry.get("state") not in wanted:
            continue
        if sip_user is not None:
            name = entry.get("sip_user", "")
            if name != sip_user and ("@" in sip_user or name.partition("@")[0] != sip_user):
                continue
        selected.append(entry)
    return selected


def query_status(
    control_socket_path: str | os.PathLike[str], timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Every account's status dict, as ``purplegw status`` prints it."""
    return call(control_socket_path, "status", timeout)
