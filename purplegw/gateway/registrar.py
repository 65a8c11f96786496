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
Rule 4. Bindings are written through to the database (``purplegw_bindings``)
        by the state writer (purplegw.actors.state_writer): the 200 does not
        wait for the write.  A started gateway loads the live ones, so a phone
        registered before a restart is reached after it without registering
        again.  Expiry is by the stored absolute time (``expires_at``, the
        wall clock of the node that took the REGISTER).
Rule 5. In a cluster (``[cluster] node`` set) any node answers any REGISTER:
        before it, and before looking up where a user is, the node reads
        the user's bindings back from the database, which wins over its
        memory except for what this node itself wrote in the last
        ``PENDING_WINDOW`` seconds (still on its way to the database).
Rule 6. In a cluster, ``registered_elsewhere()`` (polled) names the AoRs other
        nodes bound since the last poll, so that the user's owner wakes the
        user's outbox as if the REGISTER had reached it.  The window looks
        ``POLL_OVERLAP`` seconds back: writes committed late, and the nodes'
        wall clocks (which stamp the rows) may differ by that much.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from purplegw.actors.front.transport import Address, Source
from purplegw.exceptions import StoreError
from purplegw.gateway.identity import respond
from purplegw.sip.errors import SipError
from purplegw.sip.registrar import Binding, BindingTable
from purplegw.sip.uri import parse_name_addr, parse_uri
from purplegw.store.bindings import StoredBinding

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.gateway.identity import Identity
    from purplegw.gateway.ports import SharedStatePort, StorePort
    from purplegw.gateway.settings import GatewaySettings
    from purplegw.sip.message import Request, Response

logger = logging.getLogger(__name__)

# Seconds during which this node's own writes win over what the database says (Rule 5).
PENDING_WINDOW = 5.0
POLL_OVERLAP = 10.0  # seconds the poll of other nodes' REGISTERs looks back (Rule 6)


class Registrar:
    def __init__(  # noqa: PLR0913 - the shared-state collaborators are keyword and optional
        self,
        settings: GatewaySettings,
        identity: Identity,
        clock: Callable[[], float],
        *,
        store: StorePort | None = None,
        shared: SharedStatePort | None = None,
        node: str = "",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.identity = identity
        self.clock = clock
        self.store = store
        self.shared = shared
        self.node = node
        self.monotonic = monotonic
        self._written: dict[tuple[str, str], float] = {}  # (aor, contact uri) -> when (Rule 5)
        self._seen: dict[str, float] = {}  # aor -> newest row of another node seen (Rule 6)
        self._polled: float | None = None
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
        self._reload(aor, now)
        before = {str(b.contact.uri): b for b in self.bindings.contacts(aor, now)}
        result = self.bindings.process(
            aor, request, now, (source.transport, source.host, source.port)
        )
        if result.status == 200:
            live = self.bindings.contacts(aor, now)
            self._write_through(aor, before, live)
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
        now = self.clock()
        self._reload(sip_user, now)
        for binding in self.bindings.contacts(sip_user, now):
            uri = binding.contact.uri.with_params(proto=protocol)
            source = self._sources.get((sip_user, str(binding.contact.uri)))
            if source is not None and source.connection is not None:
                out.append((source, str(uri)))  # reuse the client's TCP/TLS connection
            else:
                transport = binding.source[0]
                out.append((Address(transport, binding.source[1], binding.source[2]), str(uri)))
        return out

    # --- the database (Rules 4, 5) ----------------------------------------------------

    def restore(self) -> None:
        """Load the live bindings an earlier run (or another node) left (Rule 4).

        Only with a state writer: without one nothing is written, so nothing is loaded.
        """
        if self.store is None or self.shared is None:
            return
        now = self.clock()
        try:
            self.store.bindings.purge(now)
            rows = self.store.bindings.live(now)
        except StoreError as exc:
            logger.warning("Registered contacts not restored (phones register again): %s", exc)
            return
        count = 0
        for row in rows:
            binding = _from_row(row)
            if binding is not None:
                self.bindings.restore(binding)
                count += 1
        if count:
            logger.info("Restored %d registered contact(s)", count)

    def _write_through(self, aor: str, before: dict[str, Binding], live: list[Binding]) -> None:
        shared = self.shared
        if shared is None:
            return
        after = {str(b.contact.uri): b for b in live}
        # Only a cluster reads bindings back (Rule 5) and needs to know what is on its way.
        written = self._written if self.node else {}
        mark = self.monotonic()
        if not after and before:
            shared.clear_bindings(aor)
        else:
            for uri in before.keys() - after.keys():
                shared.delete_binding(aor, uri)
        for uri in before.keys() - after.keys():
            written[(aor, uri)] = mark
        for uri, binding in after.items():
            if before.get(uri) != binding:
                shared.put_binding(_to_row(binding, self.node, self.clock()), uri)
                written[(aor, uri)] = mark

    def _reload(self, aor: str, now: float) -> None:
        """In a cluster, the AoR's bindings as the database has them (Rule 5)."""
        if not self.node or self.store is None or self.shared is None:
            return
        try:
            rows = self.store.bindings.of_aor(aor, now)
        except StoreError as exc:
            logger.warning("Bindings of %s not read back, using this node's: %s", aor, exc)
            return
        recent = self.monotonic() - PENDING_WINDOW
        for key in [k for k, t in self._written.items() if t < recent]:
            del self._written[key]
        mine = {
            str(b.contact.uri): b
            for b in self.bindings.contacts(aor, now)
            if (aor, str(b.contact.uri)) in self._written
        }
        merged: dict[str, Binding] = {}
        for row in rows:
            binding = _from_row(row)
            if binding is None:
                continue
            uri = str(binding.contact.uri)
            if (aor, uri) not in self._written:
                merged[uri] = binding
        merged.update(mine)
        self.bindings.replace(aor, list(merged.values()))

    def registered_elsewhere(self) -> list[str]:
        """AoRs another node bound since the last call (Rule 6); [] on a single node."""
        if not self.node or self.store is None or self.shared is None:
            return []
        now = self.clock()
        since = (self._polled if self._polled is not None else now) - POLL_OVERLAP
        rows = self.store.bindings.changed_since(since, now)  # a StoreError: the caller logs
        self._polled = now
        woken: list[str] = []
        for aor, updated, node in rows:
            if node == self.node or self._seen.get(aor, 0.0) >= updated:
                continue
            self._seen[aor] = updated
            if aor not in woken:
                woken.append(aor)
        for aor in [a for a, t in self._seen.items() if t < since]:
            del self._seen[aor]
        return woken


def _to_row(binding: Binding, node: str, now: float) -> StoredBinding:
    transport, host, port = binding.source
    return StoredBinding(
        aor=binding.aor,
        contact=str(binding.contact),
        expires_at=binding.expires_at,
        call_id=binding.call_id,
        cseq=binding.cseq,
        transport=transport,
        host=host,
        port=port,
        node=node,
        updated=now,
    )


def _from_row(row: StoredBinding) -> Binding | None:
    try:
        contact = parse_name_addr(row.contact)
    except SipError:
        logger.warning("Stored binding of %s has an unreadable contact; skipped", row.aor)
        return None
    return Binding(
        row.aor,
        contact,
        row.expires_at,
        row.call_id,
        row.cseq,
        (row.transport, row.host, row.port),
    )


def proxy_address(outbound_proxy: str) -> Address | None:
    if not outbound_proxy:
        return None
    uri = parse_uri(outbound_proxy)
    return Address(uri.transport or "udp", uri.host.strip("[]"), uri.port or 5060)
