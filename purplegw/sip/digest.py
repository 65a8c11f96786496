"""HTTP Digest authentication for SIP (RFC 3261 22, RFC 2617, RFC 7616, RFC 8760).

Server side: ``DigestServer`` issues challenges and checks credentials.  The
nonce is ``<timestamp>.<random hex>.<HMAC>``, so any instance holding the same
secret can check it without state; its age gives ``stale=true`` (RFC 7616
3.3) once past ``nonce_lifetime``.  Replays are refused by remembering the
highest nonce-count seen per nonce (nc must increase).  Passwords never need
to be stored: the credential lookup returns HA1 (Kamailio's subscriber table
keeps ``ha1 = MD5(username:realm:password)``).

Client side: ``parse_challenge`` and ``build_authorization``.

Clock and randomness come from the caller (sans-IO): ``now`` is a number of
seconds, ``random`` some bytes from ``secrets.token_bytes``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _abnf
from .errors import RemoteProtocolError
from .headers import split_list
from .uri import parse_uri, unquote_string, uri_equal

logger = logging.getLogger(__name__)

__all__ = [
    "ALGORITHMS",
    "AuthResult",
    "Challenge",
    "DigestServer",
    "build_authorization",
    "compute_ha1",
    "parse_auth_params",
    "parse_challenge",
]

ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "MD5-sess": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-256-sess": lambda data: hashlib.sha256(data).hexdigest(),
}
_CANON_ALGORITHM = {name.lower(): name for name in ALGORITHMS}


def _h(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](_b(text))


def _b(text: str) -> bytes:
    # compare_digest refuses non-ASCII str; peers may send anything, and the
    # parser keeps bytes that are not UTF-8 as surrogates: hash those octets
    return text.encode("utf-8", "surrogateescape")


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password), what a credential store keeps (``-sess`` uses the base)."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def _response(  # noqa: PLR0913, PLR0917 - the digest formula has this many inputs
    algorithm: str, ha1: str, nonce: str, nc: str, cnonce: str, qop: str, method: str, uri: str
) -> str:
    if algorithm.endswith("-sess"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """``Digest a=b, c="d"`` -> ("digest", {"a": "b", "c": "d"}) with quotes removed."""
    value = value.strip(" \t")
    scheme, _, rest = value.partition(" ")
    if _abnf.TOKEN_RE.fullmatch(scheme) is None:
        raise RemoteProtocolError(f"Bad Request: malformed credentials: {value[:40]!r}", 400)
    params: dict[str, str] = {}
    for item in split_list(rest):
        if not item:
            continue
        name, eq, raw = item.partition("=")
        name = name.strip(" \t").lower()
        if not eq or _abnf.TOKEN_RE.fullmatch(name) is None:
            raise RemoteProtocolError(f"Bad Request: malformed auth-param {item[:40]!r}", 400)
        params[name] = unquote_string(raw.strip(" \t"))
    return scheme.lower(), params


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def parse_challenge(value: str) -> Challenge:
    """A WWW-Authenticate / Proxy-Authenticate value."""
    scheme, params = parse_auth_params(value)
    if scheme != "digest" or "nonce" not in params or "realm" not in params:
        raise RemoteProtocolError("Bad Request: not a Digest challenge", 400)
    algorithm = _CANON_ALGORITHM.get(params.get("algorithm", "MD5").lower())
    if algorithm is None:
        raise RemoteProtocolError(f"unsupported digest algorithm {params.get('algorithm')}", 400)
    qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        params["realm"],
        params["nonce"],
        algorithm,
        qop,
        params.get("opaque"),
        params.get("stale", "").lower() == "true",
    )


def build_authorization(  # noqa: PLR0913
    challenge: Challenge,
    *,
    username: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    password: str | None = None,
    ha1: str | None = None,
) -> str:
    """The Authorization value answering ``challenge`` (qop=auth if offered)."""
    if ha1 is None:
        if password is None:
            raise ValueError("need a password or an HA1")
        ha1 = compute_ha1(
            username, challenge.realm, password, challenge.algorithm.removesuffix("-sess")
        )
    parts = [
        f'username="{username}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f"algorithm={challenge.algorithm}",
    ]
    if "auth" in challenge.qop:
        ncs = f"{nc:08x}"
        resp = _response(
            challenge.algorithm, ha1, challenge.nonce, ncs, cnonce, "auth", method, uri
        )
        parts += [f'response="{resp}"', "qop=auth", f"nc={ncs}", f'cnonce="{cnonce}"']
    else:  # RFC 2069 compatibility: KD(HA1, nonce:HA2)
        ha2 = _h(challenge.algorithm, f"{method}:{uri}")
        parts.append(f'response="{_h(challenge.algorithm, f"{ha1}:{challenge.nonce}:{ha2}")}"')
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    """RFC 3261 19.1.4 equality, so that harmless spelling differences pass."""
    if digest_uri == request_uri:
        return True
    try:
        return uri_equal(parse_uri(digest_uri), parse_uri(request_uri))
    except RemoteProtocolError:
        return False


@dataclass(frozen=True, slots=True)
class AuthResult:
    ok: bool
    username: str | None = None
    stale: bool = False
    reason: str = ""


# looks up HA1 for (username, realm, algorithm without -sess); None: unknown user
Ha1Lookup = Callable[[str, str, str], "str | None"]


@dataclass
class DigestServer:
    realm: str
    secret: bytes
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    nonce_lifetime: float = 300.0
    _nc: dict[str, tuple[int, float]] = field(default_factory=dict)

    def make_nonce(self, now: float, random: bytes) -> str:
        payload = f"{int(now)}.{random.hex()}"
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{payload}.{mac}"

    def _nonce_time(self, nonce: str) -> int | None:
        """Issue time of a nonce we made, or None if it is forged or foreign."""
        payload, _, mac = nonce.rpartition(".")
        expected = hmac.new(self.secret, _b(payload), hashlib.sha256).hexdigest()[:32]
        if not payload or not hmac.compare_digest(_b(mac), _b(expected)):
            return None
        stamp = payload.partition(".")[0]
        return int(stamp) if stamp.isdigit() else None

    def challenge(self, now: float, random: bytes, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, one per algorithm in preference order (RFC 8760 2.4)."""
        nonce = self.make_nonce(now, random)
        out = []
        for algorithm in self.algorithms:
            value = (
                f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={algorithm}, qop="auth"'
            )
            out.append(value + (", stale=true" if stale else ""))
        return out

    def verify(  # noqa: PLR0911, C901, PLR0912 - one early return per way to fail
        self,
        method: str,
        authorization: str,
        now: float,
        lookup_ha1: Ha1Lookup,
        *,
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check an Authorization value; never raises for bad credentials.

        ``request_uri``, when given, must equal the digest's ``uri`` (RFC 2617
        3.2.2.5, RFC 3261 22.4): otherwise credentials captured on the way
        to one target could be sent, unused, to another.
        """
        try:
            scheme, p = parse_auth_params(authorization)
        except RemoteProtocolError as exc:
            return AuthResult(ok=False, reason=exc.reason)
        if scheme != "digest":
            return AuthResult(ok=False, reason=f"unsupported scheme {scheme}")
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in p]
        if missing:
            return AuthResult(ok=False, reason=f"missing {', '.join(missing)}")
        username = p["username"]
        if p["realm"] != self.realm:
            return AuthResult(ok=False, username=username, reason="wrong realm")
        if request_uri is not None and not _same_uri(p["uri"], request_uri):
            return AuthResult(
                ok=False, username=username, reason="digest uri does not match the Request-URI"
            )
        algorithm = _CANON_ALGORITHM.get(p.get("algorithm", "MD5").lower())
        if algorithm is None or algorithm.removesuffix("-sess") not in self.algorithms:
            return AuthResult(ok=False, username=username, reason="unsupported algorithm")
        issued = self._nonce_time(p["nonce"])
        if issued is None:
            return AuthResult(ok=False, username=username, reason="unknown nonce")
        if now - issued > self.nonce_lifetime:
            return AuthResult(ok=False, username=username, stale=True, reason="stale nonce")
        if p.get("qop") != "auth" or "nc" not in p or "cnonce" not in p:
            return AuthResult(
                ok=False, username=username, reason="qop=auth with nc and cnonce required"
            )
        try:
            nc = int(p["nc"], 16)
        except ValueError:
            return AuthResult(ok=False, username=username, reason="malformed nc")
        ha1 = lookup_ha1(username, self.realm, algorithm.removesuffix("-sess"))
        if ha1 is None:
            return AuthResult(ok=False, username=username, reason="unknown user")
        expected = _response(
            algorithm, ha1, p["nonce"], p["nc"], p["cnonce"], "auth", method, p["uri"]
        )
        if not hmac.compare_digest(_b(expected), _b(p["response"].lower())):
            return AuthResult(ok=False, username=username, reason="wrong response")
        last = self._nc.get(p["nonce"])
        if last is not None and nc <= last[0]:
            return AuthResult(ok=False, username=username, reason="nonce-count replay")
        self._nc[p["nonce"]] = (nc, float(issued))
        self._prune(now)
        return AuthResult(ok=True, username=username)

    def _prune(self, now: float) -> None:
        if len(self._nc) > 1024:
            horizon = now - self.nonce_lifetime
            self._nc = {n: v for n, v in self._nc.items() if v[1] >= horizon}
