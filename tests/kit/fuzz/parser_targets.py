"""Fuzz targets for the parser: UDP datagrams and TCP streams in random chunkings.

Invariants (from purplegw/sip/parser.py and message.py):

1. Only ``SipError`` leaves ``parse_datagram``, ``StreamParser`` and the
   accessors a SIP element calls on a parsed message (Contact, Route,
   Expires, ``validate_request``, the Request-URI); the transaction keys
   (``server_key``, ``client_key``) never raise on a parsed message.
2. Whatever parses serializes, and ``serialize`` is a fixpoint after one
   round: ``serialize(parse(serialize(m))) == serialize(m)``.  The first
   round may only move Content-Length to the end (serialize always writes a
   fresh one); every other header, the start line and the body survive it.
3. A response built to a parsed request with ``make_response`` parses too:
   the gateway would send it.
4. A stream parses to the same messages, the same error and the same
   keep-alive count however its bytes are chunked (the parser is fed one
   byte, a few bytes or everything at once); a stream holding exactly one
   message parses as a datagram to the same message.
"""

from __future__ import annotations

import contextlib
import logging
import random
import zlib
from pathlib import Path

from purplegw.sip.errors import SipError
from purplegw.sip.message import (
    Message,
    Request,
    Response,
    make_response,
    serialize,
    validate_request,
)
from purplegw.sip.parser import MAX_HEADERS, NEED_DATA, StreamParser, parse_datagram
from purplegw.sip.transaction import client_key, server_key
from tests.kit.corpus import corpus_dir
from tests.kit.sipmsg import request_bytes

from .target import FuzzFailure, Target, Trace, check

logger = logging.getLogger(__name__)

__all__ = ["DATAGRAM", "STREAM", "corpus_messages"]

# small caps so that huge headers and bodies hit the limits with small inputs
_MAX_MESSAGE = 4096
_MAX_HEADER = 2048
_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "MESSAGE",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "REFER",
        "INFO",
        "UPDATE",
        "PRACK",
    }
)


