"""Every RFC 4475 torture message, handled as the corpus manifest says."""

from __future__ import annotations

import csv

import pytest

from purplegw.sip.errors import RemoteProtocolError, SipParseError
from purplegw.sip.message import Request, Response, make_response, serialize, validate_request
from purplegw.sip.parser import NEED_DATA, StreamParser, parse_datagram
from purplegw.sip.transaction import server_key
from purplegw.sip.uri import SipURI
from tests.kit.corpus import corpus_dir

DIR = corpus_dir() / "rfc4475"


def _manifest() -> list[tuple[str, str]]:
    with (DIR / "manifest.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(r["filename"], r["expected_verdict"]) for r in rows if r["filename"].endswith(".dat")]


MANIFEST = _manifest()
VERDICT = dict(MANIFEST)
# what our parser does with the files the RFC lets an element either reject or
# tolerate: every one of them is rejected by parse_datagram, except these
LENIENT_REJECTED_LATER = {
    # Date is never interpreted by the gateway (RFC 4475 3.1.2.12 allows that)
    "baddate.dat": None,
    # the Contact is only parsed on access; that access raises 400
    "regbadct.dat": "contact",
}


def _no_length(msg: Request | Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in msg.headers.items() if k != "Content-Length"]


def load(name: str) -> bytes:
    return (DIR / name).read_bytes()


def test_manifest_covers_every_category() -> None:
    kinds = {v.split(";")[0].split("(")[0] for _, v in MANIFEST}
    assert kinds == {
        "valid-must-parse",
        "invalid-must-reject",
        "must-not-break",
        "parse",
        "parse-headers",
        "unspecified",
    }
    assert len(MANIFEST) == 51


@pytest.mark.parametrize(("name", "verdict"), MANIFEST)
def test_verdict(name: str, verdict: str) -> None:
    data = load(name)
    head = verdict.split(";", maxsplit=1)[0]
    if head.startswith("valid-must-parse") or head == "must-not-break":
        msg = parse_datagram(data)
        if isinstance(msg, Request):
            validate_request(msg)
            # a parsed request can always be answered
            assert serialize(make_response(msg, 200, to_tag="x")).startswith(b"SIP/2.0 200 OK\r\n")
        again = parse_datagram(serialize(msg))
        assert _no_length(again) == _no_length(msg)
        assert again.body == msg.body
    elif head == "parse":  # app-layer-reject(400)
        msg = parse_datagram(data)
        assert isinstance(msg, Request)
        with pytest.raises(RemoteProtocolError) as exc:
            validate_request(msg)
        assert exc.value.status_hint == 400
    elif head.startswith("invalid-must-reject(lenient-allowed)") and name in LENIENT_REJECTED_LATER:
        msg = parse_datagram(data)
        assert isinstance(msg, Request)
        if LENIENT_REJECTED_LATER[name] == "contact":
            with pytest.raises(RemoteProtocolError) as exc:
                msg.headers.contacts()
            assert exc.value.status_hint == 400
        else:
            validate_request(msg)
    elif head.startswith(("invalid-must-reject", "parse-headers", "unspecified")):
        with pytest.raises(SipParseError) as exc:
            parse_datagram(data)
        expected = 505 if name == "badvers.dat" else 400
        assert exc.value.status_hint == expected
        assert exc.value.reason
    else:  # pragma: no cover - the manifest test pins the categories
        pytest.fail(f"unhandled verdict {verdict}")


def test_wsinv_values() -> None:
    msg = parse_datagram(load("wsinv.dat"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert isinstance(msg.uri, SipURI)
    assert msg.uri.user == "vivekg"
    assert msg.uri.host == "chair-dnrc.example.com"
    assert msg.uri.params == {"unknownparam": None}
    assert msg.to is not None
    assert msg.to.tag == "1918181833n"
    assert msg.from_ is not None
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.headers.max_forwards() == 68
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.cseq == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.headers.contacts()
    assert not isinstance(contact, str)
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    (route,) = msg.headers.routes()
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert msg.content_length == 150
    assert len(msg.body) == 150
    assert msg.body.startswith(b"v=0\r\n")


def test_escnull_two_distinct_contacts() -> None:
    msg = parse_datagram(load("escnull.dat"))
    contacts = msg.headers.contacts()
    assert [str(c.uri) for c in contacts if not isinstance(c, str)] == [
        "sip:%00@host5.example.com",
        "sip:%00%00@host5.example.com",
    ]
    a, b = (c.uri for c in contacts if not isinstance(c, str))
    assert a.user_unescaped == "\x00"
    assert b.user_unescaped == "\x00\x00"
    assert a != b
    assert msg.to is not None
    assert msg.to.uri.user_unescaped == "null-\x00-null"


def test_esc02_method_is_not_register_and_two_contacts() -> None:
    msg = parse_datagram(load("esc02.dat"))
    assert isinstance(msg, Request)
    assert msg.method == "RE%47IST%45R"
    assert len(msg.headers.getall("Contact")) == 2
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.to is not None
    assert msg.to.display_name == "%Z%45"


def test_intmeth_unusual_method_and_uri() -> None:
    msg = parse_datagram(load("intmeth.dat"))
    assert isinstance(msg, Request)
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(msg.uri, SipURI)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.from_ is not None
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_and_semiuri_user_parts() -> None:
    msg = parse_datagram(load("esc01.dat"))
    assert isinstance(msg.uri, SipURI)  # type: ignore[union-attr]
    assert msg.uri.user_unescaped == "sips:user@example.com"  # type: ignore[union-attr]
    assert msg.to is not None
    assert msg.to.uri == SipURI("sip", "user", host="example.com")
    semi = parse_datagram(load("semiuri.dat"))
    assert isinstance(semi, Request)
    assert isinstance(semi.uri, SipURI)
    assert semi.uri.user == "user;par=u%40example.net"
    assert semi.uri.host == "example.com"
    assert semi.uri.params == {}
    assert semi.headers.getall("Accept")[-1] == "message/sipfrag"
    assert len(semi.headers.getall("Accept")) == 6


def test_transports_and_unusual_schemes() -> None:
    msg = parse_datagram(load("transports.dat"))
    assert [v.transport for v in msg.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    unk = parse_datagram(load("unkscm.dat"))
    assert isinstance(unk, Request)
    assert unk.uri == "nobodyKnowsThisScheme:totallyopaquecontent"
    assert not unk.ruri.is_sip
    unksm2 = parse_datagram(load("unksm2.dat"))
    assert unksm2.to is not None
    assert unksm2.to.uri.scheme == "isbn"
    assert unksm2.from_ is not None
    assert str(unksm2.from_.uri) == "http://www.example.com"


def test_cparam_contact_vs_url_param() -> None:
    (c1,) = parse_datagram(load("cparam01.dat")).headers.contacts()
    (c2,) = parse_datagram(load("cparam02.dat")).headers.contacts()
    assert not isinstance(c1, str)
    assert not isinstance(c2, str)
    assert "unknownparam" in c1.params
    assert "unknownparam" not in c1.uri.params
    assert "unknownparam" in c2.uri.params
    assert "unknownparam" not in c2.params


def test_regescrt_escaped_route_kept_in_contact() -> None:
    (contact,) = parse_datagram(load("regescrt.dat")).headers.contacts()
    assert not isinstance(contact, str)
    assert contact.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def test_responses_unusual_reason_phrases() -> None:
    unreason = parse_datagram(load("unreason.dat"))
    assert isinstance(unreason, Response)
    assert unreason.status == 200
    assert unreason.reason.startswith("= 2**3 * 5**2 но сто")
    noreason = parse_datagram(load("noreason.dat"))
    assert isinstance(noreason, Response)
    assert noreason.reason == ""
    assert noreason.status == 100


def test_dblreq_trailing_octets_ignored() -> None:
    msg = parse_datagram(load("dblreq.dat"))
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER"
    assert msg.body == b""


def test_mpart01_binary_body_framed_by_content_length() -> None:
    msg = parse_datagram(load("mpart01.dat"))
    assert msg.content_length == len(msg.body)
    assert b"\x00" in msg.body


def test_inv2543_and_badbranch_use_rfc2543_matching() -> None:
    for name in ("inv2543.dat", "badbranch.dat"):
        msg = parse_datagram(load(name))
        assert isinstance(msg, Request)
        assert server_key(msg)[0] == "2543"


def test_clerr_on_a_stream_waits_for_more() -> None:
    parser = StreamParser()
    parser.feed(load("clerr.dat"))
    assert parser.next_message() is NEED_DATA


def test_ncl_and_mcl01_break_a_stream() -> None:
    for name in ("ncl.dat", "mcl01.dat"):
        parser = StreamParser()
        parser.feed(load(name))
        with pytest.raises(RemoteProtocolError):
            parser.next_message()
        with pytest.raises(RemoteProtocolError):  # framing lost for good
            parser.next_message()


def test_baddn_crlf_fixed_variant_rejected_for_the_display_name() -> None:
    with pytest.raises(RemoteProtocolError, match=r"name-addr|display"):
        parse_datagram(load("variants/baddn.crlf-fixed.dat"))


def test_unkscm_and_novelsc_get_416_from_the_app_helper() -> None:
    from purplegw.sip.uri import require_sip_uri

    for name in ("unkscm.dat", "novelsc.dat"):
        msg = parse_datagram(load(name))
        assert isinstance(msg, Request)
        with pytest.raises(RemoteProtocolError) as exc:
            require_sip_uri(msg.uri)
        assert exc.value.status_hint == 416
    ok = parse_datagram(load("zeromf.dat"))
    assert isinstance(ok, Request)
    assert require_sip_uri(ok.uri).is_sip
    assert ok.max_forwards == 0


def test_bext01_require_lists_unsupported_tags() -> None:
    from purplegw.sip.message import unsupported_extensions

    msg = parse_datagram(load("bext01.dat"))
    assert isinstance(msg, Request)
    assert unsupported_extensions(msg, ["path"]) == [
        "nothingSupportsThis",
        "nothingSupportsThisEither",
    ]
    assert unsupported_extensions(msg, ["nothingsupportsthis", "NOTHINGSUPPORTSTHISEITHER"]) == []
    assert msg.headers.getall("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]
