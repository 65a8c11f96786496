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
5. The TU may set a deadline for its answer (``expect_answer(seconds)`` arms
   timer_tu; not an RFC 3261 timer): if it fires in Trying or Proceeding the
   machine answers 500 itself, like any final response (Completed, timer_j),
   and reports the timeout to the TU, so a TU that never answers cannot leak
   the transaction nor leave the client retransmitting until its timer F.
6. Once the driver has put the final response on the wire it may hand its
   bytes back (``TransactionLayer.keep_wire``, with the address they went
   to): the layer then files the Completed transaction as one flat tuple
   (bytes, host, port) and drops the machine (which says TERMINATED from then
   on: the transaction lives on in the tuple), its context, the request and
   the response.  The 64*T1 of completed
   transactions a busy UDP server holds are then objects the garbage
   collector does not track (flat: a tuple holding a tuple stays tracked
   for a second pass, which measured as 20% more young collections and 3x
   the full ones), so its collections do not grow with the request rate.  Such an entry answers a
   retransmission with the bytes (``find_server`` brings the machine back
   for it) and ends on timer_j like any Completed transaction.

Matching (17.2.3, 17.1.3) and the RFC 2543 fallback for branches without the
magic cookie live in ``TransactionLayer``.  Its driver-facing methods take and
return transaction objects (``find_server``, ``create_server``, ``respond``,
``fire``...): a driver keeps its own per-transaction data in ``context``
(where replies go, the future waiting for a response) and never keeps a table
of its own.  The older key-based methods (``receive_request``,
``send_response``...) return ``[(key, action), ...]`` and run on the same
code.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any

from .actions import Action, Address, CancelTimer, DeliverToTU, Send, StartTimer, Terminated
from .errors import LocalProtocolError
from .message import Request, Response, make_response

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
    # hashed by identity: ``Enum.__hash__`` is a Python-level call, and every
    # transition looks up a ``(state, event)`` key (members are singletons)
    __hash__ = object.__hash__

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
    (TRYING, "timer_tu"): COMPLETED,
    (PROCEEDING, "timer_tu"): COMPLETED,
    (TRYING, "transport_error"): TERMINATED,
    (PROCEEDING, "transport_error"): TERMINATED,
    (COMPLETED, "transport_error"): TERMINATED,
}

# events the TU drives: a missing transition is our bug, not the peer's
_LOCAL_EVENTS = frozenset({"send_provisional", "send_final"})


_TERMINATED_COMPLETED = Terminated("completed")
_CANCEL_E = CancelTimer("timer_e")
_CANCEL_F = CancelTimer("timer_f")
_CANCEL_TU = CancelTimer("timer_tu")


_TIMER_J: dict[float, StartTimer] = {}


def _timer_j(t1: float) -> StartTimer:
    """``StartTimer("timer_j", 64*T1)``, one shared value per T1 (every UDP request arms one)."""
    action = _TIMER_J.get(t1)
    if action is None:
        if len(_TIMER_J) >= 64:  # T1 is configuration; tests vary it, nothing else does
            _TIMER_J.clear()
        action = _TIMER_J[t1] = StartTimer("timer_j", 64 * t1)
    return action


class _Machine:
    __slots__ = ("context", "key", "reliable", "state", "timers")

    transitions: dict[tuple[State, str], State]

    def __init__(self, *, reliable: bool, timers: Timers) -> None:
        self.state = TRYING
        self.reliable = reliable
        self.timers = timers
        # set by TransactionLayer: the key it files the machine under, and
        # whatever its driver attaches (reply address, waiting future...)
        self.key: TransactionKey = ()
        self.context: object = None

    def _next(self, event: str) -> State | None:
        new = self.transitions.get((self.state, event))
        if new is None:
            if event in _LOCAL_EVENTS:
                raise LocalProtocolError(f"{event} not allowed in state {self.state.value}", 500)
            logger.debug("%s: %s ignored in %s", type(self).__name__, event, self.state.value)
        return new


