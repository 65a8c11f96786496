"""The gateway service: SIP users <-> their external accounts, for messages.

``Gateway`` is the SIP front's router (REGISTER, MESSAGE) and an account
event sink (messages from external contacts).  All of its work runs on one
worker thread, in arrival order, so that store calls (SQLite/MySQL, which
block) never run on the front's loop and a user's messages keep their order.

Rules:

Rule 1. Identity: a request from a ``[sip] trusted`` network speaks for the
        user in its From header (a fronting proxy authenticated it); any
        other request must carry digest credentials of a user of the
        subscriber table, and its From must be that user (403 otherwise).
        Nobody sends as someone else, and nobody without an account row can
        use the gateway at all: it is never an open relay.  Once identified,
        a user's REGISTERs and MESSAGEs share one token bucket
        (``[sip] rate_per_user``): over it, 503 + Retry-After.
Rule 2. SIP -> external: the Request-URI is resolved by purplegw.addressing;
        the final response says what happened: 202 once the account actor
        took the message (sent or queued), 404 no account reaches the
        contact, 403 sender not allowed / bad credentials, 480 account
        offline and its queue full, 415 for bodies other than text/plain,
        message/cpim (and is-composing, which becomes a typing notification).
Rule 3. External -> SIP: a message is written to the outbox before anything
        else, then sent as a SIP MESSAGE to the user's registered contacts
        (standalone) or to ``[sip] outbound_proxy``; it leaves the outbox
        only after a 2xx.  One message in flight per user: order is kept.
        Undelivered messages wait for the user's next REGISTER, or a retry
        timer, and survive restarts.
Rule 4. Presence: PUBLISH and SUBSCRIBE, the accounts' presence and
        authorization events, and a MESSAGE "allow"/"deny" answering an
        open authorization request go to ``self.presence``
        (purplegw.actors.presence, docs/presence.md), on the same thread.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import os
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from defusedxml import ElementTree

from purplegw.actors.listener import AccountInfo, EventSink, add_sink, remove_sink
from purplegw.actors.presence import PresenceService, PresenceSettings
from purplegw.actors.state import Outcome
from purplegw.actors.front.transport import Address, Source
from purplegw.addressing import NoRoute, contact_uri, resolve
from purplegw.exceptions import StoreError
from purplegw.presence import ContactPresence
from purplegw.protocols.base import (
    AccountCredentials,
    AuthorizationAnswer,
    ConnectionState,
    TypingState,
)
from purplegw.sip.digest import DigestServer, compute_ha1
from purplegw.sip.errors import SipError
from purplegw.sip.headers import Headers
from purplegw.sip.message import Request, Response, make_response
from purplegw.sip.ratelimit import RateLimiter, Verdict
from purplegw.sip.registrar import BindingTable
from purplegw.sip.uri import parse_uri

logger = logging.getLogger(__name__)

ACCEPT = "text/plain, message/cpim, application/im-iscomposing+xml"
ISCOMPOSING_NS = "{urn:ietf:params:xml:ns:im-iscomposing}"
RETRY_DELAYS = (5.0, 15.0, 60.0, 300.0)  # undelivered outbox messages
# RFC 3261 18.1.1: a request within 200 bytes of the path MTU (1500 assumed)
# goes over a congestion-controlled transport; phones also cap UDP reads
# (pjsip at 4000 bytes), so a long message over UDP would arrive truncated.
UDP_SIZE_LIMIT = 1300
# Outcomes of a queued (202) message that mean "not now" rather than "never".
RETRIED_LATER = frozenset({408, 480, 503, 504})
# Received messages the outbox could not take (database down) are kept in
# memory and written again this often; SIP senders are told Retry-After.
STORE_RETRY_DELAY = 2.0
STORE_RETRY_AFTER = 10


@dataclass
class GatewaySettings:
    domain: str = "localhost"
    trusted: list[str] = field(default_factory=list)
    outbound_proxy: str = ""
    auth_algorithms: tuple[str, ...] = ("MD5",)
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    rate_per_user: float = 0.0  # 0: no limit
    burst_per_user: int = 50
    rate_limit_table_size: int = 16384

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> GatewaySettings:
        return cls(
            domain=section.get("domain", "localhost"),
            trusted=list(section.get("trusted", [])),
            outbound_proxy=section.get("outbound_proxy", ""),
            auth_algorithms=tuple(section.get("auth_algorithms") or ["MD5"]),
            rate_per_user=section.get("rate_per_user", 0.0),
            burst_per_user=section.get("burst_per_user", 50),
            rate_limit_table_size=section.get("rate_limit_table_size", 16384),
        )


class Gateway(EventSink):
    allow = frozenset({"REGISTER", "MESSAGE", "PUBLISH", "SUBSCRIBE"})

    def __init__(  # noqa: PLR0913
        self,
        *,
        settings: GatewaySettings,
        store: Any,
        directory: Any,
        canonical: Callable[[str], str],
        user_at_host: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
        presence: PresenceSettings | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self.canonical = canonical
        self.user_at_host = user_at_host
        self.clock = clock
        self.front: Any = None
        self.digest = DigestServer(realm=settings.domain, secret=secrets.token_bytes(32),
                                   algorithms=settings.auth_algorithms)
        self.bindings = BindingTable(min_expires=settings.min_expires,
                                     max_expires=settings.max_expires,
                                     default_expires=settings.default_expires)
        self._sources: dict[tuple[str, str], Source] = {}  # (aor, contact uri) -> where it registered
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in settings.trusted]
        self.user_limiter = (RateLimiter(settings.rate_per_user, settings.burst_per_user,
                                         max_keys=settings.rate_limit_table_size)
                             if settings.rate_per_user > 0 else None)
        self._work = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="purplegw-gateway")
        self._in_flight: set[str] = set()
        self._retry_timers: dict[str, threading.Timer] = {}
        self._retry_index: dict[str, int] = {}
        self._stopped = False
        self._unsent: dict[tuple[str, str], list[Any]] = {}
        self._unstored: deque[tuple[AccountInfo, str, str]] = deque()  # oldest first
        self._store_timer: threading.Timer | None = None
        self.proxy_address = _proxy_address(settings.outbound_proxy)
        # PUBLISH, SUBSCRIBE/NOTIFY, authorization requests (docs/presence.md)
        self.presence = PresenceService(gateway=self, settings=presence or PresenceSettings(),
                                        clock=clock)

    # --- lifecycle ------------------------------------------------------

    def attach(self, front: Any) -> None:
        self.front = front
        add_sink(self)
        self._submit(self.presence.restore)
        self._submit(self._load_unsent)
        # Messages left from an earlier run: in proxy mode they can go now;
        # in standalone mode they wait for their user's REGISTER.
        if self.proxy_address is not None:
            self._submit(self._flush_all)

    def stop(self) -> None:
        self._stopped = True
        remove_sink(self)
        for timer in [*self._retry_timers.values(), self._store_timer]:
            if timer is not None:
                timer.cancel()
        self._work.shutdown(wait=True, cancel_futures=False)
        if self._unstored:
            logger.error("%d received message(s) never reached the outbox (store unavailable)",
                         len(self._unstored))

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._stopped:
            return
        try:
            self._work.submit(self._guarded, fn, *args)
        except RuntimeError:  # shut down between the check and the submit
            logger.debug("gateway stopped; dropped %s", fn.__name__)

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            logger.exception("gateway task %s failed", fn.__name__)

    # --- SIP side (front loop thread: hand over at once) -------------------------------

    def handle(self, request: Request, source: Source, reply: Callable[[Response], None]) -> None:
        self._submit(self._handle, request, source, reply)

    def _handle(self, request: Request, source: Source, reply: Callable[[Response], None]) -> None:
        try:
            if request.method == "REGISTER":
                reply(self._register(request, source))
            elif request.method == "MESSAGE":
                self._message(request, source, reply)
            elif request.method == "PUBLISH":
                self.presence.publish(request, source, reply)
            elif request.method == "SUBSCRIBE":
                self.presence.subscribe(request, source, reply)
            else:
                reply(self._response(request, 405, headers=[("Allow", ", ".join(self.allow))]))
        except SipError as exc:
            reply(self._response(request, exc.status_hint, getattr(exc, "reason", str(exc))))
        except StoreError as exc:
            # Database down: refuse now, so the sender knows and can retry, instead
            # of leaving the transaction to the front's deferred timeout (500).
            logger.warning("%s from %s refused, store unavailable: %s", request.method, source, exc)
            reply(self._response(request, 503, "Service Unavailable: store unavailable",
                                 headers=[("Retry-After", str(STORE_RETRY_AFTER))]))

    def _response(self, request: Request, status: int, reason: str | None = None, *,
                  headers: list[tuple[str, str]] | None = None) -> Response:
        return make_response(request, status, reason, to_tag=os.urandom(4).hex(),
                             headers=headers or [])

    # identity (Rule 1)

    def _is_trusted(self, source: Source) -> bool:
        try:
            address = ipaddress.ip_address(source.host)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def _identify(self, request: Request, source: Source) -> tuple[str | None, Response | None]:
        sender = request.from_
        if sender is None or not sender.uri.is_sip or sender.uri.user is None:
            return None, self._response(request, 400, "Bad Request: From is not a SIP user")
        claimed = f"{sender.uri.user_unescaped}@{sender.uri.host.lower()}"
        if self._is_trusted(source):
            return claimed, None
        register = request.method == "REGISTER"
        header = "Authorization" if register else "Proxy-Authorization"
        now = self.clock()
        stale = False
        for value in request.headers.getall(header):
            result = self.digest.verify(request.method, value, now, self._lookup_ha1,
                                        request_uri=str(request.ruri))
            if result.ok:
                identity = f"{result.username}@{self.settings.domain}"
                if identity != claimed:
                    return None, self._response(
                        request, 403, "Forbidden: From does not match the authenticated user")
                return identity, None
            stale |= result.stale
            logger.info("Authentication of %s from %s failed: %s", result.username or "?",
                        source, result.reason)
        status, name = (401, "WWW-Authenticate") if register else (407, "Proxy-Authenticate")
        challenges = self.digest.challenge(now, secrets.token_bytes(8), stale=stale)
        return None, self._response(request, status, headers=[(name, c) for c in challenges])

    def _over_user_limit(self, request: Request, user: str) -> Response | None:
        """503 + Retry-After (RFC 3261 21.5.4) when ``user`` is over its rate, else None."""
        limiter = self.user_limiter
        if limiter is None:
            return None
        now = self.clock()
        if limiter.hit(user, now) is Verdict.ALLOW:
            return None
        logger.debug("%s over its rate limit: %s refused", user, request.method)
        return self._response(request, 503, "Service Unavailable: rate limit",
                              headers=[("Retry-After", str(limiter.retry_after(user, now)))])

    def _lookup_ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        user = self.store.users.get(username, realm)
        if user is None:
            return None
        if algorithm == "MD5":
            return user.ha1
        return compute_ha1(username, realm, user.password, algorithm) if user.password else None

    # REGISTER

    def _register(self, request: Request, source: Source) -> Response:
        identity, refusal = self._identify(request, source)
        if refusal is not None:
            return refusal
        assert identity is not None
        if (limited := self._over_user_limit(request, identity)) is not None:
            return limited
        to = request.to
        if to is None or to.uri.user is None:
            return self._response(request, 400, "Bad Request: To is not a SIP user")
        aor = f"{to.uri.user_unescaped}@{to.uri.host.lower()}"
        if aor != identity:
            return self._response(request, 403, "Forbidden: cannot register another user")
        now = self.clock()
        result = self.bindings.process(aor, request, now,
                                       (source.transport, source.host, source.port))
        if result.status == 200:  # noqa: PLR2004
            live = self.bindings.contacts(aor, now)
            self._sources = {k: v for k, v in self._sources.items() if k[0] != aor}
            for binding in live:
                self._sources[(aor, str(binding.contact.uri))] = source
            if live:
                logger.info("%s registered %d contact(s)", aor, len(live))
                self._retry_index.pop(aor, None)
                self._flush(aor)
        return self._response(request, result.status, result.reason, headers=result.headers)

    # MESSAGE (Rule 2)

    def _message(self, request: Request, source: Source,
                 reply: Callable[[Response], None]) -> None:
        sender, refusal = self._identify(request, source)
        if refusal is not None:
            reply(refusal)
            return
        assert sender is not None
        if (limited := self._over_user_limit(request, sender)) is not None:
            reply(limited)
            return
        kind, payload = _read_body(request)
        if kind == "unsupported":
            reply(self._response(request, 415, headers=[("Accept", ACCEPT)]))
            return
        if kind == "bad":
            reply(self._response(request, 400, f"Bad Request: {payload}"))
            return
        ruri = request.ruri
        if not ruri.is_sip or ruri.user is None:
            reply(self._response(request, 404, "Not Found: no contact in the Request-URI"))
            return
        proto = ruri.params.get("proto")
        route = resolve(sender, ruri.user, ruri.host, proto, self._accounts(),
                        canonical=self.canonical, user_at_host=self.user_at_host)
        if isinstance(route, NoRoute):
            reply(self._response(request, route.status, f"{_phrase(route.status)}: {route.reason}"))
            return
        if kind == "text" and self.presence.intercept_answer(sender, route, payload):
            reply(self._response(request, 200))  # "allow"/"deny": answered, not forwarded
            return
        handle = self.directory.get(route.account.sip_user, route.account.protocol)
        if handle is None:
            reply(self._response(request, 480, "Temporarily Unavailable: account not running"))
            return
        if kind == "typing":
            future = handle.send_typing(route.contact, payload)
            ok_status = 200
        else:
            message_id = _message_id(request)
            if (route.account.sip_user, route.account.protocol) in self._unsent:
                # Messages accepted before a restart go to the account first:
                # it runs requests in arrival order, so the conversation keeps its order.
                self._resend_unsent(route.account)
            # Recorded before the account is asked: a 202 survives a crash.
            self.store.sendq.put(sip_user=route.account.sip_user,
                                 protocol=route.account.protocol, contact=route.contact,
                                 body=payload, message_id=message_id)
            future = handle.send_message(route.contact, payload, message_id)
            ok_status = 202

        def answered(done: Any) -> None:
            outcome: Outcome = done.get()
            if kind != "typing" and outcome.status != 202:  # noqa: PLR2004 - 202: still queued
                self._submit(self.store.sendq.done, message_id)
            if outcome.ok:
                reply(self._response(request, ok_status))
            else:
                reply(self._response(request, outcome.status,
                                     f"{_phrase(outcome.status)}: {outcome.reason}"))

        future.add_done_callback(answered)

    def _accounts(self) -> list[AccountCredentials]:
        return [AccountCredentials(h.info.account_id, h.info.sip_user, h.info.ext_user,
                                   h.info.protocol, "") for h in self.directory.all()]

    # --- external side (Rule 3) -------------------------------------------------------

    def on_message(self, account: AccountInfo, contact: str, text: str,
                   message_id: str | None) -> None:
        self._submit(self._incoming, account, contact, text)

    def on_typing(self, account: AccountInfo, contact: str, state: TypingState) -> None:
        self._submit(self._typing, account, contact, state)

    def on_contact_presence(self, account: AccountInfo, presence: ContactPresence) -> None:
        self._submit(self.presence.contact_presence, account, presence)

    def on_authorization_request(self, account: AccountInfo, contact: str, text: str) -> None:
        self._submit(self.presence.authorization_request, account, contact, text)

    def on_authorization_answer(self, account: AccountInfo, contact: str,
                                answer: AuthorizationAnswer) -> None:
        self._submit(self.presence.authorization_answer, account, contact, answer)

    def on_connection_state(self, account: AccountInfo, state: ConnectionState,
                            reason: str) -> None:
        self._submit(self.presence.connection_state, account, state)
        if state is ConnectionState.CONNECTED:
            self._submit(self._resend_unsent, account)

    def on_send_result(self, account: AccountInfo, message_id: str, outcome: Outcome) -> None:
        """A message answered 202 (queued, or written and awaiting the server's ack) moved on."""
        if outcome.status == 202:  # noqa: PLR2004 - written, the server's ack follows
            return
        if outcome.status in RETRIED_LATER:
            # The account stopped (shutdown, reload, gave up) before the network
            # took it: it stays recorded and goes out after the next start.
            logger.info("Queued message %s of %s kept for later: %d %s", message_id,
                        account.sip_user, outcome.status, outcome.reason)
            return
        if not outcome.ok:
            logger.warning("Queued message %s of %s could not be sent: %d %s", message_id,
                           account.sip_user, outcome.status, outcome.reason)
        self._submit(self.store.sendq.done, message_id)

    # --- accepted messages left from an earlier run -------------------------------------

    def _load_unsent(self) -> None:
        for row in self.store.sendq.pending():
            self._unsent.setdefault((row.sip_user, row.protocol), []).append(row)
        if self._unsent:
            logger.info("%d accepted message(s) from an earlier run wait for their account",
                        sum(len(rows) for rows in self._unsent.values()))

    def _resend_unsent(self, account: AccountInfo) -> None:
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            return  # kept for when the account runs
        rows = self._unsent.pop((account.sip_user, account.protocol), [])
        for row in rows:
            future = handle.send_message(row.contact, row.body, row.message_id)

            def sent(done: Any, message_id: str = row.message_id) -> None:
                if done.get().status != 202:  # noqa: PLR2004 - 202: the actor queued it again
                    self._submit(self.store.sendq.done, message_id)

            future.add_done_callback(sent)

    def _incoming(self, account: AccountInfo, contact: str, text: str) -> None:
        # The network already handed the message over: if the outbox cannot take
        # it now it waits in memory, behind any older one, until the store is back.
        self._unstored.append((account, contact, text))
        self._store_incoming()

    def _store_incoming(self) -> None:
        stored: list[str] = []
        while self._unstored:
            account, contact, text = self._unstored[0]
            try:
                self.store.outbox.put(sip_user=account.sip_user, account_id=account.account_id,
                                      protocol=account.protocol, contact=contact,
                                      body=text.encode("utf-8"))
            except StoreError as exc:
                logger.warning("Outbox unavailable, %d received message(s) kept in memory: %s",
                               len(self._unstored), exc)
                self._schedule_store_retry()
                break
            self._unstored.popleft()
            if account.sip_user not in stored:
                stored.append(account.sip_user)
        for sip_user in stored:
            self._flush(sip_user)

    def _schedule_store_retry(self) -> None:
        if self._stopped or self._store_timer is not None:
            return

        def fire() -> None:
            self._store_timer = None
            self._submit(self._store_incoming)

        timer = threading.Timer(STORE_RETRY_DELAY, fire)
        timer.daemon = True
        self._store_timer = timer
        timer.start()

    def _typing(self, account: AccountInfo, contact: str, state: TypingState) -> None:
        # Best effort, never queued: a stale "is typing" is worse than none.
        body = _iscomposing(state)
        for destination, ruri in self._destinations(account.sip_user, account.protocol):
            request = self._outgoing(account, contact, ruri, body,
                                     "application/im-iscomposing+xml")
            self.front.send_request(request, destination)

    def _flush_all(self) -> None:
        for sip_user in self.store.outbox.users_with_pending():
            self._flush(sip_user)

    def _flush(self, sip_user: str) -> None:
        """Send the user's oldest waiting message, if none is in flight."""
        if sip_user in self._in_flight or self.front is None:
            return
        try:
            pending = self.store.outbox.pending(sip_user, limit=1)
        except StoreError as exc:
            # Nothing else would wake this user's queue before its next REGISTER.
            logger.warning("Outbox of %s unreadable, retrying later: %s", sip_user, exc)
            self._schedule_retry(sip_user)
            return
        if not pending:
            return
        message = pending[0]
        destinations = self._destinations(sip_user, message.protocol)
        if not destinations:
            logger.debug("%s not registered; messages wait", sip_user)
            return
        handle = self.directory.get(sip_user, message.protocol)
        info = AccountInfo(message.account_id, sip_user, message.protocol,
                           handle.info.ext_user if handle is not None else "")
        futures = []
        for destination, ruri in destinations:
            request = self._outgoing(info, message.contact, ruri, message.body,
                                     "text/plain;charset=UTF-8")
            futures.append(self.front.send_request(request, _fit(destination, request)))
        self._in_flight.add(sip_user)
        state = {"left": len(futures), "ok": False, "status": ""}
        lock = threading.Lock()

        def done(future: concurrent.futures.Future[Response]) -> None:
            try:
                response = future.result()
                status = f"{response.status} {response.reason}"
                ok = 200 <= response.status < 300  # noqa: PLR2004
            except Exception as exc:  # noqa: BLE001
                status, ok = f"error {exc}", False
            with lock:
                state["left"] -= 1
                state["ok"] = state["ok"] or ok
                state["status"] = status
                last = state["left"] == 0
            if last:
                self._submit(self._delivered, sip_user, message.seq, bool(state["ok"]),
                             str(state["status"]))

        for future in futures:
            future.add_done_callback(done)

    def _delivered(self, sip_user: str, seq: int, ok: bool, status: str) -> None:
        self._in_flight.discard(sip_user)
        try:
            if ok:
                self.store.outbox.done(seq)
                self._retry_index.pop(sip_user, None)
                self._flush(sip_user)
                return
            logger.info("Message %d to %s not delivered (%s); kept for later",
                        seq, sip_user, status)
            self.store.outbox.failed_attempt(seq, status)
        except StoreError as exc:
            # A delivered message whose row could not be deleted is sent again
            # (at-least-once); either way the queue must be woken up again.
            logger.warning("Outbox of %s not updated after delivery (%s): %s",
                           sip_user, status, exc)
        self._schedule_retry(sip_user)

    def _schedule_retry(self, sip_user: str) -> None:
        if self._stopped or sip_user in self._retry_timers:
            return
        index = self._retry_index.get(sip_user, 0)
        delay = RETRY_DELAYS[min(index, len(RETRY_DELAYS) - 1)]
        self._retry_index[sip_user] = index + 1

        def fire() -> None:
            self._retry_timers.pop(sip_user, None)
            self._submit(self._flush, sip_user)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        self._retry_timers[sip_user] = timer
        timer.start()

    def _destinations(self, sip_user: str, protocol: str) -> list[tuple[Any, str]]:
        """(where to send, Request-URI) pairs for a request to ``sip_user``."""
        if self.proxy_address is not None:
            return [(self.proxy_address, f"sip:{sip_user};proto={protocol}")]
        out = []
        for binding in self.bindings.contacts(sip_user, self.clock()):
            uri = binding.contact.uri.with_params(proto=protocol)
            source = self._sources.get((sip_user, str(binding.contact.uri)))
            if source is not None and source.connection is not None:
                out.append((source, str(uri)))  # reuse the client's TCP/TLS connection
            else:
                transport = binding.source[0]
                out.append((Address(transport, binding.source[1], binding.source[2]), str(uri)))
        return out

    def _outgoing(self, account: AccountInfo, contact: str, ruri: str, body: bytes,
                  content_type: str) -> Request:
        credentials = AccountCredentials(account.account_id, account.sip_user, account.ext_user,
                                         account.protocol, "")
        from_uri = contact_uri(credentials, contact,
                               user_at_host=self.user_at_host(account.protocol),
                               gateway_domain=self.settings.domain)
        headers = Headers()
        headers.add("From", f"<{from_uri}>;tag={os.urandom(4).hex()}")
        headers.add("To", f"<sip:{account.sip_user}>")
        headers.add("Call-ID", f"{uuid.uuid4().hex}@{self.settings.domain}")
        headers.add("CSeq", "1 MESSAGE")
        headers.add("Content-Type", content_type)
        return Request("MESSAGE", ruri, headers, body)


# --- helpers ------------------------------------------------------------------------


def _fit(destination: Any, request: Request) -> Any:
    """Switch a large request from UDP to TCP towards the same host and port."""
    address = destination.address if isinstance(destination, Source) else destination
    if address.transport == "udp" and len(request.body) + 600 > UDP_SIZE_LIMIT:
        return Address("tcp", address.host, address.port)
    return destination


def _proxy_address(outbound_proxy: str) -> Address | None:
    if not outbound_proxy:
        return None
    uri = parse_uri(outbound_proxy)
    return Address(uri.transport or "udp", uri.host.strip("[]"), uri.port or 5060)


def _message_id(request: Request) -> str:
    # Stable across retransmissions and resends of the same request.
    cseq = request.cseq
    return uuid.uuid5(uuid.NAMESPACE_URL,
                      f"{request.call_id}/{cseq.number if cseq else 0}").hex


def _phrase(status: int) -> str:
    from purplegw.sip.message import REASON_PHRASES  # noqa: PLC0415

    return REASON_PHRASES.get(status, "Error")


def _read_body(request: Request) -> tuple[str, Any]:
    """("text", str) | ("typing", TypingState) | ("unsupported"|"bad", reason)."""
    content_type = (request.content_type or "text/plain").strip()
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = "utf-8"
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    if media == "text/plain":
        try:
            text = request.body.decode(charset)
        except (LookupError, UnicodeDecodeError):
            return "bad", f"body is not valid {charset}"
        return ("text", text) if text else ("bad", "empty message")
    if media == "message/cpim":
        return _read_cpim(request.body)
    if media == "application/im-iscomposing+xml":
        try:
            root = ElementTree.fromstring(request.body)
        except Exception:  # noqa: BLE001 - any parse failure is the sender's
            return "bad", "malformed is-composing document"
        state = (root.findtext(f"{ISCOMPOSING_NS}state") or "").strip().lower()
        return "typing", TypingState.COMPOSING if state == "active" else TypingState.ACTIVE
    return "unsupported", media


def _read_cpim(body: bytes) -> tuple[str, Any]:
    """RFC 3862: CPIM headers, blank line, MIME headers, blank line, content."""
    text = body.replace(b"\r\n", b"\n")
    parts = text.split(b"\n\n", 2)
    if len(parts) != 3:  # noqa: PLR2004
        return "bad", "malformed message/cpim"
    mime = parts[1].decode("utf-8", "replace").lower()
    if "content-type:" in mime and "text/plain" not in mime:
        return "unsupported", "message/cpim with non-text content"
    try:
        content = parts[2].decode("utf-8")
    except UnicodeDecodeError:
        return "bad", "message/cpim content is not UTF-8"
    return ("text", content) if content else ("bad", "empty message")


def _iscomposing(state: TypingState) -> bytes:
    active = "active" if state is TypingState.COMPOSING else "idle"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
        f"<state>{active}</state><contenttype>text/plain</contenttype>"
        "</isComposing>"
    ).encode()


