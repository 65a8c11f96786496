"""Who sent a request: trusted networks, digest authentication, per-user rate limits.

Every SIP handler asks ``Identity.identify()`` first, and only that (the
shape of slidge's dispatcher ``_get_session``): it returns the SIP user the
request speaks for, or raises ``Refused`` carrying the answer to send.

Rules:

Rule 1. A request from a ``[sip] trusted`` network speaks for the user in its
        From header (a fronting proxy authenticated it).
Rule 2. Any other request must carry digest credentials (RFC 3261 22; REGISTER
        in Authorization, others in Proxy-Authorization) of a user of the
        subscriber table, and its From must be that user (403 otherwise); no
        valid credentials: 401/407 with a fresh challenge (stale=true when a
        correct answer used an expired nonce).  Nobody sends as someone else,
        and nobody without a row can use the gateway: it is never an open relay.
Rule 3. Once identified, a user's REGISTERs, MESSAGEs, PUBLISHes and
        SUBSCRIBEs (refreshes and unsubscribes included) share one token
        bucket (``[sip] rate_per_user``): over it, 503 + Retry-After
        (RFC 3261 21.5.4).  Each of them creates or touches state kept for
        the user (a binding, a queued message, a publication, a dialog and
        a roster request), so none may come for free; how much state a user
        may hold at once is capped where it is kept (``[presence]
        max_publications_per_user``, ``max_subscriptions_per_user``:
        purplegw.gateway.presence).
Rule 4. In a cluster, a request another node forwarded (purplegw.gateway.forwarding)
        is trusted as under Rule 1: that node authenticated the user.  A
        request is identified once: asked again about the same request (the
        forwarding rule asks first, then the handler), the answer is the same
        and nothing is counted twice.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from typing import TYPE_CHECKING

from purplegw.sip.digest import DigestServer, compute_ha1
from purplegw.sip.message import Request, Response, make_response
from purplegw.sip.ratelimit import RateLimiter, Verdict

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.actors.front.transport import Source
    from purplegw.gateway.ports import UsersPort
    from purplegw.gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

RATE_LIMITED_METHODS = frozenset({"REGISTER", "MESSAGE", "PUBLISH", "SUBSCRIBE"})


def respond(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    headers: list[tuple[str, str]] | None = None,
    to_tag: str | None = None,
) -> Response:
    """The gateway's final answer to ``request`` (a fresh To tag unless given)."""
    return make_response(
        request, status, reason, to_tag=to_tag or os.urandom(4).hex(), headers=headers or []
    )


class Refused(Exception):  # noqa: N818 - a verdict, not an error of ours
    """The request is answered with ``response`` and goes no further."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"{response.status} {response.reason}")
        self.response = response


class Identity:
    def __init__(
        self, settings: GatewaySettings, users: UsersPort, clock: Callable[[], float]
    ) -> None:
        self.domain = settings.domain
        self.clock = clock
        self.users = users
        self.digest = DigestServer(
            realm=settings.domain,
            secret=secrets.token_bytes(32),
            algorithms=settings.auth_algorithms,
        )
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted]
        self.peer: Callable[[Source], bool] = lambda _source: False  # another node (Rule 4)
        self._last: tuple[Request, str] | None = None
        self.limiter = (
            RateLimiter(
                settings.rate_per_user,
                settings.burst_per_user,
                max_keys=settings.rate_limit_table_size,
            )
            if settings.rate_per_user > 0
            else None
        )

    def identify(self, request: Request, source: Source) -> str:
        """The SIP user (``user@domain``) ``request`` speaks for; raises ``Refused``."""
        last = self._last
        if last is not None and last[0] is request:
            return last[1]  # Rule 4: asked again about the same request
        user = self._authenticate(request, source)
        if request.method in RATE_LIMITED_METHODS:
            self._limit(request, user)
        self._last = (request, user)
        return user

    def remember(self, request: Request, user: str) -> None:
        """``request`` speaks for ``user``, identified before (Rule 4: asked again, same answer)."""
        self._last = (request, user)

    def is_trusted(self, source: Source) -> bool:
        if self.peer(source):
            return True
        try:
            address = ipaddress.ip_address(source.host)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def _authenticate(self, request: Request, source: Source) -> str:
        sender = request.from_
        if sender is None or not sender.uri.is_sip or sender.uri.user is None:
            raise Refused(respond(request, 400, "Bad Request: From is not a SIP user"))
        claimed = f"{sender.uri.user_unescaped}@{sender.uri.host.lower()}"
        if self.is_trusted(source):
            return claimed
        register = request.method == "REGISTER"
        header = "Authorization" if register else "Proxy-Authorization"
        now = self.clock()
        stale = False
        for value in request.headers.getall(header):
            result = self.digest.verify(
                request.method, value, now, self._lookup_ha1, request_uri=str(request.ruri)
            )
            if result.ok:
                identity = f"{result.username}@{self.domain}"
                if identity != claimed:
                    raise Refused(
                        respond(
                            request, 403, "Forbidden: From does not match the authenticated user"
                        )
                    )
                return identity
            stale |= result.stale
            logger.info(
                "Authentication of %s from %s failed: %s",
                result.username or "?",
                source,
                result.reason,
            )
        status, name = (401, "WWW-Authenticate") if register else (407, "Proxy-Authenticate")
        challenges = self.digest.challenge(now, secrets.token_bytes(8), stale=stale)
        raise Refused(respond(request, status, headers=[(name, c) for c in challenges]))

    def _limit(self, request: Request, user: str) -> None:
        limiter = self.limiter
        if limiter is None:
            return
        now = self.clock()
        if limiter.hit(user, now) is Verdict.ALLOW:
            return
        logger.debug("%s over its rate limit: %s refused", user, request.method)
        raise Refused(
            respond(
                request,
                503,
                "Service Unavailable: rate limit",
                headers=[("Retry-After", str(limiter.retry_after(user, now)))],
            )
        )

    def _lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        user = self.users.get(username, realm)
        if user is None:
            return None
        if algorithm == "MD5":
            return user.ha1
        return compute_ha1(username, realm, user.password, algorithm) if user.password else None
