"""Digest authentication: server and client against each other and RFC vectors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purplegw.sip.digest import (
    DigestServer,
    build_authorization,
    compute_ha1,
    parse_auth_params,
    parse_challenge,
)
from purplegw.sip.errors import RemoteProtocolError
from tests.kit.corpus import corpus_dir

SECRET = b"s3cret-key"
USERS = {"alice": "wonderland"}


def lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = USERS.get(username)
    return None if password is None else compute_ha1(username, realm, password, algorithm)


def test_rfc2617_md5_vector() -> None:
    # RFC 2617 3.5 example (HTTP, but the arithmetic is the same)
    from purplegw.sip.digest import _response

    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    resp = _response(
        "MD5",
        ha1,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "00000001",
        "0a4f113b",
        "auth",
        "GET",
        "/dir/index.html",
    )
    assert resp == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_sha256_vector() -> None:
    # RFC 7616 3.9.1 example
    from purplegw.sip.digest import _response

    ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", "SHA-256")
    resp = _response(
        "SHA-256",
        ha1,
        "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        "00000001",
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        "auth",
        "GET",
        "/dir/index.html",
    )
    assert resp == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_round_trip_and_replay(algorithm: str) -> None:
    server = DigestServer("example.com", SECRET, algorithms=("SHA-256", "MD5"))
    values = server.challenge(1000.0, b"\x01" * 16)
    assert [parse_challenge(v).algorithm for v in values] == ["SHA-256", "MD5"]
    base = parse_challenge(values[0] if algorithm.startswith("SHA") else values[1])
    ch = type(base)(base.realm, base.nonce, algorithm, base.qop, base.opaque)
    auth = build_authorization(
        ch,
        username="alice",
        password="wonderland",
        method="REGISTER",
        uri="sip:example.com",
        cnonce="abc",
        nc=1,
    )
    assert server.verify("REGISTER", auth, 1010.0, lookup).ok
    again = server.verify("REGISTER", auth, 1011.0, lookup)
    assert not again.ok
    assert again.reason == "nonce-count replay"
    auth2 = build_authorization(
        ch,
        username="alice",
        password="wonderland",
        method="REGISTER",
        uri="sip:example.com",
        cnonce="abc",
        nc=2,
    )
    assert server.verify("REGISTER", auth2, 1012.0, lookup).ok


def test_kamailio_ha1_storage() -> None:
    server = DigestServer("example.com", SECRET, algorithms=("MD5",))
    (value,) = server.challenge(0, b"r")
    ha1 = compute_ha1("alice", "example.com", "wonderland")  # subscriber.ha1
    auth = build_authorization(
        parse_challenge(value),
        username="alice",
        ha1=ha1,
        method="MESSAGE",
        uri="sip:bob@example.com",
        cnonce="c",
    )
    assert server.verify("MESSAGE", auth, 1, lambda u, r, a: ha1 if u == "alice" else None).ok


def test_failures() -> None:
    server = DigestServer("example.com", SECRET, nonce_lifetime=60)
    ch = parse_challenge(server.challenge(0, b"x")[0])

    def auth(**kw: object) -> str:
        args: dict[str, object] = {
            "username": "alice",
            "password": "wonderland",
            "method": "REGISTER",
            "uri": "sip:example.com",
            "cnonce": "c",
        }
        args.update(kw)
        return build_authorization(ch, **args)  # type: ignore[arg-type]

    stale = server.verify("REGISTER", auth(), 61, lookup)
    assert not stale.ok
    assert stale.stale
    assert server.verify("REGISTER", auth(password="wrong"), 1, lookup).reason == "wrong response"
    assert server.verify("REGISTER", auth(username="mallory"), 1, lookup).reason == "unknown user"
    assert server.verify("INVITE", auth(), 1, lookup).reason == "wrong response"  # method bound
    forged = auth().replace(ch.nonce, ch.nonce[:-1] + ("0" if ch.nonce[-1] != "0" else "1"))
    assert server.verify("REGISTER", forged, 1, lookup).reason == "unknown nonce"
    other = DigestServer("example.com", b"other-secret")
    assert other.verify("REGISTER", auth(), 1, lookup).reason == "unknown nonce"
    assert not server.verify("REGISTER", "Basic YWxpY2U6d29uZGVybGFuZA==", 1, lookup).ok
    assert not server.verify("REGISTER", "Digest garbage", 1, lookup).ok
    assert server.challenge(0, b"y", stale=True)[0].endswith("stale=true")
    non_ascii = auth().replace(ch.nonce, ch.nonce[:-2] + "é\udcff")
    assert server.verify("REGISTER", non_ascii, 1, lookup).reason == "unknown nonce"
    assert not server.verify("REGISTER", auth().replace('response="', 'response="é'), 1, lookup).ok


def test_regaut01_unknown_scheme_is_refused_not_crashed() -> None:
    from purplegw.sip.parser import parse_datagram

    msg = parse_datagram((corpus_dir() / "rfc4475" / "regaut01.dat").read_bytes())
    value = msg.headers.get("Authorization")
    assert value is not None
    scheme, _ = parse_auth_params(value)
    assert scheme == "nooneknowsthisscheme"
    result = DigestServer("example.com", SECRET).verify("REGISTER", value, 0, lookup)
    assert not result.ok
    assert "scheme" in result.reason


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_verify_never_raises(value: str) -> None:
    server = DigestServer("example.com", SECRET)
    result = server.verify("REGISTER", "Digest " + value, 0, lookup)
    assert not result.ok
    with contextlib.suppress(RemoteProtocolError):
        parse_challenge(value)
