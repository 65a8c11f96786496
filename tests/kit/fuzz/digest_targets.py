"""Stateful fuzz of Digest authentication (purplegw/sip/digest.py).

Challenges on a virtual clock, then Authorization values built for them
(right or wrong password, known or unknown user, every algorithm, fresh,
repeated or lower nonce-counts, a digest uri other than the Request-URI),
some mangled byte-wise afterwards.  Invariants:

1. ``DigestServer.verify`` never raises ("never raises for bad credentials").
2. Nothing is accepted that should not be: an accepted value carries the
   parameters of a value built with the right password, for a nonce we issued
   and that is not stale, with a nonce-count above the last accepted one for
   that nonce (any count the first time), for the Request-URI.
3. Nothing right is refused: an unmangled value with all of the above is
   accepted; one that is right but stale is refused with ``stale``.
"""

from __future__ import annotations

import logging

from purplegw.sip.digest import (
    DigestServer,
    build_authorization,
    compute_ha1,
    parse_auth_params,
    parse_challenge,
)
from purplegw.sip.errors import SipError

from .draw import Draw
from .target import Target, Trace, check
from .transaction_targets import op_seeds

logger = logging.getLogger(__name__)

__all__ = ["DIGEST"]

MAX_OPS = 60
REALM = "gw.test"
RURI = "sip:gw.test"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
USERS = ("alice", "bob", "eve", 'al"ice', "alice\\")
URIS = (RURI, RURI, "sip:GW.test", "sip:gw.test;transport=tcp", "sip:other.test", "sip:%67w.test")
ALGORITHMS = ("MD5", "SHA-256", "MD5-sess", "SHA-256-sess")
MANGLES = (
    b'"',
    b"\\",
    b",",
    b"=",
    b" ",
    b"",
    b"\x00",
    b"\xff",
    b"nc=00000009, ",
    b'response="0", ',
    b"Digest ",
    b"algorithm=MD5, ",
    b'uri="sip:x", ',
    b"qop=auth-int, ",
)
_KEYS = ("username", "realm", "nonce", "uri", "response", "nc", "cnonce", "qop", "algorithm")


def _lookup(username: str, realm: str, algorithm: str) -> str | None:
    password = PASSWORDS.get(username)
    return None if password is None else compute_ha1(username, realm, password, algorithm)


def _mangle(d: Draw, value: str) -> str:
    data = bytearray(value.encode("utf-8", "surrogateescape"))
    for _ in range(d.int(1, 3)):
        pos = d.int(0, len(data))
        op = d.int(0, 2)
        if op == 0:
            data[pos:pos] = d.choice(MANGLES)
        elif op == 1:
            del data[pos : pos + d.int(1, 8)]
        else:
            data[pos : pos + 1] = d.choice(MANGLES)
    return data.decode("utf-8", "surrogateescape")


def _params(value: str) -> dict[str, str] | None:
    try:
        _, params = parse_auth_params(value)
    except SipError:
        return None
    out = {k: params.get(k, "") for k in _KEYS}
    out["algorithm"] = params.get("algorithm", "MD5").lower()  # absent means MD5 (RFC 2617)
    out["response"] = out["response"].lower()
    return out


def run_digest(data: bytes, trace: Trace = None) -> str:
    d = Draw(data)
    server = DigestServer(REALM, b"k" * 32, algorithms=("SHA-256", "MD5"))
    now = 1000.0
    issued: dict[str, int] = {}  # nonce -> issue time
    accepted_nc: dict[str, int] = {}  # nonce -> last accepted nonce-count
    outcomes: set[str] = set()
    for _ in range(MAX_OPS):
        if d.exhausted:
            break
        op = d.int(0, 5)
        if op == 0 or not issued:
            for value in server.challenge(now, d.bytes(8) or b"\x00"):
                issued.setdefault(parse_challenge(value).nonce, int(now))
            continue
        if op == 1:
            now += d.choice((1.0, 100.0, 299.0, 301.0))
            continue
        nonce = d.choice(sorted(issued))
        algorithm = d.choice(ALGORITHMS)
        username = d.choice(USERS)
        right_password = d.int(0, 3) != 0
        password = PASSWORDS.get(username, "x") if right_password else "wrong"
        uri = d.choice(URIS)
        previous = accepted_nc.get(nonce)  # None: this nonce was never accepted
        last = previous or 0
        nc = d.choice((last + 1, last + 1, last, max(1, last - 1), 2**32 - 1))
        cnonce = d.choice(("c1", "c2", ""))
        challenge = parse_challenge(
            f'Digest realm="{REALM}", nonce="{nonce}", algorithm={algorithm}, qop="auth"'
        )
        value = build_authorization(
            challenge,
            username=username,
            password=password,
            method="REGISTER",
            uri=uri,
            cnonce=cnonce,
            nc=nc,
        )
        mangled = d.int(0, 2) == 0
        sent = _mangle(d, value) if mangled else value
        result = server.verify("REGISTER", sent, now, _lookup, request_uri=RURI)
        if trace is not None:
            trace.append(
                f"t={now} verify {sent!r} (nc={nc}, last={last}, right password "
                f"{right_password}, issued {issued[nonce]}) -> {result}"
            )
        outcomes.add(f"{result.ok} {result.stale} {result.reason[:24]}")
        fresh = now - issued[nonce] <= server.nonce_lifetime
        # host case does not matter (RFC 3261 19.1.4); an escaped host is not a host at all
        legit = username in PASSWORDS and right_password and uri in (RURI, "sip:GW.test")
        if result.ok:
            check(_params(sent) == _params(value), f"mangled value accepted: {sent!r}")
            check(legit, f"accepted without the right password or for another uri: {sent!r}")
            check(fresh, "stale nonce accepted")
            check(previous is None or nc > previous, f"nonce-count {nc} accepted after {last}")
            accepted_nc[nonce] = nc
        elif not mangled and legit:
            if not fresh:
                check(result.stale, f"stale nonce refused without stale: {result}")
            else:
                check(
                    previous is not None and nc <= previous, f"right credentials refused: {result}"
                )
    return " ".join(sorted(outcomes))


DIGEST = Target(
    "digest", run_digest, op_seeds, max_len=1024, dictionary=tuple(bytes([i]) for i in range(16))
)
