"""SIP message builders for tests (RFC 3261-shaped defaults, loopback addresses)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from purplegw.actors.front.transport import Listener, Source, parse_listen
from purplegw.sip.headers import Headers
from purplegw.sip.message import Request, serialize
from purplegw.sip.uri import parse_uri

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["make_request", "request_bytes", "udp_source"]

_counter = itertools.count(1)


def make_request(  # a builder's job is to take many knobs
    method: str = "MESSAGE",
    uri: str = "sip:bob@127.0.0.1",
    *,
    from_: str = "<sip:alice@127.0.0.1>",
    from_tag: str | None = "fromtag1",
    to: str = "<sip:bob@127.0.0.1>",
    to_tag: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    branch: str | None = None,
    via: str = "SIP/2.0/UDP 127.0.0.1:5070",
    body: bytes = b"",
    content_type: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> Request:
    n = next(_counter)
    headers = Headers()
    headers.add("Via", f"{via};branch={branch or f'z9hG4bK-test{n}'}")
    headers.add("Max-Forwards", "70")
    headers.add("From", f"{from_};tag={from_tag}" if from_tag else from_)
    headers.add("To", f"{to};tag={to_tag}" if to_tag else to)
    headers.add("Call-ID", call_id or f"call-{n}@127.0.0.1")
    headers.add("CSeq", f"{cseq} {method}")
    if content_type:
        headers.add("Content-Type", content_type)
    for name, value in extra:
        headers.add(name, value)
    return Request(method, parse_uri(uri), headers, body)


def request_bytes(method: str = "MESSAGE", **kwargs: object) -> bytes:
    return serialize(make_request(method, **kwargs))  # type: ignore[arg-type]


def udp_source(
    host: str = "127.0.0.1", port: int = 5070, sent_by: str = "127.0.0.1:5060"
) -> Source:
    """Where a request handed to the gateway came from: a UDP peer, our listener at ``sent_by``.

    A real (unbound) ``Listener``: the front is compiled by mypyc, which checks
    the type of what it is given.
    """
    return Source("udp", host, port, Listener(parse_listen(f"udp:{sent_by}")), None)
