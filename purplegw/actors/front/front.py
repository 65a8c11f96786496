"""The SIP front: transports, transactions and request routing on one loop thread.

``SipFront(config, router)`` owns an asyncio loop running in its own thread
(``purplegw-sip-front``). Everything SIP happens there: the transports hand
each parsed message to :meth:`SipFront._on_message`, which matches it to a
server transaction (absorbing retransmissions), answers what the front
answers itself (OPTIONS, INVITE, unknown methods, malformed requests), and
gives the rest to the router. The hot path is deliberately short: parse,
match transaction, route, answer; nothing on it blocks or crosses threads.

Transaction state has one owner, the sans-IO ``purplegw.sip.transaction.
TransactionLayer`` (the code the unit tests, the fuzz targets and the RFC
4475 corpus exercise): the front asks it for the transaction of each message,
performs the actions it returns (``Send`` on the transports, ``StartTimer``/
``CancelTimer`` on :class:`TimerService`, ``DeliverToTU`` to the router or the
waiting future) and keeps its own per-transaction data in the transaction's
``context``: the request's :class:`Source` for a server transaction, the
destination and future for a client one. A final response sent over UDP is
handed back to the layer as bytes (``keep_wire``), with the reply address as
the context, so the 64*T1 of completed transactions a busy front holds are no
message trees for the garbage collector to walk.

Router interface (see docs/sip-front.md)::

    class Router(Protocol):
        allow: frozenset[str]          # methods the router handles, e.g. {"MESSAGE", ...}
        def attach(self, front: SipFront) -> None: ...     # optional, called once on start
        def handle(self, request: Request, source: Source, reply: Reply) -> Response | None: ...

``handle`` runs on the front's loop thread and must not block. It returns the
final response, or ``None`` and calls ``reply(response)`` later, from any
thread (an account actor, for example). An exception in ``handle`` becomes a
500 and a log line. A request not answered within ``deferred_timeout``
seconds gets a 500 (the layer's timer_tu) so the transaction does not leak.

Method policy (why): the gateway does instant messages and presence, not
calls. INVITE therefore gets **405 Method Not Allowed** with an Allow header
(RFC 3261 21.4.6: the method is known but not supported by this resource), not
488 (that code is about the session description and invites a retry with
another offer). The 405 is sent statelessly, as Kamailio's ``sl_send_reply``
does: a retransmitted INVITE is answered again and its ACK is dropped, so no
INVITE server transaction (timers G/H/I) is kept for a call that never
happens. Other methods that RFC 3261 or its extensions define but the router
does not handle also get 405 + Allow; unknown methods get **501 Not
Implemented** + Allow (RFC 3261 8.2.1, RFC 4475 3.1.1.2 "intmeth").

Rate limit per source (``rate_per_source``, ``burst_per_source``; sources in
``trusted`` are exempt, since a fronting proxy carries many users from one
address): checked before validation, transactions, routing, digest or store
work. Over the limit a request gets a stateless **503 Service Unavailable +
Retry-After** (RFC 3261 21.5.4), while the source's answer budget lasts
(purplegw.sip.ratelimit Rule 2); beyond that UDP requests are dropped without
an answer, before they are even parsed, so a flood buys neither CPU nor
reflected traffic. A retransmission over the limit is dropped, never given a
503 after its first answer. IPv6 sources are keyed by /64.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

from purplegw import metrics
from purplegw.actors.front.timers import TimerService
from purplegw.actors.front.transport import (
    Address,
    Listener,
    Source,
    StreamConnection,
    TransportConfig,
    TransportLayer,
)
from purplegw.sip.actions import Action, CancelTimer, DeliverToTU, Send, StartTimer
from purplegw.sip.errors import RemoteProtocolError
from purplegw.sip.headers import Headers
from purplegw.sip.message import Request, Response, make_response, serialize, validate_request
from purplegw.sip.parser import KNOWN_METHODS, MAX_HEADER_SIZE, MAX_HEADERS
from purplegw.sip.ratelimit import RateLimiter, Verdict
from purplegw.sip.rport import response_destination, stamp_request
from purplegw.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    State,
    Timers,
    TransactionKey,
    TransactionLayer,
    client_key,
    server_key,
)

logger = logging.getLogger(__name__)

ACCEPT = "application/pidf+xml, application/xpidf+xml, text/plain, message/cpim"
SUPPORTED = "path, 100rel"  # options we tolerate in requests; we never require any
USER_AGENT = "purplegw"

Reply = Callable[[Response], None]
_SWEEP = "completed"  # the TimerService key of the in-order timer J queue


class Router(Protocol):
    """What the front asks about every request it does not answer itself."""

    allow: frozenset[str]

    def handle(self, request: Request, source: Source, reply: Reply) -> Response | None: ...


@dataclass
class FrontConfig:
    listen: list[str] = field(default_factory=lambda: ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"])
    domain: str = "localhost"
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_ca_certificates: str | None = None
    tls_verify: bool = True
    max_message_size: int = 65536
    max_header_size: int = MAX_HEADER_SIZE
    max_headers: int = MAX_HEADERS
    tcp_idle_timeout: float = 300.0
    tcp_message_timeout: float = 32.0
    max_connections: int = 12288
    max_connections_per_source: int = 0  # 0: no per-source bound
    max_outgoing_connections: int = 1024
    evict_busiest: bool = True
    trusted: list[str] = field(default_factory=list)
    # 0: no per-source limit (the library default; the daemon's is in etc/purplegw.toml)
    rate_per_source: float = 0.0
    burst_per_source: int = 200
    rate_limit_table_size: int = 16384
    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    deferred_timeout: float = 30.0

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> FrontConfig:
        section = dict(section or {})
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in section.items() if k in known}
        for key in ("tls_certificate", "tls_private_key", "tls_ca_certificates"):
            if values.get(key) == "":
                values[key] = None
        if isinstance(values.get("listen"), str):
            values["listen"] = [values["listen"]]
        return cls(**values)

    def transport_config(self) -> TransportConfig:
        return TransportConfig(
            max_message_size=self.max_message_size,
            max_header_size=self.max_header_size,
            max_headers=self.max_headers,
            tcp_message_timeout=self.tcp_message_timeout,
            tcp_idle_timeout=self.tcp_idle_timeout,
            max_connections=self.max_connections,
            max_connections_per_source=self.max_connections_per_source,
            max_outgoing_connections=self.max_outgoing_connections,
            evict_busiest=self.evict_busiest,
            tls_certificate=self.tls_certificate,
            tls_private_key=self.tls_private_key,
            tls_ca_certificates=self.tls_ca_certificates,
            tls_verify=self.tls_verify,
        )


class _Outgoing:
    """A client transaction's context: where its request goes and who waits for the answer."""

    __slots__ = ("connection", "dest", "future", "on_error")

    def __init__(
        self,
        dest: Address,
        connection: StreamConnection | None,
        future: concurrent.futures.Future[Response],
    ) -> None:
        self.dest = dest
        self.connection = connection
        self.future = future
        self.on_error: Callable[[Exception], None] | None = None


