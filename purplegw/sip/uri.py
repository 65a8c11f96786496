"""SIP, SIPS and tel URIs (RFC 3261 19.1, RFC 3966) and name-addr values.

Fields keep the text as it was on the wire (still %-escaped), so
``str(parse_uri(s)) == s`` for any URI whose parameter names are lower case;
comparison follows RFC 3261 19.1.4 (``uri_equal``) and unescapes first.
URIs of other schemes (``isbn:``, ``http:``...) parse into a ``SipURI`` with
only ``scheme`` and ``opaque`` set, because RFC 4475 3.3.4 requires header
fields carrying them to parse; code that needs a SIP URI checks ``is_sip``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from . import _abnf
from .errors import RemoteProtocolError

logger = logging.getLogger(__name__)

__all__ = [
    "NameAddr",
    "SipURI",
    "check_name_addr",
    "escape_user",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "require_sip_uri",
    "unquote_string",
    "uri_equal",
]

Params = dict[str, "str | None"]

_USER_SAFE = "-_.!~*'()&=+$,;?/"
# RFC 3261 19.1.4: if present in only one URI these parameters make them differ.
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def escape_user(user: str) -> str:
    """%-escape a user part so it can be put into a SIP URI."""
    return quote(user, safe=_USER_SAFE)


def _unescape(text: str) -> str:
    return unquote(text, errors="surrogateescape") if "%" in text else text


@dataclass(eq=False, slots=True)
class SipURI:
    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None  # the whole scheme-specific part of other schemes

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else _unescape(self.user)

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """``scheme:user@host``: the address-of-record form used as a key."""
        if not self.is_sip:
            return str(self)
        user = f"{self.user}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"

    def with_params(self, **params: str | None) -> SipURI:
        merged = dict(self.params)
        merged.update(params)
        return replace(self, params=merged)

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.scheme == "tel":
            out.append(self.user or "")
        else:
            if self.user is not None:
                out.append(self.user)
                if self.password is not None:
                    out += (":", self.password)
                out.append("@")
            out.append(self.host)
            if self.port is not None:
                out += (":", str(self.port))
        for name, value in self.params.items():
            out += (";", name) if value is None else (";", name, "=", value)
        if self.headers:
            out.append("?")
            out.append("&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        return uri_equal(self, other)

    def __hash__(self) -> int:
        return hash((self.scheme, self.user_unescaped, self.host.lower(), self.port, self.opaque))


def uri_equal(a: SipURI, b: SipURI) -> bool:  # noqa: C901, PLR0911 - one rule per RFC 3261 19.1.4 comparison
    """URI equality per RFC 3261 19.1.4."""
    if a.scheme != b.scheme:
        return False
    if a.opaque is not None or b.opaque is not None:
        return a.opaque == b.opaque
    if a.user_unescaped != b.user_unescaped or a.password != b.password:
        return False
    if a.host.lower() != b.host.lower() or a.port != b.port:
        return False
    for name in _STRICT_PARAMS:
        if (name in a.params) != (name in b.params):
            return False
    for name, value in a.params.items():
        if name in b.params:
            other = b.params[name]
            if (value is None) != (other is None):
                return False
            if (
                value is not None
                and other is not None
                and _unescape(value).lower() != _unescape(other).lower()
            ):
                return False
    ha = {(_unescape(k).lower(), _unescape(v)) for k, v in a.headers}
    hb = {(_unescape(k).lower(), _unescape(v)) for k, v in b.headers}
    return ha == hb


def _bad(what: str, text: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"Bad Request: malformed {what}: {text[:80]!r}", 400)


def _parse_uri_params(text: str, pos: int, end: int, whole: str) -> Params:
    params: Params = {}
    match = _abnf.URI_PARAM_RE.match
    while pos < end:
        m = match(text, pos, end)
        if m is None:
            raise _bad("URI parameter", whole)
        params[m.group(1).lower()] = m.group(2)
        pos = m.end()
    return params


def parse_uri(text: str) -> SipURI:
    """Parse a URI; raise ``RemoteProtocolError`` (400) if it is malformed."""
    if text.startswith("sip:"):
        return _parse_sip("sip", text[4:], text)
    scheme, sep, rest = text.partition(":")
    if not sep or _abnf.SCHEME_RE.fullmatch(scheme) is None:
        raise _bad("URI", text)
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        semi = rest.find(";")
        number = rest if semi < 0 else rest[:semi]
        if _abnf.TEL_NUMBER_RE.fullmatch(number) is None:
            raise _bad("tel URI", text)
        params = _parse_uri_params(rest, len(number), len(rest), text)
        return SipURI(scheme="tel", user=number, params=params)
    if _abnf.ABSOLUTE_URI_RE.fullmatch(text) is None:
        raise _bad("URI", text)
    return SipURI(scheme=scheme, opaque=rest)


def _parse_sip(scheme: str, rest: str, text: str) -> SipURI:
    m = _abnf.SIP_URI_REST_RE.fullmatch(rest)
    if m is None:
        raise _bad("SIP URI", text)
    user, password, host, port_text, param_text, header_text = m.groups()
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise _bad("URI port", text)
    params = _uri_params(param_text) if param_text else {}
    headers: tuple[tuple[str, str], ...] = ()
    if header_text is not None:
        pairs = []
        for part in header_text.split("&"):
            hm = _abnf.URI_HEADER_RE.fullmatch(part)
            if hm is None:
                raise _bad("URI headers", text)
            pairs.append((hm.group(1), hm.group(2)))
        headers = tuple(pairs)
    return SipURI(scheme, user, password, host, port, params, headers)


def require_sip_uri(uri: SipURI | str) -> SipURI:
    """``uri`` as a sip/sips URI, or ``RemoteProtocolError`` 416 (RFC 3261 8.2.2.1)."""
    parsed = uri if isinstance(uri, SipURI) else parse_uri(uri)
    if not parsed.is_sip:
        raise RemoteProtocolError(f"Unsupported URI Scheme: {parsed.scheme}", 416)
    return parsed


def unquote_string(text: str) -> str:
    """The content of a quoted-string, quoted-pairs resolved; other text as is."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return _abnf.QUOTED_PAIR_RE.sub(r"\1", text[1:-1])
    return text


