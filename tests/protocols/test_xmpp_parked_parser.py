"""An idle logged-in stream drops its XML parser between stanzas (session.py, ``_park_parser``).

Driven by hand on a client with a recording transport: the timer, a stanza
cut across reads, and a lost connection are placed exactly where the live
test (test_xmpp_session.py) cannot put them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from purplegw.protocols.xmpp import session as session_module

from .test_xmpp_sm_acks import Transport, client_on

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    b"id='s1' from='example.org' version='1.0'>"
)
IDLE = 0.05


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A client that read a stream header and started its session; and the bodies it read."""
    monkeypatch.setattr(session_module, "PARSER_IDLE", IDLE)
    loop = asyncio.new_event_loop()
    client = client_on(loop)
    client.transport = Transport()
    bodies: list[str] = []
    client.register_handler(
        Callback(
            "test messages",
            MatchXPath("{jabber:client}message"),
            lambda msg: bodies.append(msg.xml.findtext("{jabber:client}body")),
        )
    )
    client.init_parser()
    client.data_received(HEADER)
    client.compact_parser_due = True  # what session_start sets
    client.data_received(b"<presence from='bob@example.org/x'/>")
    loop.run_until_complete(asyncio.sleep(0))
    yield loop, client, bodies
    loop.close()


def idle(loop: asyncio.AbstractEventLoop, seconds: float = 3 * IDLE) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


def test_parked_after_idle_and_rebuilt_by_the_next_read(stream: Any) -> None:
    loop, client, bodies = stream
    assert client.parser is not None
    idle(loop)
    assert client.parser is None
    # A prefix declared only on the stream's root still resolves after parking.
    client.data_received(
        b"<message from='bob@example.org/x' type='chat'><body>one</body>"
        b"<db:x xmlns:y='urn:y'/></message>"
    )
    loop.run_until_complete(asyncio.sleep(0))
    assert bodies == ["one"]
    assert client.parser is not None
    idle(loop)
    assert client.parser is None


def test_a_stanza_half_read_keeps_its_parser(stream: Any) -> None:
    loop, client, bodies = stream
    client.data_received(b"<message from='bob@example.org/x' type='chat'><body>cut ")
    idle(loop)
    assert client.parser is not None  # mid-stanza: never dropped
    client.data_received(b"here</body></message><message type='chat'><bo")
    idle(loop)
    assert client.parser is not None  # a start tag half read is markup pending too
    client.data_received(b"dy>two</body></message>")
    loop.run_until_complete(asyncio.sleep(0))
    assert bodies == ["cut here", "two"]
    idle(loop)
    assert client.parser is None


def test_reads_keep_the_parser_and_put_off_the_parking(stream: Any) -> None:
    loop, client, bodies = stream
    for n in range(6):
        client.data_received(f"<message type='chat'><body>{n}</body></message>".encode())
        idle(loop, IDLE / 3)
        assert client.parser is not None
    idle(loop)
    assert client.parser is None
    assert bodies == [str(n) for n in range(6)]


def test_a_lost_connection_parks_nothing_and_the_new_stream_starts_over(stream: Any) -> None:
    loop, client, _bodies = stream
    idle(loop)
    assert client.parser is None
    client.connection_lost(None)
    assert client._parked_namespaces is None
    client.data_received(b"<message type='chat'><body>late</body></message>")
    assert client.parser is None  # slixmpp's "data before the connection" path, as before
    client.transport = Transport()
    client.init_parser()
    client.data_received(HEADER)
    client.data_received(b"<presence/>")
    idle(loop)
    assert client.parser is not None  # not started (or resumed) yet: never parked
