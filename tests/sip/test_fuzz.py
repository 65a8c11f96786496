"""Nothing but SipError ever leaves the parser: fuzz seeds and property tests."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from purplegw.sip.errors import SipError
from purplegw.sip.headers import split_list
from purplegw.sip.message import Request, make_response, serialize, validate_request
from purplegw.sip.parser import NEED_DATA, StreamParser, parse_datagram
from purplegw.sip.uri import check_name_addr, parse_name_addr, parse_uri
from tests.kit.corpus import corpus_dir

if TYPE_CHECKING:
    from pathlib import Path

FUZZ = corpus_dir() / "fuzz"
SIP_SEEDS = sorted(
    p for d in ("pjproject-fuzz-sip", "pjproject-fuzz-sip-dialog") for p in (FUZZ / d).iterdir()
)
URI_SEEDS = sorted((FUZZ / "pjproject-fuzz-uri").iterdir())
RFC4475 = sorted((corpus_dir() / "rfc4475").glob("*.dat"))
VALID_SEEDS = [p.read_bytes() for p in RFC4475] + [p.read_bytes() for p in SIP_SEEDS]

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def exercise(data: bytes) -> None:
    """Parse and touch every accessor a SIP element might use."""
    try:
        msg = parse_datagram(data)
    except SipError:
        return
    # the parser validated From and To; their objects, built lazily, cannot fail
    _ = msg.from_, msg.to
    for accessor in (
        msg.headers.contacts,
        msg.headers.routes,
        msg.headers.record_routes,
        msg.headers.expires,
        lambda: validate_request(msg) if isinstance(msg, Request) else None,
        lambda: msg.ruri if isinstance(msg, Request) else None,
    ):
        with contextlib.suppress(SipError):
            accessor()
    if isinstance(msg, Request):
        with contextlib.suppress(SipError):
            serialize(make_response(msg, 200, to_tag="x"))
    serialize(msg)


@pytest.mark.parametrize("path", SIP_SEEDS, ids=lambda p: p.name)
def test_fuzz_seed_sip(path: Path) -> None:
    data = path.read_bytes()
    exercise(data)
    stream = StreamParser()
    stream.feed(data)
    with contextlib.suppress(SipError):
        stream.next_message()


def test_lf_only_seed_is_rejected_cleanly() -> None:
    data = (FUZZ / "pjproject-fuzz-sip" / "input.1.sip").read_bytes()
    with pytest.raises(SipError):
        parse_datagram(data)


@pytest.mark.parametrize("path", URI_SEEDS, ids=lambda p: p.name)
def test_fuzz_seed_uri(path: Path) -> None:
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        for parse in (parse_uri, parse_name_addr):
            with contextlib.suppress(SipError):
                parse(line)


def test_uri_seed_values() -> None:
    na = parse_name_addr("<cid:my%ffheader2@example.org>")
    assert na.uri.scheme == "cid"
    assert not na.uri.is_sip


@FAST
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    exercise(data)


@FAST
@given(st.sampled_from(VALID_SEEDS), st.data())
def test_mutated_messages(seed: bytes, data: st.DataObject) -> None:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        if not buf:
            break
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "dup"]))
        if op == "flip":
            buf[pos] = data.draw(st.sampled_from(b' \t\r\n:;,<>"\\@%=0aZ\x00\xff'))
        elif op == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 20))]
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=10))
        else:
            buf[pos:pos] = buf[pos : pos + data.draw(st.integers(1, 40))]
    exercise(bytes(buf))


@FAST
@given(st.text(max_size=120))
def test_random_uri_text(text: str) -> None:
    for parse in (parse_uri, parse_name_addr, split_list):
        with contextlib.suppress(SipError):
            parse(text)


def check_agrees_with_parse(text: str) -> None:
    """The parser's validation of From/To refuses exactly what parse_name_addr refuses."""
    try:
        parse_name_addr(text)
    except SipError:
        with pytest.raises(SipError):
            check_name_addr(text)
    else:
        check_name_addr(text)


@pytest.mark.parametrize("path", URI_SEEDS, ids=lambda p: p.name)
def test_check_name_addr_seeds(path: Path) -> None:
    for line in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines():
        check_agrees_with_parse(line)


@pytest.mark.parametrize(
    "text",
    [
        "<sip:a@h:65535>;tag=1",
        "<sip:a@h:65536>;tag=1",
        '"A" B <sip:a@h>',
        '"A" <sip:a@h>',
        "A B<sip:a@h>",
        " <sip:a@h> ",
        "<sips:a@[::1]:5061;transport=tls>;tag=x;y",
        "<tel:+123>",
        "sip:a@h;tag=2",
        "<sip:a@h>;tag=",
        "<SIP:a@h>",
    ],
)
def test_check_name_addr_edges(text: str) -> None:
    check_agrees_with_parse(text)


@FAST
@given(st.text(alphabet='<>"\\ \t;=:@[]sip.aA0965,', max_size=60))
def test_check_name_addr_random(text: str) -> None:
    check_agrees_with_parse(text)


