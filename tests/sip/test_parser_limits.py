"""Hard limits of the parser: header count (header bombs), header section size, endless streams."""

from __future__ import annotations

import pytest

from purplegw.sip.errors import RemoteProtocolError
from purplegw.sip.parser import MAX_HEADERS, NEED_DATA, StreamParser, parse_datagram

MANDATORY = [
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1",
    "Max-Forwards: 70",
    "From: <sip:a@127.0.0.1>;tag=1",
    "To: <sip:b@127.0.0.1>",
    "Call-ID: c1",
    "CSeq: 1 OPTIONS",
    "Content-Length: 0",
]


def message(extra: list[str]) -> bytes:
    return "\r\n".join(["OPTIONS sip:b@127.0.0.1 SIP/2.0", *MANDATORY, *extra, "", ""]).encode()


def test_header_count_at_the_limit_parses_and_one_more_is_400() -> None:
    fill = MAX_HEADERS - len(MANDATORY)
    assert len(parse_datagram(message(["a:1"] * fill)).headers.getall("a")) == fill
    with pytest.raises(RemoteProtocolError) as info:
        parse_datagram(message(["a:1"] * (fill + 1)))
    assert info.value.status_hint == 400
    assert "too many header fields" in info.value.reason


def test_folded_continuation_lines_count_too() -> None:
    folded = ["Subject: x", *[" y"] * MAX_HEADERS]
    with pytest.raises(RemoteProtocolError, match="too many header fields"):
        parse_datagram(message(folded))


def test_header_count_limit_is_configurable() -> None:
    with pytest.raises(RemoteProtocolError, match=r"limit 7\)"):
        parse_datagram(message(["a:1"]), max_headers=7)
    assert parse_datagram(message(["a:1"]), max_headers=8).headers.get("a") == "1"


def test_datagram_header_section_over_the_size_limit_is_513() -> None:
    big = message(["X-Pad: " + "p" * 1000] * 20)  # ~20 kB of headers
    with pytest.raises(RemoteProtocolError) as info:
        parse_datagram(big)
    assert info.value.status_hint == 513
    assert parse_datagram(big, max_header_size=32768).headers.get("X-Pad")


def test_stream_header_bomb_is_400_and_breaks_the_stream() -> None:
    parser = StreamParser()
    parser.feed(message(["a:1"] * 2000))
    with pytest.raises(RemoteProtocolError) as info:
        parser.next_message()
    assert info.value.status_hint == 400
    with pytest.raises(RemoteProtocolError):  # framing lost: the connection must close
        parser.next_message()


def test_endless_header_section_on_a_stream_is_cut_at_the_limit() -> None:
    parser = StreamParser(max_header_size=4096)
    start = b"OPTIONS sip:b@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK-9\r\n"
    parser.feed(start)
    assert parser.next_message() is NEED_DATA
    fed = len(start)
    with pytest.raises(RemoteProtocolError) as info:  # noqa: PT012 - the limit is hit somewhere in the loop, which is the point
        while fed < 1_000_000:
            parser.feed(b"X-Endless: eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\r\n")
            fed += 44
            assert parser.next_message() is NEED_DATA
    assert info.value.status_hint == 513
    assert fed <= 4096 + 44  # raised on the first read past the limit
    assert parser.head().startswith(start)  # what an error answer copies Via and CSeq from


def test_endless_bytes_without_any_line_end_are_cut_too() -> None:
    parser = StreamParser(max_header_size=4096)
    with pytest.raises(RemoteProtocolError, match="Message Too Large"):  # noqa: PT012 - same
        for _ in range(1000):
            parser.feed(b"A" * 1000)
            parser.next_message()


def test_comma_joined_values_count_as_the_fields_they_become() -> None:
    # 100 lines of two Via values each: the lines fit, the 200 fields do not
    # (a response copying them would be refused by the phone's parser)
    vias = [
        f"Via: SIP/2.0/UDP 127.0.0.1:{5100 + i};branch=z9hG4bK-a{i}, "
        f"SIP/2.0/UDP 127.0.0.1:{5300 + i};branch=z9hG4bK-b{i}"
        for i in range(100)
    ]
    parse_datagram(message(vias), max_headers=250)
    with pytest.raises(RemoteProtocolError, match="too many header fields"):
        parse_datagram(message(vias), max_headers=150)
