"""Header fields: an ordered, case-insensitive, multi-valued ``Headers`` store.

The parser hands each header line over untouched (name resolved through the
registry, value stripped); typed values (``Via``, ``CSeq``, ``NameAddr``...)
are parsed on first access and cached until the field changes.  Compact forms
(RFC 3261 7.3.3) are normalized to the full name, and list-valued fields
(RFC 3261 7.3.1: ``field: a, b`` equals two ``field`` lines) are split at
commas outside quotes and angle brackets when they enter the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _abnf
from .errors import LocalProtocolError, RemoteProtocolError
from .uri import NameAddr, Params, _params_of, parse_name_addr

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

__all__ = [
    "HEADER_TYPES",
    "TYPED_KEYS",
    "CSeq",
    "HeaderType",
    "Headers",
    "LineTable",
    "Via",
    "canonical_name",
    "parse_cseq",
    "parse_delta_seconds",
    "parse_via",
    "split_list",
]

MAX_CSEQ = 2**32 - 1  # RFC 3261 8.1.1.5: the sequence number is a 32-bit unsigned integer
MAX_DELTA = 2**32 - 1  # RFC 3261 20.19: larger Expires values are clamped


def _bad(header: str, value: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"Bad Request: malformed {header} header: {value[:80]!r}", 400)


def split_list(value: str) -> list[str]:  # noqa: C901 - one character scanner for quotes, brackets and escapes
    """Split a ``#element`` list at commas outside quoted strings and ``<...>``."""
    if '"' not in value and "<" not in value:
        return [part.strip(" \t") for part in value.split(",")]
    parts: list[str] = []
    start = 0
    in_quote = in_angle = escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif in_quote:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip(" \t"))
            start = i + 1
    parts.append(value[start:].strip(" \t"))
    return parts


