"""Bytes to messages: ``parse_datagram`` (UDP) and ``StreamParser`` (TCP/TLS).

The parse is lazy where it can be and strict where RFC 3261 says MUST:

* the start line is checked strictly (single SP separators, token method,
  SIP/2.0, 3-digit status); RFC 4475 3.1.2.7-3.1.2.10 allow rejecting the
  liberal variants and we do (400), unknown versions get 505;
* header lines are split once, unfolded, names resolved through the
  registry; values stay strings until accessed, except the fields every
  element acts on before anything else: Via, CSeq (also against the method),
  From, To, Call-ID, Max-Forwards and Content-Length are validated here, so a
  message that comes out of the parser can always be answered;
* presence and uniqueness of mandatory fields is an application-level check
  (``message.validate_request``), as RFC 4475 3.3.1 and 3.3.8 ask.

Limits (the caller's config, with defaults here): ``max_header_size`` bytes
of start line plus header section, on datagrams as on streams (513: the
message is longer than we process; it also bounds any single line), and
``max_headers`` header lines (400: a "header bomb" of thousands of tiny
fields under the byte limit costs ~40x its size in objects; the request is
not malformed, but 413 is about the body, 494 means Security Agreement
Required (RFC 3329), and a 5xx would invite a fronting proxy to fail over
and retry it elsewhere; see docs/sip-front.md).

Framing: a datagram is one message; Content-Length, if present, truncates the
body and may not exceed it (RFC 3261 18.3).  On a stream Content-Length is
mandatory; a framing error leaves the parser broken (every later call raises
the same error), since the connection must be closed (RFC 4475 3.1.2.3).
"""

from __future__ import annotations

import enum
import logging
import re

from . import _abnf
from .errors import RemoteProtocolError, SipError
from .headers import Headers, LineTable, eager_parsers
from .message import Message, Request, Response
from .uri import SipURI, check_name_addr, parse_uri

logger = logging.getLogger(__name__)

__all__ = ["NEED_DATA", "NeedData", "StreamParser", "is_keepalive", "parse_datagram", "parse_head"]


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = NeedData.NEED_DATA

_FOLD_RE = re.compile(r"\r\n[ \t]++")
_SIP_URI_SCHEMES = ("sip", "sips", "tel")
MAX_HEADER_SIZE = 16384  # bytes of start line + header section
MAX_HEADERS = 256  # header lines (folded continuation lines count)
_EAGER = eager_parsers("via", "cseq", "call-id", "max-forwards", "content-length")
# From and To are validated here, their NameAddr objects built when asked for
# (answering a request copies their text; only the RFC 2543 key and the TU need them)
_EAGER.update({"from": check_name_addr, "to": check_name_addr})
_TABLE = LineTable(_EAGER, frozenset({"from", "to"}))
# RFC 3261 and the extensions a UA meets; tokens by definition, so the method
# regex runs only for the others (the front answers these 405, others 501)
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)


def _bad(reason: str, status: int = 400) -> RemoteProtocolError:
    return RemoteProtocolError(reason, status)


def _parse_request_line(line: str) -> tuple[str, SipURI | str]:
    parts = line.split(" ")
    if len(parts) != 3:  # Method SP Request-URI SP SIP-Version, single SPs
        if len(parts) > 3 and parts[-1].upper().startswith("SIP/"):
            raise _bad("Bad Request: malformed Request-Line (extra whitespace)")
        raise _bad("Bad Request: malformed Request-Line")
    method, uri_text, version = parts
    if version != "SIP/2.0" and version.upper() != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise _bad(f"Version Not Supported: {version[:20]}", 505)
        raise _bad("Bad Request: malformed Request-Line")
    if method not in KNOWN_METHODS and _abnf.METHOD_RE.fullmatch(method) is None:
        raise _bad("Bad Request: malformed method")
    if uri_text.startswith("sip:") or uri_text[: uri_text.find(":")].lower() in _SIP_URI_SCHEMES:
        uri = parse_uri(uri_text)
        if uri.headers:
            # RFC 3261 19.1.1 table: headers are not allowed in a Request-URI
            raise _bad("Bad Request: header fields in the Request-URI")
        return method, uri
    if _abnf.ABSOLUTE_URI_RE.fullmatch(uri_text) is None:
        raise _bad("Bad Request: malformed Request-URI")
    return method, uri_text


def _check_header_count(head: bytes, max_headers: int) -> None:
    # counted on the bytes, before any object is made for a line
    if head.count(b"\n") > max_headers:
        raise _bad(f"Bad Request: too many header fields (limit {max_headers})")


