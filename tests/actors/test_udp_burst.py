"""The UDP reader's burst: datagrams read per wake-up, and where a burst ends.

``TransportLayer._udp_readable`` reads until FIONREAD says nothing is
queued (in a long burst, until recvfrom would block). An empty datagram
also reads as 0 there: it must end the burst without being lost, and the
next wake-up must read it and go on. These tests
drive the reader by hand on a loop that is not running, so that which
datagrams sit in the socket at each call is certain.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors.front.transport import TransportConfig, TransportLayer

if TYPE_CHECKING:
    from collections.abc import Iterator


def request(branch: str, port: int) -> bytes:
    return (
        f"OPTIONS sip:alice@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\n"
        "From: <sip:bob@127.0.0.1>;tag=1\r\n"
        "To: <sip:alice@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
def layer() -> Iterator[tuple[TransportLayer, list[Any], socket.socket]]:
    loop = asyncio.new_event_loop()
    received: list[Any] = []
    layer = TransportLayer(
        loop,
        TransportConfig(),
        lambda message, _source: received.append(message),
        lambda error, _raw, _source: received.append(error),
    )
    listener = loop.run_until_complete(layer.listen("udp:127.0.0.1:0"))
    assert listener.sock is not None
    loop.remove_reader(listener.sock.fileno())  # the test is the loop
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    yield layer, received, sender
    sender.close()
    loop.run_until_complete(layer.close())
    loop.close()


def fill(sender: socket.socket, layer: TransportLayer, datagrams: list[bytes]) -> None:
    listener = layer.listeners[0]
    for data in datagrams:
        sender.sendto(data, ("127.0.0.1", listener.port))
    # loopback delivers synchronously: every datagram is queued once sendto returns


def test_one_wakeup_reads_every_queued_datagram(layer):
    layer, received, sender = layer
    port = sender.getsockname()[1]
    # past FIONREAD_BURST: the end of this one is found by recvfrom
    fill(sender, layer, [request(f"z9hG4bK-b{i}", port) for i in range(9)])
    layer._udp_readable(layer.listeners[0])
    assert [m.branch for m in received] == [f"z9hG4bK-b{i}" for i in range(9)]
    layer._udp_readable(layer.listeners[0])  # an empty socket: nothing, no error
    assert len(received) == 9


def test_an_empty_datagram_ends_a_burst_and_the_next_wakeup_goes_on(layer):
    layer, received, sender = layer
    port = sender.getsockname()[1]
    fill(sender, layer, [request("z9hG4bK-e1", port), b"", request("z9hG4bK-e2", port), b"\r\n"])
    layer._udp_readable(layer.listeners[0])
    assert [m.branch for m in received] == ["z9hG4bK-e1"]
    layer._udp_readable(layer.listeners[0])  # reads the empty one, then the next
    assert [m.branch for m in received] == ["z9hG4bK-e1", "z9hG4bK-e2"]
    layer._udp_readable(layer.listeners[0])
    assert len(received) == 2
