"""URIs, name-addrs, header store, stream framing, rport."""

from __future__ import annotations

import pytest

from purplegw.sip.errors import LocalProtocolError, RemoteProtocolError
from purplegw.sip.headers import Headers, canonical_name, parse_via, split_list
from purplegw.sip.message import Request, Response, make_response, serialize
from purplegw.sip.parser import NEED_DATA, StreamParser, parse_datagram
from purplegw.sip.rport import response_destination, stamp_request
from purplegw.sip.uri import SipURI, parse_name_addr, parse_uri, uri_equal
from tests.kit.sipmsg import make_request, request_bytes


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sip:alice:secretword@atlanta.com;transport=tcp",
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sips:1212@gateway.com",
        "sip:alice@192.0.2.4",
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        "sip:alice;day=tuesday@atlanta.com",
        "sip:[2001:db8::10]:5070;lr",
        "tel:+1-201-555-0123;phone-context=example.com",
        "urn:service:sos",
    ],
)
def test_uri_round_trip(text: str) -> None:
    assert str(parse_uri(text)) == text


def test_uri_fields_and_ipv6() -> None:
    uri = parse_uri("sips:bob:pw@[2001:db8::1]:5061;Transport=TLS;lr?Subject=hi")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "bob",
        "pw",
        "[2001:db8::1]",
        5061,
    )
    assert uri.params == {"transport": "TLS", "lr": None}
    assert uri.transport == "tls"
    assert uri.headers == (("Subject", "hi"),)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
    ],
)
def test_uri_equal_rfc3261_examples(a: str, b: str) -> None:
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert hash(parse_uri(a)) == hash(parse_uri(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ],
)
def test_uri_not_equal_rfc3261_examples(a: str, b: str) -> None:
    assert not uri_equal(parse_uri(a), parse_uri(b))


@pytest.mark.parametrize(
    "bad",
    ["sip:", "sip:alice@", "sip:a b@c", "sip:host:99999", "<sip:x>", "sip:h;=x", "sip:x@h?bad"],
)
def test_bad_uris(bad: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        parse_uri(bad)
    assert exc.value.status_hint == 400


def test_name_addr_forms() -> None:
    na = parse_name_addr('"Alice \\"A\\"" <sip:alice@example.com;transport=tcp>;tag=abc;x')
    assert na.display_name == 'Alice "A"'
    assert na.tag == "abc"
    assert na.params == {"tag": "abc", "x": None}
    assert parse_name_addr(str(na)) == na
    spec = parse_name_addr("sip:alice@example.com;tag=9")
    assert spec.uri.params == {}
    assert spec.tag == "9"
    assert parse_name_addr("Alice Smith <sip:a@b>").display_name == "Alice Smith"
    assert str(spec.with_tag("z")).endswith(";tag=z")


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a, b" <sip:x@y;p=1,2>, <sip:z@w>') == [
        '"a, b" <sip:x@y;p=1,2>',
        "<sip:z@w>",
    ]
    assert split_list("a,b , c") == ["a", "b", "c"]


def test_headers_store() -> None:
    h = Headers(
        [
            ("v", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("i", "abc"),
            ("k", "path, gruu"),
            ("X-Custom", "1"),
        ]
    )
    assert h.getall("VIA") == ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"]
    assert h.get("call-id") == "abc"
    assert h.get("Call-Id") == "abc"
    assert h.tokens("Supported") == ["path", "gruu"]
    assert [name for name, _ in h.items()] == [
        "Via",
        "Via",
        "Call-ID",
        "Supported",
        "Supported",
        "X-Custom",
    ]
    assert [v.host for v in h.via()] == ["a", "b"]
    h.add("Via", "SIP/2.0/TCP c;branch=z9hG4bK0", first=True)
    assert h.top_via() is not None
    assert h.top_via().host == "c"
    h.set("x-custom", "2")
    assert h.getall("X-Custom") == ["2"]
    h.remove("supported")
    assert "Supported" not in h
    with pytest.raises(LocalProtocolError):
        h.add("Subject", "a\r\nInjected: yes")
    assert canonical_name("m") == "Contact"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"


def test_via_fields() -> None:
    via = parse_via("SIP / 2.0 / udp host.example:5062 ;branch=z9hG4bKx;rport;received=1.2.3.4")
    assert (
        via.transport,
        via.host,
        via.port,
        via.branch,
        via.has_rport,
        via.rport,
        via.received,
    ) == ("UDP", "host.example", 5062, "z9hG4bKx", True, None, "1.2.3.4")
    assert str(via) == "SIP/2.0/UDP host.example:5062;branch=z9hG4bKx;rport;received=1.2.3.4"
    with pytest.raises(RemoteProtocolError):
        parse_via("SIP/2.0/UDP host;rport=abc")


def test_make_response_copies_per_8_2_6() -> None:
    req = make_request("SUBSCRIBE", extra=[("Record-Route", "<sip:p1;lr>, <sip:p2;lr>")])
    resp = make_response(req, 202, to_tag="t1", headers=[("Expires", "60")])
    assert [k for k, _ in resp.headers.items()] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Record-Route",
        "Record-Route",
        "Expires",
    ]
    assert resp.to is not None
    assert resp.to.tag == "t1"
    assert resp.reason == "Accepted"
    assert make_response(req, 100).to.tag is None  # type: ignore[union-attr]
    tagged = make_request(to_tag="already")
    assert make_response(tagged, 200, to_tag="new").to.tag == "already"  # type: ignore[union-attr]
    assert "Record-Route" not in make_response(req, 404).headers
    wire = serialize(resp)
    assert wire.endswith(b"Content-Length: 0\r\n\r\n")
    assert isinstance(parse_datagram(wire), Response)


