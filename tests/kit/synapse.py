"""A throw-away Synapse homeserver on loopback, for tests and benchmarks.

Usage::

    from tests.kit.synapse import Synapse, synapse_python

    with Synapse() as server:
        alice = server.create_user("alice")     # -> MatrixUser(user_id, password, localpart)
        server.base_url                          # http://127.0.0.1:<free port>
        server.restart()                         # same port, same database
        server.override_ratelimit(alice.user_id, per_second=1, burst=1)

Synapse (PyPI ``matrix-synapse``) pins many dependencies of its own, so it
lives in its own virtualenv, ``.venv-synapse/`` at the repository root
(``scripts/install-test-peers.sh`` creates it; ``synapse_python()`` returns
its interpreter, or None when it is missing: tests then skip, or fail under
CI).  The generated config keeps everything on this machine:

* one plain-HTTP ``client`` listener on 127.0.0.1 (no federation listener,
  ``federation_domain_whitelist: []``, ``trusted_key_servers: []``),
* SQLite in the temp directory, ``report_stats: false``, no URL previews,
  no push, no metrics,
* registration only through the shared secret (admin API
  ``/_synapse/admin/v1/register``, HMAC-SHA1 as Synapse specifies),
* rate limits raised far above what tests send (a test that needs a 429
  lowers one user's limit with ``override_ratelimit``),
* presence on; the server name is ``matrix.test`` (never resolved: no
  federation), so user ids are ``@alice:matrix.test``.

The config file is JSON, which is YAML too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from tests.kit.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SERVER_NAME = "matrix.test"
_LOTS = {"per_second": 10000, "burst_count": 10000}


def synapse_python() -> Path | None:
    """The interpreter of ``.venv-synapse`` if Synapse is installed there."""
    python = REPO / ".venv-synapse" / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import synapse.app.homeserver"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return python if probe.returncode == 0 else None


@dataclass(frozen=True)
class MatrixUser:
    localpart: str
    password: str

    @property
    def user_id(self) -> str:
        return f"@{self.localpart}:{SERVER_NAME}"

    @property
    def contact(self) -> str:
        """The id purplegw's Matrix adapter reports for this user (``local@server``)."""
        return f"{self.localpart}@{SERVER_NAME}"


