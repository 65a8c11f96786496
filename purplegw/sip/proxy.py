"""One stateful proxy hop (RFC 3261 section 16), sans-IO: the header rewriting only.

A cluster node that receives a request for a user another node owns passes
it on (purplegw.gateway.forwarding decides, purplegw.actors.front sends).
The front's client transaction adds the hop's own Via (with a fresh branch),
so what is left here is the rest of section 16.6 for the request and of
16.7 for the response.

Rules:

Rule 1. (16.3 step 3, 16.6 step 3) Max-Forwards 0 is refused with 483 Too
        Many Hops; otherwise the forwarded copy carries it decremented by one
        (70 when the request had none: the hop then counts as the first).
Rule 2. (16.4, 16.6 step 2) a top Route naming this node (``is_me``) is
        removed: the request was routed to us and goes on from here.
Rule 3. (16.6 step 4) ``record_route`` given, it is inserted as the first
        Record-Route of a dialog-creating request that has no To tag (a
        SUBSCRIBE that starts a dialog); in-dialog requests and other methods
        keep their Record-Route headers as they are, untouched.
Rule 4. (16.7 step 3) the response goes back without the top Via (ours);
        a response with no Via left below ours is not ours to relay (None).
Rule 5. The original request is never changed: the forwarded one is a copy
        (its server transaction still answers from the original).

Deviation: a 503 from the next hop is relayed as it is (16.7 step 6 asks
for 500): the next hop is another node of the same gateway sharing one
database, so its 503 + Retry-After (database down, rate limit) is the
gateway's own answer, which a single node would have given too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import LocalProtocolError
from .message import DIALOG_CREATING_METHODS, Request, Response
from .uri import parse_name_addr

if TYPE_CHECKING:
    from collections.abc import Callable

    from .uri import SipURI

__all__ = ["TooManyHopsError", "forward_request", "relay_response"]

DEFAULT_MAX_FORWARDS = 70


class TooManyHopsError(LocalProtocolError):
    """Max-Forwards reached 0: answer 483 instead of forwarding (Rule 1)."""

    def __init__(self) -> None:
        super().__init__("Too Many Hops", 483)


def forward_request(
    request: Request,
    *,
    is_me: Callable[[SipURI], bool] = lambda _uri: False,
    record_route: str | None = None,
) -> Request:
    """The copy of ``request`` to send one hop further (module Rules 1-3, 5)."""
    max_forwards = request.max_forwards
    if max_forwards is not None and max_forwards <= 0:
        raise TooManyHopsError
    headers = request.headers.copy()
    headers.set(
        "Max-Forwards",
        str(DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1),
    )
    routes = headers.getall("Route")
    if routes:
        top = parse_name_addr(routes[0]).uri
        if is_me(top):
            headers.remove_first("Route")
    to = request.to
    if (
        record_route is not None
        and request.method in DIALOG_CREATING_METHODS
        and (to is None or not to.tag)
    ):
        headers.add("Record-Route", record_route, first=True)
    return Request(request.method, request.uri, headers, request.body)


def relay_response(response: Response) -> Response | None:
    """The response to send back one hop, our Via removed (Rule 4); None: not ours."""
    if len(response.headers.getall("Via")) < 2:
        return None
    headers = response.headers.copy()
    headers.remove_first("Via")
    return Response(response.status, response.reason, headers, response.body)
