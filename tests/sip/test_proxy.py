"""One proxy hop's header rewriting (purplegw.sip.proxy), RFC 3261 16.6 and 16.7."""

from __future__ import annotations

import pytest

from purplegw.sip.message import Response, make_response, serialize
from purplegw.sip.parser import parse_datagram
from purplegw.sip.proxy import TooManyHopsError, forward_request, relay_response
from tests.kit.sipmsg import make_request

ME = "sip:10.0.0.2:5060;lr"


def is_me(uri: object) -> bool:
    return str(uri).startswith("sip:10.0.0.2:5060")


def test_max_forwards_decremented_on_a_copy() -> None:
    request = make_request("MESSAGE", body=b"hi", content_type="text/plain")
    forwarded = forward_request(request)
    assert forwarded.max_forwards == 69
    assert request.max_forwards == 70  # the original is untouched (Rule 5)
    assert forwarded.body == b"hi"
    assert forwarded.headers.getall("Via") == request.headers.getall("Via")
    again = forward_request(forwarded)
    assert again.max_forwards == 68


def test_missing_max_forwards_counts_as_the_first_hop() -> None:
    request = make_request()
    request.headers.remove("Max-Forwards")
    assert forward_request(request).max_forwards == 70


def test_max_forwards_zero_is_483() -> None:
    request = make_request()
    request.headers.set("Max-Forwards", "0")
    with pytest.raises(TooManyHopsError) as caught:
        forward_request(request)
    assert caught.value.status_hint == 483
    request.headers.set("Max-Forwards", "1")
    assert forward_request(request).max_forwards == 0  # the next hop refuses it


def test_own_route_is_removed_others_kept() -> None:
    request = make_request("SUBSCRIBE", extra=[("Route", f"<{ME}>, <sip:10.0.0.9;lr>")])
    forwarded = forward_request(request, is_me=is_me)
    assert forwarded.headers.getall("Route") == ["<sip:10.0.0.9;lr>"]
    foreign = make_request("MESSAGE", extra=[("Route", "<sip:10.0.0.9;lr>")])
    assert forward_request(foreign, is_me=is_me).headers.getall("Route") == ["<sip:10.0.0.9;lr>"]


def test_record_route_only_for_a_dialog_creating_subscribe() -> None:
    rr = f"<{ME}>"
    existing = [("Record-Route", "<sip:kamailio.test;lr>")]
    subscribe = forward_request(make_request("SUBSCRIBE", extra=existing), record_route=rr)
    assert subscribe.headers.getall("Record-Route") == [rr, "<sip:kamailio.test;lr>"]
    refresh = forward_request(
        make_request("SUBSCRIBE", to_tag="t1", extra=existing), record_route=rr
    )
    assert refresh.headers.getall("Record-Route") == ["<sip:kamailio.test;lr>"]
    message = forward_request(make_request("MESSAGE"), record_route=rr)
    assert message.headers.getall("Record-Route") == []
    kept = forward_request(make_request("SUBSCRIBE", extra=existing))
    assert kept.headers.getall("Record-Route") == ["<sip:kamailio.test;lr>"]


def test_response_goes_back_without_our_via() -> None:
    request = make_request("MESSAGE", via="SIP/2.0/UDP 192.0.2.1:5070")
    forwarded = forward_request(request)
    forwarded.headers.add("Via", "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKhop", first=True)
    answer = make_response(forwarded, 202, to_tag="abc")
    relayed = relay_response(answer)
    assert isinstance(relayed, Response)
    assert relayed.status == 202
    assert relayed.headers.getall("Via") == request.headers.getall("Via")
    assert relayed.to is not None
    assert relayed.to.tag == "abc"
    # what goes on the wire parses back as the same response
    back = parse_datagram(serialize(relayed))
    assert isinstance(back, Response)
    assert back.headers.getall("Via") == request.headers.getall("Via")
    assert len(answer.headers.getall("Via")) == 2  # the next hop's answer is untouched


def test_a_response_with_only_our_via_is_not_relayed() -> None:
    request = make_request("MESSAGE")
    assert relay_response(make_response(request, 200, to_tag="x")) is None