class SipFront:
    """The SIP front. ``start()`` binds the listeners; ``stop()`` closes everything."""

    def __init__(self, config: FrontConfig | dict[str, Any], router: Router) -> None:
        self.config = (
            config if isinstance(config, FrontConfig) else FrontConfig.from_section(config)
        )
        self.router = router
        self.timer_values = Timers(
            t1=self.config.t1_ms / 1000,
            t2=self.config.t2_ms / 1000,
            t4=self.config.t4_ms / 1000,
        )
        self.loop = asyncio.new_event_loop()
        self.transports = TransportLayer(
            self.loop,
            self.config.transport_config(),
            self._on_message,
            self._on_bad_message,
        )
        self.timers = TimerService(self.loop)
        # every server and client transaction of the front, nowhere else
        self.layer = TransactionLayer(self.timer_values)
        self._loop_thread: threading.Thread | None = None
        # Calls from other threads, run in one loop callback per burst (call_in_loop).
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._calls_scheduled = False
        self._branch_prefix = "z9hG4bK" + os.urandom(4).hex()
        self._branch_counter = 0
        self.stats = {
            "requests": 0,
            "retransmissions": 0,
            "errors": 0,
            "rate_limited": 0,  # answered 503 by the per-source limit
            "rate_dropped": 0,  # over the answer budget too: no answer
        }
        self.source_limiter: RateLimiter | None = None
        if self.config.rate_per_source > 0:
            self.source_limiter = RateLimiter(
                self.config.rate_per_source,
                self.config.burst_per_source,
                max_keys=self.config.rate_limit_table_size,
            )
            self.transports.udp_gate = self._udp_gate
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in self.config.trusted]
        # Hosts exempt from the per-source limit besides ``trusted`` (a cluster's
        # other nodes, purplegw.gateway.forwarding); called on the loop, must not block.
        self.exempt: Callable[[str], bool] | None = None
        self._source_keys: dict[str, str | None] = {}
        self.transports.source_key = self._source_key
        self._limit_logged_at = 0.0
        self._allow_for: frozenset[str] | None = None
        self._allow_text = ""
        # timer J of the wire-form Completed transactions: (deadline, key) in the
        # order they were answered. They all wait the same 64*T1, so they run out
        # in that order too: one deque entry each and one TimerService timer for
        # the head, instead of a heap entry and a timer per request
        self._expiring: deque[tuple[float, TransactionKey]] = deque()
        self._expiring_delay = 0.0
        # One bound method for every timer, not one per timer for the GC to track.
        # Declared attributes (compiled by mypyc, SipFront cannot be patched
        # otherwise): a test breaks one step through them.
        self._on_server_timer: Callable[[tuple[TransactionKey, str]], None] = (
            self._server_timer_fired
        )
        self._on_sweep: Callable[[object], None] = self._sweep_completed
        self._on_client_timer: Callable[[tuple[TransactionKey, str]], None] = (
            self._client_timer_fired
        )

    # ---- lifecycle ------------------------------------------------------

    @property
    def listeners(self) -> list[Listener]:
        return list(self.transports.listeners)

    @property
    def listen(self) -> list[str]:
        """The bound addresses as listen strings (ports resolved when 0 was asked for)."""
        return [listener.listen_string for listener in self.transports.listeners]

    def start(self, timeout: float = 10.0) -> SipFront:
        self._loop_thread = threading.Thread(
            target=self._run, name="purplegw-sip-front", daemon=True
        )
        self._loop_thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start_listeners(), self.loop)
        try:
            future.result(timeout)
        except BaseException:
            self.stop()
            raise
        attach = getattr(self.router, "attach", None)
        if attach is not None:
            attach(self)
        logger.info("SIP front listening on %s", ", ".join(self.listen))
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _start_listeners(self) -> None:
        for spec in self.config.listen:
            await self.transports.listen(spec)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop_thread is None:
            return
        if self.loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
            try:
                future.result(timeout)
            except Exception:
                logger.exception("SIP front shutdown")
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout)
        self._loop_thread = None
        self.loop.close()
        logger.info("SIP front stopped")

    async def _shutdown(self) -> None:
        self.timers.clear()
        self._expiring.clear()
        for txn in list(self.layer.clients.values()):
            future = _outgoing(txn).future
            if not future.done():
                future.set_exception(ConnectionAbortedError("SIP front stopped"))
        self.layer.clear()
        await self.transports.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call_in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the front's loop soon (thread-safe).

        From the loop thread itself it is queued too, not run inline: a router
        that sends a NOTIFY while handling a SUBSCRIBE must see its 202 leave first.
        """
        if threading.current_thread() is self._loop_thread:
            self.loop.call_soon(fn, *args)
            return
        # One wake-up per burst: each call_soon_threadsafe writes the loop's
        # self-pipe, a system call that gives up the GIL, and the worker
        # answers a group commit's MESSAGEs (their 202s) all at once.  No
        # lock: a call is appended before ``_calls_scheduled`` is read, and
        # ``_run_calls`` clears it before counting, so every call is either
        # counted by the running batch or schedules the next one.
        if self.loop.is_closed():
            msg = "Event loop is closed"  # as call_soon_threadsafe says it
            raise RuntimeError(msg)
        self._calls.append((fn, args))
        if self._calls_scheduled:
            return
        self._calls_scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._run_calls)
        except RuntimeError:  # the loop is closed: as call_soon_threadsafe
            self._calls_scheduled = False
            self._calls.clear()
            raise

    def _run_calls(self) -> None:
        """Run the calls ``call_in_loop`` queued from other threads, in order."""
        self._calls_scheduled = False
        calls = self._calls
        for _ in range(len(calls)):
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:  # as the loop would for a callback of its own: log, go on
                logger.exception("SIP front: %r failed", fn)

    # ---- incoming -------------------------------------------------------

    def _on_message(self, message: Request | Response, source: Source) -> None:
        try:
            if isinstance(message, Response):
                self._on_response(message, source)
            else:
                self._on_request(message, source)
        except Exception:
            # the last line of defence: nothing a peer sends may kill the loop
            self.stats["errors"] += 1
            logger.exception("failed to process %r from %s", message, source)
            if isinstance(message, Request):
                self._abandon(message)
                self._reply_stateless(message, source, 500, "Server Internal Error")

    def _abandon(self, request: Request) -> None:
        """Forget the transaction of a request whose processing failed halfway.

        Otherwise it would sit in Trying without a timer for ever, and swallow
        the client's retransmissions.
        """
        try:
            key = server_key(request)
        except Exception:  # noqa: BLE001 - the request may be too broken to key
            return
        txn = self.layer.find_server(key)
        # a transaction whose final response went out (its wire form is kept) stands
        if txn is not None and not isinstance(txn.last_response, bytes):
            self.layer.discard(txn)
            for name in ("timer_j", "timer_tu"):
                self.timers.cancel((key, name))

    def _on_request(self, request: Request, source: Source) -> None:
        self.stats["requests"] += 1
        method = request.method
        if request.headers.top_via() is None:
            raise RemoteProtocolError("Bad Request: missing Via", 400)
        # an ACK only ever acknowledges our stateless INVITE rejections
        if method == "ACK" or (
            self.source_limiter is not None and not self._admitted(request, source)
        ):
            return
        if method == "CANCEL":
            self._stamp(request, source)
            self._on_cancel(request, source)
            return
        key = server_key(request)
        layer = self.layer
        txn = layer.find_server(key)
        if txn is not None:
            self.stats["retransmissions"] += 1
            self._perform_server(txn, layer.retransmitted(txn, request))
            return
        try:
            validate_request(request)
        except RemoteProtocolError as exc:
            self._stamp(request, source)
            self._reply_stateless(request, source, exc.status_hint, exc.reason)
            return
        self._stamp(request, source)
        if method == "INVITE":
            self._reply_stateless(request, source, 405, None, [("Allow", self._allow())])
            return
        txn = layer.create_server(request, key, reliable=source.transport != "udp", context=source)
        self._perform_server(txn, layer.start(txn))

    def _deliver(self, txn: ServerTransaction, request: Request) -> None:
        """The layer's DeliverToTU of a new request: answer it here or route it."""
        method = request.method
        allow = self.router.allow
        if method == "OPTIONS" and "OPTIONS" not in allow:
            self.respond(txn, self._options_response(request, self._allow()))
        elif method not in allow:
            status = 405 if method in KNOWN_METHODS else 501
            self.respond(txn, make_response(request, status, headers=[("Allow", self._allow())]))
        else:
            self._route(txn, request)

    # ---- per-source rate limit ------------------------------------------

    def _source_key(self, host: str) -> str | None:
        """The limiter's key for a source address; None for trusted sources (exempt)."""
        exempt = self.exempt
        if exempt is not None and exempt(host):
            return None
        keys = self._source_keys
        key = keys.get(host, "")
        if key != "":
            return key
        if len(keys) >= 4096:  # a cache, not state: spoofed floods just refill it
            keys.clear()
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            key = host
        else:
            if any(address in network for network in self._trusted):
                key = None
            elif address.version == 6:
                # one host holds a whole /64: per-address keys would be free to rotate
                key = str(ipaddress.ip_network(f"{address}/64", strict=False))
            else:
                key = host
        keys[host] = key
        return key

    def _admitted(self, request: Request, source: Source) -> bool:
        """Take a token for ``request``; if there was none, deal with it and say False."""
        limiter = self.source_limiter
        if limiter is None:
            return True
        key = self._source_key(source.host)
        if key is None:
            return True
        verdict = limiter.hit(key, time.monotonic())
        if verdict is Verdict.ALLOW:
            return True
        self._over_limit(request, source, verdict)
        return False

    def _udp_gate(self, host: str) -> bool:
        """Before parsing a datagram: False drops it (its source is over budget)."""
        limiter = self.source_limiter
        key = self._source_key(host)
        if limiter is None or key is None or not limiter.would_drop(key, time.monotonic()):
            return True
        self.stats["rate_dropped"] += 1
        return False

    def _over_limit(self, request: Request, source: Source, verdict: Verdict) -> None:
        """A request over its source's limit: dropped or refused, never routed."""
        if verdict is Verdict.DROP and source.transport == "udp":
            self.stats["rate_dropped"] += 1
            return
        if request.method != "CANCEL" and self.layer.has_server(server_key(request)):
            # its first answer stands: a retransmission never gets a different one
            self.stats["rate_dropped"] += 1
            return
        try:
            validate_request(request)
        except RemoteProtocolError as exc:
            self._stamp(request, source)
            self._reply_stateless(request, source, exc.status_hint, exc.reason)
            return
        self._stamp(request, source)
        self._refuse(request, source)

    def _refuse(self, request: Request, source: Source) -> None:
        """503 + Retry-After (RFC 3261 21.5.4), statelessly: no transaction, no router."""
        limiter = self.source_limiter
        assert limiter is not None
        now = time.monotonic()
        key = self._source_key(source.host) or source.host
        self.stats["rate_limited"] += 1
        if now - self._limit_logged_at >= 10.0:  # one line per 10 s under a flood
            self._limit_logged_at = now
            logger.warning(
                "rate limit: %s over %.0f requests/s; so far %d refused (503), %d dropped",
                key,
                limiter.rate,
                self.stats["rate_limited"],
                self.stats["rate_dropped"],
            )
        retry = str(limiter.retry_after(key, now))
        self._reply_stateless(
            request, source, 503, "Service Unavailable: rate limit", [("Retry-After", retry)]
        )

    def _route(self, txn: ServerTransaction, request: Request) -> None:
        source: Source = txn.context  # type: ignore[assignment]
        replied = False

        def reply(response: Response) -> None:
            nonlocal replied
            if replied:
                logger.warning("second reply to %r ignored", request)
                return
            replied = True
            self.call_in_loop(self._respond_later, txn, request, response)

        try:
            response = self.router.handle(request, source, reply)
        except Exception:
            logger.exception("router failed on %r from %s", request, source)
            response = make_response(request, 500, "Server Internal Error")
        if response is not None:
            if not replied:
                replied = True
                self.respond(txn, response)
        elif not txn.answered:
            self._perform_server(txn, self.layer.expect_answer(txn, self.config.deferred_timeout))

    def _respond_later(self, txn: ServerTransaction, request: Request, response: Response) -> None:
        try:
            self.respond(txn, response)
        except Exception:
            logger.exception("cannot send %r for %r", response, request)
            self._abandon(request)
            self._reply_stateless(request, txn.context, 500, "Server Internal Error")  # type: ignore[arg-type]

    def respond(self, txn: ServerTransaction, response: Response) -> None:
        """Send a response through its server transaction (loop thread only).

        A response for a transaction that has its final answer already (the
        TU was too late, timer_tu answered) or is over is dropped.
        """
        # not answered yet: a live transaction is in the layer's table of machines
        if txn.answered or self.layer.servers.get(txn.key) is not txn:
            logger.debug("response %r for a finished transaction dropped", response)
            return
        if response.status >= 200:
            request = txn.request
            assert request is not None  # dropped only once Completed, which answered covers
            metrics.sip_request(request.method, response.status)
        self._perform_server(txn, self.layer.respond(txn, response))

    def _perform_server(self, txn: ServerTransaction, actions: list[Action]) -> None:
        """Do what a server transaction asked for, in order."""
        for action in actions:
            if isinstance(action, Send):
                self._send_server(txn, action.message, action.destination)
            elif isinstance(action, StartTimer):
                if not (action.name == "timer_j" and self._expire_in_order(txn, action.seconds)):
                    self.timers.start((txn.key, action.name), action.seconds, self._on_server_timer)
            elif isinstance(action, CancelTimer):
                self.timers.cancel((txn.key, action.name))
            elif isinstance(action, DeliverToTU):
                message = action.message
                if isinstance(message, Request):
                    self._deliver(txn, message)
                elif action.timeout:
                    # timer_tu: the layer answers 500 itself (its Send follows)
                    request = txn.request
                    assert request is not None  # kept until the Send below stores the wire form
                    metrics.sip_request(request.method, 500)
                    logger.warning(
                        "no answer to %r within %ss", txn.request, self.config.deferred_timeout
                    )
                else:
                    logger.info("transport error: server transaction %s dropped", txn.key[:2])
            # Terminated: the layer has forgotten the transaction already

    def _send_server(
        self,
        txn: ServerTransaction,
        message: Request | Response | bytes,
        destination: tuple[str, int] | None,
    ) -> None:
        if isinstance(message, bytes):
            # wire-form Completed replays the final response to where it went
            assert destination is not None  # keep_wire below always gives it
            self.transports.send(message, Address("udp", *destination))
            return
        request = txn.request
        assert request is not None  # dropped only with the wire form (above)
        assert isinstance(message, Response)
        source: Source = txn.context  # type: ignore[assignment]
        target = source.reply_to
        if target is not None:
            # UDP with the reply address from the stamped Via (``_stamp``): the
            # everyday path, without the general one's Via look-up
            data = serialize(message)
            self.transports.send_datagram(data, target[0], target[1], source.listener)
            if txn.state is State.COMPLETED:
                self.layer.keep_wire(txn, data, target)
            return
        on_error = None
        if source.transport != "udp" and (source.connection is None or source.connection.closed):
            # a reconnect may fail: RFC 3261 17.2.4 tells the transaction
            def on_error(exc: Exception) -> None:
                logger.info("cannot reach %s for %r: %s", source, request, exc)
                self._perform_server(txn, self.layer.transport_error(txn))

        sent = self._send_response(message, request, source, on_error)
        if sent is not None and txn.state is State.COMPLETED:
            data, host, port = sent
            self.layer.keep_wire(txn, data, (host, port))

    def _expire_in_order(self, txn: ServerTransaction, seconds: float) -> bool:
        """Queue timer J of a wire-form Completed ``txn`` (see ``_expiring``); False: not one."""
        expiring = self._expiring
        if txn.state is not State.TERMINATED or txn.key not in self.layer.completed:
            return False
        if expiring and seconds != self._expiring_delay:
            return False  # another delay would break the order: a timer of its own
        self._expiring_delay = seconds
        expiring.append((self.loop.time() + seconds, txn.key))
        if len(expiring) == 1:
            self.timers.start(_SWEEP, seconds, self._on_sweep)
        return True

    def _sweep_completed(self, _key: object) -> None:
        """Timer J of every queued transaction whose deadline has passed, then re-arm."""
        expiring = self._expiring
        now = self.loop.time()
        fired = self._on_server_timer
        while expiring and expiring[0][0] <= now:
            key = expiring.popleft()[1]
            try:
                fired((key, "timer_j"))
            except Exception:
                # as in TimerService: one broken end must not strand the rest of the queue
                logger.exception("timer_j of %s failed", key[:2])
        if expiring:
            self.timers.start(_SWEEP, expiring[0][0] - now, self._on_sweep)

    def _server_timer_fired(self, timer_key: tuple[TransactionKey, str]) -> None:
        key, name = timer_key
        layer = self.layer
        if layer.end_completed(key, name):
            return  # timer J of a wire-form Completed transaction: nothing else to do
        txn = layer.find_server(key)
        if txn is not None:
            self._perform_server(txn, layer.fire(txn, name))

    @staticmethod
    def _stamp(request: Request, source: Source) -> None:
        """received/rport on the top Via (RFC 3261 18.2.1, RFC 3581), after validation:
        the stamped Via is not re-validated (an IPv6 ``received`` trips the grammar)."""
        try:
            via = stamp_request(request, (source.host, source.port))
        except RemoteProtocolError:
            logger.debug("cannot stamp Via of %r", request)
            return
        if source.transport == "udp" and ":" not in source.host:
            # where the answer goes, from the Via object at hand; an IPv6 source
            # keeps the path below (the stamped Via does not parse back)
            source.reply_to = response_destination(via)

    def _on_cancel(self, request: Request, source: Source) -> None:
        # A non-INVITE transaction is not affected by CANCEL (RFC 3261 9.2) and
        # INVITEs are answered statelessly: 200 if the transaction exists, else 481.
        key = server_key(request)
        has_server = self.layer.has_server
        exists = key[0] == "3261" and any(
            has_server((*key[:3], method)) for method in self.router.allow | {"OPTIONS"}
        )
        self._reply_stateless(request, source, 200 if exists else 481, None)

    def _on_bad_message(self, error: RemoteProtocolError, raw: bytes, source: Source) -> None:
        self.stats["errors"] += 1
        logger.info("malformed message from %s: %s", source, error.reason)
        if raw[:8] == b"SIP/2.0 ":
            return  # a malformed response is dropped (RFC 3261 18.1.2)
        data = error_response_bytes(raw, error.status_hint, error.reason)
        if data is not None:
            # the Via could not be parsed: the packet's source is the best guess (as with rport)
            self.transports.send(data, source.address, connection=source.connection)

    def _reply_stateless(
        self,
        request: Request,
        source: Source,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        metrics.sip_request(request.method, status)
        response = make_response(request, status, reason, to_tag=self._tag(), headers=headers)
        response.headers.add("Server", USER_AGENT)
        self._send_response(response, request, source)

    def _send_response(
        self,
        response: Response,
        request: Request,
        source: Source,
        on_error: Callable[[Exception], None] | None = None,
    ) -> tuple[bytes, str, int] | None:
        """Send to the connection of the request, else where the stamped Via says (RFC 3261 18.2.2).

        Returns ``(bytes, host, port)`` of a UDP send, for the wire-form Completed state.
        """
        data = serialize(response)
        if source.transport == "udp":
            target = source.reply_to
            if target is None:
                try:
                    via = request.top_via
                except RemoteProtocolError:
                    # the sans-IO Via grammar refuses "received=" with a bare IPv6
                    # literal after stamping; the packet's source is the answer then
                    via = None
                target = None if via is None else response_destination(via)
            host, port = (source.host, source.port) if target is None else target
            self.transports.send_datagram(data, host, port, source.listener)
            return (data, host, port)
        dest = source.address
        if source.connection is None or source.connection.closed:
            # RFC 3261 18.2.2: the connection is gone; open one to the Via's
            # received address and sent-by port (not to the old ephemeral port)
            try:
                via = request.top_via
            except RemoteProtocolError:
                via = None
            target = None if via is None else response_destination(via)
            if target is not None:
                dest = Address(source.transport, *target)
        self.transports.send(data, dest, connection=source.connection, on_error=on_error)
        return None

    def _allow(self) -> str:
        allow = self.router.allow
        if allow is not self._allow_for:  # a router may swap its set; the string follows
            self._allow_for = allow
            self._allow_text = ", ".join(sorted(set(allow) | {"OPTIONS", "ACK", "CANCEL"}))
        return self._allow_text

    def _options_response(self, request: Request, allow: str) -> Response:
        return make_response(
            request,
            200,
            to_tag=self._tag(),
            headers=[
                ("Allow", allow),
                ("Accept", ACCEPT),
                ("Accept-Encoding", "identity"),
                ("Accept-Language", "en"),
                ("Supported", SUPPORTED),
            ],
        )

    def _tag(self) -> str:
        return os.urandom(6).hex()

    # ---- outgoing requests ------------------------------------------------

    def new_branch(self) -> str:
        self._branch_counter += 1
        return f"{self._branch_prefix}.{self._branch_counter:x}"

    def send_request(
        self, request: Request, destination: Address | Source | str
    ) -> concurrent.futures.Future[Response]:
        """Send ``request`` (MESSAGE, NOTIFY...) in a client transaction; thread-safe.

        ``destination`` is an :class:`Address`, a ``"udp:host:port"`` string, or
        the :class:`Source` of an earlier request (its connection is reused).
        The returned future resolves with the final response; timer F expiry
        resolves it with a locally made 408, a transport error with a 503
        (RFC 3261 8.1.3.1). A top Via with a fresh branch is added.
        """
        future: concurrent.futures.Future[Response] = concurrent.futures.Future()
        self.call_in_loop(self._send_request, request, destination, future)
        return future

    def forward(
        self, request: Request, destination: Address
    ) -> concurrent.futures.Future[Response]:
        """Pass on a request another element sent (one proxy hop, purplegw.sip.proxy).

        As ``send_request``, but only the hop's Via is added: Max-Forwards and
        User-Agent are the sender's.  Thread-safe.
        """
        future: concurrent.futures.Future[Response] = concurrent.futures.Future()
        self.call_in_loop(self._send_request, request, destination, future, True)  # noqa: FBT003 - positional through call_in_loop
        return future

    def _send_request(
        self,
        request: Request,
        destination: Address | Source | str,
        future: concurrent.futures.Future[Response],
        proxied: bool = False,  # noqa: FBT001, FBT002 - positional through call_in_loop
    ) -> None:
        try:
            connection = None
            if isinstance(destination, Source):
                connection = destination.connection
                dest = destination.address
            elif isinstance(destination, str):
                from purplegw.actors.front.transport import parse_listen  # noqa: PLC0415

                dest = parse_listen(destination)
            else:
                dest = destination
            listener = self.transports.listener_for(dest.transport, dest.host)
            if listener is None:
                raise ConnectionError(f"no {dest.transport} listener to send {request.method} from")  # noqa: TRY301 - the handler below fails the transaction for either cause
            branch = self.new_branch()
            request.headers.add(
                "Via",
                f"SIP/2.0/{dest.transport.upper()} {listener.sent_by};branch={branch};rport",
                first=True,
            )
            if "Max-Forwards" not in request.headers and not proxied:
                request.headers.add("Max-Forwards", "70")
            if "User-Agent" not in request.headers and not proxied:
                request.headers.add("User-Agent", USER_AGENT)
            context = _Outgoing(dest, connection, future)
            txn = self.layer.create_client(
                request, reliable=dest.transport != "udp", context=context
            )
            context.on_error = lambda exc: self._client_transport_error(txn, exc)
            self._perform_client(txn, self.layer.start(txn))
        except Exception as exc:
            logger.exception("cannot send %r to %s", request, destination)
            if not future.done():
                future.set_exception(exc)

    def _on_response(self, response: Response, source: Source) -> None:
        key = client_key(response)
        txn = self.layer.find_client(key) if key is not None else None
        if txn is None:
            logger.debug("stray response %r from %s dropped", response, source)
            return
        self._perform_client(txn, self.layer.response_received(txn, response))

    def _perform_client(self, txn: ClientTransaction, actions: list[Action]) -> None:  # noqa: C901 - one branch per action kind, as _perform_server
        """Do what a client transaction asked for, in order."""
        context = _outgoing(txn)
        future = context.future
        for action in actions:
            if isinstance(action, Send):
                message = action.message
                data = message if isinstance(message, bytes) else serialize(message)
                self.transports.send(
                    data, context.dest, connection=context.connection, on_error=context.on_error
                )
            elif isinstance(action, StartTimer):
                self.timers.start((txn.key, action.name), action.seconds, self._on_client_timer)
            elif isinstance(action, CancelTimer):
                self.timers.cancel((txn.key, action.name))
            elif isinstance(action, DeliverToTU):
                if future.done():
                    continue
                if action.timeout:
                    metrics.transaction_timeout(txn.request.method)
                    future.set_result(make_response(txn.request, 408, "Request Timeout"))
                elif action.transport_error:
                    future.set_result(
                        make_response(txn.request, 503, "Service Unavailable: transport error")
                    )
                elif isinstance(action.message, Response) and action.message.status >= 200:
                    future.set_result(action.message)
            elif not future.done():  # Terminated without an outcome for the TU
                future.set_result(make_response(txn.request, 408, "Request Timeout"))

    def _client_timer_fired(self, timer_key: tuple[TransactionKey, str]) -> None:
        key, name = timer_key
        txn = self.layer.find_client(key)
        if txn is not None:
            self._perform_client(txn, self.layer.fire(txn, name))

    def _client_transport_error(self, txn: ClientTransaction, exc: Exception) -> None:
        logger.info("transport error sending to %s: %s", _outgoing(txn).dest, exc)
        self._perform_client(txn, self.layer.transport_error(txn))


def _outgoing(txn: ClientTransaction) -> _Outgoing:
    context = txn.context
    assert isinstance(context, _Outgoing)
    return context


# ---- helpers for responses ------------------------------------------------


_COPY_HEADERS = (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")


def error_response_bytes(raw: bytes, status: int, reason: str) -> bytes | None:
    """A stateless error response to a request the parser rejected.

    The request cannot be parsed, so the headers a response must echo (RFC
    3261 8.2.6.2) are copied textually; without Via, Call-ID and CSeq the peer
    could not match a response, so none is sent.
    """
    head = raw.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")[1:]
    unfolded: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and unfolded:
            unfolded[-1] += b" " + line.strip()
        else:
            unfolded.append(line)
    copied = []
    seen: set[bytes] = set()
    for line in unfolded:
        name = line.split(b":", 1)[0].strip().lower()
        if name in _COPY_HEADERS and b":" in line:
            canonical = {b"v": b"via", b"f": b"from", b"t": b"to", b"i": b"call-id"}.get(name, name)
            seen.add(canonical)
            copied.append(line)
    if not {b"via", b"call-id", b"cseq"} <= seen:
        return None
    reason_bytes = reason.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")
    out = [
        b"SIP/2.0 %d %s" % (status, reason_bytes),
        *copied,
        b"Server: " + USER_AGENT.encode(),
        b"Content-Length: 0",
    ]
    return b"\r\n".join(out) + b"\r\n\r\n"


# ---- a static router for tests and benchmarks --------------------------------


class StaticRouter:
    """A minimal routing table: known users get MESSAGE and SUBSCRIBE answered.

    ``users`` is a set of user parts (``None``: every user is known). MESSAGE
    to a known user -> ``message_status`` (202 by default: "accepted for
    delivery"); SUBSCRIBE -> 202 with Expires and Contact, then a NOTIFY
    (``Subscription-State: active``, or ``terminated`` for Expires: 0) sent to
    the subscriber in the new dialog; PUBLISH -> 200 with a SIP-ETag. Unknown
    users get 404. The received requests are kept in ``received`` for tests.
    """

    allow = frozenset({"MESSAGE", "SUBSCRIBE", "NOTIFY", "PUBLISH"})

    def __init__(
        self,
        users: Iterable[str] | None = None,
        *,
        message_status: int = 202,
        max_expires: int = 3600,
        keep: bool = True,
    ) -> None:
        self.users = None if users is None else frozenset(users)
        self.message_status = message_status
        self.max_expires = max_expires
        self.keep = keep
        self.received: list[Request] = []
        self.notify_results: list[concurrent.futures.Future[Response]] = []
        self.front: SipFront | None = None
        self._tag_prefix = os.urandom(3).hex()
        self._tags = 0
        self._notify_cseq = 0

    def attach(self, front: SipFront) -> None:
        self.front = front

    def _tag(self) -> str:
        # unique per response and unguessable enough for tests; no syscall per request
        self._tags += 1
        return f"{self._tag_prefix}{self._tags:x}"

    def handle(self, request: Request, source: Source, reply: Reply) -> Response | None:  # noqa: ARG002 - the Router interface; this router answers inline
        if self.keep:
            self.received.append(request)
        user = request.ruri.user
        if self.users is not None and user not in self.users:
            return make_response(request, 404, "Not Found", to_tag=self._tag())
        method = request.method
        if method == "MESSAGE":
            return make_response(request, self.message_status, to_tag=self._tag())
        if method == "SUBSCRIBE":
            return self._subscribe(request, source)
        if method == "PUBLISH":
            return make_response(
                request,
                200,
                headers=[
                    ("SIP-ETag", os.urandom(6).hex()),
                    ("Expires", str(min(request.expires or 3600, self.max_expires))),
                ],
            )
        return make_response(request, 200, to_tag=self._tag())

    def _subscribe(self, request: Request, source: Source) -> Response:
        requested = request.expires
        expires = self.max_expires if requested is None else min(requested, self.max_expires)
        to = request.to
        tag = to.tag if to is not None and to.tag else self._tag()
        contact = (
            f"<sip:{request.ruri.user}@{source.listener.sent_by};transport={source.transport}>"
        )
        response = make_response(
            request, 202, to_tag=tag, headers=[("Expires", str(expires)), ("Contact", contact)]
        )
        assert to is not None
        assert request.from_ is not None
        notify_headers = Headers()
        notify_headers.add("From", str(to.with_tag(tag)))
        notify_headers.add("To", request.headers.get("From") or "")
        notify_headers.add("Call-ID", request.call_id or "")
        # one counter for all dialogs: strictly increasing within each (RFC 3261 12.2.1.1)
        self._notify_cseq += 1
        notify_headers.add("CSeq", f"{self._notify_cseq} NOTIFY")
        notify_headers.add("Contact", contact)
        notify_headers.add("Event", request.headers.get("Event") or "presence")
        state = f"active;expires={expires}" if expires else "terminated;reason=timeout"
        notify_headers.add("Subscription-State", state)
        target = request.headers.contacts()
        uri = (
            str(target[0].uri)
            if target and not isinstance(target[0], str)
            else str(request.from_.uri)
        )
        notify = Request("NOTIFY", uri, notify_headers, b"")
        if self.front is not None:
            self.notify_results.append(self.front.send_request(notify, source))
        return response
