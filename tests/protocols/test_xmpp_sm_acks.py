"""The server's XEP-0198 ack requests get one late answer (session.py, ``delay_sm_acks``)."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp.xmlstream import StanzaBase

from purplegw.protocols.base import AccountCredentials, SessionContext
from purplegw.protocols.xmpp.session import SM_ACK_DELAY, SM_NS, XmppSession


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return False


def client_on(loop: asyncio.AbstractEventLoop) -> Any:
    session = XmppSession(
        AccountCredentials(1, "alice@sip.test", "alice@example.org", "xmpp", "pw"),
        SessionContext(loop=loop, events=None, config={}),  # type: ignore[arg-type]
    )
    return session._build_client()


def receive(client: Any, xml: str) -> None:
    element = ET.fromstring(xml)  # noqa: S314 - the test's own document
    client.recv_stanza(StanzaBase(client, element))


def test_ack_requests_read_together_get_one_late_answer_with_the_latest_count() -> None:
    loop = asyncio.new_event_loop()
    try:
        client = client_on(loop)
        transport = Transport()
        client.transport = transport
        sm = client.plugin["xep_0198"]
        sm.handled = 3
        receive(client, f"<r xmlns='{SM_NS}'/>")
        receive(client, f"<r xmlns='{SM_NS}'/>")
        sm.handled = 5  # two more stanzas read before the answer leaves
        assert transport.written == []  # not answered at once
        loop.run_until_complete(asyncio.sleep(SM_ACK_DELAY * 3))
        (answer,) = transport.written
        assert ET.fromstring(answer).attrib == {"h": "5"}  # noqa: S314 - our own output
        receive(client, f"<r xmlns='{SM_NS}'/>")  # a later request: a later answer
        loop.run_until_complete(asyncio.sleep(SM_ACK_DELAY * 3))
        assert len(transport.written) == 2
    finally:
        loop.close()


def test_no_answer_without_a_connection() -> None:
    loop = asyncio.new_event_loop()
    try:
        client = client_on(loop)
        transport = Transport()
        client.transport = transport
        receive(client, f"<r xmlns='{SM_NS}'/>")
        client.transport = None  # the stream went away meanwhile
        loop.run_until_complete(asyncio.sleep(SM_ACK_DELAY * 3))
        assert transport.written == []
    finally:
        loop.close()
