"""A lighter XML parser for a logged-in stream: the login's parser replaced by a fresh one.

An XMPP stream is one XML document read by one expat parser (ElementTree's
``XMLPullParser``).  The parser keeps what the login taught it: expat's name
pools and hash tables, ElementTree's cache of every qualified name seen, the
largest input buffer.  Measured (tracemalloc, docs/runtime.md) that is ~24
KiB per stream after a login against ~12 KiB for a parser that has only read
the stream header, and a gateway keeps thousands of streams open and mostly
idle.

:class:`StreamParser` is the parser slixmpp's ``init_parser`` builds, plus a
record of the namespace declarations of the stream's root element (the
``start-ns`` events, which slixmpp's reading loop skips: it acts on ``start``
and ``end`` only).  :func:`fresh_parser` builds a parser in the same state
as a stream at a stanza boundary: it has read a stream header declaring the
same namespaces (the stanzas still to come may use any prefix the server
declared there), and the events of that header are dropped.  The switch is
only safe between stanzas: :func:`ends_between_stanzas` says whether a chunk
of input, after which no stanza is open, also left no markup half read in
the parser.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import quoteattr

STREAM_NS = "http://etherx.jabber.org/streams"
_EVENTS = ("start", "end", "start-ns")


class StreamParser(ET.XMLPullParser):
    """``XMLPullParser(("start", "end"))`` that remembers the root element's namespaces."""

    def __init__(self) -> None:
        super().__init__(_EVENTS)
        #: (prefix, uri) declared on the stream's root element, in order.
        self.root_namespaces: list[tuple[str, str]] = []
        self._root_seen = False

    def read_events(self) -> Any:
        for event, item in super().read_events():
            if event == "start-ns":
                if not self._root_seen:
                    self.root_namespaces.append(item)
                continue  # slixmpp reads "start" and "end" only
            if event == "start":
                self._root_seen = True
            yield event, item


def fresh_parser(namespaces: list[tuple[str, str]]) -> tuple[ET.XMLPullParser, ET.Element]:
    """A parser that has read a stream header declaring ``namespaces``; and its root element.

    A plain ``XMLPullParser`` (start and end events, as slixmpp's): a stream
    is compacted once, and a new connection builds a :class:`StreamParser`.
    """
    declared = dict(namespaces)
    declared.setdefault("stream", STREAM_NS)
    attributes = " ".join(
        f"xmlns={quoteattr(uri)}" if not prefix else f"xmlns:{prefix}={quoteattr(uri)}"
        for prefix, uri in declared.items()
    )
    parser = ET.XMLPullParser(("start", "end"))
    parser.feed(f"<stream:stream {attributes}>".encode())
    root = None
    for event, element in parser.read_events():
        if event == "start":
            root = element
    if root is None:  # pragma: no cover - the header above always starts an element
        raise ValueError("stream header not parsed")
    return parser, root


def ends_between_stanzas(data: bytes | str) -> bool:
    """True if ``data`` ends on a complete tag (so a parser fed it holds no partial markup).

    Whitespace after the tag is fine.  The last ``<`` of the chunk starts its
    last piece of markup (``<`` cannot appear inside attribute values, and
    character data between stanzas is whitespace); that markup is complete
    if it is an end tag, or ends with ``>`` outside any quoted attribute
    value.  Meant for a parser at stanza depth (no element open below the
    root): a complete start tag there would have opened one.
    """
    if isinstance(data, str):
        data = data.encode()
    data = data.rstrip()
    if not data.endswith(b">"):
        return False
    start = data.rfind(b"<")
    if start < 0:
        return False
    markup = data[start:]
    if markup.startswith(b"</"):
        return True
    if markup.startswith((b"<!", b"<?")):
        return False  # comments, CDATA, processing instructions: not between stanzas
    quote = 0
    for byte in markup:
        if quote:
            if byte == quote:
                quote = 0
        elif byte in {0x22, 0x27}:  # " '
            quote = byte
    return not quote
