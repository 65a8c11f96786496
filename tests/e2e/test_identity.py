"""Nobody sends as someone else, and the gateway is no open relay (real daemon, raw SIP).

These requests are hand-written on purpose: they are what an attacker sends,
not what a well-behaved phone would.  Digest answers are computed with the
RFC 2617 formula in the test itself.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from tests.kit.gateway import GatewayProcess
from tests.kit.raw_ua import RawUA, md5

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp_path, extra_config="[protocols.dummy]\nenabled = true\n")
    gw.cli("db", "init")
    gw.cli("users", "add", "alice@sip.test", "--password-stdin", stdin="alicepw\n")
    gw.cli("users", "add", "mallory@sip.test", "--password-stdin", stdin="mallorypw\n")
    gw.cli(
        "accounts",
        "add",
        "alice@sip.test",
        "alice@dummy.example",
        "dummy",
        "--password-stdin",
        stdin="x\n",
    )
    gw.start()
    gw.wait_accounts("connected")
    yield gw
    assert gw.stop() == 0, gw.log_text()


def test_message_without_credentials_is_challenged(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test")
    assert status == 407
    assert "Proxy-Authenticate: Digest" in data


def test_authenticated_user_cannot_send_as_another(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.authorized(
        "MESSAGE", "sip:bob@dummy.example", "alice@sip.test", "mallory", "mallorypw"
    )
    assert status == 403, data
    assert "From does not match" in data
    status, _ = ua.authorized(
        "MESSAGE", "sip:bob@dummy.example", "alice@sip.test", "alice", "alicepw"
    )
    assert status == 202


def test_wrong_password_and_replay_are_refused(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, _ = ua.authorized(
        "MESSAGE", "sip:bob@dummy.example", "alice@sip.test", "alice", "wrong"
    )
    assert status == 407
    # A captured, valid Authorization replayed verbatim (same nonce and nc) is refused.
    status, data = ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test")
    nonce = re.search(r"nonce=\"([^\"]+)\"", data).group(1)  # type: ignore[union-attr]
    ha1 = md5("alice:sip.test:alicepw")
    ha2 = md5("MESSAGE:sip:bob@dummy.example")
    response = md5(f"{ha1}:{nonce}:00000001:c1:auth:{ha2}")
    auth = (
        f'Digest username="alice", realm="sip.test", nonce="{nonce}", '
        f'uri="sip:bob@dummy.example", response="{response}", qop=auth, nc=00000001, '
        'cnonce="c1"'
    )
    assert ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test", auth=auth)[0] == 202
    assert ua.request("MESSAGE", "sip:bob@dummy.example", "alice@sip.test", auth=auth)[0] == 407


def test_user_without_accounts_cannot_relay(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.authorized(
        "MESSAGE", "sip:victim@elsewhere.example", "mallory@sip.test", "mallory", "mallorypw"
    )
    assert status == 403, data


def test_register_only_for_yourself(gateway: GatewayProcess) -> None:
    ua = RawUA(gateway)
    status, data = ua.authorized(
        "REGISTER",
        "sip:sip.test",
        "mallory@sip.test",
        "mallory",
        "mallorypw",
        to="sip:alice@sip.test",
    )
    assert status == 403, data
    status, data = ua.authorized(
        "REGISTER", "sip:sip.test", "alice@sip.test", "alice", "alicepw", to="sip:alice@sip.test"
    )
    assert status == 200, data
    assert f"127.0.0.1:{ua.port}" in data