def _quote_display(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str, pos: int = 0) -> Params:
    """``*( SEMI generic-param )`` from ``pos`` to the end; values kept raw."""
    if _abnf.GENERIC_PARAMS_RE.fullmatch(text, pos) is None:
        raise _bad("parameters", text)
    return _params_of(text[pos:])


def _params_of(validated: str) -> Params:
    # the text already matched GENERIC_PARAMS; gen-value is never empty, so
    # an empty second group means "no value"
    params: Params = {}
    if not validated:
        return params
    if '"' in validated or " " in validated or "\t" in validated:
        for name, value in _findall_params(validated):
            params[name.lower()] = value or None
        return params
    # no quotes and no LWS: ";" and "=" can only be separators
    for item in validated[1:].split(";"):
        name, eq, value = item.partition("=")
        params[name.lower()] = value if eq else None
    return params


_findall_params = _abnf.SEMI_PARAM_RE.findall
_name_addr_sip = _abnf.NAME_ADDR_SIP_RE.fullmatch


def _uri_params(text: str) -> Params:
    params: Params = {}
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        params[name.lower()] = value if eq else None
    return params


@dataclass(slots=True)
class NameAddr:
    """``[display-name] <uri> *(;param)`` of From, To, Contact, Route..."""

    uri: SipURI
    display_name: str | None = None
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        return replace(self, params={**self.params, "tag": tag})

    def __str__(self) -> str:
        head = f"{_quote_display(self.display_name)} " if self.display_name else ""
        out = [head, "<", str(self.uri), ">"]
        for name, value in self.params.items():
            out += (";", name) if value is None else (";", name, "=", value)
        return "".join(out)


def check_name_addr(text: str) -> None:
    """Raise exactly when ``parse_name_addr`` would, building nothing for the everyday form."""
    m = _name_addr_sip(text.strip(" \t"))
    if m is not None:
        quoted, words, port_text = m.group(1, 2, 7)
        if (port_text is None or int(port_text) <= 65535) and (quoted is None or not words):
            return
    parse_name_addr(text)


def parse_name_addr(text: str) -> NameAddr:  # noqa: C901, PLR0912 - name-addr and addr-spec forms in one scanner
    """Parse ``name-addr`` or ``addr-spec`` followed by header parameters."""
    text = text.strip(" \t")
    m = _name_addr_sip(text)
    if m is not None:
        quoted, words, scheme, user, password, host, port_text, uparams, param_text = m.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise _bad("URI port", text)
        uri = SipURI(scheme, user, password, host, port, _uri_params(uparams) if uparams else {})
        if quoted is not None:
            if words:
                raise _bad("display name", text)
            display: str | None = unquote_string(quoted)
        else:
            display = words.rstrip(" \t") or None
        return NameAddr(uri, display, _params_of(param_text) if param_text else {})
    m = _abnf.NAME_ADDR_RE.fullmatch(text)
    if m is not None:
        quoted, words, uri_text, param_text = m.groups()
        if quoted is not None:
            if words:
                raise _bad("display name", text)
            display = unquote_string(quoted)
        else:
            display = words.rstrip(" \t") or None
        return NameAddr(parse_uri(uri_text), display, _params_of(param_text) if param_text else {})
    if text.startswith('"') and _abnf.QUOTED_STRING_RE.match(text) is None:
        raise RemoteProtocolError(f"Bad Request: unterminated quoted string: {text[:80]!r}", 400)
    if "<" in text or ">" in text or '"' in text:
        raise _bad("name-addr", text)
    # addr-spec: the URI ends at the first ";" - what follows are header
    # params (RFC 3261 20.10), and ",", "?" force the <> form.
    semi = text.find(";")
    rest = len(text) if semi < 0 else semi
    spec = text[:rest].rstrip(" \t")
    if "?" in spec or "," in spec or " " in spec or "\t" in spec:
        raise _bad("addr-spec (URIs with ',', '?' or spaces need <>)", text)
    return NameAddr(parse_uri(spec), None, parse_params(text, rest))
