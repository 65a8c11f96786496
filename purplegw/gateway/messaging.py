"""Messages both ways: SIP MESSAGE -> an external contact, and back into SIP.

Rules:

Rule 1. SIP -> external: the sender is identified (purplegw.gateway.identity),
        the Request-URI resolved (purplegw.gateway.addressing), and the text
        checked before anything is accepted: a NUL, more than ``[messaging]
        max_text_bytes``, or what the network cannot carry (its adapter's
        ``unsendable``) is refused 488/413 with the reason, never 202.  The
        final response says what happened: 202 once the account actor took
        the message (sent or queued), 404 no account reaches the contact, 403
        sender not allowed, 480 account offline and its queue full, 415 for
        bodies other than text/plain, message/cpim and is-composing (which
        becomes a typing notification, answered 200).
Rule 2. A message answered 202 is first recorded in the send queue (store
        ``sendq``) so that a restart does not lose it.  The MESSAGEs handled
        in one worker turn are recorded together (one transaction, one
        fsync: ``GroupCommitWriter``); each is handed to its account only
        after that commit, so a 202 never leaves before its row is durable.
        Rows left by an earlier run go to their account when it connects,
        before any newer message of the same conversation.  A row leaves the
        queue once its account says the network took it; a permanent refusal
        after the 202 moves it to the dead letters, and the SIP sender is
        told (Rule 7).
Rule 3. External -> SIP: a message is written to the outbox before anything
        else (the messages received in one worker turn in one commit), then
        sent as a SIP MESSAGE to the user's registered contacts in parallel
        (or ``[sip] outbound_proxy``, purplegw.gateway.registrar); the first
        2xx delivers it and it leaves the outbox.  One message in flight per
        conversation (user, contact): order is kept per conversation, and a
        stuck conversation never holds back another.  A message that came
        with an ack token is reported stored (``messages_stored`` on its
        account's handle) once its row committed, or once it was refused:
        until then its session does not acknowledge it to the network
        (XMPP: XEP-0198), so a crash before the commit loses nothing.
Rule 4. Delivery outcomes towards SIP: 2xx delivered; 408, 480, 503, 504, a
        transport error transient (retried after ``RETRY_DELAYS``, at most
        ``retry_attempts`` times and ``retry_max_age`` seconds); 413/513 over
        UDP is sent again over TCP, and permanent over TCP; anything else
        permanent.  Permanent failures and exhausted retries go to the dead
        letters and the external sender gets a bounce (``handle.bounce``).
        A contact that timed out ``dead_binding_timeouts`` times in a row is
        skipped until the user registers again, unless no other is left.
Rule 5. Received messages the outbox cannot take (database down) wait in
        memory, in order, and are written again every ``STORE_RETRY_DELAY``.
        Beyond ``outbox_max_messages``/``outbox_max_bytes`` per user, or
        ``sender_rate`` per external sender, a message is refused with a
        bounce (503 "outbox full", 403 "too many messages") instead.
Rule 6. Typing notifications towards SIP are best effort, never queued: a
        stale "is typing" is worse than none.
Rule 7. The SIP sender of a message that failed after its 202 gets, through
        its outbox, an RFC 5438 IMDN failure notification when the message
        asked for one (message/cpim with imdn.Disposition-Notification:
        negative-delivery), otherwise a short text from the contact's URI
        (``[messaging] notify_failures``).
Rule 8. Receipts: the contact is asked for one (``send_message(...,
        receipt=True)``) only for a message whose phone asked for
        positive-delivery, and its receipt becomes an IMDN "delivered" for
        that phone; a phone's IMDN delivered or
        displayed becomes ``handle.send_receipt``.  A received message with a
        time of its own (``sent_at``) goes to the phone as message/cpim with
        that DateTime.
Rule 9. Deleting a settled row is not a promise to anyone: the send-queue
        rows the network took and the outbox rows a phone took are deleted
        together, in one transaction every ``CLEANUP_DELAY`` seconds (or at
        once when ``CLEANUP_BATCH`` wait).  Until its deletion commits, a
        delivered outbox row is skipped by ``flush``; the conversation's next
        message leaves at once, from the rows the last flush read behind it
        (``_send_next``), so a busy conversation costs one read per
        ``FLUSH_WINDOW`` messages and no commit of its own per message.  A
        crash before the deletion sends it again (at-least-once, as before).
Rule 10. The worker never waits for a commit: the send-queue and outbox
        commits of Rules 2 and 3 and the deletions of Rule 9 run on the
        worker's store thread (``offload``), and their outcome comes back to
        the worker, which meanwhile delivers, answers and collects the next
        batch.  One send-queue and one outbox commit are under way at a
        time, so batches commit in arrival order and a failed outbox batch
        is retried before anything received after it.  What Rules 2 and 3
        promise is unchanged: the account gets a message, and the 202
        leaves, only after its row committed; a received message is sent to
        the phone only after its row committed.
Rule 11. Towards one destination (the outbound proxy, a user with one
        registered contact) a conversation's message goes as the head of a
        train with up to ``TRAIN_LENGTH`` of the rows read behind it
        (``_Train``): the front sends each next one from the 2xx of the one
        before, without a round trip through the worker, and stops at any
        other answer.  One message of the conversation is in flight at a
        time, in outbox order, as Rule 3 says; the worker is told of every
        answer and handles it as for any other message: of all the answers
        so far when the train stops (``completion``), and of those that
        came meanwhile ``TRAIN_REPORT_DELAY`` after the first of them (a
        timer), not one thread hop per message.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from purplegw import metrics
from purplegw.actors.front.transport import Address, Source
from purplegw.exceptions import StoreError
from purplegw.gateway.addressing import NoRoute, Route
from purplegw.gateway.bodies import (
    CPIM,
    Incoming,
    check_text,
    cpim_text,
    imdn,
    iscomposing,
    read_body,
)
from purplegw.gateway.identity import respond
from purplegw.gateway.model import Account, AccountRef
from purplegw.gateway.settings import MessagingSettings
from purplegw.sip.headers import Headers
from purplegw.sip.message import REASON_PHRASES, Request, Response
from purplegw.sip.ratelimit import RateLimiter, Verdict
from purplegw.store.groupcommit import GroupCommitWriter
from purplegw.store.outbox import NewIncoming
from purplegw.store.sendq import NewSend

if TYPE_CHECKING:
    import concurrent.futures

    from purplegw.gateway.addressing import AddressBook
    from purplegw.gateway.groupchat import GroupChat
    from purplegw.gateway.identity import Identity
    from purplegw.gateway.ports import (
        AccountHandlePort,
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
    from purplegw.protocols.base import TypingState
    from purplegw.store.groupcommit import Ticket
    from purplegw.store.outbox import QueuedMessage
    from purplegw.store.sendq import PendingSend

logger = logging.getLogger(__name__)

ACCEPT = "text/plain, message/cpim, application/im-iscomposing+xml"
TEXT_PLAIN = "text/plain;charset=UTF-8"
RETRY_DELAYS = (5.0, 15.0, 60.0, 300.0)  # undelivered outbox messages
# The outbox rows of the gateway's own messages (purplegw.gateway.contact_service)
# carry this in place of a protocol: no adapter has the name.
GATEWAY_PROTOCOL = "gateway"
# RFC 3261 18.1.1: a request within 200 bytes of the path MTU (1500 assumed)
# goes over a congestion-controlled transport; phones also cap UDP reads
# (pjsip at 4000 bytes), so a long message over UDP would arrive truncated.
UDP_SIZE_LIMIT = 1300
# Outcomes of a queued (202) message that mean "not now" rather than "never".
RETRIED_LATER = frozenset({408, 480, 503, 504})
# Answers of a phone (or proxy) that mean "try again later" (Rule 4).
TRANSIENT = frozenset({408, 480, 503, 504})
TOO_LARGE = frozenset({413, 513})
# A received message stamped more than this many seconds ago (XEP-0203 delay,
# Matrix origin_server_ts) reaches the phone as message/cpim with its DateTime.
DELAYED_AFTER = 60.0
# Received messages the outbox could not take are written again this often.
STORE_RETRY_DELAY = 2.0
# Settled rows are deleted together (Rule 9): after this many seconds, or at once
# when this many wait.
CLEANUP_DELAY = 0.02
CLEANUP_BATCH = 500
# How many of a user's oldest outbox rows one flush looks at for conversation heads.
FLUSH_WINDOW = 100
# At most this many of a conversation's messages go as one train (Rule 11).
TRAIN_LENGTH = 16
# A running train's answers reach the worker at most this long after they came
# (Rule 11): a row deleted, a receipt sent this much later at worst.
TRAIN_REPORT_DELAY = 0.02
# IMDN requests remembered for a receipt from the contact (Rule 8), at most,
# and for at most this many seconds across restarts.
MAX_RECEIPTS_WAITED = 10000
RECEIPT_WAIT = 7 * 86400.0
# Refusals of received messages (Rule 5), as the status handed to ``bounce``.
OUTBOX_FULL = (503, "outbox full")  # XMPP resource-constraint
TOO_FAST = (403, "too many messages")  # XMPP policy-violation

# The "allow"/"deny" answer to an open authorization request is not forwarded
# (purplegw.gateway.authorization); True means it was such an answer.
Intercept = Callable[[str, Route, str], bool]
# (protocol, text) -> None when the network can carry it, else (488|413, reason).
Unsendable = Callable[[str, str], "tuple[int, str] | None"]

Conversation = tuple[str, str]  # (sip_user, contact)


@dataclass
class _Accepted:
    """A SIP MESSAGE waiting for its send-queue row to commit (Rule 2)."""

    request: Request
    reply: Reply
    account: Account
    handle: AccountHandlePort
    contact: str
    text: str
    message_id: str
    body: Incoming


@dataclass
class _Received:
    """A message for a SIP user waiting for the outbox (Rules 3, 5)."""

    account: Account
    contact: str
    body: bytes
    content_type: str = TEXT_PLAIN
    message_id: str = ""
    report: bool = False  # written by the gateway (IMDN, failure text): nobody to bounce to
    receipts: str = ""  # what the sender asked to be told ("receipt,markable")
    arrived: float | None = None  # time.monotonic() when its account handed it on
    ack_token: int | None = None  # its session acknowledges it once stored (Rule 3)


@dataclass
class _Delivery:
    """One outbox message sent to every contact of the user: the first 2xx delivers it."""

    left: int
    settled: bool = False
    failures: list[tuple[int, str, bool]] = field(default_factory=list)  # status, text, udp


@dataclass
class _Car:
    """One outbox message of a train, its request made (Rule 11)."""

    message: QueuedMessage
    request: Request
    target: Address | Source
    ruri: str
    udp: bool


class _Train:
    """A conversation's next messages to its one destination, each sent on the 2xx of the last.

    Rule 11.  Made on the worker, then touched only by the done-callbacks
    of its requests' client transactions, on the SIP front's thread, one
    after another (a request leaves only from its predecessor's callback),
    so it needs no lock.  Each answer goes into ``reports`` as ``(car,
    next_sent, future)``, after the next request left (or not); the
    worker takes them out (``Messaging._train_report``): ``report_now(train)``
    once the train stopped, ``report_later(train)`` for the first answer
    not yet taken while it runs.
    """

    __slots__ = ("cars", "front", "report_due", "report_later", "report_now", "reports")

    def __init__(
        self,
        front: FrontPort,
        cars: list[_Car],
        report_now: Callable[[_Train], None],
        report_later: Callable[[_Train], None],
    ) -> None:
        self.front = front
        self.cars = cars
        self.report_now = report_now
        self.report_later = report_later
        # Appended on the front's thread, taken on the worker's (deque: atomic).
        self.reports: deque[tuple[_Car, bool, concurrent.futures.Future[Response]]] = deque()
        self.report_due = False  # a report_later is pending

    def start(self) -> None:
        self._go(0)

    def _go(self, index: int) -> None:
        car = self.cars[index]
        future = self.front.send_request(car.request, car.target)
        future.add_done_callback(partial(self._done, index))

    def _done(self, index: int, future: concurrent.futures.Future[Response]) -> None:
        following = index + 1 < len(self.cars) and _delivered(future)
        try:
            if following:
                self._go(index + 1)
        except Exception:
            # Not sent: the worker sends it on as without a train.  Whatever
            # happens, the worker hears of this answer, or the conversation
            # would stay in flight for good.
            logger.exception("Train of %s stopped", self.cars[index].message.sip_user)
            following = False
        self.reports.append((self.cars[index], following, future))
        if not following:
            self.report_now(self)
        elif not self.report_due:
            # Checked after the append: the worker clears it before it takes
            # the reports, so a report it may miss has its own timer.
            self.report_due = True
            self.report_later(self)


class Messaging:
    def __init__(  # noqa: PLR0913 - the controller's collaborators, all keyword
        self,
        *,
        domain: str,
        identity: Identity,
        registrar: Registrar,
        addresses: AddressBook,
        store: StorePort,
        directory: DirectoryPort,
        worker: WorkerPort,
        settings: MessagingSettings | None = None,
        unsendable: Unsendable = lambda _protocol, _text: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.domain = domain
        self.identity = identity
        self.registrar = registrar
        self.addresses = addresses
        self.store = store
        self.directory = directory
        self.worker = worker
        self.settings = settings or MessagingSettings()
        self.unsendable = unsendable
        self.clock = clock
        self.front: FrontPort | None = None
        self.intercept: Intercept = lambda _user, _route, _text: False
        self.rooms: GroupChat | None = None  # group chat takes MESSAGEs to rooms
        self.in_flight: set[Conversation] = set()
        self.retry_timers: dict[Conversation, TimerHandle] = {}
        self._retry_index: dict[Conversation, int] = {}
        self._unsent: dict[tuple[str, str], list[PendingSend]] = {}
        self.unstored: deque[_Received] = deque()  # oldest first
        self._store_timer: TimerHandle | None = None
        self._writer: GroupCommitWriter | None = None  # made at the first MESSAGE
        self._accepted: list[_Accepted] = []
        self._committing = False  # a send-queue commit is under way (Rule 10)
        self._storing = False  # an outbox commit is under way (Rule 10)
        self._active: set[str] = set()  # send-queue ids handed to an account, not settled
        self._asked: dict[str, Incoming] = {}  # send-queue id -> its IMDN request
        self._seen_seq = 0  # newest send-queue row this run knows of (requeued)
        self._tcp: set[int] = set()  # outbox seqs a phone refused as too large over UDP
        self._timeouts: dict[tuple[str, str], int] = {}  # (sip_user, ruri) -> in a row
        self._reports: set[int] = set()  # outbox seqs of the gateway's own reports
        self._imdn_wanted: dict[str, tuple[str, str]] = {}  # id -> (imdn id, user) (Rule 8)
        self._load: dict[str, list[int]] = {}  # sip_user -> [messages, bytes] waiting
        # Rows to delete with the next cleanup (Rule 9).
        self._sendq_done: list[str] = []  # send-queue ids the network took
        self._sendq_acked: list[str] = []  # ... whose phone waits for a receipt
        self._receipts_done: list[str] = []  # ... that waited for one and are done
        self._outbox_done: list[QueuedMessage] = []  # outbox messages a phone took
        self._deleting: set[int] = set()  # their seqs, until the deletion commits
        self._cleanup_due = False
        self._cleanup_timer: TimerHandle | None = None
        self._flush_again: set[str] = set()  # users whose flush saw only such rows
        # Per conversation, the outbox rows read behind the one in flight (_send_next).
        self._ahead: dict[Conversation, deque[QueuedMessage]] = {}
        self.limiter = (
            RateLimiter(self.settings.sender_rate, self.settings.sender_burst)
            if self.settings.sender_rate > 0
            else None
        )

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._load_unsent()
        # Messages left from an earlier run: in proxy mode they can go now; in
        # standalone mode to the users whose bindings the registrar restored,
        # the others wait for their user's REGISTER.
        if self.registrar.proxy_address is not None:
            self._flush_all()
            return
        registered = set(self.registrar.bindings.aors())
        if registered:
            for sip_user in self.store.outbox.users_with_pending():
                if sip_user in registered:
                    self.flush(sip_user)

    def stop(self) -> None:
        for timer in [*self.retry_timers.values(), self._store_timer, self._cleanup_timer]:
            if timer is not None:
                timer.cancel()
        if self.unstored:
            logger.error(
                "%d received message(s) never reached the outbox (store unavailable)",
                len(self.unstored),
            )

    def requeued(self) -> None:
        """Dead letters were put back (``purplegw messages retry``): send them now."""
        try:
            rows = self.store.sendq.pending_after(self._seen_seq)
            users = self.store.outbox.users_with_pending()
        except StoreError as exc:
            logger.warning("Re-queued messages not read (sent at the next start): %s", exc)
            return
        for row in rows:
            self._seen_seq = max(self._seen_seq, row.seq)
            if row.message_id in self._active:
                continue  # accepted by this run and already with its account
            self._remember_imdn(row)
            handle = self.directory.get(row.sip_user, row.protocol)
            if handle is None:
                self._unsent.setdefault((row.sip_user, row.protocol), []).append(row)
                continue
            self._hand_over(handle, row.contact, row.body, row.message_id)
        for sip_user in users:
            self._load.pop(sip_user, None)  # counted again from the table
            self.flush(sip_user)

    # --- SIP -> external (Rules 1, 2) ------------------------------------------------

    def message(self, request: Request, source: Source, reply: Reply) -> None:
        sender = self.identity.identify(request, source)
        body = read_body(request.content_type, request.body)
        if body.kind == "unsupported":
            reply(respond(request, 415, headers=[("Accept", ACCEPT)]))
            return
        if body.kind == "bad":
            reply(respond(request, 400, f"Bad Request: {body.text}"))
            return
        ruri = request.ruri
        if not ruri.is_sip or ruri.user is None:
            reply(respond(request, 404, "Not Found: no contact in the Request-URI"))
            return
        route = self.addresses.resolve(sender, ruri)
        if isinstance(route, NoRoute):
            reply(respond(request, route.status, f"{phrase(route.status)}: {route.reason}"))
            return
        if body.kind == "text" and self.intercept(sender, route, body.text):
            reply(respond(request, 200))  # "allow"/"deny": answered, not forwarded
            return
        account = route.account
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            reply(respond(request, 480, "Temporarily Unavailable: account not running"))
            return
        self._routed(request, reply, route, handle, body)

    def _routed(
        self,
        request: Request,
        reply: Reply,
        route: Route,
        handle: AccountHandlePort,
        body: Incoming,
    ) -> None:
        again = partial(self._routed, request, reply, route, handle, body)
        if self.rooms is not None and self.rooms.claim(request, reply, route, handle, body, again):
            return  # a room's (purplegw.gateway.groupchat), or being asked whether it is one
        self._to_contact(request, reply, route, handle, body)

    def _to_contact(
        self,
        request: Request,
        reply: Reply,
        route: Route,
        handle: AccountHandlePort,
        body: Incoming,
    ) -> None:
        """The rest of ``message`` for a contact that is not a room."""
        account = route.account
        if body.kind == "imdn":
            self._receipt_to_network(handle, route.contact, body)
            reply(respond(request, 200))
            return
        if body.typing is not None:
            future = handle.send_typing(route.contact, body.typing)
            future.add_done_callback(
                self.worker.completion(partial(self._typing_answered, request, reply))
            )
            return
        refusal = check_text(body.text, self.settings.max_text_bytes) or self.unsendable(
            account.protocol, body.text
        )
        if refusal is not None:
            status, reason = refusal
            metrics.message_out(status)
            reply(respond(request, status, f"{phrase(status)}: {reason}"))
            return
        if (account.sip_user, account.protocol) in self._unsent:
            # Messages accepted before a restart go to the account first:
            # it runs requests in arrival order, so the conversation keeps its order.
            self.resend_unsent(account)
        self._accepted.append(
            _Accepted(
                request,
                reply,
                account,
                handle,
                route.contact,
                body.text,
                message_id_of(request),
                body,
            )
        )
        if len(self._accepted) == 1 and not self._committing:
            # Runs after the requests already waiting for the worker: they share the commit.
            self.worker.submit(self._commit_accepted)

    @property
    def writer(self) -> GroupCommitWriter:
        if self._writer is None:
            self._writer = GroupCommitWriter(self.store.db)
        return self._writer

    def _off_worker(
        self, work: Callable[[], Any], done: Callable[[Any, BaseException | None], None]
    ) -> None:
        """Run the store write ``work`` off the worker; ``done(result, error)`` back on it.

        The write and its fsync run on the worker's store thread (Rule 10),
        so deliveries and answers go on meanwhile.  A worker without one
        (tests' inline workers) runs it here.
        """
        offload = getattr(self.worker, "offload", None)
        if offload is None:
            try:
                result = work()
            except Exception as exc:  # noqa: BLE001 - handed to done, as from the thread
                done(None, exc)
                return
            done(result, None)
            return

        def ended(future: concurrent.futures.Future[Any]) -> None:
            error = future.exception()
            done(None if error is not None else future.result(), error)

        offload(work).add_done_callback(self.worker.completion(ended))

    def _commit_accepted(self) -> None:
        if self._committing or not self._accepted:
            return  # the commit under way starts the next one when it ends
        batch, self._accepted = self._accepted, []
        tickets = [
            self.writer.add(
                partial(
                    self.store.sendq.put_many,
                    [
                        NewSend(
                            a.account.sip_user,
                            a.account.protocol,
                            a.contact,
                            a.text,
                            a.message_id,
                            a.body.imdn_id if a.body.notify else "",
                            ",".join(sorted(a.body.notify)),
                        )
                    ],
                )
            )
            for a in batch
        ]
        self._committing = True
        # One transaction for the batch (the writer's), on the store thread.
        self._off_worker(
            partial(self.writer.commit, self.writer.take()),
            lambda _result, _error: self._accepted_committed(batch, tickets),
        )

    def _accepted_committed(self, batch: list[_Accepted], tickets: list[Ticket[Any]]) -> None:
        """The send-queue rows of ``batch`` committed (or not): hand over, then answer."""
        self._committing = False
        for accepted, ticket in zip(batch, tickets, strict=True):
            if not ticket.ok:
                logger.warning(
                    "MESSAGE %s not recorded, refused: %s", accepted.message_id, ticket.error
                )
                accepted.reply(
                    respond(
                        accepted.request,
                        503,
                        "Service Unavailable: store unavailable",
                        headers=[("Retry-After", "10")],
                    )
                )
                continue
            if accepted.body.notify:
                self._asked[accepted.message_id] = accepted.body
            if accepted.body.imdn_id and "positive-delivery" in accepted.body.notify:
                self._want_receipt(
                    accepted.message_id, accepted.body.imdn_id, accepted.account.sip_user
                )
            future = self._hand_over(
                accepted.handle, accepted.contact, accepted.text, accepted.message_id, settle=False
            )
            future.add_done_callback(self.worker.completion(partial(self._answered, accepted)))
        # What was accepted while this commit ran: the next commit, at once.
        self._commit_accepted()

    def _want_receipt(self, message_id: str, imdn_id: str, sip_user: str) -> None:
        wanted = self._imdn_wanted
        while len(wanted) >= MAX_RECEIPTS_WAITED:  # receipts that never came: oldest go
            oldest = next(iter(wanted))
            del wanted[oldest]
            self._receipts_done.append(oldest)  # its row, if it only waited for that
        wanted[message_id] = (imdn_id, sip_user)

    def _hand_over(
        self,
        handle: AccountHandlePort,
        contact: str,
        text: str,
        message_id: str,
        *,
        settle: bool = True,
    ) -> OutcomeFuture:
        self._active.add(message_id)
        # A receipt is asked of the contact only when the phone waits for it
        # (Rule 8): each one is a stanza the account must read.
        receipt = message_id in self._imdn_wanted
        future = handle.send_message(contact, text, message_id, receipt)
        if settle:
            future.add_done_callback(
                self.worker.completion(
                    lambda done: self.send_result(handle.info, message_id, done.get())
                )
            )
        return future

    def _typing_answered(self, request: Request, reply: Reply, done: OutcomeFuture) -> None:
        outcome = done.get()
        if outcome.ok:
            reply(respond(request, 200))
        else:
            reply(respond(request, outcome.status, f"{phrase(outcome.status)}: {outcome.reason}"))

    def _answered(self, accepted: _Accepted, done: OutcomeFuture) -> None:
        outcome = done.get()
        metrics.message_out(outcome.status)
        if outcome.status != 202:  # 202: still queued, its result follows (send_result)
            # The sender learns the outcome from this answer: no dead letter, no report.
            if not outcome.ok:
                self._imdn_wanted.pop(accepted.message_id, None)
            self._forget_send(accepted.message_id)
        if outcome.ok:
            accepted.reply(respond(accepted.request, 202))
        else:
            accepted.reply(
                respond(
                    accepted.request, outcome.status, f"{phrase(outcome.status)}: {outcome.reason}"
                )
            )

    def _forget_send(self, message_id: str) -> None:
        self._active.discard(message_id)
        self._asked.pop(message_id, None)
        if message_id in self._imdn_wanted:
            # Sent; the phone still waits for the contact's receipt: the row
            # stays (acked) so that a restart still owes the notification.
            self._sendq_acked.append(message_id)
        else:
            self._sendq_done.append(message_id)
        self._schedule_cleanup()

    # --- deletions, one commit per worker turn (Rule 9) -----------------------------------

    def _schedule_cleanup(self) -> None:
        if self._cleanup_due:
            return
        if len(self._sendq_done) + len(self._outbox_done) >= CLEANUP_BATCH:
            # Runs after the work already waiting: the deletions of everything
            # settled meanwhile share one transaction.
            self._cleanup_due = True
            if self._cleanup_timer is not None:
                self._cleanup_timer.cancel()
                self._cleanup_timer = None
            self.worker.submit(self._cleanup)
        elif self._cleanup_timer is None:
            # Not at once: a conversation delivering one message per turn would
            # pay a commit per message on the worker, between two deliveries.
            self._cleanup_timer = self.worker.call_later(CLEANUP_DELAY, self._cleanup_fired)

    def _cleanup_fired(self) -> None:
        self._cleanup_timer = None
        self._cleanup()

    def _cleanup(self) -> None:
        self._cleanup_due = False
        done, self._sendq_done = self._sendq_done, []
        acked, self._sendq_acked = self._sendq_acked, []
        receipted, self._receipts_done = self._receipts_done, []
        delivered, self._outbox_done = self._outbox_done, []
        if not (done or acked or receipted or delivered):
            return
        # Off the worker (Rule 10): deliveries go on while the deletions commit.
        self._off_worker(
            partial(self._delete_settled, done, acked, receipted, delivered),
            partial(self._cleaned, delivered),
        )

    def _delete_settled(
        self,
        done: list[str],
        acked: list[str],
        receipted: list[str],
        delivered: list[QueuedMessage],
    ) -> StoreError | None:
        """The deletions of Rule 9 (on the store thread); the outbox's error, if any."""
        if done or acked or receipted:
            try:
                with self.store.db.transaction():
                    self.store.sendq.done_many(done)
                    self.store.sendq.acked_many(acked)
                    self.store.sendq.receipts_done(receipted)
            except StoreError as exc:  # sent again after a restart (at-least-once)
                logger.warning("%d send-queue row(s) not updated: %s", len(done) + len(acked), exc)
        if not delivered:
            return None
        try:
            self.store.outbox.done_many([m.seq for m in delivered])
        except StoreError as exc:
            return exc
        return None

    def _cleaned(
        self,
        delivered: list[QueuedMessage],
        outbox_error: StoreError | None,
        error: BaseException | None,
    ) -> None:
        """The deletions ended (on the worker): the delivered rows are gone, or to retry."""
        if not delivered:
            return
        error = outbox_error or error
        if error is not None:
            # Still skipped by flush (self._deleting); deleted at the next try,
            # or sent again after a restart (at-least-once).
            logger.warning("%d delivered outbox row(s) not removed yet: %s", len(delivered), error)
            self._outbox_done[:0] = delivered
            if self._cleanup_timer is None:
                self._cleanup_timer = self.worker.call_later(STORE_RETRY_DELAY, self._cleanup_fired)
            return
        for message in delivered:
            self._deleting.discard(message.seq)
        # A flush that found only rows waiting for this deletion reads again.
        waiting, self._flush_again = self._flush_again, set()
        for sip_user in sorted(waiting):
            self.flush(sip_user)

    def send_result(self, account: Account, message_id: str, outcome: Outcome) -> None:
        """A message answered 202 (queued, or written and awaiting the server's ack) moved on."""
        if outcome.status == 202:  # written, the server's ack follows
            return
        if outcome.status in RETRIED_LATER:
            # The account stopped (shutdown, reload, gave up) before the network
            # took it: it stays recorded and goes out after the next start.
            logger.info(
                "Queued message %s of %s kept for later: %d %s",
                message_id,
                account.sip_user,
                outcome.status,
                outcome.reason,
            )
            return
        if outcome.ok:
            self._forget_send(message_id)
            return
        logger.warning(
            "Queued message %s of %s could not be sent: %d %s",
            message_id,
            account.sip_user,
            outcome.status,
            outcome.reason,
        )
        self._bury_send(account, message_id, outcome.status, outcome.reason)

    def _bury_send(self, account: Account, message_id: str, status: int, reason: str) -> None:
        asked = self._asked.pop(message_id, None)
        self._active.discard(message_id)
        try:
            row = self.store.sendq.get(message_id)
            if asked is None and row is not None and row.notify:
                # Accepted before a restart: the IMDN request was kept with the row.
                asked = Incoming(
                    "text", imdn_id=row.imdn_id, notify=frozenset(row.notify.split(","))
                )
            if (
                row is None
                or self.store.dead_letters.bury_send(
                    self.store.sendq, message_id, status=status, reason=reason
                )
                is None
            ):
                return  # settled already (a duplicate result)
        except StoreError as exc:
            logger.warning(
                "Failed message %s not moved to the dead letters (kept queued): %s", message_id, exc
            )
            return
        if not self.settings.notify_failures:
            return
        me = f"sip:{account.sip_user}"
        if asked is not None and asked.imdn_id and "negative-delivery" in asked.notify:
            contact_uri = self.addresses.contact_uri(account, row.contact)
            report = imdn(
                from_uri=contact_uri,
                to_uri=me,
                about=asked.imdn_id,
                status="failed",
                when=self.clock(),
            )
            self._enqueue(_Received(account, row.contact, report, CPIM, report=True))
            return
        text = f'Not delivered to {row.contact}: "{_preview(row.body)}" ({status} {reason})'
        self._enqueue(_Received(account, row.contact, text.encode(), report=True))

    def _load_unsent(self) -> None:
        for row in self.store.sendq.pending():
            self._seen_seq = max(self._seen_seq, row.seq)
            self._unsent.setdefault((row.sip_user, row.protocol), []).append(row)
            self._remember_imdn(row)
        # Sent by an earlier run; their phones still wait for the contact's receipt.
        for row in self.store.sendq.awaiting_receipt(self.clock() - RECEIPT_WAIT):
            self._seen_seq = max(self._seen_seq, row.seq)
            self._remember_imdn(row)
        if self._unsent:
            logger.info(
                "%d accepted message(s) from an earlier run wait for their account",
                sum(len(rows) for rows in self._unsent.values()),
            )

    def _remember_imdn(self, row: PendingSend) -> None:
        """What the phone asked of a message accepted by an earlier run (Rules 7, 8)."""
        if row.imdn_id and "positive-delivery" in row.notify:
            self._want_receipt(row.message_id, row.imdn_id, row.sip_user)

    def resend_unsent(self, account: Account) -> None:
        """Hand the account the messages it accepted (202) in an earlier run."""
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            return  # kept for when the account runs
        for row in self._unsent.pop((account.sip_user, account.protocol), []):
            self._hand_over(handle, row.contact, row.body, row.message_id)

    def adopt(self, sip_users: Sequence[str]) -> None:
        """This cluster node took these users over: their queues are its own now.

        The send queue's rows of the users (accepted by the node that held
        them before, which may have died) replace whatever this run kept in
        memory for them, so nothing another node sent since is sent again;
        they go when their account is online (``resend_unsent``).  The
        users' outbox is flushed as after a REGISTER.
        """
        users = set(sip_users)
        try:
            rows = self.store.sendq.pending_of(sorted(users))
        except StoreError as exc:
            logger.warning("Send queue of %d taken-over user(s) unread: %s", len(users), exc)
            rows = []
        for key in [k for k in self._unsent if k[0] in users]:
            del self._unsent[key]
        for row in rows:
            self._seen_seq = max(self._seen_seq, row.seq)
            if row.message_id not in self._active:
                self._unsent.setdefault((row.sip_user, row.protocol), []).append(row)
        if rows:
            logger.info(
                "%d queued message(s) of taken-over users wait for their accounts", len(rows)
            )
        for sip_user in sorted(users):
            self._load.pop(sip_user, None)  # counted again from the table
            self.registered(sip_user)

    def disown(self, sip_users: Sequence[str]) -> None:
        """This cluster node gave these users up: another node sends their queues now."""
        users = set(sip_users)
        for key in [k for k in self._unsent if k[0] in users]:
            del self._unsent[key]
        for key in [k for k in self.retry_timers if k[0] in users]:
            self.retry_timers.pop(key).cancel()
            self._retry_index.pop(key, None)
        for sip_user in users:
            self._load.pop(sip_user, None)

    def _receipt_to_network(self, handle: AccountHandlePort, contact: str, body: Incoming) -> None:
        if body.disposition in {"delivered", "displayed"}:
            handle.send_receipt(contact, body.imdn_id, body.disposition)

    # --- external -> SIP (Rules 3-5) -------------------------------------------------

    def incoming(  # noqa: PLR0913, PLR0917 - the event's fields
        self,
        account: Account,
        contact: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        receipts: str = "",
        *,
        arrived: float | None = None,
        ack_token: int | None = None,
    ) -> None:
        """A message for a SIP user; ``receipts``: what its sender asked to be told.

        ``arrived`` (time.monotonic()) is when its account handed it on, for
        the ``outbox_write_seconds`` metric (docs/reliability.md, XEP-0198).
        ``ack_token``: its session holds its acknowledgement to the network
        until told the message is stored or refused (Rule 3).
        """
        if (
            self.limiter is not None
            and self.limiter.hit((account.account_id, contact), self.clock()) is not Verdict.ALLOW
        ):
            self._refuse(account, contact, message_id or "", ack_token, TOO_FAST)
            return
        if sent_at is not None and self.clock() - sent_at > DELAYED_AFTER:
            # Only a delayed message is worth CPIM's DateTime: plain phones show
            # message/cpim as raw text, and Matrix stamps every event.
            body = cpim_text(
                from_uri=self.addresses.contact_uri(account, contact),
                to_uri=f"sip:{account.sip_user}",
                text=text,
                sent_at=sent_at,
            )
            received = _Received(
                account,
                contact,
                body,
                CPIM,
                message_id or "",
                receipts=receipts,
                arrived=arrived,
                ack_token=ack_token,
            )
        else:
            received = _Received(
                account,
                contact,
                text.encode("utf-8"),
                TEXT_PLAIN,
                message_id or "",
                receipts=receipts,
                arrived=arrived,
                ack_token=ack_token,
            )
        if not self._room_for(account.sip_user, len(received.body)):
            logger.warning("Outbox of %s full; message from %s refused", account.sip_user, contact)
            self._refuse(account, contact, message_id or "", ack_token, OUTBOX_FULL)
            return
        # The network already handed the message over: if the outbox cannot take
        # it now it waits in memory, behind any older one, until the store is back.
        self._enqueue(received)

    def deliver(
        self,
        account: Account,
        contact: str,
        body: bytes,
        content_type: str,
    ) -> bool:
        """Queue a body the gateway wrote (a room's message) for the user, as ``incoming`` does.

        No bounce when the outbox is full (a room has nobody to tell): the
        message is dropped and False returned.  No receipt either: the
        gateway already told the room's messages apart (purplegw.gateway.groupchat).
        """
        received = _Received(account, contact, body, content_type, report=True)
        if not self._room_for(account.sip_user, len(body)):
            logger.warning("Outbox of %s full; message from %s dropped", account.sip_user, contact)
            return False
        self._enqueue(received)
        return True

    def receipt(self, account: Account, contact: str, message_id: str) -> None:
        """A contact's client received a message the SIP user sent (Rule 8)."""
        # By message id alone: a receipt may come from one resource of the contact.
        wanted = self._imdn_wanted.pop(message_id, None)
        if wanted is None:
            return
        self._receipts_done.append(message_id)
        self._schedule_cleanup()
        imdn_id, sip_user = wanted
        report = imdn(
            from_uri=self.addresses.contact_uri(account, contact),
            to_uri=f"sip:{sip_user}",
            about=imdn_id,
            status="delivered",
            when=self.clock(),
        )
        self._enqueue(_Received(account, contact, report, CPIM, report=True))

    def queue_from_gateway(self, sip_user: str, uri: str, text: str) -> None:
        """Put a message from the gateway itself (``uri``, sip:gateway@DOMAIN) in the outbox.

        Its row names no account (``GATEWAY_PROTOCOL``, id 0): it goes to the
        phones like any other, from ``uri``, and a failure has nobody to bounce to.
        """
        self.store.outbox.put(
            sip_user=sip_user,
            account_id=0,
            protocol=GATEWAY_PROTOCOL,
            contact=uri,
            body=text.encode("utf-8"),
        )
        self.flush(sip_user)

    def queue_for_user(self, account: Account, contact: str, text: str) -> None:
        """Put a message from ``contact`` in the user's outbox now and send it when possible."""
        self.store.outbox.put(
            sip_user=account.sip_user,
            account_id=account.account_id,
            protocol=account.protocol,
            contact=contact,
            body=text.encode("utf-8"),
        )
        self.flush(account.sip_user)

    def _room_for(self, sip_user: str, size: int) -> bool:
        limits = self.settings
        if not limits.outbox_max_messages and not limits.outbox_max_bytes:
            return True
        load = self._load.get(sip_user)
        if load is None:
            try:
                rows = self.store.outbox.pending(
                    sip_user, limit=limits.outbox_max_messages or FLUSH_WINDOW * 100
                )
            except StoreError:
                return True  # the store decides: the message waits in memory
            load = self._load[sip_user] = [len(rows), sum(len(r.body) for r in rows)]
        if (limits.outbox_max_messages and load[0] >= limits.outbox_max_messages) or (
            limits.outbox_max_bytes and load[1] + size > limits.outbox_max_bytes
        ):
            return False
        load[0] += 1
        load[1] += size
        return True

    def _unload(self, sip_user: str, size: int) -> None:
        load = self._load.get(sip_user)
        if load is not None:
            load[0] = max(0, load[0] - 1)
            load[1] = max(0, load[1] - size)

    def _bounce(
        self, account: Account, contact: str, message_id: str, status: int, reason: str
    ) -> None:
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            logger.info(
                "Message from %s to %s not delivered, sender not told (account not running): %d %s",
                contact,
                account.sip_user,
                status,
                reason,
            )
            return
        handle.bounce(contact, message_id, status, reason)

    def _refuse(
        self,
        account: Account,
        contact: str,
        message_id: str,
        ack_token: int | None,
        refusal: tuple[int, str],
    ) -> None:
        """A received message not taken: its sender is told, its session may acknowledge it.

        ``refusal`` is the bounce's (status, reason); the acknowledgement is
        Rule 3's, released as for a stored message.
        """
        self._bounce(account, contact, message_id, *refusal)
        if ack_token is not None:
            self._stored(account, (ack_token,))

    def _enqueue(self, received: _Received) -> None:
        self.unstored.append(received)
        if len(self.unstored) == 1 and self._store_timer is None:
            # Runs after the events already waiting for the worker: one commit for all.
            self.worker.submit(self._store_incoming)

    def _store_incoming(self) -> None:
        if self._storing:
            return  # the commit under way starts the next one when it ends
        batch = list(self.unstored)
        if not batch:
            return
        rows = [
            NewIncoming(
                r.account.sip_user,
                r.account.account_id,
                r.account.protocol,
                r.contact,
                r.body,
                r.content_type,
                r.message_id,
                r.receipts,
            )
            for r in batch
        ]
        self._storing = True
        # One transaction (put_many's), on the store thread.
        self._off_worker(
            partial(self.store.outbox.put_many, rows), partial(self._incoming_committed, batch)
        )

    def _incoming_committed(
        self, batch: list[_Received], seqs: list[int] | None, error: BaseException | None
    ) -> None:
        """The outbox rows of ``batch`` (the head of ``unstored``) committed, or not."""
        self._storing = False
        if error is not None or seqs is None:
            self._not_stored(error)
            return
        for _ in batch:
            self.unstored.popleft()
        users: list[str] = []
        now = time.monotonic()
        self._report_stored(batch)
        for received, seq in zip(batch, seqs, strict=True):
            if received.arrived is not None:
                metrics.outbox_written(now - received.arrived)
            if received.report:
                self._reports.add(seq)
            key = (received.account.sip_user, received.contact)
            if key in self.in_flight or key in self.retry_timers:
                # Its conversation is moving: the row is read when the ones
                # ahead of it are delivered (_send_next, then flush).
                continue
            if received.account.sip_user not in users:
                users.append(received.account.sip_user)
        for sip_user in users:
            self.flush(sip_user)
        if self.unstored and self._store_timer is None:
            self._store_incoming()  # what arrived while this commit ran

    def _report_stored(self, batch: list[_Received]) -> None:
        """The rows of ``batch`` committed: their sessions may acknowledge them (Rule 3)."""
        tokens: dict[tuple[str, str], tuple[Account, list[int]]] = {}
        for received in batch:
            if received.ack_token is not None:
                account = received.account
                key = (account.sip_user, account.protocol)
                tokens.setdefault(key, (account, []))[1].append(received.ack_token)
        for account, held in tokens.values():
            self._stored(account, held)

    def _stored(self, account: Account, held: Sequence[int]) -> None:
        """Its session may acknowledge these messages to the network now (Rule 3)."""
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is not None:  # gone: its stream went with it
            handle.messages_stored(tuple(held))

    def _not_stored(self, error: BaseException | None) -> None:
        if not isinstance(error, StoreError):
            logger.error("Outbox write failed", exc_info=error)
        logger.warning(
            "Outbox unavailable, %d received message(s) kept in memory: %s",
            len(self.unstored),
            error,
        )
        self._schedule_store_retry()

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
            request = self._outgoing(account, contact, ruri, body, "application/im-iscomposing+xml")
            front.send_request(request, destination)

    def registered(self, sip_user: str) -> None:
        """The user has live contacts again: its waiting messages go now."""
        for key in [k for k in self._timeouts if k[0] == sip_user]:
            del self._timeouts[key]
        for key in [k for k in self.retry_timers if k[0] == sip_user]:
            self.retry_timers.pop(key).cancel()
            self._retry_index.pop(key, None)
        self.flush(sip_user)

    def _flush_all(self) -> None:
        for sip_user in self.store.outbox.users_with_pending():
            self.flush(sip_user)

    def flush(self, sip_user: str) -> None:
        """Send the oldest waiting message of each of the user's idle conversations."""
        if self.front is None:
            return
        try:
            pending = self.store.outbox.pending(sip_user, limit=FLUSH_WINDOW)
        except StoreError as exc:
            # Nothing else would wake this user's queue before its next REGISTER.
            logger.warning("Outbox of %s unreadable, retrying later: %s", sip_user, exc)
            self._schedule_retry((sip_user, ""))
            return
        conversations: dict[Conversation, list[QueuedMessage]] = {}
        for message in pending:
            conversations.setdefault((sip_user, message.contact), []).append(message)
        max_age = self.settings.retry_max_age
        for key, messages in conversations.items():
            if key in self.in_flight or key in self.retry_timers:
                continue
            self._ahead.pop(key, None)
            for index, message in enumerate(messages):  # the oldest one not expired goes
                if message.seq in self._deleting:
                    # Delivered, its row not deleted yet: if nothing behind it is
                    # in this read, read again once the deletion committed.
                    self._flush_again.add(sip_user)
                    continue
                age = self.clock() - message.created
                if not max_age or age <= max_age:
                    # The next ones, for its train and for when it is delivered (_send_next).
                    self._ahead[key] = deque(messages[index + 1 :])
                    self._send(message)
                    break
                try:
                    self._give_up(message, 408, f"not delivered within {int(age)} s")
                except StoreError as exc:
                    logger.warning(
                        "Expired message %d not moved to the dead letters: %s", message.seq, exc
                    )
                    self._schedule_retry(key)
                    break

    def _send_next(self, key: Conversation) -> bool:
        """Send the conversation's next message from the last read of its outbox rows.

        Rows of a conversation are only added behind the ones read, and only
        this run removes its head, so what was read ahead is still queued, in
        order.  False when nothing read ahead is left: ``flush`` reads again.
        """
        if key in self.in_flight or key in self.retry_timers:
            return True  # already moving
        ahead = self._ahead.get(key)
        max_age = self.settings.retry_max_age
        while ahead:
            message = ahead.popleft()
            if message.seq in self._deleting:
                continue
            if max_age and self.clock() - message.created > max_age:
                break  # flush gives it up
            self._send(message)
            return True
        self._ahead.pop(key, None)
        return False

    def _destinations(self, sip_user: str, protocol: str) -> list[tuple[Address | Source, str]]:
        """The user's contacts, without those that keep timing out while others answer."""
        everyone = self.registrar.destinations(sip_user, protocol)
        limit = self.settings.dead_binding_timeouts
        alive = [
            (d, ruri)
            for d, ruri in everyone
            if not limit or self._timeouts.get((sip_user, ruri), 0) < limit
        ]
        # All silent (or the one outbound proxy): try them still, so the message moves
        # on to its retries and dead letter instead of waiting for a REGISTER.
        return alive or everyone

    def _send(self, message: QueuedMessage) -> None:
        front = self.front
        sip_user = message.sip_user
        key = (sip_user, message.contact)
        if front is None:
            return
        destinations = self._destinations(sip_user, message.protocol)
        if not destinations:
            logger.debug("%s not registered (or its contacts time out); messages wait", sip_user)
            self._ahead.pop(key, None)  # read again when it registers
            return
        account = self._account_of(message)
        self.in_flight.add(key)
        # The same for every message of the conversation (and of its train).
        from_uri = self._from_uri(account, message.contact)
        if len(destinations) == 1:
            destination, ruri = destinations[0]
            cars = [self._car(account, message, destination, ruri, from_uri)]
            ahead = self._ahead.get(key)
            max_age = self.settings.retry_max_age
            while ahead and len(cars) < TRAIN_LENGTH:
                following = ahead[0]
                if following.seq in self._deleting:
                    ahead.popleft()
                    continue
                if (
                    following.account_id != message.account_id
                    or following.protocol != message.protocol
                    or (max_age and self.clock() - following.created > max_age)
                ):
                    break  # sent (or given up) on its own, after the train
                cars.append(self._car(account, ahead.popleft(), destination, ruri, from_uri))
            _Train(front, cars, self._train_stopped, self._train_running).start()
            return
        delivery = _Delivery(left=len(destinations))
        for destination, ruri in destinations:
            car = self._car(account, message, destination, ruri, from_uri)
            future = front.send_request(car.request, car.target)
            # Every callback runs on the worker (completion): no lock needed.
            future.add_done_callback(
                self.worker.completion(partial(self._answer, message, delivery, ruri, car.udp))
            )

    def _account_of(self, message: QueuedMessage) -> AccountRef:
        handle = self.directory.get(message.sip_user, message.protocol)
        return AccountRef(
            message.account_id,
            message.sip_user,
            message.protocol,
            handle.info.ext_user if handle is not None else "",
        )

    def _car(
        self,
        account: AccountRef,
        message: QueuedMessage,
        destination: Address | Source,
        ruri: str,
        from_uri: str,
    ) -> _Car:
        request = self._outgoing(
            account, message.contact, ruri, message.body, message.content_type, from_uri=from_uri
        )
        target = _fit(destination, request, tcp=message.seq in self._tcp)
        udp = (target.address if isinstance(target, Source) else target).transport == "udp"
        return _Car(message, request, target, ruri, udp)

    def _train_stopped(self, train: _Train) -> None:
        """A train's last answer came (on the front's thread): the worker takes its reports."""
        self.worker.completion(self._train_report)(train)

    def _train_running(self, train: _Train) -> None:
        """A running train has an answer to report (on the front's thread): soon, not now."""
        self.worker.call_later(TRAIN_REPORT_DELAY, self._train_report, train)

    def _train_report(self, train: _Train) -> None:
        """Handle the answers a train has had since the last report, in order (Rule 11)."""
        train.report_due = False
        reports = train.reports
        while reports:
            car, next_sent, future = reports.popleft()
            try:
                self._answer(
                    car.message, _Delivery(left=1), car.ruri, car.udp, future, next_sent=next_sent
                )
            except Exception:
                logger.exception("Answer to message %d not handled", car.message.seq)

    def _answer(  # noqa: PLR0913 - the answer and what it answers
        self,
        message: QueuedMessage,
        delivery: _Delivery,
        ruri: str,
        udp: bool,  # noqa: FBT001
        future: concurrent.futures.Future[Response],
        *,
        next_sent: bool = False,
    ) -> None:
        try:
            response = future.result()
            status, text = response.status, f"{response.status} {response.reason}"
        except Exception as exc:  # noqa: BLE001 - a transport error: try again later
            status, text = 503, f"error {exc}"
        binding = (message.sip_user, ruri)
        if status == 408:
            self._timeouts[binding] = self._timeouts.get(binding, 0) + 1
        else:
            self._timeouts.pop(binding, None)
        delivery.left -= 1
        if delivery.settled:
            return
        if 200 <= status < 300:
            delivery.settled = True
            self.delivered(message, ok=True, status=status, text=text, next_sent=next_sent)
            return
        delivery.failures.append((status, text, udp))
        if delivery.left == 0:
            delivery.settled = True
            # Transient if any contact may take it later; too large only if sent over UDP.
            for status_, text_, _udp in delivery.failures:
                if status_ in TRANSIENT:
                    self.delivered(message, ok=False, status=status_, text=text_)
                    return
            for status_, text_, udp_ in delivery.failures:
                if status_ in TOO_LARGE and udp_:
                    self._tcp.add(message.seq)
                    self.delivered(message, ok=False, status=status_, text=text_)
                    return
            self.delivered(message, ok=False, status=status, text=text, permanent=True)

    def delivered(  # noqa: PLR0913 - the outcome's parts, all keyword
        self,
        message: QueuedMessage,
        *,
        ok: bool,
        status: int,
        text: str,
        permanent: bool = False,
        next_sent: bool = False,
    ) -> None:
        """``next_sent``: its train sent the conversation's next message already."""
        key = (message.sip_user, message.contact)
        if not next_sent:
            self.in_flight.discard(key)
        metrics.message_in("delivered" if ok else "retry")
        try:
            if ok:
                network_id = message.message_id
                # The row goes with the next group of deletions (Rule 9); until
                # then flush skips it, so the conversation's next message goes now.
                self._deleting.add(message.seq)
                self._outbox_done.append(message)
                self._schedule_cleanup()
                self._settled(message)
                if network_id:
                    self._delivered_to_network(message, network_id)
                self._retry_index.pop(key, None)
                if not next_sent and not self._send_next(key):
                    self.flush(message.sip_user)
                return
            self._ahead.pop(key, None)  # read again after the retry or dead letter
            if permanent or message.attempts + 1 >= self.settings.retry_attempts:
                reason = text if permanent else f"{message.attempts + 1} attempts, last {text}"
                self._give_up(message, status, reason)
                self.flush(message.sip_user)
                return
            logger.info(
                "Message %d to %s not delivered (%s); kept for later",
                message.seq,
                message.sip_user,
                text,
            )
            self.store.outbox.failed_attempt(message.seq, text)
        except StoreError as exc:
            # A delivered message whose row could not be deleted is sent again
            # (at-least-once); either way the queue must be woken up again.
            logger.warning(
                "Outbox of %s not updated after delivery (%s): %s", message.sip_user, text, exc
            )
        self._schedule_retry(key)

    def _delivered_to_network(self, message: QueuedMessage, network_id: str) -> None:
        """The phone took it (2xx): the sender learns it was delivered, where it asked.

        XEP-0184 "delivered" means the recipient's device has it, which is the
        phone's 2xx, not the gateway's receipt of the stanza; the session sends
        it only for messages whose sender requested a receipt.
        """
        if not message.receipts:
            return  # the sender asked for nothing (and no request to the account)
        handle = self.directory.get(message.sip_user, message.protocol)
        if handle is not None:
            handle.send_receipt(message.contact, network_id, "delivered", message.receipts)

    def _settled(self, message: QueuedMessage) -> None:
        self._tcp.discard(message.seq)
        self._reports.discard(message.seq)
        self._unload(message.sip_user, len(message.body))

    def _give_up(self, message: QueuedMessage, status: int, reason: str) -> None:
        """A message for a SIP user failed for good: a dead letter, and its sender is told."""
        network_id = message.message_id
        logger.warning(
            "Message %d from %s to %s given up: %d %s",
            message.seq,
            message.contact,
            message.sip_user,
            status,
            reason,
        )
        self.store.dead_letters.bury_incoming(
            self.store.outbox, message.seq, status=status, reason=reason, message_id=network_id
        )
        report = message.seq in self._reports
        self._settled(message)
        if not report and message.protocol != GATEWAY_PROTOCOL:
            # the gateway's own reports and messages have no sender to tell
            account = AccountRef(message.account_id, message.sip_user, message.protocol, "")
            self._bounce(account, message.contact, network_id, status, reason)

    def _schedule_retry(self, key: Conversation) -> None:
        if key in self.retry_timers:
            return
        index = self._retry_index.get(key, 0)
        delay = RETRY_DELAYS[min(index, len(RETRY_DELAYS) - 1)]
        self._retry_index[key] = index + 1
        self.retry_timers[key] = self.worker.call_later(delay, self._retry_fired, key)

    def _retry_fired(self, key: Conversation) -> None:
        self.retry_timers.pop(key, None)
        self.flush(key[0])

    def _from_uri(self, account: Account, contact: str) -> str:
        if account.protocol == GATEWAY_PROTOCOL:
            return contact  # the gateway's own SIP URI (queue_from_gateway)
        return self.addresses.contact_uri(account, contact)

    def _outgoing(  # noqa: PLR0913 - the request's parts
        self,
        account: Account,
        contact: str,
        ruri: str,
        body: bytes,
        content_type: str,
        *,
        from_uri: str | None = None,
    ) -> Request:
        """A MESSAGE from ``contact`` (``from_uri``, if the caller has it already) to the user."""
        if from_uri is None:
            from_uri = self._from_uri(account, contact)
        # One read of the system's random source for the tag and the Call-ID.
        token = os.urandom(20).hex()
        headers = Headers()
        headers.add("From", f"<{from_uri}>;tag={token[:8]}")
        headers.add("To", f"<sip:{account.sip_user}>")
        headers.add("Call-ID", f"{token[8:]}@{self.domain}")
        headers.add("CSeq", "1 MESSAGE")
        headers.add("Content-Type", content_type)
        return Request("MESSAGE", ruri, headers, body)


# --- helpers ------------------------------------------------------------------------


def phrase(status: int) -> str:
    return REASON_PHRASES.get(status, "Error")


def message_id_of(request: Request) -> str:
    """The id of a SIP MESSAGE towards a network, stable across retransmissions and resends."""
    cseq = request.cseq
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{request.call_id}/{cseq.number if cseq else 0}").hex


def _delivered(future: concurrent.futures.Future[Response]) -> bool:
    """A 2xx, not an error (the front resolves timeouts and transport errors too)."""
    if future.cancelled() or future.exception() is not None:
        return False
    return 200 <= future.result().status < 300


def _fit(
    destination: Address | Source,
    request: Request,
    *,
    tcp: bool = False,
) -> Address | Source:
    """Switch a large request (or one refused as too large) from UDP to TCP, same host and port."""
    address = destination.address if isinstance(destination, Source) else destination
    if address.transport == "udp" and (tcp or len(request.body) + 600 > UDP_SIZE_LIMIT):
        return Address("tcp", address.host, address.port)
    return destination


def _preview(text: str, size: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= size else text[: size - 1] + "…"
