"""REGISTER (standalone mode) and where requests to a SIP user go.

Rules:

Rule 1. A user registers its own AoR only (To == the identified user, 403
        otherwise); the bindings are purplegw.sip.registrar's (expiry limits
        from ``[sip]``).
Rule 2. A REGISTER that leaves live contacts wakes the user's outbox
        (``on_registered``) before the 200 goes out.
Rule 3. Requests to a SIP user go to ``[sip] outbound_proxy`` when set (R-URI
        ``sip:<user>;proto=<protocol>``), else to each registered contact:
        back over the connection it registered on (TCP/TLS), or to the
        address it registered from.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from purplegw.actors.front.transport import Address, Source
from purplegw.gateway.identity import respond
from purplegw.sip.registrar import BindingTable
from purplegw.sip.uri import parse_uri

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.gateway.identity import Identity
    from purplegw.gateway.settings import GatewaySettings
    from purplegw.sip.message import Request, Response

logger = logging.getLogger(__name__)


class Registrar:
    def __init__(
        self, settings: GatewaySettings, identity: Identity, clock: Callable[[], float]
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.bindings = BindingTable(
            min_expires=settings.min_expires,
            max_expires=settings.max_expires,
            default_expires=settings.default_expires,
        )
        self.proxy_address = proxy_address(settings.outbound_proxy)
        self.on_registered: Callable[[str], None] = lambda _aor: None
        self._sources: dict[tuple[str, str], Source] = {}  # (aor, contact uri) -> where from

    def register(self, request: Request, source: Source) -> Response:
        identity = self.identity.identify(request, source)
        to = request.to
        if to is None or to.uri.user is None:
            return respond(request, 400, "Bad Request: To is not a SIP user")
        aor = f"{to.uri.user_unescaped}@{to.uri.host.lower()}"
        if aor != identity:
            return respond(request, 403, "Forbidden: cannot register another user")
        now = self.clock()
        result = self.bindings.process(
            aor, request, now, (source.transport, source.host, source.port)
        )
        if result.status == 200:
            live = self.bindings.contacts(aor, now)
            self._sources = {k: v for k, v in self._sources.items() if k[0] != aor}
            for binding in live:
                self._sources[(aor, str(binding.contact.uri))] = source
            if live:
                logger.info("%s registered %d contact(s)", aor, len(live))
                self.on_registered(aor)
        return respond(request, result.status, result.reason, headers=result.headers)

    def destinations(self, sip_user: str, protocol: str) -> list[tuple[Address | Source, str]]:
        """(where to send, Request-URI) pairs for a request to ``sip_user`` (Rule 3)."""
        if self.proxy_address is not None:
            return [(self.proxy_address, f"sip:{sip_user};proto={protocol}")]
        out: list[tuple[Address | Source, str]] = []
        for binding in self.bindings.contacts(sip_user, self.clock()):
            uri = binding.contact.uri.with_params(proto=protocol)
            source = self._sources.get((sip_user, str(binding.contact.uri)))
            if source is not None and source.connection is not None:
                out.append((source, str(uri)))  # reuse the client's TCP/TLS connection
            else:
                transport = binding.source[0]
                out.append((Address(transport, binding.source[1], binding.source[2]), str(uri)))
        return out


def proxy_address(outbound_proxy: str) -> Address | None:
    if not outbound_proxy:
        return None
    uri = parse_uri(outbound_proxy)
    return Address(uri.transport or "udp", uri.host.strip("[]"), uri.port or 5060)