class ClientTransaction(_Machine):
    """Non-INVITE client transaction for one outgoing request."""

    __slots__ = ("_interval_e", "destination", "last_response", "request")

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
            return [_CANCEL_E, DeliverToTU(None, timeout=True), Terminated("timeout")]
        return [_TERMINATED_COMPLETED]  # timer_k

    def receive_response(self, response: Response) -> list[Action]:
        event = "provisional" if response.status < 200 else "final"
        new = self._next(event)
        if new is None:
            return []  # retransmission absorbed in Completed
        self.state = new
        self.last_response = response
        if new is PROCEEDING:
            return [DeliverToTU(response)]
        actions: list[Action] = [DeliverToTU(response), _CANCEL_E, _CANCEL_F]
        if self.reliable:
            self.state = TERMINATED
            actions.append(_TERMINATED_COMPLETED)
        else:
            actions.append(StartTimer("timer_k", self.timers.t4))
        return actions

    def transport_error(self) -> list[Action]:
        new = self._next("transport_error")
        if new is None:
            return []
        self.state = new
        return [
            _CANCEL_E,
            _CANCEL_F,
            DeliverToTU(None, transport_error=True),
            Terminated("transport error"),
        ]


class ServerTransaction(_Machine):
    """Non-INVITE server transaction for one incoming request.

    ``request`` and ``last_response`` are None and bytes once the driver has
    handed the final response's wire form back (``keep_wire``, Rule 6).
    """

    __slots__ = ("destination", "last_response", "request", "tu_deadline")

    transitions = SERVER_TRANSITIONS

    def __init__(
        self,
        request: Request | None,
        destination: Address | None,
        *,
        reliable: bool = False,
        timers: Timers | None = None,
    ) -> None:
        # None: a wire-form one revived in Completed (TransactionLayer.server)
        # _Machine.__init__, inline: one of these is built for every request
        self.state = TRYING
        self.reliable = reliable
        self.timers = timers or Timers()
        self.key: TransactionKey = ()
        self.context: object = None
        self.request: Request | None = request
        self.destination = destination
        self.last_response: Response | bytes | None = None
        self.tu_deadline = False  # timer_tu armed

    @property
    def answered(self) -> bool:
        """A final response went out (or the transaction is over): the TU's turn has passed."""
        return self.state is COMPLETED or self.state is TERMINATED

    def start(self) -> list[Action]:
        return [DeliverToTU(self.request)]

    def receive_request(self, request: Request) -> list[Action]:  # noqa: ARG002 - a retransmission
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
            if self.tu_deadline:
                self.tu_deadline = False
                actions.append(_CANCEL_TU)
            if self.reliable:
                self.state = TERMINATED
                actions.append(_TERMINATED_COMPLETED)
            else:
                actions.append(_timer_j(self.timers.t1))
        return actions

    def expect_answer(self, seconds: float) -> list[Action]:
        """Rule 5: the TU answers later; arm timer_tu so that it answers in time or we do."""
        if self.answered:
            return []
        self.tu_deadline = True
        return [StartTimer("timer_tu", seconds)]

    def keep_wire(self, data: bytes) -> None:
        """Rule 6: the final response as sent; Completed replays these bytes from now on."""
        if self.state is COMPLETED and self.last_response is not None:
            self.last_response = data
            self.request = None

    def on_timer(self, name: str) -> list[Action]:
        if name == "timer_tu" and not self.tu_deadline:
            return []  # answered (and cancelled) before it fired, or never armed
        new = self._next(name)
        if new is None:
            return []
        if name == "timer_tu":
            self.tu_deadline = False
            request = self.request
            assert request is not None  # only Completed drops it
            answer = make_response(request, 500, "Server Internal Error: no answer in time")
            actions = self.send_response(answer)
            actions.insert(0, DeliverToTU(None, timeout=True))
            return actions
        self.state = new
        return [_TERMINATED_COMPLETED]

    def transport_error(self) -> list[Action]:
        new = self._next("transport_error")
        if new is None:
            return []
        self.state = new
        actions: list[Action] = [CancelTimer("timer_j")]
        if self.tu_deadline:
            self.tu_deadline = False
            actions.append(_CANCEL_TU)
        actions += [DeliverToTU(None, transport_error=True), Terminated("transport error")]
        return actions


TransactionKey = tuple[str, ...]


