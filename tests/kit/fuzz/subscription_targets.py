"""Stateful fuzz of dialogs, subscriptions and publications.

``subscription``: one RFC 6665 notifier ``Subscription`` (and the ``Dialog``
under it) gets random SUBSCRIBEs (initial, refresh, unsubscribe; Expires
absent, 0, too brief, huge, malformed; CSeq in order, repeated, lower,
2**31, 2**32-1; Event ids; Contact present or not), notifier decisions
(authorize, terminate, notify), NOTIFY outcomes and expiry on a virtual clock.
Invariants, from the module's rules:

1. Only ``RemoteProtocolError`` escapes a SUBSCRIBE; a notifier call raises
   ``LocalProtocolError`` exactly when ``TRANSITIONS`` has no such event in
   the current state.
2. 423 exactly when 0 < Expires < min_expires; a granted Expires is 0 or
   within [min_expires, max_expires], and so is the expiry timer.
3. An in-dialog SUBSCRIBE whose CSeq is not above the last one is refused
   and changes nothing; the dialog's remote CSeq only grows.
4. TERMINATED is final, for the subscription and its dialog; the operation
   that terminates emits exactly one ``Terminated``; after it no NOTIFY is
   sent and no timer is armed.  NOTIFY CSeqs strictly increase, and every
   NOTIFY and every response we would send parses again.

``dialog``: a UAS ``Dialog`` from a random request, then in-dialog requests
(ACK, target refreshes, others) with random CSeqs, requests we build, and
``terminate``: out-of-order CSeqs are 500, the remote CSeq only grows (ACK
aside), our CSeq strictly grows, what we build parses, and a terminated dialog
answers 481 and builds nothing.

``publication``: a ``PublicationStore`` against a model of RFC 3903 rules 1-6
(423, 412, 400, create/modify/refresh/remove, fresh entity tags, expiry).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

from purplegw.sip.actions import Action, CancelTimer, Send, StartTimer, Terminated
from purplegw.sip.dialog import Dialog, DialogState
from purplegw.sip.errors import LocalProtocolError, RemoteProtocolError
from purplegw.sip.headers import MAX_CSEQ
from purplegw.sip.message import Request, Response, serialize, validate_request
from purplegw.sip.parser import parse_datagram
from purplegw.sip.publication import TIMER_PREFIX, PublicationStore
from purplegw.sip.subscription import REASONS, TIMER, TRANSITIONS, Subscription, SubState

from .draw import Draw
from .target import FuzzFailure, Target, Trace, check
from .transaction_targets import op_seeds

logger = logging.getLogger(__name__)

__all__ = ["DIALOG", "PUBLICATION", "SUBSCRIPTION"]

MAX_OPS = 120
EXPIRES = (
    None,
    "0",
    "1",
    "59",
    "60",
    "61",
    "600",
    "3600",
    "3601",
    "4294967295",
    "99999999999999999999",
    "-1",
    "abc",
    "",
)
CSEQ_JUMPS = ("next", "next", "next", "same", "lower", "zero", "2**31", "max", "max+1", "random")
EVENTS = (
    "presence",
    "presence;id=7",
    "presence;id=",
    "presence ; id = 5",
    "presence;id=a;id=b",
    "presence;ID=x",
    "dialog",
    'presence;id="q"',
    "presence;foo",
)
CONTACTS = (
    "<sip:w@127.0.0.1:5070>",
    "<sip:w@127.0.0.1:5071;transport=tcp>",
    "*",
    "sip:w@127.0.0.1",
    None,
)
STATUSES = (200, 202, 300, 302, 404, 408, 481, 489, 500, 503, 603)


def _reparse(msg: Request | Response, what: str) -> None:
    wire = serialize(msg)
    try:
        again = parse_datagram(wire)
        if isinstance(again, Request):
            validate_request(again)
    except RemoteProtocolError as exc:
        raise FuzzFailure(f"{what} we would send does not parse: {exc!r}\n{wire!r}") from exc


def _cseq(d: Draw, last: int) -> int:
    jump = d.choice(CSEQ_JUMPS)
    values = {
        "next": last + 1,
        "same": last,
        "lower": max(0, last - 1),
        "zero": 0,
        "2**31": 2**31,
        "max": 2**32 - 1,
        "max+1": 2**32,
        "random": d.int(0, 2**32 - 1),
    }
    return values[jump]


def _subscribe(  # the fields a test varies
    d: Draw,
    *,
    call_id: str,
    from_tag: str,
    to_tag: str | None,
    cseq: int,
    method: str = "SUBSCRIBE",
) -> Request | None:
    """A SUBSCRIBE from the wire, or None if the fuzz-built bytes do not parse (400 upstream)."""
    lines = [
        f"{method} sip:alice@127.0.0.1 SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{d.int(0, 9999)}",
        f"From: <sip:w@127.0.0.1>;tag={from_tag}" if from_tag else "From: <sip:w@127.0.0.1>",
        "To: <sip:alice@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
        f"Event: {d.choice(EVENTS)}",
    ]
    expires = d.choice(EXPIRES)
    if expires is not None:
        lines.append(f"Expires: {expires}")
    contact = d.choice(CONTACTS)
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if d.int(0, 3) == 0:
        lines.append("Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com>")
    lines.append("Content-Length: 0")
    try:
        msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    except RemoteProtocolError:
        return None
    assert isinstance(msg, Request)
    return msg


@dataclass
class SubscriptionHarness:
    d: Draw
    trace: Trace
    sub: Subscription = field(init=False)
    now: float = 1000.0
    timer_at: float | None = None
    terminated: bool = False
    last_notify_cseq: int = 0
    outcomes: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        branches = itertools.count(1)
        lo = self.d.choice((1, 60, 3600))
        hi = self.d.choice((lo, 3600, 86400, 2**32 - 1))
        hi = max(hi, lo)
        self.sub = Subscription(
            "presence",
            "SIP/2.0/UDP 127.0.0.1:5060",
            lambda: f"z9hG4bKn{next(branches)}",
            min_expires=lo,
            max_expires=hi,
            default_expires=self.d.choice((lo, hi)),
        )

    def log(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"t={self.now:9.1f} [{self.sub.state.value}] {line}")

    def _check_actions(self, actions: list[Action], before: SubState) -> None:
        sub = self.sub
        terminations = 0
        for action in actions:
            self.log(f"  -> {action!r}")
            self.outcomes.add(f"{before.value}>{sub.state.value}:{type(action).__name__}")
            if isinstance(action, Send):
                msg = action.message
                if isinstance(msg, Request):
                    check(not self.terminated, f"NOTIFY after termination: {msg!r}")
                    check(msg.method == "NOTIFY", f"sent {msg.method}")
                    assert msg.cseq is not None
                    check(
                        msg.cseq.number > self.last_notify_cseq,
                        f"NOTIFY CSeq {msg.cseq.number} after {self.last_notify_cseq}",
                    )
                    self.last_notify_cseq = msg.cseq.number
                    state = msg.headers.get("Subscription-State") or ""
                    if state.startswith(("active", "pending")):
                        _, _, value = state.partition(";expires=")
                        check(
                            value.isdigit() and int(value) <= sub.max_expires,
                            f"Subscription-State {state!r} beyond max_expires",
                        )
                    _reparse(msg, "NOTIFY")
                else:
                    _reparse(msg, "response")
            elif isinstance(action, StartTimer):
                check(not self.terminated, "timer armed after termination")
                check(action.name == TIMER, f"unknown timer {action.name}")
                check(
                    sub.min_expires <= action.seconds <= sub.max_expires,
                    f"expiry timer {action.seconds} outside [{sub.min_expires}, {sub.max_expires}]",
                )
                self.timer_at = self.now + action.seconds
            elif isinstance(action, CancelTimer):
                self.timer_at = None
            elif isinstance(action, Terminated):
                terminations += 1
                check(not self.terminated, "a second Terminated")
        ended = sub.state is SubState.TERMINATED
        if self.terminated:
            check(ended, f"state went back from terminated to {sub.state.value}")
        else:
            check(
                terminations == (1 if ended else 0),
                f"{terminations} Terminated actions while going {before.value} -> "
                f"{sub.state.value}",
            )
        if ended:
            self.terminated = True
            self.timer_at = None
            check(
                sub.dialog is None or sub.dialog.state is DialogState.TERMINATED,
                "subscription terminated, dialog still confirmed",
            )

    def _decision(self, event: str, call: object) -> None:
        before = self.sub.state
        allowed = (before, event) in TRANSITIONS
        try:
            actions = call()  # type: ignore[operator]
        except LocalProtocolError as exc:
            self.log(f"  -> {exc!r}")
            check(not allowed, f"{event} refused in {before.value}: {exc!r}")
            check(self.sub.state is before, "a refused call changed the state")
            self.outcomes.add(f"refused {event} in {before.value}")
            return
        check(allowed, f"{event} accepted in {before.value}")
        self._check_actions(actions, before)

    # -- operations -------------------------------------------------------------
    def subscribe(self) -> None:
        sub = self.sub
        dialog = sub.dialog
        in_dialog = dialog is not None and self.d.int(0, 7) != 0
        if in_dialog:
            assert dialog is not None
            last = dialog.remote_cseq or 0
            request = _subscribe(
                self.d,
                call_id=dialog.id.call_id,
                from_tag=dialog.id.remote_tag,
                to_tag=dialog.id.local_tag,
                cseq=_cseq(self.d, last),
            )
        else:
            request = _subscribe(
                self.d,
                call_id=self.d.choice(("s1", "s2")),
                from_tag=self.d.choice(("w1", "w2", "")),
                to_tag=None,
                cseq=_cseq(self.d, 0),
            )
        if request is None:
            self.log("SUBSCRIBE did not parse (the front answers 400)")
            return
        before = sub.state
        last_cseq = dialog.remote_cseq if dialog is not None else None
        expires_at = sub.expires_at
        try:
            requested = request.expires
        except RemoteProtocolError:
            requested = -1
        self.log(f"SUBSCRIBE cseq={request.cseq} expires={requested} in_dialog={in_dialog}")
        try:
            actions = sub.receive_subscribe(
                request,
                self.now,
                local_tag="gw1",
                authorized=self.d.bool(),
                local_contact="<sip:gw@127.0.0.1:5060>",
            )
        except RemoteProtocolError as exc:
            self.log(f"  -> {exc!r}")
            self.outcomes.add(f"reject {exc.status_hint} in {before.value}")
            check(
                sub.state is before and sub.expires_at == expires_at,
                "a refused SUBSCRIBE changed the subscription",
            )
            if dialog is not None:
                check(dialog.remote_cseq == last_cseq, "a refused SUBSCRIBE moved the CSeq")
            return
        if requested == -1:
            raise FuzzFailure("a malformed Expires was accepted")
        asked = sub.default_expires if requested is None else requested
        first = actions[0]
        check(
            isinstance(first, Send) and isinstance(first.message, Response),
            "the SUBSCRIBE response is not the first action",
        )
        assert isinstance(first, Send)
        assert isinstance(first.message, Response)
        response = first.message
        if 0 < asked < sub.min_expires:
            check(response.status == 423 and len(actions) == 1, "too brief, not 423")
            check(sub.state is before, "423 changed the state")
            _reparse(response, "423")
            self.outcomes.add("423")
            return
        check(response.status == 200, f"SUBSCRIBE answered {response.status}")
        granted = int(response.headers.get("Expires") or -1)
        check(
            granted == 0 or sub.min_expires <= granted <= sub.max_expires,
            f"granted Expires {granted} outside [{sub.min_expires}, {sub.max_expires}]",
        )
        check(granted == min(asked, sub.max_expires), f"asked {asked}, granted {granted}")
        if before is not SubState.INIT:
            assert request.cseq is not None
            assert last_cseq is not None
            check(
                request.cseq.number > last_cseq,
                f"CSeq {request.cseq.number} accepted after {last_cseq}",
            )
        self._check_actions(actions, before)

    def authorize(self) -> None:
        self.log("authorize")
        self._decision("authorize", lambda: self.sub.authorize(self.now))

    def terminate(self) -> None:
        reason = self.d.choice(sorted(REASONS))
        self.log(f"terminate {reason}")
        self._decision("terminate", lambda: self.sub.terminate(self.now, reason))

    def notify(self) -> None:
        body = self.d.choice((b"", b"<presence/>", b"\x00\xff"))
        self.log(f"notify {body!r}")
        self._decision("notify", lambda: self.sub.notify(self.now, body))

    def advance(self) -> None:
        self.now += self.d.choice((0.5, 1.0, 59.0, 600.0, 3600.0, 86400.0))
        if self.timer_at is not None and self.timer_at <= self.now:
            self.timer_at = None
            before = self.sub.state
            self.log("expiry timer fires")
            self._check_actions(self.sub.on_timer(TIMER, self.now), before)

    def stray_timer(self) -> None:
        before = self.sub.state
        name = self.d.choice((TIMER, "other"))
        self.log(f"stray timer {name}")
        self._check_actions(self.sub.on_timer(name, self.now), before)

    def notify_response(self) -> None:
        sub = self.sub
        if sub.dialog is None:
            return
        status = self.d.choice(STATUSES)
        cseq = self.d.choice((self.last_notify_cseq, self.last_notify_cseq + 1, 1))
        response = parse_datagram(
            (
                f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn1\r\n"
                f"From: <sip:alice@127.0.0.1>;tag=gw1\r\nTo: <sip:w@127.0.0.1>;tag=w1\r\n"
                f"Call-ID: {sub.dialog.id.call_id}\r\nCSeq: {cseq} NOTIFY\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        assert isinstance(response, Response)
        before = sub.state
        self.log(f"NOTIFY answered {status} (cseq {cseq})")
        if status < 300 or before is SubState.TERMINATED:
            self._check_actions(sub.receive_notify_response(response), before)
        else:
            self._decision("notify_failed", lambda: sub.receive_notify_response(response))

    def notify_timeout(self) -> None:
        before = self.sub.state
        self.log("NOTIFY timed out")
        if before is SubState.TERMINATED:
            self._check_actions(self.sub.notify_timeout(), before)
        else:
            self._decision("notify_failed", self.sub.notify_timeout)

    OPS = (
        "subscribe",
        "subscribe",
        "subscribe",
        "authorize",
        "terminate",
        "notify",
        "notify",
        "advance",
        "advance",
        "stray_timer",
        "notify_response",
        "notify_timeout",
    )


def run_subscription(data: bytes, trace: Trace = None) -> str:
    d = Draw(data)
    h = SubscriptionHarness(d, trace)
    for _ in range(MAX_OPS):
        if d.exhausted:
            break
        getattr(h, d.choice(SubscriptionHarness.OPS))()
    return " ".join(sorted(h.outcomes))


# -- dialog ---------------------------------------------------------------------
DIALOG_METHODS = ("SUBSCRIBE", "NOTIFY", "ACK", "BYE", "INFO", "UPDATE", "MESSAGE", "REFER")


def run_dialog(data: bytes, trace: Trace = None) -> str:  # noqa: C901, PLR0912, PLR0915
    d = Draw(data)
    outcomes: set[str] = set()

    def log(line: str) -> None:
        if trace is not None:
            trace.append(line)

    first = _subscribe(
        d,
        call_id="d1",
        from_tag=d.choice(("w1", "")),
        to_tag=None,
        cseq=_cseq(d, 0),
        method=d.choice(("SUBSCRIBE", "INVITE", "REFER")),
    )
    if first is None:
        return "unparsed"
    try:
        dialog = Dialog.from_request(
            first,
            "gw1",
            local_cseq=d.choice((0, 7, 2**32 - 2)),
            local_contact=d.choice((None, "<sip:gw@127.0.0.1>")),
        )
    except RemoteProtocolError as exc:
        log(f"from_request -> {exc!r}")
        return f"refused {exc.status_hint}"
    log(f"dialog {dialog.id} remote_cseq={dialog.remote_cseq}")
    ended = False
    for _ in range(MAX_OPS):
        if d.exhausted:
            break
        op = d.int(0, 5)
        if op <= 2:  # a request from the peer
            method = d.choice(DIALOG_METHODS)
            last = dialog.remote_cseq or 0
            request = _subscribe(
                d,
                call_id="d1",
                from_tag=dialog.id.remote_tag,
                to_tag="gw1",
                cseq=_cseq(d, last),
                method=method,
            )
            if request is None:
                continue
            assert request.cseq is not None
            log(f"receive {method} cseq={request.cseq.number} (last {last})")
            before = dialog.remote_cseq
            try:
                dialog.receive_request(request)
            except RemoteProtocolError as exc:
                log(f"  -> {exc!r}")
                outcomes.add(f"refused {exc.status_hint}")
                check(dialog.remote_cseq == before, "a refused request moved the CSeq")
                if ended:
                    check(exc.status_hint == 481, f"terminated dialog answered {exc!r}")
                else:
                    check(
                        exc.status_hint == 500
                        and method != "ACK"
                        and before is not None
                        and request.cseq.number <= before,
                        f"in-order request refused: {exc!r}",
                    )
                continue
            check(not ended, "a terminated dialog accepted a request")
            if method != "ACK":
                check(
                    before is None or request.cseq.number > before,
                    f"CSeq {request.cseq.number} accepted after {before}",
                )
            outcomes.add(f"accepted {method}")
        elif op <= 4:  # a request we build
            method = d.choice(("NOTIFY", "BYE", "ACK", "INFO"))
            before_local = dialog.local_cseq
            log(f"create {method}")
            try:
                out = dialog.create_request(
                    method, via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx"
                )
            except LocalProtocolError as exc:
                log(f"  -> {exc!r}")
                check(
                    ended or method == "ACK" or before_local >= MAX_CSEQ,
                    f"create_request refused: {exc!r}",
                )
                outcomes.add(f"local refused {method}")
                continue
            check(not ended, "a terminated dialog built a request")
            check(dialog.local_cseq > before_local, "local CSeq did not grow")
            _reparse(out, f"in-dialog {method}")
            outcomes.add(f"built {method}")
        else:
            log("terminate")
            dialog.terminate()
            ended = True
        check((dialog.state is DialogState.TERMINATED) == ended, "dialog state")
    return " ".join(sorted(outcomes))


# -- publication ----------------------------------------------------------------
def run_publication(data: bytes, trace: Trace = None) -> str:  # noqa: C901, PLR0912, PLR0915
    d = Draw(data)
    counter = itertools.count(1)
    lo = d.choice((1, 60))
    hi = max(lo, d.choice((60, 3600, 2**32 - 1)))
    store = PublicationStore(
        lambda n: next(counter).to_bytes(n, "big"),
        min_expires=lo,
        max_expires=hi,
        default_expires=d.choice((lo, hi)),
    )
    model: dict[str, tuple[str, str, bytes]] = {}  # etag -> (resource, event, body)
    issued: set[str] = set()
    outcomes: set[str] = set()
    for _ in range(MAX_OPS):
        if d.exhausted:
            break
        if d.int(0, 4) == 0:
            etag = d.choice([*model, *issued, "nope"]) if model or issued else "nope"
            gone = store.on_timer(TIMER_PREFIX + etag if d.int(0, 5) else etag)
            if trace is not None:
                trace.append(f"timer {etag} -> {gone}")
            if gone is not None:
                check(gone.etag == etag and etag in model, "expired the wrong publication")
                del model[etag]
            continue
        resource = d.choice(("sip:a@gw", "sip:b@gw"))
        event = d.choice(("presence", "dialog"))
        if_match = None if d.int(0, 2) == 0 else d.choice([*model, *issued, "zz"][:8])
        expires = d.choice((None, 0, 1, 59, 60, 600, 3600, 3601, 2**32 - 1))
        body = d.choice((b"", b"<presence/>", b"<p2/>"))
        result = store.publish(resource, event, if_match=if_match, expires=expires, body=body)
        if trace is not None:
            trace.append(
                f"PUBLISH {resource} {event} if_match={if_match} expires={expires} "
                f"body={body!r} -> {result.status} {result.change} {result.etag}"
            )
        asked = store.default_expires if expires is None else expires
        outcomes.add(f"{result.status} {result.change}")
        live = if_match in model and model[if_match][:2] == (resource, event)
        if 0 < asked < lo:
            check(result.status == 423 and result.min_expires == lo, "too brief, not 423")
        elif if_match is None and (not body or asked == 0):
            check(result.status == 400, f"initial PUBLISH without body/expires: {result.status}")
        elif if_match is not None and not live:
            check(result.status == 412, f"stale SIP-If-Match answered {result.status}")
        else:
            check(result.status == 200, f"PUBLISH answered {result.status}")
            assert result.etag is not None
            if asked == 0:
                check(result.change == "removed" and not result.actions[1:], "removal")
                check(all(not isinstance(a, StartTimer) for a in result.actions), "timer")
                del model[if_match]  # type: ignore[arg-type]
            else:
                granted = min(asked, hi)
                check(result.expires == granted and lo <= granted <= hi, "granted expires")
                check(
                    result.etag not in model and result.etag not in issued,
                    f"entity tag {result.etag} reused",
                )
                check(
                    StartTimer(TIMER_PREFIX + result.etag, granted) in result.actions,
                    "no expiry timer",
                )
                old_body = model.pop(if_match)[2] if if_match is not None else None
                expect = body or old_body
                change = "created" if if_match is None else ("modified" if body else "refreshed")
                check(result.change == change, f"{result.change} instead of {change}")
                assert result.publication is not None
                check(result.publication.body == expect, "a refresh changed the state")
                model[result.etag] = (resource, event, result.publication.body)
                issued.add(result.etag)
        for res in ("sip:a@gw", "sip:b@gw"):
            for ev in ("presence", "dialog"):
                got = {p.etag: p.body for p in store.states(res, ev)}
                want = {e: m[2] for e, m in model.items() if m[:2] == (res, ev)}
                check(got == want, f"store {got} != model {want} for {res} {ev}")
    return " ".join(sorted(outcomes))


SUBSCRIPTION = Target(
    "subscription",
    run_subscription,
    op_seeds,
    max_len=1024,
    dictionary=tuple(bytes([i]) for i in range(16)),
)
DIALOG = Target(
    "dialog", run_dialog, op_seeds, max_len=1024, dictionary=tuple(bytes([i]) for i in range(16))
)
PUBLICATION = Target(
    "publication",
    run_publication,
    op_seeds,
    max_len=1024,
    dictionary=tuple(bytes([i]) for i in range(16)),
)
