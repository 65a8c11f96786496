"""Via ``received``/``rport`` stamping and the response destination.

RFC 3261 18.2.1: a server adds ``received`` to the top Via when the sent-by
host differs from the packet's source address.  RFC 3581 4: when the top Via
carries an empty ``rport`` the server fills in the source port (and always adds
``received``).  RFC 3261 18.2.2 + RFC 3581 4 then say where responses go.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .errors import RemoteProtocolError

if TYPE_CHECKING:
    from .headers import Via
    from .message import Request

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PORTS", "response_destination", "stamp_request", "stamp_via"]

DEFAULT_PORTS = {"UDP": 5060, "TCP": 5060, "SCTP": 5060, "TLS": 5061, "WS": 80, "WSS": 443}


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def stamp_via(via: Via, source: tuple[str, int]) -> Via:
    """The top Via as RFC 3261 18.2.1 and RFC 3581 4 want it after reception."""
    src_host, src_port = source
    if "rport" in via.params:
        return via.with_params(received=src_host, rport=str(src_port))
    host = via.host
    if (host == src_host and host[:1] != "[") or _bare(host).lower() == src_host.lower():
        return via
    return via.with_params(received=src_host)


def stamp_request(request: Request, source: tuple[str, int]) -> Via:
    """Stamp the top Via of ``request`` in place and return the new top Via."""
    top = request.headers.top_via()
    if top is None:
        raise RemoteProtocolError("Bad Request: missing Via", 400)
    stamped = stamp_via(top, source)
    if stamped is not top:
        request.headers.replace_first("Via", str(stamped))
    return stamped


def response_destination(via: Via, *, reliable: bool = False) -> tuple[str, int] | None:
    """Where responses to a request with (stamped) top ``via`` go.

    Returns ``None`` when the response must go back over the connection the
    request came on (reliable transports, RFC 3261 18.2.2 first bullet).
    Otherwise the (host, port): ``maddr`` if present, else ``received`` with
    ``rport`` (or the sent-by port, or the transport default), else sent-by.
    """
    if reliable:
        return None
    # the Via's params read directly (this runs for every request over UDP)
    params = via.params
    maddr = params.get("maddr")
    if maddr:
        return _bare(maddr), via.port or DEFAULT_PORTS.get(via.transport, 5060)
    host = params.get("received") or via.host
    rport = params.get("rport")
    port = (int(rport) if rport and rport.isdigit() else None) or via.port
    if host[:1] == "[":
        host = _bare(host)
    return host, port or DEFAULT_PORTS.get(via.transport, 5060)
