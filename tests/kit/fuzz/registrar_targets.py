"""Stateful fuzz of the registrar's binding table (purplegw/sip/registrar.py).

REGISTERs (validated as the front validates them) with random Contact lists,
``expires`` parameters (valid, 0, too brief, huge, and not delta-seconds at
all), Expires headers, Call-IDs and CSeqs (repeated, lower, 2**32-1), on a
virtual clock with ``expire(now)`` sweeps.  Invariants, from the rules in the
module header:

1. ``process``, ``contacts`` and ``expire`` never raise.
2. An ``expires`` parameter that is not delta-seconds (RFC 3261 20.10,
   ``1*DIGIT``) is 400.
3. Rule 2: a 200 binds every contact of the request with a lifetime in
   [min_expires, max_expires], or removes it for lifetime 0; 423 comes only
   when a lifetime is in (0, min_expires).
4. Rule 3 and refusals: a 400, 423 or 500 changes no binding.
5. ``expire(now)`` leaves no binding whose time has come.
"""

from __future__ import annotations

import logging
import re

from purplegw.sip.errors import SipError
from purplegw.sip.message import Request, validate_request
from purplegw.sip.parser import parse_datagram
from purplegw.sip.registrar import BindingTable

from .draw import Draw
from .target import Target, Trace, check
from .transaction_targets import op_seeds

logger = logging.getLogger(__name__)

__all__ = ["REGISTRAR"]

MAX_OPS = 80
URIS = (
    "sip:a@127.0.0.1:5070",
    "sip:a@127.0.0.1:5071;transport=tcp",
    "sip:b@[::1]:5070",
    "sip:A@127.0.0.1:5070",
)
PARAMS = (
    None,
    None,
    "0",
    "1",
    "59",
    "60",
    "3600",
    "3601",
    "4294967296",
    "-30",
    "1_000",
    "+60",
    "0x10",
    "\u0663",
    "",
)
HEADER_EXPIRES = (None, "0", "30", "60", "600", "4294967295", "99999999999999")
_DELTA_RE = re.compile(r"[0-9]+")


def _register(d: Draw, cseq: int) -> tuple[Request, list[tuple[str, str | None]]] | None:
    contacts: list[tuple[str, str | None]] = []
    lines = [
        "REGISTER sip:127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{d.int(0, 999)}",
        "From: <sip:a@127.0.0.1>;tag=r1",
        "To: <sip:a@127.0.0.1>",
        f"Call-ID: {d.choice(('r1', 'r2'))}",
        f"CSeq: {cseq} REGISTER",
    ]
    if d.int(0, 15) == 0:
        lines.append("Contact: *")
        contacts.append(("*", None))
    else:
        for _ in range(d.int(0, 3)):
            uri, param = d.choice(URIS), d.choice(PARAMS)
            contacts.append((uri, param))
            lines.append(f"Contact: <{uri}>" + (f";expires={param}" if param is not None else ""))
    expires = d.choice(HEADER_EXPIRES)
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines.append("Content-Length: 0")
    try:
        msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
        assert isinstance(msg, Request)
        validate_request(msg)  # the front answers 400 to anything that fails here
    except SipError:
        return None
    return msg, contacts


def _lifetime(param: str | None, header: int | None, default: int) -> int:
    if param is not None:
        return min(int(param), 2**32 - 1)
    return header if header is not None else default


def run_registrar(data: bytes, trace: Trace = None) -> str:  # noqa: C901, PLR0912
    d = Draw(data)
    lo = d.choice((1, 60))
    hi = max(lo, d.choice((60, 3600, 2**32 - 1)))
    table = BindingTable(min_expires=lo, max_expires=hi, default_expires=d.choice((lo, hi)))
    now = 1000.0
    cseq = 1
    outcomes: set[str] = set()
    for _ in range(MAX_OPS):
        if d.exhausted:
            break
        if d.int(0, 4) == 0:
            now += d.choice((1.0, 59.0, 600.0, 3600.0))
            table.expire(now)
            for aor in table.aors():
                check(
                    all(b.expires_at > now for b in table._bindings[aor]),
                    "expire() left an expired binding",
                )
            continue
        cseq = d.choice((cseq + 1, cseq, max(0, cseq - 1), 2**32 - 1))
        built = _register(d, cseq)
        if built is None:
            continue
        request, contacts = built
        before = {b.contact.uri: b.expires_at for b in table.contacts("a@gw", now)}
        result = table.process("a@gw", request, now, ("udp", "127.0.0.1", 5070))
        after = {b.contact.uri: b.expires_at for b in table.contacts("a@gw", now)}
        if trace is not None:
            trace.append(
                f"t={now} REGISTER cseq={cseq} contacts={contacts} "
                f"Expires={request.headers.get('Expires')} -> {result.status} "
                f"{result.reason}; bindings {after}"
            )
        outcomes.add(f"{result.status} {result.reason[:30]}")
        header = request.expires
        # the contacts are judged in order: the first malformed or too brief one decides
        for uri, param in contacts:
            if uri == "*":
                break
            if param is not None and not _DELTA_RE.fullmatch(param):
                check(result.status == 400, f"expires={param!r} answered {result.status}")
                break
            lifetime = _lifetime(param, header, table.default_expires)
            if 0 < lifetime < lo:
                check(result.status == 423, f"lifetime {lifetime} answered {result.status}")
                break
        if result.status != 200:
            check(before == after, f"a {result.status} changed the bindings")
            continue
        for uri, param in contacts:
            if uri == "*":
                continue
            lifetime = _lifetime(param, header, table.default_expires)
            bound = [at for u, at in after.items() if str(u) == uri]
            if lifetime == 0:
                continue  # removed, unless the same URI appears again in the request
            check(not 0 < lifetime < lo, f"lifetime {lifetime} below {lo} answered 200")
            check(
                bound and all(lo <= at - now <= hi for at in bound),
                f"contact {uri} lifetime {lifetime} bound as {bound} (now {now}, "
                f"bounds [{lo}, {hi}])",
            )
    return " ".join(sorted(outcomes))


REGISTRAR = Target(
    "registrar",
    run_registrar,
    op_seeds,
    max_len=1024,
    dictionary=tuple(bytes([i]) for i in range(16)),
)