class Synapse:
    """One Synapse process; ``start``/``stop``/``restart`` keep port and database."""

    def __init__(self, python: Path | None = None) -> None:
        found = python or synapse_python()
        if found is None:
            raise RuntimeError("Synapse is not installed in .venv-synapse")
        self.python = found
        self.dir = Path(tempfile.mkdtemp(prefix="purplegw-synapse-"))
        self.port = free_port("tcp")
        self.shared_secret = secrets.token_hex(16)
        self.config_path = self.dir / "homeserver.yaml"
        self.log_path = self.dir / "synapse.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "server_name": SERVER_NAME,
            "pid_file": str(self.dir / "homeserver.pid"),
            "public_baseurl": self.base_url + "/",
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(self.dir / "homeserver.db")}},
            "log_config": str(self._write_log_config()),
            "media_store_path": str(self.dir / "media"),
            "signing_key_path": str(self.dir / "signing.key"),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": secrets.token_hex(16),
            # Password hashing at its cheapest: logins and registrations in tests.
            "bcrypt_rounds": 4,
            "form_secret": secrets.token_hex(16),
            "enable_registration": False,
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "enable_metrics": False,
            "push": {"enabled": False},
            "presence": {"enabled": True},
            "serve_server_wellknown": False,
            "rc_message": _LOTS,
            "rc_registration": _LOTS,
            "rc_login": {"address": _LOTS, "account": _LOTS, "failed_attempts": _LOTS},
            "rc_joins": {"local": _LOTS, "remote": _LOTS},
            "rc_invites": {"per_room": _LOTS, "per_user": _LOTS, "per_issuer": _LOTS},
            "rc_presence": {"per_user": _LOTS},
            "rc_room_creation": _LOTS,
            "rc_admin_redaction": _LOTS,
        }
        self.config_path.write_text(json.dumps(config, indent=1))

    def _write_log_config(self) -> Path:
        path = self.dir / "log.yaml"
        path.write_text(
            json.dumps(
                {
                    "version": 1,
                    "formatters": {
                        "f": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}
                    },
                    "handlers": {
                        "file": {
                            "class": "logging.FileHandler",
                            "formatter": "f",
                            "filename": str(self.log_path),
                        }
                    },
                    "root": {"level": "INFO", "handlers": ["file"]},
                    "disable_existing_loggers": False,
                }
            )
        )
        return path

    # --- process ------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Synapse:
        if not (self.dir / "signing.key").exists():
            subprocess.run(  # our own venv's interpreter
                [
                    str(self.python),
                    "-m",
                    "synapse.app.homeserver",
                    "-c",
                    str(self.config_path),
                    "--generate-keys",
                ],
                capture_output=True,
                timeout=120,
                check=True,
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        with (self.dir / "stdout.log").open("ab") as out:
            self.process = subprocess.Popen(  # our own venv's interpreter
                [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited at start:\n{self.log_text()[-3000:]}")
            try:
                self.request("GET", "/_matrix/client/versions", timeout=2)
            except OSError:
                time.sleep(0.1)
                continue
            return self
        raise RuntimeError(f"Synapse did not answer within {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        parts = [
            p.read_text(errors="replace")
            for p in (self.dir / "stdout.log", self.log_path)
            if p.exists()
        ]
        return "\n".join(parts)

    # --- HTTP ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path}: {exc.code} {exc.read()!r}") from exc

    def create_user(
        self, localpart: str, password: str | None = None, *, admin: bool = False
    ) -> MatrixUser:
        """Register through the shared-secret admin API (no email, no captcha)."""
        password = password or secrets.token_hex(8)
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            b"\x00".join(
                [
                    nonce.encode(),
                    localpart.encode(),
                    password.encode(),
                    b"admin" if admin else b"notadmin",
                ]
            )
        )
        self.request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return MatrixUser(localpart, password)

    def login(self, user: MatrixUser, device_id: str | None = None) -> dict[str, Any]:
        """A fresh access token for ``user`` (``{"access_token", "device_id", ...}``)."""
        body: dict[str, Any] = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.localpart},
            "password": user.password,
        }
        if device_id:
            body["device_id"] = device_id
        return self.request("POST", "/_matrix/client/v3/login", body)

    def devices(self, token: str) -> list[str]:
        return [
            d["device_id"]
            for d in self.request("GET", "/_matrix/client/v3/devices", token=token)["devices"]
        ]

    def admin_token(self) -> str:
        if not hasattr(self, "_admin"):
            self._admin = self.create_user("kitadmin", admin=True)
        return self.login(self._admin)["access_token"]

    def user_devices(self, user_id: str) -> list[str]:
        """Device ids of ``user_id`` (admin API: no login, so no device of our own)."""
        from urllib.parse import quote

        answer = self.request(
            "GET", f"/_synapse/admin/v2/users/{quote(user_id)}/devices", token=self.admin_token()
        )
        return sorted(d["device_id"] for d in answer["devices"])

    def override_ratelimit(self, user_id: str, per_second: float, burst: int) -> None:
        """Lower (or lift) one user's message rate limit (Synapse admin API)."""
        from urllib.parse import quote

        self.request(
            "POST",
            f"/_synapse/admin/v1/users/{quote(user_id)}/override_ratelimit",
            {"messages_per_second": per_second, "burst_count": burst},
            token=self.admin_token(),
        )


# --- one server per test process --------------------------------------------------------

_shared: Synapse | None = None


def shared_synapse() -> Synapse:
    """The Synapse of this test process, started on first use and stopped at exit.

    The adapter tests and the end-to-end tests share it: a Synapse start
    costs ~5 s of CPU on a 2-core machine.
    """
    global _shared  # noqa: PLW0603 - a process-wide singleton on purpose
    if _shared is None:
        import atexit

        server = Synapse().start()
        atexit.register(server.__exit__)
        _shared = server
    elif _shared.process is None or _shared.process.poll() is not None:
        _shared.start()
    return _shared


# --- an independent Matrix client for the other side of a conversation ------------------


@dataclass(frozen=True)
class PeerEvent:
    kind: str  # "message", "typing", "presence", "invite", "receipt", "member"
    room_id: str = ""
    sender: str = ""
    body: str = ""
    data: Any = None


