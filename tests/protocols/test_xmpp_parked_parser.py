"""An idle logged-in stream drops its XML parser between stanzas (session.py, ``_park_parser``).

Driven by hand on a client with a recording transport: the timer, a stanza
cut across reads, and a lost connection are placed exactly where the live
test (test_xmpp_session.py) cannot put them.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from purplegw.protocols.xmpp import session as session_module
from tests.kit.certs import write_self_signed_cert

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


def test_an_idle_tls_connection_gives_back_its_read_buffer_and_reads_on(tmp_path: Any) -> None:
    # A real asyncio TLS connection: asyncio must make a new buffer at the
    # next read, or this fails (session_module.release_tls_read_buffer).
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed_cert(cert, key, "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    chunks = [b"first", b"second " * 400, b"third"]  # the middle one is larger than the buffer

    async def story() -> bytes:
        loop = asyncio.get_running_loop()
        writers: list[asyncio.StreamWriter] = []

        async def serve(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        received = bytearray()
        got = asyncio.Event()

        class Reader(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                received.extend(data)
                got.set()

        transport, _ = await loop.create_connection(
            Reader, "127.0.0.1", port, ssl=client_context, server_hostname="localhost"
        )
        protocol = transport._ssl_protocol  # type: ignore[attr-defined]
        for _ in range(50):
            if writers:
                break
            await asyncio.sleep(0.01)
        expected = 0
        for chunk in chunks:
            assert session_module.release_tls_read_buffer(transport)
            assert len(protocol._ssl_buffer) == 0
            expected += len(chunk)
            writers[0].write(chunk)
            while len(received) < expected:
                got.clear()
                await asyncio.wait_for(got.wait(), 5)
            assert len(protocol._ssl_buffer) == protocol.max_size  # made again by the read
        transport.close()
        writers[0].close()
        server.close()
        await server.wait_closed()
        return bytes(received)

    assert asyncio.run(story()) == b"".join(chunks)
    assert not session_module.release_tls_read_buffer(object())  # no TLS: nothing to free
