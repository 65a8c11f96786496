"""A dialog never builds a request whose CSeq a peer cannot parse (found by fuzzing)."""

from __future__ import annotations

import pytest

from purplegw.sip.dialog import Dialog
from purplegw.sip.errors import LocalProtocolError
from purplegw.sip.headers import MAX_CSEQ
from purplegw.sip.message import Request, serialize
from purplegw.sip.parser import parse_datagram
from tests.kit.sipmsg import make_request

VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"


def dialog(local_cseq: int) -> Dialog:
    request = make_request("SUBSCRIBE", extra=[("Contact", "<sip:w@127.0.0.1:5070>")])
    return Dialog.from_request(request, "gw1", local_cseq=local_cseq)


def test_last_cseq_is_built_and_parses() -> None:
    dlg = dialog(MAX_CSEQ - 1)
    out = parse_datagram(serialize(dlg.create_request("NOTIFY", via=VIA)))
    assert isinstance(out, Request)
    assert out.cseq is not None
    assert out.cseq.number == MAX_CSEQ


def test_exhausted_cseq_space_is_refused_not_sent() -> None:
    dlg = dialog(MAX_CSEQ)
    with pytest.raises(LocalProtocolError, match="exhausted"):
        dlg.create_request("NOTIFY", via=VIA)
    assert dlg.local_cseq == MAX_CSEQ