def corpus_messages() -> list[bytes]:
    """RFC 4475 torture messages, the pjproject SIP fuzz seeds, and our own requests."""
    root = corpus_dir()
    paths = sorted((root / "rfc4475").glob("*.dat"))
    for sub in ("pjproject-fuzz-sip", "pjproject-fuzz-sip-dialog"):
        paths += sorted(p for p in (root / "fuzz" / sub).iterdir() if p.is_file())
    seeds = [Path(p).read_bytes() for p in paths]
    seeds += [
        request_bytes("MESSAGE", body=b"hello", content_type="text/plain"),
        request_bytes(
            "SUBSCRIBE",
            extra=[
                ("Event", "presence"),
                ("Expires", "3600"),
                ("Contact", "<sip:a@127.0.0.1:5070;transport=tcp>"),
            ],
        ),
        request_bytes(
            "NOTIFY",
            to_tag="t1",
            extra=[("Event", "presence;id=7"), ("Subscription-State", "active;expires=60")],
        ),
        request_bytes(
            "PUBLISH", extra=[("Event", "presence"), ("SIP-If-Match", "abc"), ("Expires", "0")]
        ),
        (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
            b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: c\r\n"
            b"CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        ),
    ]
    return seeds


def _touch(msg: Message) -> None:
    """Every accessor a SIP element uses: SipError is the only allowed failure."""
    # transaction matching runs on every parsed message before validation (sip_front)
    client_key(msg)
    if isinstance(msg, Request):
        server_key(msg)
    headers = msg.headers
    for accessor in (headers.contacts, headers.routes, headers.record_routes, headers.expires):
        with contextlib.suppress(SipError):
            accessor()
    if isinstance(msg, Request):
        for call in (lambda: validate_request(msg), lambda: msg.ruri):
            with contextlib.suppress(SipError):
                call()


def _without_length(msg: Message) -> list[tuple[str, str]]:
    return [(k, v) for k, v in msg.headers.items() if k.lower() not in ("content-length", "l")]


def _start(msg: Message) -> tuple[object, ...]:
    if isinstance(msg, Request):
        return ("request", msg.method, str(msg.uri))
    return ("response", msg.status, msg.reason)


def check_round_trip(msg: Message) -> None:
    """Invariants 2 and 3 for one parsed message."""
    wire = serialize(msg)
    try:
        # serialize() always writes Content-Length: a datagram that came in at
        # the header-count limit without one goes out one line over it.
        again = parse_datagram(wire, max_headers=MAX_HEADERS + 1)
    except SipError as exc:
        raise FuzzFailure(f"serialized message does not parse: {exc!r}\n{wire!r}") from exc
    check(_start(again) == _start(msg), f"start line changed: {_start(msg)} -> {_start(again)}")
    check(
        _without_length(again) == _without_length(msg),
        f"headers changed: {_without_length(msg)} -> {_without_length(again)}",
    )
    check(again.body == msg.body, "body changed in the round trip")
    check(again.content_length == len(msg.body), "Content-Length not the body length")
    check(serialize(again) == wire, f"serialize is not a fixpoint:\n{wire!r}\n{serialize(again)!r}")
    if isinstance(msg, Request):
        try:
            response = make_response(msg, 200, to_tag="fuzz")
        except SipError:
            return
        out = serialize(response)
        try:
            back = parse_datagram(out)
        except SipError as exc:
            raise FuzzFailure(
                f"our response to a parsed request does not parse: {exc!r}\n{out!r}"
            ) from exc
        check(isinstance(back, Response) and back.status == 200, "response changed")


def _reason_kind(reason: str) -> str:
    # the quoted offending value would make every input a new outcome
    return reason.split("'", 1)[0].split(": ", 2)[-1][:40] if "'" in reason else reason[:40]


def run_datagram(data: bytes, trace: Trace = None) -> str:
    try:
        msg = parse_datagram(data)
    except SipError as exc:
        if trace is not None:
            trace.append(f"parse_datagram -> {exc!r}")
        return f"reject {exc.status_hint} {_reason_kind(exc.reason)}"
    if trace is not None:
        trace.append(f"parse_datagram -> {msg!r}")
    _touch(msg)
    check_round_trip(msg)
    kind = (
        msg.method
        if isinstance(msg, Request) and msg.method in _METHODS
        else ("other" if isinstance(msg, Request) else msg.status // 100)
    )
    return f"ok {kind} {len(msg.headers.items()) // 4}"


def _stream(data: bytes, cuts: list[int]) -> tuple[list[Message], str | None, int, int]:
    parser = StreamParser(max_message_size=_MAX_MESSAGE, max_header_size=_MAX_HEADER)
    messages: list[Message] = []
    error = None
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            parser.feed(data[pos : pos + cut])
            pos += cut
            while (msg := parser.next_message()) is not NEED_DATA:
                messages.append(msg)
            if pos >= len(data):
                break
    except SipError as exc:
        error = repr(exc)
    return messages, error, parser.keepalives, parser.buffered if error is None else -1


def run_stream(data: bytes, trace: Trace = None) -> str:
    whole = _stream(data, [len(data)])
    wire = [serialize(m) for m in whole[0]]
    rng = random.Random(zlib.crc32(data))  # the cuts must replay from the input
    for most in (1, 7, 200):
        cuts = [rng.randint(1, most) for _ in range(min(len(data), 4000) // most + 1)]
        chunked = _stream(data, cuts)
        if trace is not None:
            trace.append(
                f"chunks of 1..{most}: {len(chunked[0])} messages, error {chunked[1]}, "
                f"keepalives {chunked[2]}"
            )
        check(
            [serialize(m) for m in chunked[0]] == wire and chunked[1:] == whole[1:],
            f"chunking changed the result (chunks of 1..{most}, cuts {cuts[:50]}):\n"
            f"whole: {len(wire)} messages, error {whole[1]}, keepalives {whole[2]}, "
            f"buffered {whole[3]}\nchunked: {len(chunked[0])} messages, error {chunked[1]}, "
            f"keepalives {chunked[2]}, buffered {chunked[3]}",
        )
    if len(wire) == 1 and whole[1] is None and whole[3] == 0:
        # one framed message and nothing else: UDP must read it the same way
        try:
            datagram = parse_datagram(data, max_header_size=_MAX_HEADER)
        except SipError as exc:
            raise FuzzFailure(f"parsed from a stream, rejected as a datagram: {exc!r}") from exc
        check(serialize(datagram) == wire[0], "stream and datagram parses differ")
    for msg in whole[0]:
        _touch(msg)
        check_round_trip(msg)
    return f"{len(wire)} {whole[1] and _reason_kind(whole[1])} {whole[2] > 0}"


def _stream_seeds() -> list[bytes]:
    msgs = [m for m in corpus_messages() if b"Content-Length" in m or b"\r\nl:" in m]
    out = list(msgs)
    for a, b in zip(msgs, msgs[1:] + msgs[:1], strict=True):
        out.append(a + b"\r\n\r\n" + b)
    return out


DATAGRAM = Target("parser-datagram", run_datagram, corpus_messages)
STREAM = Target("parser-stream", run_stream, _stream_seeds, max_len=12000)
