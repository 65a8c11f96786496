"""The logged-in stream's parser swap (purplegw/protocols/xmpp/stream_parser.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from purplegw.protocols.xmpp.stream_parser import (
    StreamParser,
    ends_between_stanzas,
    fresh_parser,
)

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
    b"id='s1' from='localhost' version='1.0' xml:lang='en'>"
)
STANZAS = (
    (
        b"<message from='bob@localhost/x' to='alice@localhost' type='chat' id='m1'>"
        b"<body>a &gt; b, 'quoted' \"twice\" &lt;tag&gt;</body></message>"
    ),
    b"\n  <presence from='bob@localhost/x' note='1 > 0'><show>away</show></presence>",
    b"<a xmlns='urn:xmpp:sm:3' h='3'/>",
    b"<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='it&apos;s'/></iq>",
    # A prefix the server declared on the stream root, used in a stanza.
    b"<db:result from='a' to='b' type='valid'/>",
    b"<message id='m2'><body>\xc3\xbcnicode</body></message>",
)


def stanzas_read(chunks: list[bytes], *, swap: bool) -> list[bytes]:
    """Feed ``chunks`` the way slixmpp does; with ``swap``, replace the parser where allowed."""
    parser: ET.XMLPullParser = StreamParser()
    depth, out, swapped = 0, [], 0
    for chunk in chunks:
        parser.feed(chunk)
        for event, element in parser.read_events():
            if event == "start":
                depth += 1
            else:
                depth -= 1
                if depth == 1:
                    # Whitespace between stanzas reaches a stanza's tail only
                    # if it arrived in the same chunk; slixmpp never reads it.
                    element.tail = None
                    out.append(ET.tostring(element))
        if swap and depth == 1 and ends_between_stanzas(chunk):
            namespaces = getattr(parser, "root_namespaces", None)
            if namespaces is not None:
                parser, _root = fresh_parser(namespaces)
                swapped += 1
    assert not swap or swapped <= 1
    return out


def test_a_swap_at_any_split_of_the_stream_reads_the_same_stanzas():
    stream = HEADER + b"".join(STANZAS)
    expected = stanzas_read([stream], swap=False)
    assert len(expected) == len(STANZAS)
    swaps = 0
    for cut in range(1, len(stream)):
        for second in (cut + 1, cut + 7, len(stream)):
            chunks = [stream[:cut], stream[cut:second], stream[second:]]
            chunks = [c for c in chunks if c]
            assert stanzas_read(chunks, swap=True) == expected, (cut, second)
            swaps += 1
    assert swaps > len(stream)


@pytest.mark.parametrize(
    ("data", "between"),
    [
        (b"<message><body>x</body></message>", True),
        (b"<message><body>x</body></message>\n  ", True),
        (b"<a xmlns='urn:xmpp:sm:3' h='3'/>", True),
        (b"<presence from='a>", False),  # '>' inside an attribute value: tag unfinished
        (b'<presence note="it\'s > 1"/>', True),
        (b"<presence note='x/>", False),
        (b"</message><presence", False),
        (b"<!-- x -->", False),
        (b"no markup>", False),
        ("</message>", True),
    ],
)
def test_ends_between_stanzas(data, between):
    assert ends_between_stanzas(data) is between


def test_the_fresh_parser_declares_the_root_namespaces():
    parser = StreamParser()
    parser.feed(HEADER + STANZAS[0])
    list(parser.read_events())
    assert ("db", "jabber:server:dialback") in parser.root_namespaces
    assert ("", "jabber:client") in parser.root_namespaces
    assert ("", "jabber:iq:roster") not in parser.root_namespaces  # only the root's
    fresh, root = fresh_parser(parser.root_namespaces)
    assert root.tag == "{http://etherx.jabber.org/streams}stream"
    fresh.feed(STANZAS[4] + STANZAS[0])
    tags = [e.tag for ev, e in fresh.read_events() if ev == "end"]
    assert tags[0] == "{jabber:server:dialback}result"
    assert tags[-1] == "{jabber:client}message"