def server_key(request: Request) -> TransactionKey:
    """RFC 3261 17.2.3 key, or the RFC 2543 fallback when the branch lacks the cookie."""
    via = request.headers.top_via()
    branch = via.params.get("branch") if via is not None else None
    method = "INVITE" if request.method == "ACK" else request.method
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE):
        assert via is not None
        port = via.port  # Via.sent_by, inline: this runs for every request
        sent_by = via.host if port is None else f"{via.host}:{port}"
        return ("3261", branch, sent_by.lower(), method)
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
    """The one table of transactions: maps messages to them and runs them.

    Two faces on one code path:

    * Driver methods, for the SIP front: ``find_server``/``find_client``
      (lookups that allocate nothing), ``create_server``/``create_client``
      (with a ``context`` the driver attaches), then ``start``, ``retransmitted``,
      ``respond``, ``expect_answer``, ``response_received``, ``fire`` and
      ``transport_error`` on the transaction object, each returning its
      actions.  A transaction that returns ``Terminated`` has already been
      forgotten when the driver sees the action.
    * Key-based methods (``receive_request``, ``send_response``,
      ``send_request``, ``receive_response``, ``on_timer``) returning every
      action with the key of its transaction, ``[(key, action), ...]``, so a
      driver without per-transaction state can scope timers by key.

    INVITE and ACK are not handled here (the gateway answers them statelessly).
    """

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self.servers: dict[TransactionKey, ServerTransaction] = {}
        self.clients: dict[TransactionKey, ClientTransaction] = {}
        # server Rule 6: wire-form Completed transactions, (bytes, host, port) or (bytes,)
        self.completed: dict[TransactionKey, tuple[bytes] | tuple[bytes, str, int]] = {}

    # ---- driver methods ----------------------------------------------------

    def find_server(self, key: TransactionKey) -> ServerTransaction | None:
        """The server transaction filed under ``key``, or None.

        A wire-form Completed one (Rule 6) comes back as a machine again, in
        Completed, replaying its bytes: that happens for retransmissions only.
        """
        txn = self.servers.get(key)
        if txn is None and key in self.completed:
            entry = self.completed.pop(key)
            data = entry[0]
            destination = (entry[1], entry[2]) if len(entry) == 3 else None
            txn = ServerTransaction(None, destination, timers=self.timers)
            txn.state = COMPLETED
            txn.last_response = data
            txn.key = key
            self.servers[key] = txn
        return txn

    def has_server(self, key: TransactionKey) -> bool:
        """Whether a server transaction holds ``key`` (without bringing a wire-form one back)."""
        return key in self.servers or key in self.completed

    def find_client(self, key: TransactionKey) -> ClientTransaction | None:
        return self.clients.get(key)

    def create_server(
        self,
        request: Request,
        key: TransactionKey | None = None,
        *,
        destination: Address | None = None,
        reliable: bool = False,
        context: object = None,
    ) -> ServerTransaction:
        """A new server transaction for ``request`` (``key``: its ``server_key``, if known).

        Call ``start`` next: its ``DeliverToTU`` hands the request to the TU.
        """
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError("INVITE transactions are handled statelessly", 500)
        if key is None:
            key = server_key(request)
        if key in self.servers or key in self.completed:
            raise LocalProtocolError("a server transaction for this request exists", 500)
        txn = ServerTransaction(request, destination, reliable=reliable, timers=self.timers)
        txn.key = key
        txn.context = context
        self.servers[key] = txn
        return txn

    def create_client(
        self,
        request: Request,
        *,
        destination: Address | None = None,
        reliable: bool = False,
        context: object = None,
    ) -> ClientTransaction:
        """A client transaction for ``request`` (it carries its top Via); ``start`` sends it."""
        key = client_key(request)
        if key is None or not (request.branch or "").startswith(MAGIC_COOKIE):
            raise LocalProtocolError("outgoing requests need a top Via with a z9hG4bK branch", 500)
        if key in self.clients:
            raise LocalProtocolError(f"branch {key[1]} already in use", 500)
        txn = ClientTransaction(request, destination, reliable=reliable, timers=self.timers)
        txn.key = key
        txn.context = context
        self.clients[key] = txn
        return txn

    def _settle(
        self, txn: ServerTransaction | ClientTransaction, actions: list[Action]
    ) -> list[Action]:
        """Forget ``txn`` when its actions end with Terminated (every machine puts it last)."""
        if actions and actions[-1].__class__ is Terminated:
            table: dict[TransactionKey, Any] = (
                self.servers if txn.__class__ is ServerTransaction else self.clients
            )
            if table.get(txn.key) is txn:
                del table[txn.key]
        return actions

    def start(self, txn: ServerTransaction | ClientTransaction) -> list[Action]:
        return self._settle(txn, txn.start())

    def retransmitted(self, txn: ServerTransaction, request: Request) -> list[Action]:
        """``request`` matched ``txn`` (``find_server``): absorbed or answered again."""
        return self._settle(txn, txn.receive_request(request))

    def respond(self, txn: ServerTransaction, response: Response) -> list[Action]:
        return self._settle(txn, txn.send_response(response))

    def expect_answer(self, txn: ServerTransaction, seconds: float) -> list[Action]:
        return txn.expect_answer(seconds)

    def keep_wire(
        self, txn: ServerTransaction, data: bytes, destination: Address | None = None
    ) -> None:
        """Rule 6: ``data`` is the final response as sent to ``destination``.

        In Completed (an unreliable transport) the transaction is filed as
        a flat tuple from now on, its driver context dropped; retransmissions
        get ``Send(data, destination)`` (``destination`` defaults to the
        transaction's).  Otherwise nothing changes.
        """
        if txn.state is not COMPLETED or self.servers.get(txn.key) is not txn:
            return
        if txn.last_response is not None:  # ServerTransaction.keep_wire, inline (every request)
            txn.last_response = data
            txn.request = None
        if destination is not None:
            txn.destination = destination
        txn.context = None
        del self.servers[txn.key]
        where = txn.destination
        self.completed[txn.key] = (data,) if where is None else (data, where[0], where[1])
        txn.state = TERMINATED  # the object is done with; the tuple is the transaction now

    def end_completed(self, key: TransactionKey, name: str) -> bool:
        """Timer ``name`` of ``key`` fired: True if a wire-form Completed entry took it.

        timer_j ends such an entry (Terminated, with nothing for the driver
        to do); other timers have nothing left to do there.  False: not such
        an entry, ask ``find_server``.
        """
        if key not in self.completed:
            return False
        if name == "timer_j":
            del self.completed[key]
        return True

    def response_received(self, txn: ClientTransaction, response: Response) -> list[Action]:
        return self._settle(txn, txn.receive_response(response))

    def fire(self, txn: ServerTransaction | ClientTransaction, name: str) -> list[Action]:
        """Timer ``name`` of ``txn`` expired."""
        return self._settle(txn, txn.on_timer(name))

    def transport_error(self, txn: ServerTransaction | ClientTransaction) -> list[Action]:
        """Sending for ``txn`` failed (RFC 3261 17.1.4, 17.2.4)."""
        return self._settle(txn, txn.transport_error())

    def discard(self, txn: ServerTransaction | ClientTransaction) -> None:
        """Forget ``txn`` without further actions (its driver failed halfway through it)."""
        table: dict[TransactionKey, Any] = (
            self.servers if isinstance(txn, ServerTransaction) else self.clients
        )
        if table.get(txn.key) is txn:
            del table[txn.key]

    def clear(self) -> None:
        self.servers.clear()
        self.clients.clear()
        self.completed.clear()

    # ---- key-based methods -------------------------------------------------

    @staticmethod
    def _pairs(key: TransactionKey, actions: list[Action]) -> list[tuple[TransactionKey, Action]]:
        return [(key, action) for action in actions]

    def receive_request(
        self, request: Request, destination: Address | None, *, reliable: bool = False
    ) -> list[tuple[TransactionKey, Action]]:
        """A request from the network: a new server transaction or a retransmission."""
        if request.method in ("INVITE", "ACK"):
            raise LocalProtocolError("INVITE transactions are handled statelessly", 500)
        key = server_key(request)
        txn = self.find_server(key)
        if txn is not None:
            return self._pairs(key, self.retransmitted(txn, request))
        txn = self.create_server(request, key, destination=destination, reliable=reliable)
        return self._pairs(key, self.start(txn))

    def send_response(
        self, request: Request, response: Response
    ) -> list[tuple[TransactionKey, Action]]:
        key = server_key(request)
        txn = self.find_server(key)
        if txn is None:
            raise LocalProtocolError("no server transaction for this request", 500)
        return self._pairs(key, self.respond(txn, response))

    def send_request(
        self, request: Request, destination: Address | None, *, reliable: bool = False
    ) -> list[tuple[TransactionKey, Action]]:
        txn = self.create_client(request, destination=destination, reliable=reliable)
        return self._pairs(txn.key, self.start(txn))

    def receive_response(self, response: Response) -> list[tuple[TransactionKey, Action]]:
        """A response from the network; unmatched ones are dropped (RFC 3261 18.1.2)."""
        key = client_key(response)
        txn = self.clients.get(key) if key is not None else None
        if key is None or txn is None:
            logger.debug("dropping response without transaction: %r", response)
            return []
        return self._pairs(key, self.response_received(txn, response))

    def on_timer(self, key: TransactionKey, name: str) -> list[tuple[TransactionKey, Action]]:
        if key in self.completed:
            if name != "timer_j":
                return []
            del self.completed[key]
            return [(key, _TERMINATED_COMPLETED)]
        txn: ServerTransaction | ClientTransaction | None = self.servers.get(
            key
        ) or self.clients.get(key)
        if txn is None:
            return []
        return self._pairs(key, self.fire(txn, name))
