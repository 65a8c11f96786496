"""Stateful fuzz of the non-INVITE transaction layer (purplegw/sip/transaction.py).

The input bytes decode (through ``Draw``) to a sequence of operations on one
``TransactionLayer``: requests and retransmissions from the network, the TU's
responses, our own requests, responses from the network with random status
codes, branches and CSeq methods, a virtual clock that fires due timers in
deadline order, stray timer firings and transport errors, a TU that asks
for an answer deadline (timer_tu) and a driver that hands a final response's
wire form back (keep_wire), all through the driver methods the SIP front
uses or the key-based ones.  The harness acts
as the driver does (arms and cancels the timers the actions ask for, forgets
a key's timers when it terminates) and checks after every operation:

1. No exception but the documented ``LocalProtocolError``s: receiving INVITE
   or ACK, a TU response without a live server transaction or after the
   final one, our request without a z9hG4bK branch or on a branch in use.
   Each of those is raised exactly when the model predicts it.
2. A terminated transaction emits nothing more: no action for its key
   until a new transaction takes the key, and its machine answers every
   later event with ``[]`` (or ``LocalProtocolError`` for a TU response).
   It terminates at most once, and leaves the layer when it does.
3. A server transaction never sends a final response different from the
   first one: once final, every ``Send`` is that very response (or, after
   keep_wire, exactly the bytes handed back).
4. A client transaction reports at most one outcome to the TU (a final
   response, a timeout or a transport error) and nothing after it.
5. Timers are bounded: every ``StartTimer`` lies in [0, 64*T1], and, with
   timers firing in deadline order, a client transaction ends no later
   than 64*T1 + T4 after it started.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from dataclasses import dataclass, field

from purplegw.sip.actions import Action, CancelTimer, DeliverToTU, Send, StartTimer, Terminated
from purplegw.sip.errors import LocalProtocolError, SipError
from purplegw.sip.message import Request, Response, make_response, serialize, validate_request
from purplegw.sip.parser import parse_datagram
from purplegw.sip.transaction import (
    MAGIC_COOKIE,
    ClientTransaction,
    ServerTransaction,
    State,
    Timers,
    TransactionKey,
    TransactionLayer,
    client_key,
    server_key,
)

from .draw import Draw
from .target import FuzzFailure, Target, Trace, check

logger = logging.getLogger(__name__)

__all__ = ["TRANSACTIONS", "op_seeds"]

TIMERS = Timers(t1=0.5, t2=4.0, t4=5.0)
MAX_TIMER = 64 * TIMERS.t1
CLIENT_LIFETIME = 64 * TIMERS.t1 + TIMERS.t4
MAX_OPS = 200

BRANCHES = ("z9hG4bK1", "z9hG4bK2", "z9hG4bKa.b", "z9hG4bK", "Z9HG4BK1", "abc", "1", "")
SENT_BY = ("127.0.0.1:5070", "127.0.0.1:5060", "127.0.0.1", "LOCALHOST:5070")
METHODS = (
    "MESSAGE",
    "OPTIONS",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "REGISTER",
    "BYE",
    "INVITE",
    "ACK",
    "CANCEL",
    "FOO",
)
CSEQS = (1, 2, 3, 0, 2**31, 2**32 - 1)
STATUSES = (
    100,
    101,
    180,
    183,
    199,
    200,
    202,
    299,
    300,
    302,
    401,
    404,
    408,
    423,
    481,
    489,
    500,
    503,
    600,
    603,
    699,
)
TIMER_NAMES = ("timer_e", "timer_f", "timer_k", "timer_j", "timer_tu", "timer_x")
DELAYS = (0.0, 0.001, 0.25, 0.5, 1.0, 3.9, 4.0, 5.0, 31.9, 32.0, 40.0)


def _request(d: Draw) -> Request:
    method = d.choice(METHODS)
    branch = d.choice(BRANCHES)
    via = f"SIP/2.0/{d.choice(('UDP', 'TCP'))} {d.choice(SENT_BY)}"
    if branch:
        via += f";branch={branch}"
    lines = [f"{method} sip:gw@127.0.0.1 SIP/2.0"]
    if d.int(0, 15):  # now and then no Via at all (RFC 2543 matching of a broken request)
        lines.append(f"Via: {via}")
    lines += [
        f"From: <sip:alice@127.0.0.1>;tag={d.choice(('a', 'b'))}",
        "To: <sip:gw@127.0.0.1>" + d.choice(("", "", ";tag=gw")),
        f"Call-ID: {d.choice(('c1', 'c2'))}",
        f"CSeq: {d.choice(CSEQS)} {method}",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


def _response(d: Draw) -> Response:
    status = d.choice(STATUSES) if d.int(0, 3) else d.int(100, 699)
    branch = d.choice(BRANCHES)
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/UDP 127.0.0.1:5060" + (f";branch={branch}" if branch else ""),
        "From: <sip:gw@127.0.0.1>;tag=gw",
        "To: <sip:alice@127.0.0.1>;tag=x",
        "Call-ID: c1",
        f"CSeq: {d.choice(CSEQS)} {d.choice(METHODS)}",
        "Content-Length: 0",
    ]
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Response)
    return msg


@dataclass
class Life:
    """What the harness knows about the transaction that currently holds a key."""

    kind: str  # "server" or "client"
    machine: ServerTransaction | ClientTransaction
    start: float
    final: Response | None = None  # server: the final response sent
    wire: bytes | None = None  # server: its bytes, once handed back with keep_wire
    outcome: str | None = None  # client: what ended it for the TU


@dataclass
class Harness:
    d: Draw
    trace: Trace
    layer: TransactionLayer = field(default_factory=lambda: TransactionLayer(TIMERS))
    now: float = 0.0
    timers: dict[tuple[TransactionKey, str], float] = field(default_factory=dict)
    lives: dict[TransactionKey, Life] = field(default_factory=dict)
    dead: list[Life] = field(default_factory=list)
    seen_requests: list[Request] = field(default_factory=list)
    outcomes: set[str] = field(default_factory=set)

    def log(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"t={self.now:7.3f} {line}")

    # -- action bookkeeping ---------------------------------------------------
    def process(self, pairs: list[tuple[TransactionKey, Action]]) -> None:  # noqa: C901
        terminated: set[TransactionKey] = set()
        for key, action in pairs:
            self.log(f"  -> {key[:3]} {action!r}")
            check(key not in terminated, f"action after Terminated for {key}: {action!r}")
            life = self.lives.get(key)
            check(life is not None, f"action for a transaction that does not exist: {action!r}")
            assert life is not None
            if isinstance(action, StartTimer):
                check(
                    math.isfinite(action.seconds) and 0 <= action.seconds <= MAX_TIMER,
                    f"unbounded timer {action!r}",
                )
                self.timers[(key, action.name)] = self.now + action.seconds
            elif isinstance(action, CancelTimer):
                self.timers.pop((key, action.name), None)
            elif isinstance(action, Send) and life.kind == "server":
                if life.wire is not None:
                    check(
                        action.message is life.wire,
                        f"server sent {action.message!r} after keep_wire",
                    )
                    continue
                assert isinstance(action.message, Response)
                if life.final is not None:
                    check(
                        action.message is life.final,
                        f"server sent {action.message!r} after final {life.final!r}",
                    )
                elif action.message.status >= 200:
                    life.final = action.message
            elif isinstance(action, DeliverToTU) and life.kind == "client":
                check(
                    life.outcome is None,
                    f"client delivered {action!r} after its outcome {life.outcome}",
                )
                msg = action.message
                if (
                    action.timeout
                    or action.transport_error
                    or (isinstance(msg, Response) and msg.status >= 200)
                ):
                    life.outcome = repr(action)
            elif isinstance(action, Terminated):
                terminated.add(key)
                check(
                    (not self.layer.has_server(key))
                    if life.kind == "server"
                    else self.layer.clients.get(key) is not life.machine,
                    f"terminated transaction {key} is still in the layer",
                )
                if life.kind == "client":
                    check(
                        self.now - life.start <= CLIENT_LIFETIME + 1e-6,
                        f"client transaction lived {self.now - life.start} s",
                    )
                del self.lives[key]
                self.dead.append(life)
                for timer in [t for t in self.timers if t[0] == key]:
                    del self.timers[timer]
            self.outcomes.add(f"{life.kind}:{type(action).__name__}:{life.machine.state.value}")

    def _expect_error(
        self, *, allowed: bool, call: str, run: object
    ) -> list[tuple[TransactionKey, Action]]:
        """Run ``run()``; LocalProtocolError must happen exactly when ``allowed``."""
        try:
            pairs = run()  # type: ignore[operator]
        except LocalProtocolError as exc:
            self.log(f"{call} -> {exc!r}")
            check(allowed, f"{call}: unexpected {exc!r}")
            self.outcomes.add(f"refused {call.split('(', maxsplit=1)[0]}")
            return []
        check(not allowed, f"{call}: LocalProtocolError expected, got {pairs!r}")
        return pairs  # type: ignore[no-any-return]

    # -- operations -------------------------------------------------------------
    def receive_request(self) -> None:
        request = self._maybe_retransmission()
        reliable = self.d.bool()
        self.log(f"receive_request {request!r} branch={request.branch} reliable={reliable}")
        refused = request.method in ("INVITE", "ACK")
        key = None if refused else server_key(request)
        if key is not None:
            check(
                (key in self.lives) == self.layer.has_server(key),
                f"layer and harness disagree on whether {key} is live",
            )
        created = key is not None and not self.layer.has_server(key)
        pairs = self._expect_error(
            allowed=refused,
            call="receive_request",
            run=lambda: self.layer.receive_request(request, ("127.0.0.1", 5070), reliable=reliable),
        )
        if created:
            assert key is not None
            check(key not in self.lives, f"live server transaction {key} not in the layer")
            self.lives[key] = Life("server", self.layer.servers[key], self.now)
        if not refused:
            self.seen_requests.append(request)
        self.process(pairs)

    def _maybe_retransmission(self) -> Request:
        if self.seen_requests and self.d.int(0, 2) == 0:
            # the same bytes again: a retransmission (a fresh parse, as from the wire)
            old = self.d.choice(self.seen_requests)
            again = parse_datagram(serialize(old))
            assert isinstance(again, Request)
            return again
        return _request(self.d)

    def send_response(self) -> None:
        if not self.seen_requests:
            return
        request = self.d.choice(self.seen_requests)
        status = self.d.choice(STATUSES)
        response = make_response(request, status, to_tag="gw")
        key = server_key(request)
        life = self.lives.get(key)
        allowed = life is None or life.final is not None
        self.log(f"send_response {status} to {request!r} (live={life is not None})")
        pairs = self._expect_error(
            allowed=allowed,
            call=f"send_response({status})",
            run=lambda: self.layer.send_response(request, response),
        )
        self.process(pairs)

    def send_request(self) -> None:
        request = _request(self.d)
        reliable = self.d.bool()
        key = client_key(request)
        branch = request.branch or ""
        refused = (
            key is None
            or not branch.startswith(MAGIC_COOKIE)
            or key in self.lives
            or request.method in ("INVITE", "ACK")
        )
        self.log(f"send_request {request!r} branch={branch} reliable={reliable}")
        pairs = self._expect_error(
            allowed=refused,
            call="send_request",
            run=lambda: self.layer.send_request(request, ("127.0.0.1", 5070), reliable=reliable),
        )
        if not refused:
            assert key is not None
            self.lives[key] = Life("client", self.layer.clients[key], self.now)
        self.process(pairs)

    def receive_corpus(self) -> None:
        """A message from the torture corpus, as the front passes it on (validated requests)."""
        msg = parse_datagram(self.d.choice(_corpus()))
        if isinstance(msg, Response):
            self.log(f"receive_response (corpus) {msg!r}")
            self.process(self.layer.receive_response(msg))
            return
        try:
            validate_request(msg)
        except SipError:
            return  # answered 400 statelessly by the front
        refused = msg.method in ("INVITE", "ACK")
        key = None if refused else server_key(msg)
        created = key is not None and not self.layer.has_server(key)
        self.log(f"receive_request (corpus) {msg!r}")
        pairs = self._expect_error(
            allowed=refused,
            call="receive_request",
            run=lambda: self.layer.receive_request(msg, None),
        )
        if created:
            assert key is not None
            self.lives[key] = Life("server", self.layer.servers[key], self.now)
        if not refused:
            self.seen_requests.append(msg)
        self.process(pairs)

    def receive_response(self) -> None:
        response = _response(self.d)
        self.log(f"receive_response {response!r} branch={response.branch} cseq={response.cseq}")
        self.process(self.layer.receive_response(response))

    def advance(self) -> None:
        """The clock moves on; due timers fire in deadline order, as the driver's wheel does."""
        until = self.now + self.d.choice(DELAYS)
        while self.timers:
            (key, name), when = min(self.timers.items(), key=lambda item: item[1])
            if when > until:
                break
            del self.timers[(key, name)]
            self.now = max(self.now, when)
            self.log(f"fire {name} for {key[:3]}")
            self.process(self.layer.on_timer(key, name))
        self.now = until
        for key, life in self.lives.items():
            if life.kind == "client":
                check(
                    self.now - life.start <= CLIENT_LIFETIME + 1e-6,
                    f"client transaction {key} alive {self.now - life.start} s after start",
                )

    def stray_timer(self) -> None:
        """A timer the layer did not ask for (or already cancelled) fires."""
        keys = [*self.lives, *(self._key_of(life) for life in self.dead[-4:])]
        if not keys:
            return
        key = self.d.choice(keys)
        name = self.d.choice(TIMER_NAMES)
        self.log(f"stray {name} for {key[:3]}")
        self.process(self.layer.on_timer(key, name))

    @staticmethod
    def _key_of(life: Life) -> TransactionKey:
        return life.machine.key

    def transport_error(self) -> None:
        if not self.lives:
            return
        key = self.d.choice(list(self.lives))
        life = self.lives[key]
        self.log(f"transport_error for {key[:3]} in {life.machine.state.value}")
        machine = self.layer.find_server(key) or self.layer.find_client(key)
        if life.wire is not None and machine is not None:
            life.machine = machine  # a wire-form Completed one comes back as a new machine
        check(machine is life.machine, f"live transaction {key} not found by the driver lookup")
        assert machine is not None
        actions = self.layer.transport_error(machine)
        self.process([(key, action) for action in actions])

    def _live_server(self) -> tuple[TransactionKey, Life] | None:
        servers = [(key, life) for key, life in self.lives.items() if life.kind == "server"]
        return self.d.choice(servers) if servers else None

    def expect_answer(self) -> None:
        """The TU will answer later and asks for a deadline (Rule 5)."""
        chosen = self._live_server()
        if chosen is None:
            return
        key, life = chosen
        machine = life.machine
        assert isinstance(machine, ServerTransaction)
        seconds = min(self.d.choice(DELAYS), MAX_TIMER)  # the TU's choice; kept in the bound
        self.log(f"expect_answer {seconds} for {key[:3]} in {machine.state.value}")
        actions = self.layer.expect_answer(machine, seconds)
        check(
            bool(actions) == (life.final is None),
            f"expect_answer gave {actions!r} with final {life.final!r}",
        )
        self.process([(key, action) for action in actions])

    def keep_wire(self) -> None:
        """The driver hands the final response's bytes back (Rule 6)."""
        chosen = self._live_server()
        if chosen is None:
            return
        key, life = chosen
        machine = life.machine
        assert isinstance(machine, ServerTransaction)
        if life.final is None or life.wire is not None:
            return
        data = serialize(life.final)
        self.log(f"keep_wire for {key[:3]} in {machine.state.value}")
        completed = machine.state is State.COMPLETED
        self.layer.keep_wire(machine, data)
        if completed:
            life.wire = data
            check(
                machine.request is None and machine.last_response is data,
                "keep_wire kept the message objects",
            )
            check(
                key in self.layer.completed
                and key not in self.layer.servers
                and machine.state is State.TERMINATED,
                "keep_wire did not file the transaction in wire form",
            )

    def poke_dead(self) -> None:
        """A terminated machine must stay silent whatever it is told."""
        if not self.dead:
            return
        life = self.d.choice(self.dead)
        machine = life.machine
        self.log(f"poke terminated {life.kind} {machine.key[:3]}")
        check(machine.on_timer(self.d.choice(TIMER_NAMES)) == [], "terminated machine timer")
        check(machine.transport_error() == [], "terminated machine transport error")
        if isinstance(machine, ClientTransaction):
            check(machine.receive_response(_response(self.d)) == [], "terminated client response")
        elif self.seen_requests:
            request = machine.request or self.seen_requests[-1]
            check(machine.receive_request(request) == [], "terminated server request")
            try:
                machine.send_response(make_response(request, 200))
            except LocalProtocolError:
                pass
            else:
                raise FuzzFailure("terminated server transaction sent a response")

    OPS = (
        "receive_request",
        "receive_request",
        "send_response",
        "send_response",
        "receive_corpus",
        "send_request",
        "receive_response",
        "receive_response",
        "advance",
        "advance",
        "stray_timer",
        "transport_error",
        "poke_dead",
        "expect_answer",
        "keep_wire",
    )


@functools.cache
def _corpus() -> tuple[bytes, ...]:
    """Torture-corpus messages that parse (what reaches the layer at all)."""
    from .parser_targets import corpus_messages  # the corpus is read once

    out = []
    for data in corpus_messages():
        try:
            parse_datagram(data)
        except SipError:
            continue
        out.append(data)
    return tuple(out)


def run_transactions(data: bytes, trace: Trace = None) -> str:
    d = Draw(data)
    h = Harness(d, trace)
    for _ in range(MAX_OPS):
        if d.exhausted:
            break
        getattr(h, d.choice(Harness.OPS))()
    return " ".join(sorted(h.outcomes))


def op_seeds(count: int = 32, size: int = 160) -> list[bytes]:
    """Random op sequences (fixed seed), the starting pool of the stateful targets."""
    rng = random.Random(3261)  # fixed seeds, by design
    return [rng.randbytes(rng.randint(8, size)) for _ in range(count)]


TRANSACTIONS = Target(
    "transaction-layer",
    run_transactions,
    op_seeds,
    max_len=1024,
    dictionary=tuple(bytes([i]) for i in range(16)),
)
