"""Dialog state of RFC 3261 12: id, route set, CSeq, remote target.

Only the UAS side is needed (the gateway never originates SUBSCRIBE or
INVITE): ``Dialog.from_request`` builds it from the dialog-creating request
(12.1.1), ``receive_request`` applies in-dialog CSeq ordering and target
refresh (12.2.2), ``create_request`` builds in-dialog requests (12.2.1.1),
including strict-routing route sets.

States (table ``TRANSITIONS``): a UAS dialog made by SUBSCRIBE is born
CONFIRMED (RFC 6665 4.1.2.2: no early state for SUBSCRIBE dialogs).

1. In-dialog requests keep it CONFIRMED (after the CSeq check).
2. ``terminate()`` ends it; afterwards requests from the peer are 481 and
   creating requests is a LocalProtocolError.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from .errors import LocalProtocolError, RemoteProtocolError
from .headers import MAX_CSEQ, Headers
from .message import Request
from .uri import NameAddr, SipURI

logger = logging.getLogger(__name__)

__all__ = ["TARGET_REFRESH_METHODS", "TRANSITIONS", "Dialog", "DialogId", "DialogState"]

# RFC 3261 12.2 + RFC 6665 4.1/4.2: these requests may change the remote target
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogState(enum.Enum):
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


TRANSITIONS: dict[tuple[DialogState, str], DialogState] = {
    (DialogState.CONFIRMED, "request"): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, "send_request"): DialogState.CONFIRMED,
    (DialogState.CONFIRMED, "terminate"): DialogState.TERMINATED,
    (DialogState.TERMINATED, "terminate"): DialogState.TERMINATED,
}


@dataclass(frozen=True, slots=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_incoming(cls, request: Request) -> DialogId | None:
        """The id a request from the peer would belong to (its To tag is our tag)."""
        to, frm, call_id = request.to, request.from_, request.call_id
        if to is None or frm is None or call_id is None or not to.tag or not frm.tag:
            return None
        return cls(call_id, to.tag, frm.tag)


def _contact_uri(request: Request) -> SipURI | None:
    for contact in request.headers.contacts():
        if isinstance(contact, NameAddr):
            return contact.uri
    return None


@dataclass
class Dialog:
    id: DialogId
    local: NameAddr  # our address (the request's To), without tag
    remote: NameAddr  # the peer's address (the request's From), without tag
    remote_target: SipURI
    route_set: list[NameAddr] = field(default_factory=list)
    local_cseq: int = 0
    remote_cseq: int | None = None
    local_contact: str | None = None
    state: DialogState = DialogState.CONFIRMED

    def _go(self, event: str) -> None:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            if event == "request":
                raise RemoteProtocolError("Call/Transaction Does Not Exist: dialog terminated", 481)
            raise LocalProtocolError(f"{event} in a {self.state.value} dialog", 500)
        self.state = new

    def terminate(self) -> None:
        self._go("terminate")

    @classmethod
    def from_request(
        cls,
        request: Request,
        local_tag: str,
        *,
        local_cseq: int = 0,
        local_contact: str | None = None,
    ) -> Dialog:
        """UAS dialog from a dialog-creating request (RFC 3261 12.1.1)."""
        to, frm, cseq, call_id = request.to, request.from_, request.cseq, request.call_id
        if to is None or frm is None or cseq is None or call_id is None or not frm.tag:
            raise RemoteProtocolError("Bad Request: missing dialog identification", 400)
        target = _contact_uri(request)
        if target is None:
            raise RemoteProtocolError("Bad Request: missing Contact", 400)
        return cls(
            id=DialogId(call_id, local_tag, frm.tag),
            local=NameAddr(
                to.uri, to.display_name, {k: v for k, v in to.params.items() if k != "tag"}
            ),
            remote=NameAddr(
                frm.uri, frm.display_name, {k: v for k, v in frm.params.items() if k != "tag"}
            ),
            remote_target=target,
            route_set=list(request.headers.record_routes()),
            local_cseq=local_cseq,
            remote_cseq=cseq.number,
            local_contact=local_contact,
        )

    def receive_request(self, request: Request) -> None:
        """An in-dialog request: check CSeq order (12.2.2) and refresh the target."""
        self._go("request")
        cseq = request.cseq
        if cseq is None:
            raise RemoteProtocolError("Bad Request: missing CSeq", 400)
        if (
            self.remote_cseq is not None
            and cseq.number <= self.remote_cseq
            and request.method != "ACK"
        ):
            raise RemoteProtocolError("Server Internal Error: CSeq out of order", 500)
        self.remote_cseq = cseq.number
        if request.method in TARGET_REFRESH_METHODS:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target

    def next_hop(self) -> SipURI:
        """Where an in-dialog request goes first (before DNS/RFC 3263)."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def create_request(
        self,
        method: str,
        *,
        via: str,
        headers: Headers | None = None,
        body: bytes = b"",
    ) -> Request:
        """An in-dialog request (RFC 3261 12.2.1.1); ``via`` is the full top Via value."""
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(f"{method} does not take a new CSeq", 500)
        if self.local_cseq >= MAX_CSEQ:
            # RFC 3261 8.1.1.5: a CSeq is a 32-bit number; one more would not parse at the peer
            raise LocalProtocolError("CSeq space of the dialog exhausted", 500)
        self._go("send_request")
        self.local_cseq += 1
        out = Headers()
        out.add("Via", via)
        out.add("Max-Forwards", "70")
        out.add(
            "From",
            str(
                NameAddr(
                    self.local.uri,
                    self.local.display_name,
                    {**self.local.params, "tag": self.id.local_tag},
                )
            ),
        )
        out.add(
            "To",
            str(
                NameAddr(
                    self.remote.uri,
                    self.remote.display_name,
                    {**self.remote.params, "tag": self.id.remote_tag},
                )
            ),
        )
        out.add("Call-ID", self.id.call_id)
        out.add("CSeq", f"{self.local_cseq} {method}")
        uri = self.remote_target
        routes = [str(r) for r in self.route_set]
        if self.route_set and "lr" not in self.route_set[0].uri.params:
            # strict router: it goes into the Request-URI, the target to the end
            uri = self.route_set[0].uri
            routes = [*routes[1:], f"<{self.remote_target}>"]
        for route in routes:
            out.add("Route", route)
        if self.local_contact is not None:
            out.add("Contact", self.local_contact)
        if headers is not None:
            for name, value in headers.items():
                out.add(name, value)
        return Request(method, uri, out, body)