def test_stream_parser_framing_keepalives_and_caps() -> None:
    one = request_bytes(body=b"hello", content_type="text/plain")
    two = request_bytes("OPTIONS")
    parser = StreamParser()
    parser.feed(b"\r\n\r\n" + one[:10])
    assert parser.next_message() is NEED_DATA
    parser.feed(one[10:] + b"\r\n" + two)
    first = parser.next_message()
    assert isinstance(first, Request)
    assert first.body == b"hello"
    second = parser.next_message()
    assert isinstance(second, Request)
    assert second.method == "OPTIONS"
    assert parser.next_message() is NEED_DATA
    assert parser.keepalives == 1  # the CRLFCRLF ping; the lone CRLF is a pong

    small = StreamParser(max_header_size=64)
    small.feed(b"X" * 100)
    with pytest.raises(RemoteProtocolError) as exc:
        small.next_message()
    assert exc.value.status_hint == 513
    big = StreamParser(max_message_size=300)
    big.feed(request_bytes(body=b"x" * 400))
    with pytest.raises(RemoteProtocolError) as exc:
        big.next_message()
    assert exc.value.status_hint == 513
    nolen = StreamParser()
    nolen.feed(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="Content-Length"):
        nolen.next_message()


def test_rport_and_received() -> None:
    req = parse_datagram(request_bytes(via="SIP/2.0/UDP 10.0.0.1:5070;rport"))
    assert isinstance(req, Request)
    via = stamp_request(req, ("127.0.0.1", 40000))
    assert via.received == "127.0.0.1"
    assert via.rport == 40000
    assert req.top_via == via
    assert response_destination(via) == ("127.0.0.1", 40000)
    assert response_destination(via, reliable=True) is None
    plain = parse_datagram(request_bytes(via="SIP/2.0/UDP 10.0.0.1:5070"))
    assert isinstance(plain, Request)
    via2 = stamp_request(plain, ("127.0.0.1", 40000))
    assert via2.received == "127.0.0.1"
    assert not via2.has_rport
    assert response_destination(via2) == ("127.0.0.1", 5070)  # 18.2.2: received + sent-by port
    same = parse_datagram(request_bytes(via="SIP/2.0/UDP 127.0.0.1"))
    assert isinstance(same, Request)
    assert stamp_request(same, ("127.0.0.1", 5060)).received is None
    assert response_destination(same.top_via) == ("127.0.0.1", 5060)  # type: ignore[arg-type]
    maddr = parse_via("SIP/2.0/UDP h:5999;maddr=239.1.1.1;received=1.1.1.1")
    assert response_destination(maddr) == ("239.1.1.1", 5999)


def test_request_uri_headers_and_sip_uri_object() -> None:
    req = make_request(uri="sip:bob@127.0.0.1;transport=udp")
    assert isinstance(req.uri, SipURI)
    assert req.ruri.transport == "udp"
    wire = serialize(req)
    assert wire.startswith(b"MESSAGE sip:bob@127.0.0.1;transport=udp SIP/2.0\r\n")


def test_keepalives_and_tolerated_status_line() -> None:
    from purplegw.sip.parser import is_keepalive

    assert is_keepalive(b"\r\n\r\n")
    assert is_keepalive(b"\r\n")
    assert not is_keepalive(b"")
    assert not is_keepalive(request_bytes())
    msg = parse_datagram(b"\r\n\r\n" + request_bytes())
    assert isinstance(msg, Request)
    with pytest.raises(RemoteProtocolError):
        parse_datagram(b"\r\n\r\n")
    resp = parse_datagram(
        b"SIP/2.0 200\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\n\r\n"
    )
    assert isinstance(resp, Response)
    assert resp.status == 200
    assert resp.reason == ""
    with pytest.raises(RemoteProtocolError) as exc:
        parse_datagram(b"SIP/3.0 200 OK\r\n\r\n")
    assert exc.value.status_hint == 505
    with pytest.raises(RemoteProtocolError, match="bare CR or LF"):
        parse_datagram(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\nX: y\r\n\r\n")


def test_serialize_refuses_injection_in_start_line() -> None:
    req = make_request()
    resp = make_response(req, 200, "OK\r\nX-Injected: 1")
    with pytest.raises(LocalProtocolError):
        serialize(resp)


def test_stream_has_partial() -> None:
    parser = StreamParser()
    assert not parser.has_partial
    parser.feed(b"\r\n\r\n")
    assert not parser.has_partial  # only a ping
    parser.feed(request_bytes(body=b"12345")[:-2])
    assert parser.next_message() is NEED_DATA
    assert parser.has_partial
    parser.feed(b"45")
    assert isinstance(parser.next_message(), Request)
    assert not parser.has_partial


def test_addr_spec_without_params_has_no_params() -> None:
    from purplegw.sip.uri import parse_name_addr

    bare = parse_name_addr("sip:bob@example.com")
    assert bare.params == {}
    assert str(bare.with_tag("t1")) == "<sip:bob@example.com>;tag=t1"


def test_via_received_takes_a_bare_ipv6_address() -> None:
    # RFC 3261 25.1 via-received = "received" EQUAL (IPv4address / IPv6address); RFC 5118 4.5
    from purplegw.sip.headers import parse_via

    via = parse_via("SIP/2.0/UDP [2001:db8::1]:5060;received=2001:db8::9;branch=z9hG4bKx;rport=7")
    assert (via.received, via.rport, via.branch) == ("2001:db8::9", 7, "z9hG4bKx")
    assert parse_via("SIP/2.0/UDP [::1]:5060;branch=z9hG4bKy;received=::1").received == "::1"
