"""Nobody sends as someone else, and the gateway is no open relay (real daemon, raw SIP).

These requests are hand-written on purpose: they are what an attacker sends,
not what a well-behaved phone would.  Digest answers are computed with the
RFC 2617 formula in the test itself.
"""

from __future__ import annotations

import hashlib
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from purplegw.testing.gateway import GatewayProcess


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path, extra_config="[protocols.dummy]\nenabled = true\n")
    gw.cli("db", "init")
    gw.cli("users", "add", "alice@sip.test", "--password-stdin", stdin="alicepw\n")
    gw.cli("users", "add", "mallory@sip.test", "--password-stdin", stdin="mallorypw\n")
    gw.cli("accounts", "add", "alice@sip.test", "alice@dummy.example", "dummy",
           "--password-stdin", stdin="x\n")
    gw.start()
    gw.wait_accounts("connected")
    yield gw
    assert gw.stop() == 0, gw.log_text()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 2617 digest


class RawUA:
    def __init__(self, gateway: GatewayProcess) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", gateway.port)
        self.cseq = 0

    def request(self, method: str, ruri: str, from_user: str, *, to: str | None = None,
                auth: str | None = None, body: str = "hi") -> tuple[int, str]:
        self.cseq += 1
        header = "Authorization" if method == "REGISTER" else "Proxy-Authorization"
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            "Max-Forwards: 70",
            f"From: <sip:{from_user}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to or ruri}>",
            f"Call-ID: {uuid.uuid4().hex}",
            f"CSeq: {self.cseq} {method}",
            f"Contact: <sip:{from_user.split('@')[0]}@127.0.0.1:{self.port}>",
            *([f"{header}: {auth}"] if auth else []),
            "Content-Type: text/plain",
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        self.sock.sendto("\r\n".join(lines).encode(), self.target)
        while True:
            data = self.sock.recv(65535).decode()
            status = int(data.split(" ", 2)[1])
            if status >= 200:  # noqa: PLR2004
                return status, data

    def authorized(self, method: str, ruri: str, from_user: str, username: str, password: str,
                   **kwargs: str) -> tuple[int, str]:
        status, data = self.request(method, ruri, from_user, **kwargs)
        if status not in (401, 407):
            return status, data
        challenge = re.search(r"nonce=\"([^\"]+)\"", data)
        assert challenge is not None, data
        nonce = challenge.group(1)
        ha1 = md5(f"{username}:sip.test:{password}")
        ha2 = md5(f"{method}:{ruri}")
        cnonce = "0a4f113b"
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        auth = (f'Digest username="{username}", realm="sip.test", nonce="{nonce}", '
                f'uri="{ruri}", response="{response}", algorithm=MD5, qop=auth, '
                f'nc=00000001, cnonce="{cnonce}"')
        return self.request(method, ruri, from_user, auth=auth, **kwargs)


def test_message_without_credentials_is_challenged(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test")
    assert status == 407
    assert "Proxy-Authenticate: Digest" in data


def test_authenticated_user_cannot_send_as_another(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.authorized("MESSAGE", "sip:bob@dummy.example", "alice@sip.test",
                                 "mallory", "mallorypw")
    assert status == 403, data
    assert "From does not match" in data
    status, _ = ua.authorized("MESSAGE", "sip:bob@dummy.example", "alice@sip.test",
                              "alice", "alicepw")
    assert status == 202


def test_wrong_password_and_replay_are_refused(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, _ = ua.authorized("MESSAGE", "sip:bob@dummy.example", "alice@sip.test",
                              "alice", "wrong")
    assert status == 407
    # A captured, valid Authorization replayed verbatim (same nonce and nc) is refused.
    status, data = ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test")
    nonce = re.search(r"nonce=\"([^\"]+)\"", data).group(1)  # type: ignore[union-attr]
    ha1 = md5("alice:sip.test:alicepw")
    ha2 = md5("MESSAGE:sip:bob@dummy.example")
    response = md5(f"{ha1}:{nonce}:00000001:c1:auth:{ha2}")
    auth = (f'Digest username="alice", realm="sip.test", nonce="{nonce}", '
            f'uri="sip:bob@dummy.example", response="{response}", qop=auth, nc=00000001, '
            'cnonce="c1"')
    assert ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test", auth=auth)[0] == 202
    assert ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test", auth=auth)[0] == 407


def test_user_without_accounts_cannot_relay(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.authorized("MESSAGE", "sip:victim@elsewhere.example", "mallory@sip.test",
                                 "mallory", "mallorypw")
    assert status == 403, data


def test_register_only_for_yourself(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.authorized("REGISTER", "sip:sip.test", "mallory@sip.test",
                                 "mallory", "mallorypw", to="sip:alice@sip.test")
    assert status == 403, data
    status, data = ua.authorized("REGISTER", "sip:sip.test", "alice@sip.test",
                                 "alice", "alicepw", to="sip:alice@sip.test")
    assert status == 200, data
    assert f"127.0.0.1:{ua.port}" in data
