"""Non-INVITE client and server transactions (RFC 3261 17.1.2, 17.2.2).

Each machine keeps its transitions in a literal dict keyed by
``(state, event)``; an event missing from the table is absorbed (incoming
messages) or refused with ``LocalProtocolError`` (calls by the TU).  Methods
take no clock: they return actions, and timers come back through
``on_timer(name)``.

Rules (client, 17.1.2.2):

1. ``start`` sends the request, arms timer_f = 64*T1 and, on an unreliable
   transport only, timer_e = T1.
2. timer_e retransmits and re-arms at min(2*E, T2) in Trying, at T2 in
   Proceeding.
3. timer_f in Trying/Proceeding reports a timeout to the TU and terminates.
4. A 1xx goes to the TU (Trying -> Proceeding).  A final response goes to the
   TU, stops E and F and moves to Completed, which lasts timer_k = T4
   (unreliable) or 0 (reliable) and absorbs response retransmissions.
5. A transport error reports to the TU and terminates.

Rules (server, 17.2.2):

1. The request that creates the machine goes to the TU (Trying).
2. Request retransmissions are absorbed in Trying, answered with the last
   provisional in Proceeding and with the final response in Completed.
3. The TU's 1xx moves Trying/Proceeding to Proceeding; its final response
   moves to Completed and arms timer_j = 64*T1 (unreliable) or 0 (reliable).
4. timer_j terminates.  A second final response is a LocalProtocolError.

Matching (17.2.3, 17.1.3) and the RFC 2543 fallback for branches without the
magic cookie live in ``TransactionLayer``.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from .actions import Action, Address, CancelTimer, DeliverToTU, Send, StartTimer, Terminated
from .errors import LocalProtocolError
from .message import Request, Response

logger = logging.getLogger(__name__)

__all__ = [
    "MAGIC_COOKIE",
    "ClientTransaction",
    "ServerTransaction",
    "State",
    "Timers",
    "TransactionKey",
    "TransactionLayer",
    "client_key",
    "server_key",
]

MAGIC_COOKIE = "z9hG4bK"


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 table 4 base values, configurable (tests shrink them)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class State(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


TRYING, PROCEEDING, COMPLETED, TERMINATED = State

# (state, event) -> next state
CLIENT_TRANSITIONS: dict[tuple[State, str], State] = {
    (TRYING, "timer_e"): TRYING,
    (PROCEEDING, "timer_e"): PROCEEDING,
    (TRYING, "timer_f"): TERMINATED,
    (PROCEEDING, "timer_f"): TERMINATED,
    (TRYING, "provisional"): PROCEEDING,
    (PROCEEDING, "provisional"): PROCEEDING,
    (TRYING, "final"): COMPLETED,
    (PROCEEDING, "final"): COMPLETED,
    (COMPLETED, "timer_k"): TERMINATED,
    (TRYING, "transport_error"): TERMINATED,
    (PROCEEDING, "transport_error"): TERMINATED,
}

SERVER_TRANSITIONS: dict[tuple[State, str], State] = {
    (TRYING, "request"): TRYING,
    (PROCEEDING, "request"): PROCEEDING,
    (COMPLETED, "request"): COMPLETED,
    (TRYING, "send_provisional"): PROCEEDING,
    (PROCEEDING, "send_provisional"): PROCEEDING,
    (TRYING, "send_final"): COMPLETED,
    (PROCEEDING, "send_final"): COMPLETED,
    (COMPLETED, "timer_j"): TERMINATED,
    (TRYING, "transport_error"): TERMINATED,
    (PROCEEDING, "transport_error"): TERMINATED,
    (COMPLETED, "transport_error"): TERMINATED,
}

# events the TU drives: a missing transition is our bug, not the peer's
_LOCAL_EVENTS = frozenset({"send_provisional", "send_final"})


class _Machine:
    transitions: dict[tuple[State, str], State]

    def __init__(self, *, reliable: bool, timers: Timers) -> None:
        self.state = TRYING
        self.reliable = reliable
        self.timers = timers

    def _next(self, event: str) -> State | None:
        new = self.transitions.get((self.state, event))
        if new is None:
            if event in _LOCAL_EVENTS:
                raise LocalProtocolError(f"{event} not allowed in state {self.state.value}", 500)
            logger.debug("%s: %s ignored in %s", type(self).__name__, event, self.state.value)
        return new


class ClientTransaction(_Machine):
    """Non-INVITE client transaction for one outgoing request."""

    transitions = CLIENT_TRANSITIONS

    def __init__(
        self,
        request: Request,
        destination: Address | None,
        *,
        reliable: bool = False,
        timers: Timers | None = None,
    ) -> None:
        super().__init__(reliable=reliable, timers=timers or Timers())
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError("INVITE client transactions are not implemented", 500)
        self.request = request
        self.destination = destination
        self._interval_e = self.timers.t1
        self.last_response: Response | None = None

    def start(self) -> list[Action]:
        actions: list[Action] = [Send(self.request, self.destination)]
        if not self.reliable:
            actions.append(StartTimer("timer_e", self._interval_e))
        actions.append(StartTimer("timer_f", 64 * self.timers.t1))
        return actions

    def on_timer(self, name: str) -> list[Action]:
        old = self.state
        new = self._next(name)
        if new is None:
            return []
        self.state = new
        if name == "timer_e":
            if old is TRYING:
                self._interval_e = min(2 * self._interval_e, self.timers.t2)
            else:
                self._interval_e = self.timers.t2
            return [Send(self.request, self.destination), StartTimer("timer_e", self._interval_e)]
        if name == "timer_f":
            return [CancelTimer("timer_e"), DeliverToTU(None, timeout=True), Terminated("timeout")]
        return [Terminated("completed")]  # timer_k

    def receive_response(self, response: Response) -> list[Action]:
        event = "provisional" if response.status < 200 else "final"
        new = self._next(event)
        if new is None:
            return []  # retransmission absorbed in Completed
        self.state = new
        self.last_response = response
        if new is PROCEEDING:
            return [DeliverToTU(response)]
        actions: list[Action] = [
            DeliverToTU(response),
            CancelTimer("timer_e"),
            CancelTimer("timer_f"),
        ]
        if self.reliable:
            self.state = TERMINATED
            actions.append(Terminated("completed"))
        else:
            actions.append(StartTimer("timer_k", self.timers.t4))
        return actions

    def transport_error(self) -> list[Action]:
        new = self._next("transport_error")
        if new is None:
            return []
        self.state = new
        return [
            CancelTimer("timer_e"),
            CancelTimer("timer_f"),
            DeliverToTU(None, transport_error=True),
            Terminated("transport error"),
        ]


class ServerTransaction(_Machine):
    """Non-INVITE server transaction for one incoming request."""

    transitions = SERVER_TRANSITIONS

    def __init__(
        self,
        request: Request,
        destination: Address | None,
        *,
        reliable: bool = False,
        timers: Timers | None = None,
    ) -> None:
        super().__init__(reliable=reliable, timers=timers or Timers())
        self.request = request
        self.destination = destination
        self.last_response: Response | None = None

    def start(self) -> list[Action]:
        return [DeliverToTU(self.request)]

    def receive_request(self, request: Request) -> list[Action]:
        """A retransmission of the request matched this transaction."""
        if self._next("request") is None:
            return []
        if self.state is TRYING or self.last_response is None:
            return []
        return [Send(self.last_response, self.destination)]

    def send_response(self, response: Response) -> list[Action]:
        final = response.status >= 200
        new = self._next("send_final" if final else "send_provisional")
        assert new is not None  # local events raise instead
        self.state = new
        self.last_response = response
        actions: list[Action] = [Send(response, self.destination)]
        if final:
            if self.reliable:
                self.state = TERMINATED
                actions.append(Terminated("completed"))
            else:
                actions.append(StartTimer("timer_j", 64 * self.timers.t1))
        return actions

    def on_timer(self, name: str) -> list[Action]:
        new = self._next(name)
        if new is None:
            return []
        self.state = new
        return [Terminated("completed")]

    def transport_error(self) -> list[Action]:
        new = self._next("transport_error")
        if new is None:
            return []
        self.state = new
        return [
            CancelTimer("timer_j"),
            DeliverToTU(None, transport_error=True),
            Terminated("transport error"),
        ]


TransactionKey = tuple[str, ...]


def server_key(request: Request) -> TransactionKey:
    """RFC 3261 17.2.3 key, or the RFC 2543 fallback when the branch lacks the cookie."""
    via = request.top_via
    branch = via.branch if via is not None else None
    method = "INVITE" if request.method == "ACK" else request.method
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        assert via is not None
        return ("3261", branch, via.sent_by.lower(), method)
    # RFC 2543 (17.2.3 last paragraphs): Request-URI, tags, Call-ID, CSeq, top Via
    to = request.to
    frm = request.from_
    cseq = request.cseq
    return (
        "2543",
        str(request.uri),
        (to.tag if to is not None else None) or "",
        (frm.tag if frm is not None else None) or "",
        request.call_id or "",
        str(cseq.number) if cseq is not None else "",
        method,
        str(via) if via is not None else "",
    )


def client_key(message: Request | Response) -> TransactionKey | None:
    """RFC 3261 17.1.3: top Via branch + CSeq method."""
    branch = message.branch
    cseq = message.cseq
    if not branch or cseq is None:
        return None
    return ("client", branch, cseq.method)


class TransactionLayer:
    """Maps messages to transactions and collects their actions.

    Every returned action comes with the key of the transaction it belongs to,
    so the driver can scope timers: ``[(key, action), ...]``; timers come back
    with ``on_timer(key, name)``.  Terminated transactions are forgotten.
    INVITE and ACK are not handled here (the gateway answers them statelessly).
    """

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self.servers: dict[TransactionKey, ServerTransaction] = {}
        self.clients: dict[TransactionKey, ClientTransaction] = {}

    def _collect(
        self, key: TransactionKey, actions: list[Action]
    ) -> list[tuple[TransactionKey, Action]]:
        for action in actions:
            if isinstance(action, Terminated):
                self.servers.pop(key, None)
                self.clients.pop(key, None)
        return [(key, action) for action in actions]

    def receive_request(
        self, request: Request, destination: Address | None, *, reliable: bool = False
    ) -> list[tuple[TransactionKey, Action]]:
        """A request from the network: a new server transaction or a retransmission."""
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError("INVITE transactions are handled statelessly", 500)
        key = server_key(request)
        txn = self.servers.get(key)
        if txn is not None:
            return self._collect(key, txn.receive_request(request))
        txn = ServerTransaction(request, destination, reliable=reliable, timers=self.timers)
        self.servers[key] = txn
        return self._collect(key, txn.start())

    def send_response(
        self, request: Request, response: Response
    ) -> list[tuple[TransactionKey, Action]]:
        key = server_key(request)
        txn = self.servers.get(key)
        if txn is None:
            raise LocalProtocolError("no server transaction for this request", 500)
        return self._collect(key, txn.send_response(response))

    def send_request(
        self, request: Request, destination: Address | None, *, reliable: bool = False
    ) -> list[tuple[TransactionKey, Action]]:
        key = client_key(request)
        if key is None or not (request.branch or "").startswith(MAGIC_COOKIE):
            raise LocalProtocolError("outgoing requests need a top Via with a z9hG4bK branch", 500)
        if key in self.clients:
            raise LocalProtocolError(f"branch {key[1]} already in use", 500)
        txn = ClientTransaction(request, destination, reliable=reliable, timers=self.timers)
        self.clients[key] = txn
        return self._collect(key, txn.start())

    def receive_response(self, response: Response) -> list[tuple[TransactionKey, Action]]:
        """A response from the network; unmatched ones are dropped (RFC 3261 18.1.2)."""
        key = client_key(response)
        txn = self.clients.get(key) if key is not None else None
        if key is None or txn is None:
            logger.debug("dropping response without transaction: %r", response)
            return []
        return self._collect(key, txn.receive_response(response))

    def on_timer(self, key: TransactionKey, name: str) -> list[tuple[TransactionKey, Action]]:
        txn: ServerTransaction | ClientTransaction | None = self.servers.get(
            key
        ) or self.clients.get(key)
        if txn is None:
            return []
        return self._collect(key, txn.on_timer(name))