@FAST
@given(st.sampled_from(VALID_SEEDS), st.lists(st.integers(1, 64), max_size=20))
def test_stream_chunking_never_raises_other_errors(seed: bytes, cuts: list[int]) -> None:
    stream = StreamParser(max_message_size=4096, max_header_size=2048)
    data = seed * 2
    pos = 0
    try:
        for cut in [*cuts, len(data)]:
            stream.feed(data[pos : pos + cut])
            pos += cut
            while stream.next_message() is not NEED_DATA:
                pass
    except SipError:
        pass


# -- round trip of generated messages -----------------------------------------
TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
HOST = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True)
USER = st.from_regex(r"[A-Za-z0-9_.!~*'()&=+$,;?/-]{1,12}", fullmatch=True)
QUOTED = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    method = draw(TOKEN)
    uri = f"sip:{draw(USER)}@{draw(HOST)}"
    if draw(st.booleans()):
        uri += f":{draw(st.integers(1, 65535))}"
    display = draw(QUOTED).replace("\\", "\\\\").replace('"', '\\"')
    vias = [
        f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(HOST)}"
        f";branch=z9hG4bK{draw(TOKEN)}"
        for _ in range(draw(st.integers(1, 3)))
    ]
    body = draw(st.binary(max_size=80))
    extra = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["X-Foo", "Subject", "User-Agent", "Supported"]),
                st.text("abc xyz,;=", max_size=20),
            ),
            max_size=4,
        )
    )
    lines = [f"{method} {uri} SIP/2.0"]
    if draw(st.booleans()):
        lines.append(f"Via: {', '.join(vias)}")
    else:
        lines += [f"v: {v}" for v in vias]
    lines += [
        f'From: "{display}" <sip:{draw(USER)}@{draw(HOST)}>;tag={draw(TOKEN)}',
        f"t: <{uri}>",
        f"i: {draw(TOKEN)}@{draw(HOST)}",
        f"CSeq: {draw(st.integers(0, 2**32 - 1))} {method}",
        f"Max-Forwards: {draw(st.integers(0, 255))}",
        *[f"{k}: {v.strip()}" for k, v in extra],
        f"l: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@FAST
@given(messages())
def test_round_trip_generated(data: bytes) -> None:
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    validate_request(msg)
    wire = serialize(msg)
    again = parse_datagram(wire)
    assert serialize(again) == wire
    assert again.headers.items() == msg.headers.items()
    assert again.body == msg.body
    assert [str(v) for v in again.via] == [str(v) for v in msg.via]
    assert again.from_ == msg.from_
    assert str(parse_uri(str(msg.uri))) == str(msg.uri)


PARAMCHAR = st.from_regex(r"[A-Za-z0-9_.!~*'()\[\]/:&+$-]{1,8}", fullmatch=True)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.one_of(st.none(), USER))
    host = draw(st.one_of(HOST, st.sampled_from(["[2001:db8::1]", "192.0.2.7", "[::1]"])))
    out = f"{scheme}:"
    if user is not None:
        out += user
        if draw(st.booleans()):
            out += ":" + draw(st.from_regex(r"[A-Za-z0-9&=+$,]{0,6}", fullmatch=True))
        out += "@"
    out += host
    if draw(st.booleans()):
        out += f":{draw(st.integers(0, 65535))}"
    for name in draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True), max_size=3, unique=True)
    ):
        out += f";{name}" + (f"={draw(PARAMCHAR)}" if draw(st.booleans()) else "")
    return out


@FAST
@given(sip_uris(), st.one_of(st.none(), QUOTED), st.one_of(st.none(), TOKEN))
def test_uri_and_name_addr_round_trip(text: str, display: str | None, tag: str | None) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri
    assert hash(parse_uri(text)) == hash(uri)
    value = f"<{text}>"
    if display:
        value = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '" ' + value
    if tag:
        value += f";tag={tag}"
    na = parse_name_addr(value)
    assert na.uri == uri
    assert na.tag == tag
    assert (na.display_name or None) == (display or None)
    assert parse_name_addr(str(na)) == na


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(messages(), min_size=1, max_size=4),
    st.lists(st.integers(1, 200), max_size=30),
    st.booleans(),
)
def test_stream_framing_matches_datagrams(batch: list[bytes], cuts: list[int], pings: bool) -> None:
    wire = b"".join((b"\r\n\r\n" if pings else b"") + serialize(parse_datagram(m)) for m in batch)
    stream = StreamParser()
    got = []
    pos = 0
    for cut in [*cuts, len(wire)]:
        stream.feed(wire[pos : pos + cut])
        pos += cut
        while (msg := stream.next_message()) is not NEED_DATA:
            got.append(msg)
    expected = [parse_datagram(m) for m in batch]
    assert [serialize(m) for m in got] == [serialize(m) for m in expected]
    assert stream.buffered == 0
    assert stream.keepalives == (len(batch) if pings else 0)
