"""Registrar bindings (RFC 3261 section 10.3), sans-IO: time is passed in.

Rules, in the order section 10.3 applies them:

Rule 1: ``Contact: *`` is only valid with ``Expires: 0`` and no other
        Contact; it removes every binding of the AOR (400 otherwise).
Rule 2: a contact's lifetime is its ``expires`` parameter, else the
        ``Expires`` header, else ``default_expires``; it is capped at
        ``max_expires``; a non-zero value below ``min_expires`` gets
        423 Interval Too Brief with Min-Expires.
Rule 3: for a contact already bound, a request with the same Call-ID and a
        CSeq not higher than the stored one is out of order: 500 and the
        binding is kept (10.3 step 7).
Rule 4: lifetime 0 removes the binding; anything else adds or refreshes it.
Rule 5: the 200 lists every current binding with its remaining lifetime.

Deviation: contacts are compared by URI equality (19.1.4) on their string
form as given, after parsing; the registrar does not resolve hostnames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SipError
from .headers import Headers, parse_delta_seconds
from .uri import NameAddr, parse_name_addr

if TYPE_CHECKING:
    from .message import Request


@dataclass(frozen=True)
class Binding:
    aor: str  # "user@domain", lower-case domain
    contact: NameAddr
    expires_at: float
    call_id: str
    cseq: int
    source: tuple[str, str, int]  # transport, host, port the REGISTER came from

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


@dataclass(frozen=True)
class RegisterResult:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    changed: bool = False


class BindingTable:
    def __init__(
        self, *, min_expires: int = 60, max_expires: int = 3600, default_expires: int = 3600
    ) -> None:
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self._bindings: dict[str, list[Binding]] = {}

    def contacts(self, aor: str, now: float) -> list[Binding]:
        live = [b for b in self._bindings.get(aor, []) if b.expires_at > now]
        if live:
            self._bindings[aor] = live
        else:
            self._bindings.pop(aor, None)
        return live

    def expire(self, now: float) -> list[Binding]:
        gone = []
        for aor in list(self._bindings):
            before = self._bindings[aor]
            after = [b for b in before if b.expires_at > now]
            gone += [b for b in before if b.expires_at <= now]
            if after:
                self._bindings[aor] = after
            else:
                del self._bindings[aor]
        return gone

    def aors(self) -> list[str]:
        return list(self._bindings)

    def restore(self, binding: Binding) -> None:
        """Put back a binding kept elsewhere (a store), replacing the same contact's."""
        key = str(binding.contact.uri)
        kept = [b for b in self._bindings.get(binding.aor, []) if str(b.contact.uri) != key]
        self._bindings[binding.aor] = [*kept, binding]

    def replace(self, aor: str, bindings: list[Binding]) -> None:
        """The AoR's bindings are exactly ``bindings`` (read back from a shared store)."""
        if bindings:
            self._bindings[aor] = list(bindings)
        else:
            self._bindings.pop(aor, None)

    def process(  # noqa: C901, PLR0911 - one return per RFC 3261 10.3 step
        self, aor: str, request: Request, now: float, source: tuple[str, str, int]
    ) -> RegisterResult:
        headers: Headers = request.headers
        raw_contacts = headers.getall("Contact")
        expires_header = headers.get("Expires")
        call_id = request.call_id or ""
        cseq = request.cseq.number if request.cseq else 0
        try:
            header_expires = (
                parse_delta_seconds(expires_header) if expires_header is not None else None
            )
        except SipError:
            return RegisterResult(400, "Bad Request: invalid Expires", [])

        if any(c.strip() == "*" for c in raw_contacts):
            if len(raw_contacts) != 1 or header_expires != 0:
                return RegisterResult(400, "Bad Request: Contact * needs Expires: 0 alone", [])
            removed = bool(self._bindings.pop(aor, None))
            return RegisterResult(200, "OK", [], changed=removed)

        wanted: list[tuple[NameAddr, int]] = []
        for raw in raw_contacts:
            try:
                contact = parse_name_addr(raw)
            except SipError:
                return RegisterResult(400, "Bad Request: invalid Contact", [])
            value = contact.params.get("expires")
            try:
                # delta-seconds (RFC 3261 20.10): int() would take "-30", "+60", "1_000"
                lifetime = (
                    parse_delta_seconds(value)
                    if value is not None
                    else (header_expires if header_expires is not None else self.default_expires)
                )
            except SipError:
                return RegisterResult(400, "Bad Request: invalid expires parameter", [])
            if 0 < lifetime < self.min_expires:
                return RegisterResult(
                    423, "Interval Too Brief", [("Min-Expires", str(self.min_expires))]
                )
            wanted.append((contact, min(lifetime, self.max_expires)))

        current = {str(b.contact.uri): b for b in self.contacts(aor, now)}
        changed = False
        for contact, lifetime in wanted:
            key = str(contact.uri)
            old = current.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                return RegisterResult(500, "Server Internal Error: out-of-order REGISTER", [])
            if lifetime == 0:
                changed |= current.pop(key, None) is not None
                continue
            changed |= old is None
            bare = NameAddr(
                contact.uri,
                contact.display_name,
                {k: v for k, v in contact.params.items() if k != "expires"},
            )
            current[key] = Binding(aor, bare, now + lifetime, call_id, cseq, source)
        if current:
            self._bindings[aor] = list(current.values())
        else:
            self._bindings.pop(aor, None)
        listed = [("Contact", f"{b.contact};expires={b.remaining(now)}") for b in current.values()]
        return RegisterResult(200, "OK", listed, changed=changed)
