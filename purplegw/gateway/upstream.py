"""Contacts' presence PUBLISHed into an upstream presence server.

``[presence] upstream``, as the original module did with Kamailio's
``presence``: every contact presence the accounts report is also PUBLISHed
there, so that phones can subscribe at that server.

Rules:

Rule 1. One publication per contact (RFC 3903): initial with a body, modify
        with SIP-If-Match, body-less refresh at 80% of the granted expiry.
Rule 2. One PUBLISH in flight per contact; the latest state waits for it.
Rule 3. 412 (the server lost the publication) -> publish afresh; a failure
        on our side forgets the ETag, and the next change publishes afresh.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from purplegw.actors.front.transport import Address
from purplegw.sip.headers import Headers
from purplegw.sip.message import Request, Response
from purplegw.sip.presence.pidf import CONTENT_TYPE_PIDF
from purplegw.sip.uri import parse_uri

if TYPE_CHECKING:
    import concurrent.futures

    from purplegw.gateway.ports import FrontPort, WorkerPort
    from purplegw.gateway.timers import KeyedTimers

logger = logging.getLogger(__name__)

EVENT = "presence"


@dataclass
class _Upstream:
    etag: str | None = None
    body: bytes = b""  # the last state published (for a 412)
    in_flight: bool = False
    waiting: bytes | None = None  # newest state while a PUBLISH is in flight


class UpstreamPublisher:
    def __init__(
        self, uri: str, expires: int, *, domain: str, worker: WorkerPort, timers: KeyedTimers
    ) -> None:
        self.expires = expires
        self.domain = domain
        self.worker = worker
        self.timers = timers
        self.front: FrontPort | None = None
        target = parse_uri(uri)
        self.address = Address(
            (target.params.get("transport") or "udp").lower(),
            target.host.strip("[]"),
            target.port or 5060,
        )
        self.entities: dict[str, _Upstream] = {}

    def publish(self, entity: str, body: bytes) -> None:
        """Publish ``body`` for ``entity`` (b"" refreshes the current one)."""
        state = self.entities.setdefault(entity, _Upstream())
        if state.in_flight:
            state.waiting = body or state.waiting
            return
        self._send(entity, state, body)

    def _send(self, entity: str, state: _Upstream, body: bytes) -> None:
        front = self.front
        if front is None:
            return
        if not body and state.etag is None:
            body = state.body  # nothing to refresh: publish afresh
        if body:
            state.body = body
        headers = Headers()
        headers.add("From", f"<{entity}>;tag={os.urandom(4).hex()}")
        headers.add("To", f"<{entity}>")
        headers.add("Call-ID", f"{uuid.uuid4().hex}@{self.domain}")
        headers.add("CSeq", "1 PUBLISH")
        headers.add("Event", EVENT)
        headers.add("Expires", str(self.expires))
        if state.etag is not None:
            headers.add("SIP-If-Match", state.etag)
        if body:
            headers.add("Content-Type", CONTENT_TYPE_PIDF)
        state.in_flight = True
        future = front.send_request(Request("PUBLISH", entity, headers, body), self.address)

        def answered(done: concurrent.futures.Future[Response]) -> None:
            self._answered(entity, done)

        future.add_done_callback(self.worker.completion(answered))

    def _answered(self, entity: str, done: concurrent.futures.Future[Response]) -> None:
        state = self.entities[entity]
        state.in_flight = False
        try:
            response = done.result()
        except Exception as exc:  # noqa: BLE001 - our side; the next change retries
            logger.info("Upstream PUBLISH of %s not sent: %s", entity, exc)
            state.etag = None
            return
        if 200 <= response.status < 300:
            state.etag = response.headers.get("SIP-ETag")
            granted = response.expires or self.expires
            self.timers.start(
                ("presence", ("upstream", entity)), max(1.0, granted * 0.8), self._refresh, entity
            )
        else:
            logger.info("Upstream PUBLISH of %s: %d %s", entity, response.status, response.reason)
            state.etag = None
            if response.status == 412 and state.waiting is None:
                state.waiting = state.body  # the server lost it: publish afresh
        waiting, state.waiting = state.waiting, None
        if waiting is not None:
            self._send(entity, state, waiting)

    def _refresh(self, entity: str) -> None:
        state = self.entities.get(entity)
        if state is not None and not state.in_flight:
            self._send(entity, state, b"")
