"""SIP requests and responses, serialization, and response construction.

Messages are mutable dataclasses around a ``Headers`` store; the typed
properties (``call_id``, ``cseq``, ``from_``, ``to``, ``via``...) parse on
first access and cache in the store.  ``serialize`` always writes a fresh
Content-Length, so callers never keep it in step by hand.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import LocalProtocolError, RemoteProtocolError
from .headers import TYPED_KEYS, CSeq, Headers, Via
from .uri import NameAddr, SipURI, parse_uri

if TYPE_CHECKING:
    from collections.abc import Iterable

logger = logging.getLogger(__name__)

__all__ = [
    "DIALOG_CREATING_METHODS",
    "REASON_PHRASES",
    "Message",
    "Request",
    "Response",
    "make_response",
    "serialize",
    "unsupported_extensions",
    "validate_request",
]

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

# RFC 3261 12.1 / RFC 6665 4.1: a 2xx to these creates a dialog (Record-Route copied)
DIALOG_CREATING_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
# RFC 3261 8.1.1: a valid request carries at least these; only one value each
_REQUIRED = ("To", "From", "CSeq", "Call-ID", "Via")
_SINGLE = (
    "To",
    "From",
    "CSeq",
    "Call-ID",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Expires",
    "Event",
)

# header keys are the lower-cased long names (headers._LOOKUP)
_REQUIRED_KEYS = tuple((name.lower(), name) for name in _REQUIRED)
_SINGLE_KEYS = tuple((name.lower(), name) for name in _SINGLE)


class _MessageMixin:
    """Typed shortcuts shared by requests and responses."""

    __slots__ = ()
    headers: Headers

    @property
    def call_id(self) -> str | None:
        return self.headers.call_id()

    @property
    def cseq(self) -> CSeq | None:
        return self.headers.cseq()

    @property
    def from_(self) -> NameAddr | None:
        return self.headers.from_()

    @property
    def to(self) -> NameAddr | None:
        return self.headers.to()

    @property
    def via(self) -> list[Via]:
        return self.headers.via()

    @property
    def top_via(self) -> Via | None:
        return self.headers.top_via()

    @property
    def branch(self) -> str | None:
        top = self.headers.top_via()
        return top.branch if top is not None else None

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    @property
    def content_length(self) -> int | None:
        return self.headers.content_length()

    @property
    def expires(self) -> int | None:
        return self.headers.expires()


@dataclass(slots=True, eq=False)
class Request(_MessageMixin):
    method: str
    uri: SipURI | str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def ruri(self) -> SipURI:
        """The Request-URI parsed; a URI of another scheme parses opaque (``is_sip`` false)."""
        return self.uri if isinstance(self.uri, SipURI) else parse_uri(self.uri)

    @property
    def max_forwards(self) -> int | None:
        return self.headers.max_forwards()

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call-id={self.headers.get('Call-ID')!r}>"


@dataclass(slots=True, eq=False)
class Response(_MessageMixin):
    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason!r} call-id={self.headers.get('Call-ID')!r}>"


Message = Request | Response


def serialize(msg: Message) -> bytes:
    """Wire form of ``msg``; Content-Length is always (re)computed from the body."""
    if isinstance(msg, Request):
        start = f"{msg.method} {msg.uri} SIP/2.0"
    else:
        start = f"SIP/2.0 {msg.status} {msg.reason}"
    if "\r" in start or "\n" in start:
        raise LocalProtocolError(f"CR/LF in the start line {start[:60]!r}", 500)
    lines = [start]
    lines.extend(
        [
            f"{name}: {value}"
            for key, name, value in msg.headers._items  # noqa: SLF001
            if key != "content-length"
        ]
    )
    lines.append(f"Content-Length: {len(msg.body)}\r\n\r\n")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    return head + msg.body if msg.body else head


def make_response(  # noqa: C901, PLR0912, PLR0913 - RFC 3261 8.2.6 copies each header by its own rule
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] | Headers = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 8.2.6.

    Via (all values, in order), From, Call-ID and CSeq are copied; To is copied
    and gets ``to_tag`` unless it already has a tag (or this is a 100).  For a
    2xx to a dialog-creating request Record-Route is copied too (12.1.1).
    """
    if not 100 <= status <= 699:
        raise LocalProtocolError(f"status code {status} out of range", 500)
    vias: list[tuple[str, str, str]] = []
    froms: list[tuple[str, str, str]] = []
    rest: list[tuple[str, str, str]] = []  # Call-ID and CSeq, in their order
    routes: list[tuple[str, str, str]] = []
    to_item = None
    for item in request.headers._items:  # noqa: SLF001
        key = item[0]
        if key == "via":
            vias.append(item)
        elif key == "from":
            froms.append(item)
        elif key == "call-id" or key == "cseq":  # noqa: PLR1714
            rest.append(item)
        elif key == "to":
            if to_item is None:
                to_item = item
        elif key == "record-route":
            routes.append(item)
    if to_item is not None and to_tag is not None and status != 100:
        # a To without "tag" anywhere in it has none: no need to build its NameAddr
        if "tag" not in to_item[2].lower():
            to_item = ("to", "To", f"{to_item[2]};tag={to_tag}")
        else:
            to = request.headers.to()
            if to is not None and to.tag is None:
                to_item = ("to", "To", f"{to_item[2]};tag={to_tag}")
    items = vias
    items += froms
    if to_item is not None:
        items.append(to_item)
    items += rest
    if routes and 200 <= status < 300 and request.method in DIALOG_CREATING_METHODS:
        items.extend(routes)
    out = Headers()
    out._items = items  # noqa: SLF001
    for name, value in headers:
        out.add(name, value)
    return Response(
        status, reason if reason is not None else REASON_PHRASES.get(status, ""), out, body
    )


def unsupported_extensions(request: Request, supported: Iterable[str]) -> list[str]:
    """Require option-tags we do not support (answer 420 with them in Unsupported, 8.2.2.3)."""
    known = {tag.lower() for tag in supported}
    return [tag for tag in request.headers.getall("Require") if tag and tag.lower() not in known]


def validate_request(request: Request) -> None:
    """Application-level checks of RFC 3261 8.2 a UAS makes before acting.

    Raises ``RemoteProtocolError`` (400) for missing mandatory fields,
    duplicated single-valued fields, a CSeq method that differs from the
    request method, or any malformed known header field.
    """
    headers = request.headers
    # this runs for each new request on the front's hot path: the keys in
    # order of first appearance, counted only when some key repeats
    keys = [item[0] for item in headers._items]  # noqa: SLF001
    present = dict.fromkeys(keys)
    for key, name in _REQUIRED_KEYS:
        if key not in present:
            raise RemoteProtocolError(f"Bad Request: missing {name}", 400)
    if len(present) != len(keys):
        for key, name in _SINGLE_KEYS:
            if keys.count(key) > 1:
                raise RemoteProtocolError(f"Bad Request: multiple {name} values", 400)
    cseq = headers.cseq()
    if cseq is not None and cseq.method != request.method:
        raise RemoteProtocolError("Bad Request: CSeq method does not match the request method", 400)
    # every registered typed header must parse (each field once: parsing is cached,
    # and the fields the parser validated are in the cache already)
    cache = headers._cache  # noqa: SLF001
    for key in present:
        if key in TYPED_KEYS and key not in cache:
            headers._values(key)  # noqa: SLF001