@dataclass(slots=True)
class Via:
    """One ``via-parm`` (RFC 3261 20.42, RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def has_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, **params: str | None) -> Via:
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def __str__(self) -> str:
        out = [self.protocol, "/", self.transport, " ", self.sent_by]
        for name, value in self.params.items():
            out += (";", name) if value is None else (";", name, "=", value)
        return "".join(out)


def parse_via(value: str) -> Via:
    m = _abnf.VIA_RE.fullmatch(value)
    if m is None:
        raise _bad("Via", value)
    name, version, transport, host, port_text, param_text = m.groups()
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise _bad("Via", value)
    if param_text:
        params = _params_of(param_text)
        rport = params.get("rport")
        if rport is not None and not _digits(rport):
            raise _bad("Via", value)
    else:
        params = {}
    name = f"{name.upper()}/{version}" if name != "SIP" or version != "2.0" else "SIP/2.0"
    return Via(
        transport if transport in _TRANSPORTS else transport.upper(), host, port, params, name
    )


_TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "SCTP", "WS", "WSS"})


class CSeq(NamedTuple):
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_new_tuple = tuple.__new__


def parse_cseq(value: str) -> CSeq:
    m = _abnf.CSEQ_RE.fullmatch(value)
    if m is None:
        raise _bad("CSeq", value)
    digits = m.group(1)
    number = int(digits) if len(digits) <= 10 else MAX_CSEQ + 1
    if number > MAX_CSEQ:
        raise RemoteProtocolError(f"Bad Request: CSeq number out of range: {digits[:30]}", 400)
    return _new_tuple(CSeq, (number, m.group(2)))  # CSeq(...) without its Python-level __new__


def parse_delta_seconds(value: str) -> int:
    """``delta-seconds``; values beyond 2**32-1 are clamped (RFC 3261 20.19)."""
    if _abnf.DIGITS_RE.fullmatch(value) is None:
        raise _bad("delta-seconds", value)
    return min(int(value), MAX_DELTA) if len(value) <= 12 else MAX_DELTA


def _digits(value: str) -> bool:
    # 1*DIGIT; str.isdigit alone would take other scripts' digits
    return value.isdigit() and value.isascii()


def _parse_max_forwards(value: str) -> int:
    if not _digits(value) or len(value) > 5 or int(value) > 255:
        raise _bad("Max-Forwards", value)
    return int(value)


def _parse_content_length(value: str) -> int:
    if not _digits(value):
        raise RemoteProtocolError(f"Bad Request: malformed Content-Length: {value[:30]!r}", 400)
    return int(value) if len(value) <= 12 else 10**12


def _parse_call_id(value: str) -> str:
    # callid = word [ "@" word ]: any visible character but no whitespace
    if not value or " " in value or "\t" in value:
        raise _bad("Call-ID", value)
    return value


def _parse_contact(value: str) -> NameAddr | str:
    return "*" if value == "*" else parse_name_addr(value)


@dataclass(frozen=True, slots=True)
class HeaderType:
    """Registry entry: full name, compact form, list-valued?, value parser."""

    name: str
    compact: str | None = None
    multi: bool = False
    parse: Callable[[str], Any] | None = None
    # list-valued fields whose empty elements are errors, not noise
    strict_list: bool = False


_TYPES: tuple[HeaderType, ...] = (
    HeaderType("Accept", multi=True),
    HeaderType("Accept-Contact", "a", multi=True),
    HeaderType("Accept-Encoding", multi=True),
    HeaderType("Accept-Language", multi=True),
    HeaderType("Alert-Info", multi=True),
    HeaderType("Allow", multi=True),
    HeaderType("Allow-Events", "u", multi=True),
    HeaderType("Authentication-Info"),
    HeaderType("Authorization"),
    HeaderType("Call-ID", "i", parse=_parse_call_id),
    HeaderType("Call-Info", multi=True),
    HeaderType("Contact", "m", multi=True, parse=_parse_contact, strict_list=True),
    HeaderType("Content-Disposition"),
    HeaderType("Content-Encoding", "e", multi=True),
    HeaderType("Content-Language", multi=True),
    HeaderType("Content-Length", "l", parse=_parse_content_length),
    HeaderType("Content-Type", "c"),
    HeaderType("CSeq", parse=parse_cseq),
    HeaderType("Date"),
    HeaderType("Error-Info", multi=True),
    HeaderType("Event", "o"),
    HeaderType("Expires", parse=parse_delta_seconds),
    HeaderType("From", "f", parse=parse_name_addr),
    HeaderType("Identity", "y"),
    HeaderType("In-Reply-To", multi=True),
    HeaderType("Max-Forwards", parse=_parse_max_forwards),
    HeaderType("MIME-Version"),
    HeaderType("Min-Expires", parse=parse_delta_seconds),
    HeaderType("Organization"),
    HeaderType("Path", multi=True, parse=parse_name_addr, strict_list=True),
    HeaderType("Priority"),
    HeaderType("Proxy-Authenticate"),
    HeaderType("Proxy-Authorization"),
    HeaderType("Proxy-Require", multi=True),
    HeaderType("Record-Route", multi=True, parse=parse_name_addr, strict_list=True),
    HeaderType("Refer-To", "r", parse=parse_name_addr),
    HeaderType("Referred-By", "b", parse=parse_name_addr),
    HeaderType("Reject-Contact", "j", multi=True),
    HeaderType("Reply-To", parse=parse_name_addr),
    HeaderType("Request-Disposition", "d", multi=True),
    HeaderType("Require", multi=True),
    HeaderType("Retry-After"),
    HeaderType("Route", multi=True, parse=parse_name_addr, strict_list=True),
    HeaderType("Server"),
    HeaderType("Session-Expires", "x"),
    HeaderType("SIP-ETag"),
    HeaderType("SIP-If-Match"),
    HeaderType("Subject", "s"),
    HeaderType("Subscription-State"),
    HeaderType("Supported", "k", multi=True),
    HeaderType("Timestamp"),
    HeaderType("To", "t", parse=parse_name_addr),
    HeaderType("Unsupported", multi=True),
    HeaderType("User-Agent"),
    HeaderType("Via", "v", multi=True, parse=parse_via, strict_list=True),
    HeaderType("Warning", multi=True),
    HeaderType("WWW-Authenticate"),
)

HEADER_TYPES: dict[str, HeaderType] = {t.name.lower(): t for t in _TYPES}
# keys of the fields with a value parser (the ones a request is validated against)
TYPED_KEYS = frozenset(key for key, t in HEADER_TYPES.items() if t.parse is not None)
_GENERIC = HeaderType("")
# spelling -> (key, canonical name, header type); exact spellings skip .lower()
_LOOKUP: dict[str, tuple[str, str, HeaderType]] = {}
for _t in _TYPES:
    _entry = (_t.name.lower(), _t.name, _t)
    for _spelling in (_t.name, _t.name.lower(), _t.compact, (_t.compact or "").upper()):
        if _spelling:
            _LOOKUP[_spelling] = _entry


def _resolve(name: str) -> tuple[str, str, HeaderType]:
    entry = _LOOKUP.get(name)
    if entry is not None:
        return entry
    name = name.rstrip(" \t")
    lower = name.lower()
    entry = _LOOKUP.get(lower)
    if entry is not None:
        return entry
    if _abnf.TOKEN_RE.fullmatch(name) is None:
        raise RemoteProtocolError(f"Bad Request: malformed header name {name[:40]!r}", 400)
    return lower, name, _GENERIC


def eager_parsers(*keys: str) -> dict[str, Callable[[str], Any]]:
    """``{key: parser}`` for the ``eager`` argument of ``Headers._from_lines``."""
    out: dict[str, Callable[[str], Any]] = {}
    for key in keys:
        parse = HEADER_TYPES[key].parse
        assert parse is not None
        out[key] = parse
    return out


# In a ``Headers`` cache: every value of the field was validated by the parser,
# its typed objects are built on first access (they can no longer fail).
VALIDATED: Any = object()


# one spelling: key, canonical name, type, list-valued?, parser or validator, validate only?
_Entry = tuple[str, str, HeaderType, bool, "Callable[[str], Any] | None", bool]


class LineTable:
    """What ``Headers._from_lines`` does with each header name it meets, precomputed.

    ``eager``: key -> parser, run on each value during the parse (cached);
    ``checked``: keys among them whose "parser" only validates (the cache says
    ``VALIDATED``, the typed values are built on first access).
    """

    __slots__ = ("checked", "eager", "eager_keys", "entries")

    def __init__(
        self,
        eager: dict[str, Callable[[str], Any]] | None = None,
        checked: frozenset[str] = frozenset(),
    ) -> None:
        self.eager = dict(eager or {})
        self.checked = checked
        self.eager_keys = tuple(self.eager)
        # the registry's spellings only: unknown names are resolved per message
        # (a table keyed by what peers send would grow without bound)
        self.entries: dict[str, _Entry] = {
            spelling: self._entry(key, canon, htype)
            for spelling, (key, canon, htype) in _LOOKUP.items()
        }

    def _entry(self, key: str, canon: str, htype: HeaderType) -> _Entry:
        return (key, canon, htype, htype.multi, self.eager.get(key), key in self.checked)

    def resolve(self, name: str) -> _Entry:
        return self._entry(*_resolve(name))


_PLAIN_TABLE = LineTable()


def _key(name: str) -> str:
    entry = _LOOKUP.get(name) or _LOOKUP.get(name.lower())
    return entry[0] if entry is not None else name.lower()


def canonical_name(name: str) -> str:
    """``"v"`` -> ``"Via"``, ``"call-id"`` -> ``"Call-ID"``, unknown names unchanged."""
    return _resolve(name)[1]


def _explode(htype: HeaderType, value: str) -> Iterator[str]:
    if not htype.multi or "," not in value:
        yield value
        return
    for part in split_list(value):
        if part or htype.strict_list:
            yield part


class Headers:
    """Ordered, case-insensitive, multi-valued header fields."""

    __slots__ = ("_cache", "_items")
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by content

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        self._cache: dict[str, Any] = {}
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_lines(cls, lines: list[str], table: LineTable | None = None) -> Headers:
        """The parser's fast path: one ``name: value`` string per line.

        Values of the ``table``'s eager keys are parsed (and cached) in the
        same pass; its checked ones are only validated there (the cache says
        ``VALIDATED``) and their typed values built when first asked for.
        """
        if table is None:
            table = _PLAIN_TABLE
        self = cls()
        cache = self._cache
        append = self._items.append
        entry_for = table.entries.get
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise RemoteProtocolError(
                    f"Bad Request: header line without colon: {line[:60]!r}", 400
                )
            key, canon, htype, multi, parse, checked = entry_for(name) or table.resolve(name)
            value = value.strip(" \t")
            if multi and "," in value:
                cls._add_list(cache, append, key, canon, htype, value, parse, checked)
                continue
            append((key, canon, value))
            if parse is None:
                continue
            if checked:
                parse(value)
                cache[key] = VALIDATED
                continue
            known = cache.get(key)
            if known is None:
                cache[key] = [parse(value)]
            else:
                known.append(parse(value))
        if len(cache) != len(table.eager_keys):  # only eager keys are cached yet: some are absent
            cls._absent(cache, table.eager_keys)
        return self

    @staticmethod
    def _absent(cache: dict[str, Any], eager_keys: tuple[str, ...]) -> None:
        """Eager keys the message does not carry: cached as no values."""
        for key in eager_keys:
            if key not in cache:
                cache[key] = []

    @staticmethod
    def _add_list(  # noqa: PLR0913, PLR0917 - _from_lines' locals, for its rarer branch
        cache: dict[str, Any],
        append: Callable[[tuple[str, str, str]], None],
        key: str,
        canon: str,
        htype: HeaderType,
        value: str,
        parse: Callable[[str], Any] | None,
        checked: bool,  # noqa: FBT001 - positional for speed, as the caller passes it
    ) -> None:
        """A comma-joined list value: one field per element (RFC 3261 7.3.1)."""
        parts = list(_explode(htype, value))
        for part in parts:
            append((key, canon, part))
        if parse is None:
            return
        parsed = [parse(part) for part in parts]
        if checked:
            cache[key] = VALIDATED
            return
        known = cache.get(key)
        if known is None:
            cache[key] = parsed
        else:
            known.extend(parsed)

    # -- plain access -----------------------------------------------------
    def get(self, name: str) -> str | None:
        key = _key(name)
        for k, _, value in self._items:
            if k == key:
                return value
        return None

    def getall(self, name: str) -> list[str]:
        key = _key(name)
        return [value for k, _, value in self._items if k == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._items)

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for _, name, value in self._items]

    def copy(self) -> Headers:
        new = Headers()
        new._items.extend(self._items)
        new._cache.update(self._cache)
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"

    # -- mutation ----------------------------------------------------------
    def _checked(self, name: str, value: str) -> tuple[str, str, HeaderType]:
        if "\r" in value or "\n" in value:
            raise LocalProtocolError(f"header value with CR/LF for {name}", 500)
        try:
            return _resolve(name)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(exc.reason, 500) from None

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a value (``first=True`` puts it above the others, e.g. a new Via)."""
        key, canon, htype = self._checked(name, value)
        self._cache.pop(key, None)
        new = [(key, canon, part) for part in _explode(htype, value.strip(" \t"))]
        if first:
            self._items[0:0] = new
        else:
            self._items.extend(new)

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by ``value``, keeping the first position."""
        key, canon, htype = self._checked(name, value)
        self._cache.pop(key, None)
        new = [(key, canon, part) for part in _explode(htype, value.strip(" \t"))]
        for i, item in enumerate(self._items):
            if item[0] == key:
                rest = [it for it in self._items[i:] if it[0] != key]
                self._items[i:] = new + rest
                return
        self._items.extend(new)

    def remove(self, name: str) -> None:
        key = _key(name)
        self._cache.pop(key, None)
        self._items = [item for item in self._items if item[0] != key]

    def remove_first(self, name: str) -> None:
        """Remove the first value of ``name`` only (a proxy's own Via or Route)."""
        key = _key(name)
        self._cache.pop(key, None)
        for i, item in enumerate(self._items):
            if item[0] == key:
                del self._items[i]
                return

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value only (the top Via after adding received/rport)."""
        key, canon, _ = self._checked(name, value)
        self._cache.pop(key, None)
        for i, item in enumerate(self._items):
            if item[0] == key:
                self._items[i] = (key, canon, value)
                return
        self._items.append((key, canon, value))

    # -- typed access --------------------------------------------------------
    def _values(self, key: str) -> list[Any]:
        cached = self._cache.get(key)
        if cached is None or cached is VALIDATED:
            htype = HEADER_TYPES.get(key)
            parse = htype.parse if htype is not None else None
            values = [value for k, _, value in self._items if k == key]
            cached = [parse(v) for v in values] if parse is not None else values
            self._cache[key] = cached
        return cached

    def _first(self, key: str) -> Any:
        cached = self._cache.get(key)
        if cached is None or cached is VALIDATED:
            cached = self._values(key)
        return cached[0] if cached else None

    def parsed_all(self, name: str) -> list[Any]:
        """Every value of ``name`` through its registered parser (cached)."""
        return list(self._values(_key(name)))

    def parsed(self, name: str) -> Any:
        """The first value of ``name`` parsed, or ``None`` if absent."""
        return self._first(_key(name))

    def via(self) -> list[Via]:
        return list(self._values("via"))

    def top_via(self) -> Via | None:
        value: Via | None = self._first("via")
        return value

    def cseq(self) -> CSeq | None:
        value: CSeq | None = self._first("cseq")
        return value

    def from_(self) -> NameAddr | None:
        value: NameAddr | None = self._first("from")
        return value

    def to(self) -> NameAddr | None:
        value: NameAddr | None = self._first("to")
        return value

    def call_id(self) -> str | None:
        value: str | None = self._first("call-id")
        return value

    def content_length(self) -> int | None:
        value: int | None = self._first("content-length")
        return value

    def max_forwards(self) -> int | None:
        value: int | None = self._first("max-forwards")
        return value

    def expires(self) -> int | None:
        value: int | None = self._first("expires")
        return value

    def contacts(self) -> list[NameAddr | str]:
        """Contact values; the wildcard is the string ``"*"``."""
        return list(self._values("contact"))

    def routes(self) -> list[NameAddr]:
        return list(self._values("route"))

    def record_routes(self) -> list[NameAddr]:
        return list(self._values("record-route"))

    def tokens(self, name: str) -> list[str]:
        """Comma-list of tokens (Allow, Supported, Require...) as lower-case tokens."""
        return [v.lower() for v in self.getall(name) if v]
