"""Forwarding in a cluster: a request for a user another node holds goes to that node.

All accounts of one SIP user live on the node holding the user's lease
(docs/cluster.md); a request reaching any other node is passed on to it as
one stateful proxy hop (purplegw.sip.proxy rewrites the headers, the SIP
front sends it in a client transaction), and its answer comes back the same
way, so the phone never sees a difference.

Rules:

Rule 1. Only in a cluster (``[cluster] node`` set); a single node never
        forwards.  MESSAGE, PUBLISH and SUBSCRIBE (new dialogs and in-dialog
        refreshes alike) belong to the user they speak for, as identified
        (From, authenticated: purplegw.gateway.identity); REGISTER is never
        forwarded: any node answers it, the bindings are shared
        (purplegw.gateway.registrar Rule 5).
Rule 2. The user's owner is the node holding its lease, unexpired by the
        database clock, at that node's ``advertise`` address
        (purplegw.store.owners).  No holder (free, expired, a takeover under
        way), this node, or a database error: the request is handled here,
        as on a single node.
Rule 3. One hop only: a request from another node (its ``advertise``
        address) is handled here, never forwarded again, and its From is
        trusted as from a fronting proxy: the node that forwarded it
        authenticated the user.
Rule 4. Owners are cached ``OWNER_CACHE`` seconds (a hand-over is seen at
        most that late; the old holder then forwards once more, Rule 3 stops
        it there), the node addresses ``NODES_CACHE`` seconds.
Rule 5. The owner's final answer is relayed to the sender.  No answer within
        ``FORWARD_TIMEOUT`` (the owner died: its lease moves to another node
        within ``lease_seconds``) or no way to send: 503 with Retry-After.
        Max-Forwards exhausted: 483.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from purplegw.actors.front.transport import Address
from purplegw.exceptions import StoreError
from purplegw.gateway.identity import respond
from purplegw.sip.proxy import TooManyHopsError, forward_request, relay_response

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

    from purplegw.actors.front.transport import Source
    from purplegw.gateway.ports import FrontPort, OwnersPort, Reply, WorkerPort
    from purplegw.sip.message import Request, Response
    from purplegw.sip.uri import SipURI

logger = logging.getLogger(__name__)

FORWARDED_METHODS = frozenset({"MESSAGE", "PUBLISH", "SUBSCRIBE"})
OWNER_CACHE = 1.0  # seconds an owner lookup is reused (Rule 4)
NODES_CACHE = 5.0  # seconds the node addresses are reused (Rule 4)
NODE_MAX_AGE = 60.0  # a node whose heartbeat is older is no longer a trusted peer
FORWARD_TIMEOUT = 20.0  # seconds to wait for the owner's answer (Rule 5)
RETRY_AFTER = 5


def parse_advertise(advertise: str) -> Address | None:
    """``IP:PORT`` (``[v6]:PORT``) as the UDP address the hop is sent to."""
    host, colon, port = advertise.rpartition(":")
    if not colon or not port.isdigit() or not host:
        return None
    return Address("udp", host.strip("[]"), int(port))


class Forwarding:
    """The forwarding rules of one node; every method runs on the gateway's worker."""

    def __init__(  # noqa: PLR0913 - the collaborators, all keyword
        self,
        *,
        node: str,
        advertise: str,
        owners: OwnersPort,
        worker: WorkerPort,
        clock: Callable[[], float] = time.monotonic,
        owner_cache: float = OWNER_CACHE,
        forward_timeout: float = FORWARD_TIMEOUT,
    ) -> None:
        self.node = node
        self.address = parse_advertise(advertise)
        self.owners = owners
        self.worker = worker
        self.clock = clock
        self.owner_cache = owner_cache
        self.forward_timeout = forward_timeout
        self.front: FrontPort | None = None
        self._owners: dict[str, tuple[float, Address | None]] = {}
        self._nodes: dict[tuple[str, int], str] = {}
        self._hosts: frozenset[str] = frozenset()  # read from the SIP front's loop
        self._nodes_at = -NODES_CACHE
        self.forwarded = 0  # requests passed on, for logs and tests

    # --- Rule 3 ---------------------------------------------------------------------

    def is_node(self, source: Source) -> bool:
        """True for a request sent by another node of the cluster (its advertise address)."""
        if source.transport != "udp":
            return False
        return (source.host, source.port) in self._node_addresses()

    def _node_addresses(self) -> dict[tuple[str, int], str]:
        now = self.clock()
        if now - self._nodes_at >= NODES_CACHE:
            self._nodes_at = now
            try:
                rows = self.owners.addresses(NODE_MAX_AGE)
            except StoreError as exc:
                logger.warning("Cluster nodes not read (kept the last list): %s", exc)
                return self._nodes
            nodes: dict[tuple[str, int], str] = {}
            for advertise, name in rows.items():
                address = parse_advertise(advertise)
                if address is not None and name != self.node:
                    nodes[(address.host, address.port)] = name
            self._nodes = nodes
            self._hosts = frozenset(host for host, _port in nodes)
        return self._nodes

    def is_node_host(self, host: str) -> bool:
        """A host of another node (any thread: reads the last list, never the database)."""
        return host in self._hosts

    def is_me(self, uri: SipURI) -> bool:
        """A Route naming this node's own address (removed before the hop)."""
        me = self.address
        return me is not None and (uri.host.strip("[]"), uri.port or 5060) == (me.host, me.port)

    # --- Rules 1, 2, 4 ----------------------------------------------------------------

    def owner(self, sip_user: str, *, cached: bool = True) -> Address | None:
        """Where ``sip_user``'s requests go; None: here (Rule 2).

        ``cached=False`` asks the database and leaves the cache alone (the rare
        questions that must not hold a stale answer for the requests after them).
        """
        now = self.clock()
        if not cached:
            return self._lookup(sip_user)
        hit = self._owners.get(sip_user)
        if hit is not None and now - hit[0] < self.owner_cache:
            return hit[1]
        address = self._lookup(sip_user)
        if len(self._owners) > 100_000:  # a cache, not state
            self._owners.clear()
        self._owners[sip_user] = (now, address)
        return address

    def _lookup(self, sip_user: str) -> Address | None:
        address: Address | None = None
        try:
            holder = self.owners.holder(sip_user)
        except StoreError as exc:
            logger.warning("Owner of %s not read, handled here: %s", sip_user, exc)
            holder = None
        if holder is not None and holder[0] != self.node:
            address = parse_advertise(holder[1])
            if address is None:
                logger.warning("Node %s advertises %r: not IP:PORT", holder[0], holder[1])
        return address

    def forget(self, sip_user: str) -> None:
        """Drop the cached owner of ``sip_user`` (its lease just moved)."""
        self._owners.pop(sip_user, None)

    def route(self, request: Request, source: Source, user: str, reply: Reply) -> bool:
        """Forward ``request`` of ``user`` when another node owns it; True when it did."""
        if request.method not in FORWARDED_METHODS or self.front is None or self.is_node(source):
            return False
        destination = self.owner(user)
        if destination is None:
            return False
        self.forward(request, destination, reply)
        return True

    # --- Rule 5 ---------------------------------------------------------------------

    def forward(self, request: Request, destination: Address, reply: Reply) -> None:
        front = self.front
        assert front is not None  # route() checked
        try:
            forwarded = forward_request(request, is_me=self.is_me)
        except TooManyHopsError as exc:
            reply(respond(request, exc.status_hint, exc.reason))
            return
        self.forwarded += 1
        logger.debug("%s %s forwarded to %s", request.method, request.call_id, destination)
        done = False

        def answered(future: concurrent.futures.Future[Response]) -> None:
            nonlocal done
            if done:
                return
            done = True
            timer.cancel()
            try:
                response = future.result()
            except Exception as exc:  # noqa: BLE001 - whatever failed, the sender gets 503
                logger.info("%s not forwarded to %s: %s", request.method, destination, exc)
                reply(_unavailable(request))
                return
            relayed = relay_response(response)
            reply(relayed if relayed is not None else _unavailable(request))

        def too_late() -> None:
            nonlocal done
            if done:
                return
            done = True
            logger.warning(
                "%s %s: no answer from %s within %.0f s",
                request.method,
                request.call_id,
                destination,
                self.forward_timeout,
            )
            reply(_unavailable(request))

        timer = self.worker.call_later(self.forward_timeout, too_late)
        front.forward(forwarded, destination).add_done_callback(self.worker.completion(answered))


def _unavailable(request: Request) -> Response:
    return respond(
        request,
        503,
        "Service Unavailable: the user's node does not answer",
        headers=[("Retry-After", str(RETRY_AFTER))],
    )
