"""Authorization values with bytes that are not UTF-8 are refused, not raised on (found by fuzzing).

The parser keeps such bytes as surrogates (surrogateescape); hashing or
HMAC-ing them with a strict encode raised UnicodeEncodeError out of
``DigestServer.verify``, which promises never to raise for bad credentials.
"""

from __future__ import annotations

import pytest

from purplegw.sip.digest import DigestServer, build_authorization, compute_ha1, parse_challenge
from purplegw.sip.message import Request, validate_request
from purplegw.sip.parser import parse_datagram

SERVER = DigestServer("gw.test", b"k" * 32, algorithms=("SHA-256", "MD5"))


def lookup(username: str, realm: str, algorithm: str) -> str:
    return compute_ha1(username, realm, "wonderland", algorithm)


def authorization_from_wire(value: bytes) -> str:
    raw = (
        b"REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        b"From: <sip:alice@gw.test>;tag=1\r\nTo: <sip:alice@gw.test>\r\nCall-ID: x\r\n"
        b"CSeq: 1 REGISTER\r\nAuthorization: " + value + b"\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_datagram(raw)
    assert isinstance(msg, Request)
    validate_request(msg)
    header = msg.headers.get("Authorization")
    assert header is not None
    return header


def good() -> bytes:
    value = SERVER.challenge(1000.0, b"\x01" * 8)[1]  # MD5
    return build_authorization(
        parse_challenge(value),
        username="alice",
        password="wonderland",
        method="REGISTER",
        uri="sip:gw.test",
        cnonce="c",
    ).encode()


@pytest.mark.parametrize("field", [b"nonce", b"uri", b"cnonce", b"response", b"nc"])
def test_non_utf8_byte_in_a_field_is_refused(field: bytes) -> None:
    value = good()
    start = value.index(b" " + field + b"=") + len(field) + 2
    start += value[start : start + 1] == b'"'  # inside the quotes, if quoted
    value = value[:start] + b"\xff" + value[start:]
    result = SERVER.verify(
        "REGISTER", authorization_from_wire(value), 1001.0, lookup, request_uri="sip:gw.test"
    )
    assert not result.ok


def test_the_same_value_without_the_byte_is_accepted() -> None:
    result = SERVER.verify(
        "REGISTER", authorization_from_wire(good()), 1001.0, lookup, request_uri="sip:gw.test"
    )
    assert result.ok