class MatrixPeer:
    """A matrix-nio client in its own thread and loop, recording what it receives.

    Not purplegw code: it talks to Synapse directly, as a Matrix user would.
    """

    def __init__(self, server: Synapse, user: MatrixUser) -> None:
        import asyncio
        import threading

        self.server = server
        self.user = user
        self.events: list[PeerEvent] = []
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name=f"peer-{user.localpart}"
        )
        self._thread.start()
        self.client: Any = None
        self._task: Any = None
        self.presence = "online"

    def run(self, coro: Any, timeout: float = 60) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, *, auto_join: bool = True) -> MatrixPeer:
        self.auto_join = auto_join
        self.run(self._start())
        return self

    async def _start(self) -> None:
        import nio

        self.client = nio.AsyncClient(
            self.server.base_url,
            self.user.user_id,
            config=nio.AsyncClientConfig(encryption_enabled=False),
        )
        answer = await self.client.login(self.user.password)
        assert isinstance(answer, nio.LoginResponse), answer
        await self.client.sync(timeout=0, full_state=True)
        self._task = self.loop.create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        import asyncio

        import nio

        while True:
            try:
                answer = await self.client.sync(timeout=2000, set_presence=self.presence)
            except Exception:  # noqa: BLE001 - server restarting: keep trying
                await asyncio.sleep(0.2)
                continue
            if not isinstance(answer, nio.SyncResponse):
                await asyncio.sleep(0.2)
                continue
            await self._record(answer)

    async def _record(self, answer: Any) -> None:
        import nio

        for room_id, info in answer.rooms.invite.items():
            self._add(PeerEvent("invite", room_id, data=info))
            if self.auto_join:
                await self.client.join(room_id)
        for room_id, info in answer.rooms.join.items():
            for event in info.timeline.events:
                if isinstance(event, nio.RoomMessageText):
                    self._add(PeerEvent("message", room_id, event.sender, event.body, event))
                elif isinstance(event, nio.RoomMemberEvent):
                    self._add(
                        PeerEvent("member", room_id, event.state_key, event.membership, event)
                    )
            for event in info.ephemeral:
                if isinstance(event, nio.TypingNoticeEvent):
                    self._add(PeerEvent("typing", room_id, data=list(event.users)))
        for event in answer.presence_events:
            self._add(
                PeerEvent(
                    "presence", sender=event.user_id, body=event.presence, data=event.status_msg
                )
            )

    def _add(self, event: PeerEvent) -> None:
        with self._lock:
            self.events.append(event)

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def wait_for(self, predicate: Any, timeout: float = 20, since: int = 0) -> PeerEvent:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [e for e in self.events[since:] if predicate(e)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                with self._lock:
                    last = self.events[-8:]
                raise AssertionError(
                    f"peer {self.user.user_id}: nothing matching in {timeout}s; last events: {last}"
                )
            time.sleep(0.02)

    def messages(self, since: int = 0) -> list[PeerEvent]:
        with self._lock:
            return [e for e in self.events[since:] if e.kind == "message"]

    # --- actions ----------------------------------------------------------------------

    def direct_room(self, other: str, *, encrypted: bool = False) -> str:
        """Create a direct room inviting ``other`` (an mxid)."""
        import nio

        state = (
            [
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            ]
            if encrypted
            else []
        )
        answer = self.run(
            self.client.room_create(
                is_direct=True,
                invite=[other],
                preset=nio.RoomPreset.trusted_private_chat,
                initial_state=state,
            )
        )
        assert isinstance(answer, nio.RoomCreateResponse), answer
        return answer.room_id

    def send(self, room_id: str, body: str) -> str:
        import nio

        answer = self.run(
            self.client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
        )
        assert isinstance(answer, nio.RoomSendResponse), answer
        return answer.event_id

    def typing(self, room_id: str, *, on: bool) -> None:
        self.run(self.client.room_typing(room_id, typing_state=on, timeout=30000))

    def read(self, room_id: str, event_id: str) -> None:
        self.run(self.client.room_read_markers(room_id, event_id, event_id))

    def set_presence(self, presence: str, status_msg: str | None = None) -> None:
        self.presence = presence
        self.run(self.client.set_presence(presence, status_msg))

    def stop(self) -> None:
        async def close() -> None:
            if self._task is not None:
                self._task.cancel()
            if self.client is not None:
                await self.client.close()

        try:
            self.run(close(), 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
