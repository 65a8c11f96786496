"""RFC 3903 event state compositor: the store behind PUBLISH (pure logic).

Rules (RFC 3903 section 6), applied in this order to one PUBLISH:

1. Expires below ``min_expires`` (and not 0) -> 423 with Min-Expires; above
   ``max_expires`` it is lowered; absent -> ``default_expires``.
2. With SIP-If-Match, the tag must name a live publication of this
   (resource, event), or the answer is 412 Conditional Request Failed.
3. Expires 0 with a known tag removes the publication.
4. A body-less PUBLISH with a known tag is a refresh: the state does NOT
   change, only its lifetime (the original module logged users out here).
5. A body with a known tag modifies; a body without a tag creates.
   A body-less PUBLISH without a tag is 400.
6. Every success issues a fresh SIP-ETag and re-arms the expiry timer,
   named ``publication:<etag>``; ``on_timer`` expires the publication.

The random source for entity tags is passed in (``secrets.token_bytes``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .actions import Action, CancelTimer, StartTimer

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

__all__ = ["Publication", "PublicationStore", "PublishResult"]

TIMER_PREFIX = "publication:"


@dataclass
class Publication:
    resource: str
    event: str
    etag: str
    body: bytes
    content_type: str | None
    expires: int


@dataclass(frozen=True)
class PublishResult:
    status: int
    reason: str = ""
    etag: str | None = None
    expires: int | None = None
    min_expires: int | None = None
    # "created", "modified", "refreshed", "removed" (None for errors)
    change: str | None = None
    publication: Publication | None = None
    actions: list[Action] = field(default_factory=list)


@dataclass
class PublicationStore:
    random: Callable[[int], bytes]
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    _by_etag: dict[str, Publication] = field(default_factory=dict)

    def _new_etag(self) -> str:
        while True:
            etag = self.random(9).hex()
            if etag not in self._by_etag:
                return etag

    def states(self, resource: str, event: str = "presence") -> list[Publication]:
        """Live publications of a resource, oldest first (the compositor's inputs)."""
        return [p for p in self._by_etag.values() if p.resource == resource and p.event == event]

    def publish(  # noqa: PLR0911, PLR0913 - one return per RFC 3903 outcome
        self,
        resource: str,
        event: str,
        *,
        if_match: str | None,
        expires: int | None,
        body: bytes,
        content_type: str | None = None,
    ) -> PublishResult:
        if expires is None:
            expires = self.default_expires
        if 0 < expires < self.min_expires:
            return PublishResult(423, "Interval Too Brief", min_expires=self.min_expires)
        expires = min(expires, self.max_expires)
        if if_match is None:
            if not body:
                return PublishResult(400, "Bad Request: initial PUBLISH without a body")
            if expires == 0:
                return PublishResult(400, "Bad Request: initial PUBLISH with Expires: 0")
            pub = Publication(resource, event, self._new_etag(), body, content_type, expires)
            self._by_etag[pub.etag] = pub
            return PublishResult(
                200,
                "OK",
                pub.etag,
                expires,
                change="created",
                publication=pub,
                actions=[StartTimer(TIMER_PREFIX + pub.etag, expires)],
            )
        old = self._by_etag.get(if_match)
        if old is None or old.resource != resource or old.event != event:
            return PublishResult(412, "Conditional Request Failed")
        del self._by_etag[if_match]
        cancel = CancelTimer(TIMER_PREFIX + if_match)
        if expires == 0:
            return PublishResult(
                200, "OK", if_match, 0, change="removed", publication=old, actions=[cancel]
            )
        old.etag = self._new_etag()
        old.expires = expires
        change = "refreshed"
        if body:
            old.body, old.content_type, change = body, content_type, "modified"
        self._by_etag[old.etag] = old
        return PublishResult(
            200,
            "OK",
            old.etag,
            expires,
            change=change,
            publication=old,
            actions=[cancel, StartTimer(TIMER_PREFIX + old.etag, expires)],
        )

    def restore(self, publication: Publication, remaining: float) -> StartTimer:
        """Put back a publication kept elsewhere (a store) with ``remaining`` seconds to live."""
        self._by_etag[publication.etag] = publication
        return StartTimer(TIMER_PREFIX + publication.etag, max(0.0, remaining))

    def on_timer(self, name: str) -> Publication | None:
        """An expiry timer fired: drop and return the publication (None if already gone)."""
        if not name.startswith(TIMER_PREFIX):
            return None
        return self._by_etag.pop(name[len(TIMER_PREFIX) :], None)