def parse_head(head: bytes, max_headers: int = MAX_HEADERS) -> Message:  # noqa: C901 - one pass, each RFC 3261 7.x check a branch
    """Parse a start line and header block (no final CRLF CRLF), body empty."""
    if head.count(b"\n") > max_headers:  # _check_header_count, inline on the hot path
        _check_header_count(head, max_headers)
    text = head.decode("utf-8", "surrogateescape")
    if "\r\n " in text or "\r\n\t" in text:
        text = _FOLD_RE.sub(" ", text)
    lines = text.split("\r\n")
    ncrlf = len(lines) - 1
    if text.count("\n") != ncrlf or text.count("\r") != ncrlf:
        raise _bad("Bad Request: bare CR or LF in the header section")
    first = lines[0]
    # the fields every element acts on are parsed in the same pass: fail now
    # rather than halfway through handling the message
    headers = Headers._from_lines(lines[1:], _TABLE)  # noqa: SLF001
    if len(headers._items) > max_headers:  # noqa: SLF001
        # comma-joined values (RFC 3261 7.3.1) become one field each: a message
        # whose lines fit but whose fields do not would be refused by the next
        # parser after a response copied its Via fields
        raise _bad(f"Bad Request: too many header fields (limit {max_headers})")
    if first.startswith("SIP/"):
        parts = first.split(" ", 2)
        if len(parts) == 2:
            parts.append("")
        if len(parts) != 3:
            raise _bad("Bad Request: malformed Status-Line")
        version, code, reason = parts
        if version != "SIP/2.0":
            raise _bad(f"Version Not Supported: {version[:20]}", 505)
        if _abnf.STATUS_CODE_RE.fullmatch(code) is None:
            raise _bad("Bad Request: malformed status code")
        return Response(int(code), reason, headers)
    method, uri = _parse_request_line(first)
    cseq = headers.cseq()
    if cseq is not None and cseq.method != method:
        raise _bad("Bad Request: CSeq method does not match the request method")
    return Request(method, uri, headers)


def _content_length(msg: Message) -> int | None:
    values: list[int] = msg.headers._cache["content-length"]  # noqa: SLF001 - parsed eagerly
    if not values:
        return None
    if len(values) > 1 and len(set(values)) > 1:
        raise _bad("Bad Request: conflicting Content-Length values")
    return values[0]


def is_keepalive(data: bytes) -> bool:
    """A CRLF keep-alive datagram ("\\r\\n" or "\\r\\n\\r\\n", RFC 5626 style): drop it."""
    return bool(data) and not data.strip(b"\r\n")


def parse_datagram(
    data: bytes, max_header_size: int = MAX_HEADER_SIZE, max_headers: int = MAX_HEADERS
) -> Message:
    """Parse one UDP datagram.  Raises ``RemoteProtocolError``.

    CRLFs before the start line are skipped (RFC 3261 7.5 asks that of
    streams; on UDP they are keep-alives glued to a message).
    """
    if data.startswith(b"\r\n"):
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n", 0, max_header_size + 4)
    if end < 0:
        if len(data) > max_header_size and data.find(b"\r\n\r\n") >= 0:
            raise _bad("Message Too Large: header section over the limit", 513)
        raise _bad("Bad Request: no empty line after the header section")
    msg = parse_head(data[:end], max_headers)
    body = data[end + 4 :]
    length = _content_length(msg)
    if length is not None:
        if length > len(body):
            raise _bad("Bad Request: Content-Length larger than the datagram")
        if length < len(body):
            body = body[:length]
    msg.body = body
    return msg


class StreamParser:
    """Incremental parser for one stream connection (h11-style).

    ``feed(data)`` appends bytes; ``next_message()`` returns a message or
    ``NEED_DATA``.  CRLFs between messages are skipped; CRLFCRLF pings (RFC
    5626) are counted in ``keepalives`` so the driver can answer each with a
    CRLF pong.  Exceeding the size caps raises with
    status hint 513 (Message Too Large); an endless header section (bytes
    that never reach CRLFCRLF) raises as soon as ``max_header_size`` bytes
    are buffered, so it never holds more than that plus one read.
    """

    def __init__(
        self,
        max_message_size: int = 65536,
        max_header_size: int = MAX_HEADER_SIZE,
        max_headers: int = MAX_HEADERS,
    ) -> None:
        self.max_message_size = max_message_size
        self.max_header_size = max_header_size
        self.max_headers = max_headers
        self.keepalives = 0
        self._crlfs = 0
        self._buf = bytearray()
        self._pending: tuple[Message, int] | None = None
        self._error: SipError | None = None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def head(self) -> bytes:
        """The buffered start of the message being parsed: what an error answer copies from."""
        return bytes(self._buf[: self.max_header_size + 4])

    @property
    def has_partial(self) -> bool:
        """Bytes of an incomplete message are waiting (for idle-timeout policies)."""
        return self._pending is not None or bool(self._buf.strip(b"\r\n"))

    def next_message(self) -> Message | NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except SipError as exc:
            self._error = exc
            raise

    def _next(self) -> Message | NeedData:
        buf = self._buf
        if self._pending is None:
            skip = 0
            while buf.startswith(b"\r\n", skip):
                skip += 2
            if skip:
                # RFC 5626 3.5.1: a ping is CRLFCRLF (possibly split across
                # reads), a lone CRLF is a pong and needs no answer
                self._crlfs += skip // 2
                self.keepalives += self._crlfs // 2
                self._crlfs %= 2
                del buf[:skip]
            if buf and buf[0] != 0x0D:  # a message starts: no ping in progress
                self._crlfs = 0
            end = buf.find(b"\r\n\r\n", 0, self.max_header_size + 4)
            if end < 0:
                if len(buf) > self.max_header_size:
                    raise _bad("Message Too Large: header section over the limit", 513)
                return NEED_DATA
            msg = parse_head(bytes(buf[:end]), self.max_headers)
            length = _content_length(msg)
            if length is None:
                raise _bad("Bad Request: missing Content-Length on a stream transport")
            if end + 4 + length > self.max_message_size:
                raise _bad("Message Too Large: body over the limit", 513)
            del buf[: end + 4]
            self._pending = (msg, length)
        msg, length = self._pending
        if len(buf) < length:
            return NEED_DATA
        msg.body = bytes(buf[:length])
        del buf[:length]
        self._pending = None
        return msg
