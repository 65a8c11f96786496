"""Messages both ways: SIP MESSAGE -> an external contact, and back into SIP.

Rules:

Rule 1. SIP -> external: the sender is identified (purplegw.gateway.identity),
        the Request-URI resolved (purplegw.gateway.addressing), and the final
        response says what happened: 202 once the account actor took the
        message (sent or queued), 404 no account reaches the contact, 403
        sender not allowed, 480 account offline and its queue full, 415 for
        bodies other than text/plain, message/cpim and is-composing (which
        becomes a typing notification, answered 200).
Rule 2. A message answered 202 is first recorded in the send queue (store
        ``sendq``) so that a restart does not lose it: rows left by an earlier
        run go to their account when it connects, before any newer message
        of the same conversation.  A row leaves the queue once its account
        says the network took it (or refused it for good).
Rule 3. External -> SIP: a message is written to the outbox before anything
        else, then sent as a SIP MESSAGE to the user's registered contacts (or
        ``[sip] outbound_proxy``, purplegw.gateway.registrar); it leaves the
        outbox only after a 2xx.  One message in flight per user: order is
        kept.  Undelivered messages wait for the user's next REGISTER, or a
        retry timer (``RETRY_DELAYS``), and survive restarts.
Rule 4. Received messages the outbox cannot take (database down) wait in
        memory, in order, and are written again every ``STORE_RETRY_DELAY``.
Rule 5. Typing notifications towards SIP are best effort, never queued: a
        stale "is typing" is worse than none.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from defusedxml import ElementTree

from purplegw.actors.front.transport import Address, Source
from purplegw.exceptions import StoreError
from purplegw.gateway.addressing import NoRoute, Route
from purplegw.gateway.identity import respond
from purplegw.gateway.model import Account, AccountRef
from purplegw.protocols.base import TypingState
from purplegw.sip.headers import Headers
from purplegw.sip.message import REASON_PHRASES, Request, Response

if TYPE_CHECKING:
    import concurrent.futures

    from purplegw.gateway.addressing import AddressBook
    from purplegw.gateway.identity import Identity
    from purplegw.gateway.ports import (
        DirectoryPort,
        FrontPort,
        Outcome,
        OutcomeFuture,
        Reply,
        StorePort,
        TimerHandle,
        WorkerPort,
    )
    from purplegw.gateway.registrar import Registrar
    from purplegw.store.sendq import PendingSend

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
# Received messages the outbox could not take are written again this often.
STORE_RETRY_DELAY = 2.0

# The "allow"/"deny" answer to an open authorization request is not forwarded
# (purplegw.gateway.authorization); True means it was such an answer.
Intercept = Callable[[str, Route, str], bool]

Body = tuple[str, "str | TypingState"]


class Messaging:
    def __init__(  # noqa: PLR0913 - the controller's collaborators, all keyword
        self, *, domain: str, identity: Identity, registrar: Registrar, addresses: AddressBook,
        store: StorePort, directory: DirectoryPort, worker: WorkerPort,
    ) -> None:
        self.domain = domain
        self.identity = identity
        self.registrar = registrar
        self.addresses = addresses
        self.store = store
        self.directory = directory
        self.worker = worker
        self.front: FrontPort | None = None
        self.intercept: Intercept = lambda _user, _route, _text: False
        self.in_flight: set[str] = set()
        self.retry_timers: dict[str, TimerHandle] = {}
        self._retry_index: dict[str, int] = {}
        self._unsent: dict[tuple[str, str], list[PendingSend]] = {}
        self.unstored: deque[tuple[Account, str, str]] = deque()  # oldest first
        self._store_timer: TimerHandle | None = None

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._load_unsent()
        # Messages left from an earlier run: in proxy mode they can go now;
        # in standalone mode they wait for their user's REGISTER.
        if self.registrar.proxy_address is not None:
            self._flush_all()

    def stop(self) -> None:
        for timer in [*self.retry_timers.values(), self._store_timer]:
            if timer is not None:
                timer.cancel()
        if self.unstored:
            logger.error("%d received message(s) never reached the outbox (store unavailable)",
                         len(self.unstored))

    # --- SIP -> external (Rules 1, 2) ------------------------------------------------

    def message(self, request: Request, source: Source, reply: Reply) -> None:  # noqa: C901 - one return per refusal
        sender = self.identity.identify(request, source)
        kind, payload = read_body(request)
        if kind == "unsupported":
            reply(respond(request, 415, headers=[("Accept", ACCEPT)]))
            return
        if kind == "bad":
            reply(respond(request, 400, f"Bad Request: {payload}"))
            return
        ruri = request.ruri
        if not ruri.is_sip or ruri.user is None:
            reply(respond(request, 404, "Not Found: no contact in the Request-URI"))
            return
        route = self.addresses.resolve(sender, ruri)
        if isinstance(route, NoRoute):
            reply(respond(request, route.status, f"{phrase(route.status)}: {route.reason}"))
            return
        if kind == "text" and isinstance(payload, str) and self.intercept(sender, route, payload):
            reply(respond(request, 200))  # "allow"/"deny": answered, not forwarded
            return
        account = route.account
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            reply(respond(request, 480, "Temporarily Unavailable: account not running"))
            return
        message_id = ""
        if isinstance(payload, TypingState):
            future = handle.send_typing(route.contact, payload)
            ok_status = 200
        else:
            message_id = _message_id(request)
            if (account.sip_user, account.protocol) in self._unsent:
                # Messages accepted before a restart go to the account first:
                # it runs requests in arrival order, so the conversation keeps its order.
                self.resend_unsent(account)
            # Recorded before the account is asked: a 202 survives a crash.
            self.store.sendq.put(sip_user=account.sip_user, protocol=account.protocol,
                                 contact=route.contact, body=payload, message_id=message_id)
            future = handle.send_message(route.contact, payload, message_id)
            ok_status = 202

        def answered(done: OutcomeFuture) -> None:
            outcome = done.get()
            if message_id and outcome.status != 202:  # 202: still queued
                self.store.sendq.done(message_id)
            if outcome.ok:
                reply(respond(request, ok_status))
            else:
                reply(respond(request, outcome.status,
                              f"{phrase(outcome.status)}: {outcome.reason}"))

        future.add_done_callback(self.worker.completion(answered))

    def send_result(self, account: Account, message_id: str, outcome: Outcome) -> None:
        """A message answered 202 (queued, or written and awaiting the server's ack) moved on."""
        if outcome.status == 202:  # written, the server's ack follows
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
        self.store.sendq.done(message_id)

    def _load_unsent(self) -> None:
        for row in self.store.sendq.pending():
            self._unsent.setdefault((row.sip_user, row.protocol), []).append(row)
        if self._unsent:
            logger.info("%d accepted message(s) from an earlier run wait for their account",
                        sum(len(rows) for rows in self._unsent.values()))

    def resend_unsent(self, account: Account) -> None:
        """Hand the account the messages it accepted (202) in an earlier run."""
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            return  # kept for when the account runs
        rows = self._unsent.pop((account.sip_user, account.protocol), [])
        for row in rows:
            future = handle.send_message(row.contact, row.body, row.message_id)

            def sent(done: OutcomeFuture, message_id: str = row.message_id) -> None:
                if done.get().status != 202:  # 202: the actor queued it again
                    self.store.sendq.done(message_id)

            future.add_done_callback(self.worker.completion(sent))

    # --- external -> SIP (Rules 3-5) -------------------------------------------------

    def incoming(self, account: Account, contact: str, text: str) -> None:
        # The network already handed the message over: if the outbox cannot take
        # it now it waits in memory, behind any older one, until the store is back.
        self.unstored.append((account, contact, text))
        self._store_incoming()

    def queue_for_user(self, account: Account, contact: str, text: str) -> None:
        """Put a message from ``contact`` in the user's outbox now and send it when possible."""
        self.store.outbox.put(sip_user=account.sip_user, account_id=account.account_id,
                              protocol=account.protocol, contact=contact,
                              body=text.encode("utf-8"))
        self.flush(account.sip_user)

    def _store_incoming(self) -> None:
        stored: list[str] = []
        while self.unstored:
            account, contact, text = self.unstored[0]
            try:
                self.store.outbox.put(sip_user=account.sip_user, account_id=account.account_id,
                                      protocol=account.protocol, contact=contact,
                                      body=text.encode("utf-8"))
            except StoreError as exc:
                logger.warning("Outbox unavailable, %d received message(s) kept in memory: %s",
                               len(self.unstored), exc)
                self._schedule_store_retry()
                break
            self.unstored.popleft()
            if account.sip_user not in stored:
                stored.append(account.sip_user)
        for sip_user in stored:
            self.flush(sip_user)

    def _schedule_store_retry(self) -> None:
        if self._store_timer is not None:
            return
        self._store_timer = self.worker.call_later(STORE_RETRY_DELAY, self._store_retry_fired)

    def _store_retry_fired(self) -> None:
        self._store_timer = None
        self._store_incoming()

    def typing(self, account: Account, contact: str, state: TypingState) -> None:
        front = self.front
        if front is None:
            return
        body = iscomposing(state)
        for destination, ruri in self.registrar.destinations(account.sip_user, account.protocol):
            request = self._outgoing(account, contact, ruri, body,
                                     "application/im-iscomposing+xml")
            front.send_request(request, destination)

    def registered(self, sip_user: str) -> None:
        """The user has live contacts again: its waiting messages go now."""
        self._retry_index.pop(sip_user, None)
        self.flush(sip_user)

    def _flush_all(self) -> None:
        for sip_user in self.store.outbox.users_with_pending():
            self.flush(sip_user)

    def flush(self, sip_user: str) -> None:
        """Send the user's oldest waiting message, if none is in flight."""
        front = self.front
        if sip_user in self.in_flight or front is None:
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
        destinations = self.registrar.destinations(sip_user, message.protocol)
        if not destinations:
            logger.debug("%s not registered; messages wait", sip_user)
            return
        handle = self.directory.get(sip_user, message.protocol)
        account = AccountRef(message.account_id, sip_user, message.protocol,
                             handle.info.ext_user if handle is not None else "")
        futures = []
        for destination, ruri in destinations:
            request = self._outgoing(account, message.contact, ruri, message.body,
                                     "text/plain;charset=UTF-8")
            futures.append(front.send_request(request, _fit(destination, request)))
        self.in_flight.add(sip_user)
        # Every callback runs on the worker (completion): no lock needed.
        tally = _Delivery(left=len(futures))

        def done(future: concurrent.futures.Future[Response]) -> None:
            try:
                response = future.result()
                status = f"{response.status} {response.reason}"
                ok = 200 <= response.status < 300
            except Exception as exc:  # noqa: BLE001 - any failure is "not delivered"
                status, ok = f"error {exc}", False
            tally.left -= 1
            tally.ok = tally.ok or ok
            tally.status = status
            if tally.left == 0:
                self.delivered(sip_user, message.seq, tally.ok, tally.status)

        for future in futures:
            future.add_done_callback(self.worker.completion(done))

    def delivered(self, sip_user: str, seq: int, ok: bool, status: str) -> None:  # noqa: FBT001
        self.in_flight.discard(sip_user)
        try:
            if ok:
                self.store.outbox.done(seq)
                self._retry_index.pop(sip_user, None)
                self.flush(sip_user)
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
        if sip_user in self.retry_timers:
            return
        index = self._retry_index.get(sip_user, 0)
        delay = RETRY_DELAYS[min(index, len(RETRY_DELAYS) - 1)]
        self._retry_index[sip_user] = index + 1
        self.retry_timers[sip_user] = self.worker.call_later(delay, self._retry_fired, sip_user)

    def _retry_fired(self, sip_user: str) -> None:
        self.retry_timers.pop(sip_user, None)
        self.flush(sip_user)

    def _outgoing(self, account: Account, contact: str, ruri: str, body: bytes,
                  content_type: str) -> Request:
        from_uri = self.addresses.contact_uri(account, contact)
        headers = Headers()
        headers.add("From", f"<{from_uri}>;tag={os.urandom(4).hex()}")
        headers.add("To", f"<sip:{account.sip_user}>")
        headers.add("Call-ID", f"{uuid.uuid4().hex}@{self.domain}")
        headers.add("CSeq", "1 MESSAGE")
        headers.add("Content-Type", content_type)
        return Request("MESSAGE", ruri, headers, body)


@dataclass
class _Delivery:
    """One outbox message sent to every contact of the user: delivered if any took it."""

    left: int
    ok: bool = False
    status: str = ""


# --- message bodies -----------------------------------------------------------------


def read_body(request: Request) -> Body:
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
        return read_cpim(request.body)
    if media == "application/im-iscomposing+xml":
        try:
            root = ElementTree.fromstring(request.body)
        except Exception:  # noqa: BLE001 - any parse failure is the sender's
            return "bad", "malformed is-composing document"
        state = (root.findtext(f"{ISCOMPOSING_NS}state") or "").strip().lower()
        return "typing", TypingState.COMPOSING if state == "active" else TypingState.ACTIVE
    return "unsupported", media


def read_cpim(body: bytes) -> Body:
    """RFC 3862: CPIM headers, blank line, MIME headers, blank line, content."""
    text = body.replace(b"\r\n", b"\n")
    parts = text.split(b"\n\n", 2)
    if len(parts) != 3:
        return "bad", "malformed message/cpim"
    mime = parts[1].decode("utf-8", "replace").lower()
    if "content-type:" in mime and "text/plain" not in mime:
        return "unsupported", "message/cpim with non-text content"
    try:
        content = parts[2].decode("utf-8")
    except UnicodeDecodeError:
        return "bad", "message/cpim content is not UTF-8"
    return ("text", content) if content else ("bad", "empty message")


def iscomposing(state: TypingState) -> bytes:
    """RFC 3994 is-composing document for ``state``."""
    active = "active" if state is TypingState.COMPOSING else "idle"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing">'
        f"<state>{active}</state><contenttype>text/plain</contenttype>"
        "</isComposing>"
    ).encode()


def phrase(status: int) -> str:
    return REASON_PHRASES.get(status, "Error")


def _message_id(request: Request) -> str:
    # Stable across retransmissions and resends of the same request.
    cseq = request.cseq
    return uuid.uuid5(uuid.NAMESPACE_URL,
                      f"{request.call_id}/{cseq.number if cseq else 0}").hex


def _fit(destination: Address | Source, request: Request) -> Address | Source:
    """Switch a large request from UDP to TCP towards the same host and port."""
    address = destination.address if isinstance(destination, Source) else destination
    if address.transport == "udp" and len(request.body) + 600 > UDP_SIZE_LIMIT:
        return Address("tcp", address.host, address.port)
    return destination
