"""The SIP core against a real UA: sipsak's requests parse, its digest answers verify.

A minimal UAS built only from purplegw.sip pieces (parse_datagram, rport,
make_response, serialize, DigestServer) runs on a loopback UDP socket in a
thread; sipsak sends OPTIONS, gets our 401 challenge and retries with MD5
credentials, which must verify.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from purplegw.sip.digest import DigestServer, compute_ha1
from purplegw.sip.errors import SipError
from purplegw.sip.message import Request, make_response, serialize, validate_request
from purplegw.sip.parser import parse_datagram
from purplegw.sip.rport import response_destination, stamp_request

REALM = "127.0.0.1"


def _sipsak() -> str:
    path = shutil.which("sipsak")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("sipsak is not installed (scripts/install-test-peers.sh)")
        pytest.skip("sipsak is not installed")
    return path


class MiniUAS(threading.Thread):
    def __init__(self, password: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.digest = DigestServer(REALM, b"test-secret", algorithms=("MD5",))
        self.ha1 = compute_ha1("alice", REALM, password)
        self.requests: list[Request] = []
        self.results: list[tuple[int, str]] = []
        self.errors: list[SipError] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            try:
                msg = parse_datagram(data)
                if not isinstance(msg, Request):
                    continue
                validate_request(msg)
                via = stamp_request(msg, source)
                self.requests.append(msg)
                self.sock.sendto(serialize(self.answer(msg)), response_destination(via))  # type: ignore[arg-type]
            except SipError as exc:
                self.errors.append(exc)

    def answer(self, msg: Request):
        now = time.time()
        auth = msg.headers.get("Authorization")
        if auth is None:
            headers = [("WWW-Authenticate", v) for v in self.digest.challenge(now, os.urandom(8))]
            return make_response(msg, 401, to_tag="uas1", headers=headers)
        result = self.digest.verify(
            msg.method, auth, now, lambda u, r, a: self.ha1 if u == "alice" else None
        )
        self.results.append((200 if result.ok else 403, result.reason))
        return make_response(msg, 200 if result.ok else 403, to_tag="uas1")


@pytest.mark.parametrize(("password", "ok"), [("wonderland", True), ("wrong", False)])
def test_sipsak_digest_round_trip(password: str, ok: bool) -> None:
    sipsak = _sipsak()
    uas = MiniUAS("wonderland")
    uas.start()
    try:
        proc = subprocess.run(
            [
                sipsak,
                "-s",
                f"sip:alice@127.0.0.1:{uas.port}",
                "-u",
                "alice",
                "-a",
                password,
                "-H",
                "127.0.0.1",
                "--local-ip",
                "127.0.0.1",
                "-vv",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        uas.stopping.set()
        uas.join(timeout=10)
        uas.sock.close()
    assert uas.errors == []
    assert len(uas.requests) >= 2, proc.stdout + proc.stderr
    first, second = uas.requests[0], uas.requests[1]
    assert first.method == second.method == "OPTIONS"
    assert second.cseq is not None
    assert first.cseq is not None
    assert second.headers.get("Authorization") is not None
    if ok:
        assert uas.results[0] == (200, ""), proc.stdout
        assert proc.returncode == 0, proc.stdout + proc.stderr
    else:
        assert uas.results[0] == (403, "wrong response")
        assert proc.returncode != 0
