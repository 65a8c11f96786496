"""The gateway: SIP users <-> their external accounts, for messages and presence.

``Gateway`` is the SIP front's router (REGISTER, MESSAGE, PUBLISH, SUBSCRIBE)
and an account event sink (messages, typing, presence, authorization from
external contacts).  It holds no rule itself: it hands each request and
each event to the worker (``WorkerPort``, one thread in production:
purplegw.actors.worker), and there to the controller of that concern, in
the shape of Mopidy's ``core/_actor.py`` with its playback/tracklist
controllers:

    identity.py       who sent a request (trusted networks, digest, per-user limits)
    registrar.py      REGISTER, and where requests to a SIP user go
    messaging.py      MESSAGE both ways, outbox/send queue, retries, message bodies
    presence.py       PUBLISH, SUBSCRIBE/NOTIFY, presentities and their watches
    authorization.py  authorization requests and answers, the allow/deny interception
    contact_service.py  the gateway as a SIP contact (sip:gateway@DOMAIN): commands,
                      its presence (the user's accounts), trouble notices
    upstream.py       contacts' presence PUBLISHed to an upstream presence server
    roster.py         the accounts' rosters (buddy list, watcher info)
    buddylist.py      the roster as an RFC 4662 resource list
    winfo.py          presence.winfo: who asks to see the user's presence
    addressing.py     SIP URI <-> (account, external contact)
    groupchat.py      rooms (XMPP MUC, IRC channels): join, post, commands, room messages

All of it runs on the worker, one task at a time and in arrival order, so
that store calls (SQLite/MySQL, which block) never run on the front's loop,
a user's messages keep their order, and no state needs a lock.

Rules:

Rule 1. A request answered by a controller's ``Refused`` (identity) gets that
        answer; a ``SipError`` gets its status hint; a ``StoreError``
        (database down) gets 503 + Retry-After at once, so the sender knows
        and can retry, instead of the front's deferred timeout (500).
Rule 2. Methods the gateway does not serve get 405 with Allow.
Rule 3. Account events run on the worker too: the sender (an account loop)
        never waits for the gateway, and the gateway never runs elsewhere.
Rule 4. In a cluster, a MESSAGE, PUBLISH or SUBSCRIBE of a user another node
        owns is passed on to that node (purplegw.gateway.forwarding), after
        the user is identified here.
Rule 5. A user's outbox is woken by a REGISTER only on the node that holds
        the user (or on any node while nobody does): a REGISTER answered by
        another node reaches the holder through the database, which it looks
        at every ``REGISTRATION_POLL`` seconds.
Rule 6. The cluster runtime says when this node comes to hold a user
        (``adopt``: its subscriptions and publications are loaded from the
        database, its waiting messages sent) and when it stops holding one
        (``release``: forgotten here, kept in the database).
Rule 7. In a cluster, a MESSAGE, PUBLISH or SUBSCRIBE of a user with
        accounts that no other node holds and that none of this node's
        running accounts belongs to (a hand-over under way: logging out,
        released, not yet acquired or adopted) waits: it is
        looked at again every ``HANDOVER_POLL`` seconds and forwarded or
        handled as soon as a node holds the user; after ``HANDOVER_WAIT``
        seconds it gets 503 with Retry-After.  Never a 403 "no accounts"
        from a node that simply does not run them.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from purplegw.exceptions import StoreError
from purplegw.gateway.addressing import AddressBook
from purplegw.gateway.authorization import Authorization
from purplegw.gateway.contact_service import GatewayContact
from purplegw.gateway.forwarding import FORWARDED_METHODS, Forwarding
from purplegw.gateway.groupchat import GroupChat
from purplegw.gateway.identity import Identity, Refused, respond
from purplegw.gateway.messaging import Messaging, Unsendable
from purplegw.gateway.presence import PresenceService, contact_checker
from purplegw.gateway.registrar import Registrar
from purplegw.gateway.settings import (
    ContactSettings,
    GatewaySettings,
    GroupChatSettings,
    MessagingSettings,
    PresenceSettings,
)
from purplegw.gateway.upstream import UpstreamPublisher
from purplegw.gateway.winfo import WatcherInfoLists
from purplegw.protocols.base import ConnectionState
from purplegw.sip.errors import SipError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from purplegw.actors.front.transport import Source
    from purplegw.gateway.model import Account, ContactPresence
    from purplegw.gateway.ports import (
        DirectoryPort,
        FrontPort,
        Outcome,
        Reply,
        SharedStatePort,
        StorePort,
        TimerHandle,
        WorkerPort,
    )
    from purplegw.protocols.base import AuthorizationAnswer, RosterItem, TypingState
    from purplegw.sip.message import Request

logger = logging.getLogger(__name__)

# SIP senders refused while the store is down are told to come back after this.
STORE_RETRY_AFTER = 10
# Cluster: a hand-over takes a lease tick or two (Rule 7); a request waits for it
# this long, looking again this often, before it gets 503 with this Retry-After.
HANDOVER_WAIT = 4.0
HANDOVER_POLL = 0.25
HANDOVER_RETRY_AFTER = 2
# Seconds between two looks at the bindings other nodes of a cluster wrote (Rule 5).
REGISTRATION_POLL = 1.0


class Gateway:
    allow = frozenset({"REGISTER", "MESSAGE", "PUBLISH", "SUBSCRIBE"})
    # Received messages are reported stored (messaging Rule 3): sessions may
    # hold their network's acknowledgement until then (actors.listener).
    confirms_ack_tokens = True

    def __init__(  # noqa: PLR0913 - what the composition (purplegw.app) provides
        self,
        *,
        settings: GatewaySettings,
        store: StorePort,
        directory: DirectoryPort,
        worker: WorkerPort,
        canonical: Callable[[str], str],
        user_at_host: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
        presence: PresenceSettings | None = None,
        contact_error: Callable[[str, str], str | None] | None = None,
        messaging: MessagingSettings | None = None,
        unsendable: Unsendable | None = None,
        shared: SharedStatePort | None = None,
        node: str = "",
        advertise: str = "",
        contact: ContactSettings | None = None,
        statuses: Callable[[str], Sequence[dict[str, Any]]] | None = None,
        groupchat: GroupChatSettings | None = None,
        has_rooms: Callable[[str], bool] = lambda _protocol: False,
        has_accounts: Callable[[str], bool] | None = None,
    ) -> None:
        """``has_accounts(user)``: the account table (every node's) has rows of ``user``."""
        presence = presence or PresenceSettings()
        self._has_accounts = has_accounts
        self._directory = directory
        self._adopted: set[str] = set()  # cluster: the users this node holds (on the worker)
        self.settings = settings
        self.store = store
        self.worker = worker
        self.identity = Identity(settings, store.users, clock)
        self.addresses = AddressBook(
            directory,
            canonical=canonical,
            user_at_host=user_at_host,
            gateway_domain=settings.domain,
        )
        self.forwarding = (
            Forwarding(node=node, advertise=advertise, owners=store.owners, worker=worker)
            if node
            else None
        )
        if self.forwarding is not None:
            self.identity.peer = self.forwarding.is_node
        self.registrar = Registrar(
            settings, self.identity, clock, store=store, shared=shared, node=node
        )
        self.messaging = Messaging(
            domain=settings.domain,
            identity=self.identity,
            registrar=self.registrar,
            addresses=self.addresses,
            store=store,
            directory=directory,
            worker=worker,
            settings=messaging,
            clock=clock,
            unsendable=unsendable or (lambda _protocol, _text: None),
        )
        self.presence = PresenceService(
            settings=presence,
            identity=self.identity,
            addresses=self.addresses,
            store=store,
            directory=directory,
            worker=worker,
            proxy_address=self.registrar.proxy_address,
            clock=clock,
            contact_error=contact_error or contact_checker(canonical),
        )
        self.presence.shared = shared
        self.presence.node = node
        if self.forwarding is not None:
            self.presence.elsewhere = self._held_elsewhere
        if presence.upstream:
            self.presence.upstream = UpstreamPublisher(
                presence.upstream,
                presence.upstream_expires,
                domain=settings.domain,
                worker=worker,
                timers=self.presence.timers,
            )
        self.authorization = Authorization(
            policy=presence.authorization,
            presence=self.presence,
            messaging=self.messaging,
            directory=directory,
            worker=worker,
        )
        self.contact = GatewayContact(
            settings=contact or ContactSettings(),
            presence=self.presence,
            messaging=self.messaging,
            authorization=self.authorization,
            statuses=statuses,
            clock=clock,
        )
        self.presence.winfo = self.authorization.winfo = WatcherInfoLists(
            self.presence, self.authorization.asking
        )
        self.groupchat = GroupChat(
            messaging=self.messaging,
            addresses=self.addresses,
            directory=directory,
            worker=worker,
            has_rooms=has_rooms,
            settings=groupchat,
            clock=clock,
            marks=store.room_marks,
        )
        self.messaging.rooms = self.groupchat
        self.presence.room_presence = self.groupchat.presence_of
        self.groupchat.on_presence = self._room_presence
        self.registrar.on_registered = self._registered
        self.messaging.intercept = self.authorization.intercept_answer
        self.front: FrontPort | None = None
        self._poll: TimerHandle | None = None
        self._routes: dict[str, Callable[[Request, Source, Reply], None]] = {
            "REGISTER": self._register,
            "MESSAGE": self._message,
            "PUBLISH": self.presence.publish,
            "SUBSCRIBE": self._subscribe,
        }

    def _room_presence(self, account: Account, presence: ContactPresence) -> None:
        """A room's occupants changed: its watchers learn it (on the worker already)."""
        if self.presence.watched(account.sip_user, account.protocol, presence.contact):
            self.presence.contact_presence(account, presence)

    # --- lifecycle (the SIP front's Router protocol) -------------------------------

    def attach(self, front: FrontPort) -> None:
        self.front = front
        if self.forwarding is not None:
            self.forwarding.front = front
        self.messaging.front = front
        self.presence.front = front
        if self.presence.upstream is not None:
            self.presence.upstream.front = front
        self.worker.submit(self.registrar.restore)
        self.worker.submit(self.presence.restore)
        self.worker.submit(self.messaging.start)
        if self.forwarding is not None:
            self._poll = self.worker.call_later(REGISTRATION_POLL, self._registered_elsewhere)
        self.worker.submit(self.groupchat.start)

    def stop(self) -> None:
        """Finish the work already submitted, then drop the timers."""
        if self._poll is not None:
            self._poll.cancel()
        self.worker.stop()
        self.presence.stop()
        self.messaging.stop()
        self.groupchat.stop()

    # --- cluster hand-over: called by the cluster runtime, any thread -----------------

    def adopt(self, sip_users: Sequence[str]) -> None:
        """Cluster: this node holds these users' leases now (any thread; Rule 6).

        Their queued messages go out from here, their subscriptions and
        publications are loaded from the database.
        """
        self.worker.submit(self._adopt, list(sip_users))

    def disown(self, sip_users: Sequence[str]) -> None:
        """Cluster: another node holds these users now: forget their state here (any thread)."""
        self.worker.submit(self._disown, list(sip_users))

    def _adopt(self, sip_users: list[str]) -> None:
        self._adopted.update(sip_users)
        self.messaging.adopt(sip_users)
        for sip_user in sip_users:
            if self.forwarding is not None:
                self.forwarding.forget(sip_user)
            try:
                self.presence.adopt(sip_user)
            except StoreError as exc:
                logger.warning(
                    "State of %s not adopted (its phones subscribe again): %s", sip_user, exc
                )
            self.messaging.registered(sip_user)  # its waiting messages go from here now

    def _disown(self, sip_users: list[str]) -> None:
        self._adopted.difference_update(sip_users)
        self.messaging.disown(sip_users)
        for sip_user in sip_users:
            if self.forwarding is not None:
                self.forwarding.forget(sip_user)
            self.presence.release(sip_user)

    # --- SIP side: called on the front's loop, handed over at once -------------------

    def handle(self, request: Request, source: Source, reply: Reply) -> None:
        self.worker.submit(self.dispatch, request, source, reply)

    def dispatch(self, request: Request, source: Source, reply: Reply) -> None:
        """Run ``request`` through its controller (on the worker)."""
        self._answering(request, reply, self._dispatch, request, source, reply)

    def _answering(
        self, request: Request, reply: Reply, run: Callable[..., object], *args: Any
    ) -> None:
        """``run(*args)``, its refusals answered (Rule 1)."""
        try:
            run(*args)
        except Refused as refused:
            reply(refused.response)
        except SipError as exc:
            reply(respond(request, exc.status_hint, getattr(exc, "reason", str(exc))))
        except StoreError as exc:
            logger.warning("%s refused, store unavailable: %s", request.method, exc)
            reply(
                respond(
                    request,
                    503,
                    "Service Unavailable: store unavailable",
                    headers=[("Retry-After", str(STORE_RETRY_AFTER))],
                )
            )

    def _dispatch(self, request: Request, source: Source, reply: Reply) -> None:
        route = self._routes.get(request.method)
        if route is None:
            reply(respond(request, 405, headers=[("Allow", ", ".join(self.allow))]))
        elif not self._forwarded(request, source, reply):
            route(request, source, reply)

    def _forwarded(self, request: Request, source: Source, reply: Reply) -> bool:
        """In a cluster, pass a request of a user another node owns on to it (Rules 4, 7)."""
        if self.forwarding is None or request.method not in FORWARDED_METHODS:
            return False
        user = self.identity.identify(request, source)  # asked again by the handler: same answer
        return self._placed(request, source, reply, user, 0.0)

    def _placed(
        self, request: Request, source: Source, reply: Reply, user: str, waited: float
    ) -> bool:
        """Forwarded, waiting for a hand-over or refused (True), or to be handled here."""
        forwarding = self.forwarding
        assert forwarding is not None
        if forwarding.route(request, source, user, reply):
            return True
        if not self._handing_over(user):
            return False
        if waited < HANDOVER_WAIT:
            forwarding.forget(user)  # the next look asks the database
            again = waited + HANDOVER_POLL
            self.worker.call_later(HANDOVER_POLL, self._resume, request, source, reply, user, again)
            return True
        logger.info("%s of %s refused: its hand-over takes longer", request.method, user)
        retry = [("Retry-After", str(HANDOVER_RETRY_AFTER))]
        reply(respond(request, 503, "Service Unavailable: user being handed over", headers=retry))
        return True

    def _resume(
        self, request: Request, source: Source, reply: Reply, user: str, waited: float
    ) -> None:
        """A request that waited for its user's hand-over, looked at again (Rule 7)."""

        def resume() -> None:
            if not self._placed(request, source, reply, user, waited):
                route = self._routes[request.method]
                self.identity.remember(request, user)  # not authenticated (or counted) twice
                route(request, source, reply)

        self._answering(request, reply, resume)

    def _handing_over(self, user: str) -> bool:
        """``user`` has accounts, no other node holds it, and none of them runs here (Rule 7).

        Not held here yet (acquired, not adopted), or any more (released), or
        held but its accounts logging out (a drain, a hand-over to a joining
        node: logout first, then the lease is freed).
        """
        known = self._has_accounts
        if known is None or (user in self._adopted and self._directory.of_user(user)):
            return False  # not a cluster, or running here: the usual case, asked first
        return known(user)

    def peer_host(self, host: str) -> bool:
        """A host of another node of the cluster (the SIP front's loop calls it; never blocks)."""
        return self.forwarding is not None and self.forwarding.is_node_host(host)

    def _held_elsewhere(self, sip_user: str) -> bool:
        # Not from the owner cache, and not into it: these questions (a REGISTER,
        # a restore, a poll) must not leave a stale answer for the requests after them.
        forwarding = self.forwarding
        return forwarding is not None and forwarding.owner(sip_user, cached=False) is not None

    def _registered(self, aor: str) -> None:
        """A REGISTER answered here left live contacts: wake the user's outbox (Rule 5)."""
        if self._held_elsewhere(aor):
            return  # another node holds the user: it wakes the outbox when it polls
        self.messaging.registered(aor)

    def _registered_elsewhere(self) -> None:
        """Poll the bindings other nodes wrote; the users held here get their messages."""
        try:
            for aor in self.registrar.registered_elsewhere():
                if not self._held_elsewhere(aor):
                    self.messaging.registered(aor)
        except StoreError as exc:
            logger.warning("Bindings of other nodes not read: %s", exc)
        finally:
            self._poll = self.worker.call_later(REGISTRATION_POLL, self._registered_elsewhere)

    def _register(self, request: Request, source: Source, reply: Reply) -> None:
        reply(self.registrar.register(request, source))

    def _message(self, request: Request, source: Source, reply: Reply) -> None:
        if self.contact.addressed(request.ruri):
            self.contact.message(request, source, reply)
        else:
            self.messaging.message(request, source, reply)

    def _subscribe(self, request: Request, source: Source, reply: Reply) -> None:
        if not self.contact.subscribe(request, source, reply):
            self.presence.subscribe(request, source, reply)

    # --- account events: called on the sender's thread, handed over at once ---------

    def on_event(self, event: str, **kwargs: Any) -> None:
        """The listener's entry point (purplegw.actors.listener): one method per event."""
        method = getattr(self, event, None) if event.startswith("on_") else None
        if method is None:
            return  # an event the gateway does not use (receipts, derived keys)
        try:
            method(**kwargs)
        except Exception:
            logger.exception("Gateway failed to handle %s", event)

    def on_message(  # noqa: PLR0913, PLR0917 - the event's fields
        self,
        account: Account,
        contact: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        receipts: str = "",
        ack_token: int | None = None,
    ) -> None:
        self.worker.submit(
            partial(self.messaging.incoming, arrived=time.monotonic(), ack_token=ack_token),
            account,
            contact,
            text,
            message_id,
            sent_at,
            receipts,
        )

    def on_room_message(  # noqa: PLR0913, PLR0917 - the event's shape
        self,
        account: Account,
        room: str,
        nick: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        is_history: bool = False,  # noqa: FBT001, FBT002
    ) -> None:
        self.worker.submit(
            self.groupchat.room_message, account, room, nick, text, message_id, sent_at, is_history
        )

    def on_room_private_message(
        self, account: Account, room: str, nick: str, text: str, message_id: str | None = None
    ) -> None:
        self.worker.submit(
            self.groupchat.room_private_message, account, room, nick, text, message_id
        )

    def on_room_joined(self, account: Account, room: str, nick: str, occupants: list[str]) -> None:
        self.worker.submit(self.groupchat.room_joined, account, room, nick, occupants)

    def on_room_occupants(self, account: Account, room: str, occupants: list[str]) -> None:
        self.worker.submit(self.groupchat.room_occupants, account, room, occupants)

    def on_room_left(self, account: Account, room: str, reason: str = "") -> None:
        self.worker.submit(self.groupchat.room_left, account, room, reason)

    def on_room_error(self, account: Account, room: str, status: int, reason: str) -> None:
        self.worker.submit(self.groupchat.room_error, account, room, status, reason)

    def on_receipt(self, account: Account, contact: str, message_id: str) -> None:
        self.worker.submit(self.messaging.receipt, account, contact, message_id)

    def requeued(self) -> bool:
        """The ``messages.requeued`` control command (any thread): dead letters were put back."""
        self.worker.submit(self.messaging.requeued)
        return True

    def on_typing(self, account: Account, contact: str, state: TypingState) -> None:
        self.worker.submit(self.messaging.typing, account, contact, state)

    def on_send_result(self, account: Account, message_id: str, outcome: Outcome) -> None:
        self.worker.submit(self.messaging.send_result, account, message_id, outcome)

    def on_contact_presence(self, account: Account, presence: ContactPresence) -> None:
        self.worker.submit(self.presence.contact_presence, account, presence)

    def on_authorization_request(self, account: Account, contact: str, text: str) -> None:
        self.worker.submit(self.authorization.request, account, contact, text)

    def on_authorization_answer(
        self, account: Account, contact: str, answer: AuthorizationAnswer
    ) -> None:
        self.worker.submit(self.authorization.answered, account, contact, answer)

    def on_account_removed(self, account: Account) -> None:
        self.worker.submit(self.presence.account_removed, account)

    def on_roster(self, account: Account, items: tuple[RosterItem, ...]) -> None:
        self.worker.submit(self.presence.roster, account, items)

    def on_roster_item(self, account: Account, item: RosterItem) -> None:
        self.worker.submit(self.presence.roster_item, account, item)

    def on_roster_removed(self, account: Account, contact: str) -> None:
        self.worker.submit(self.presence.roster_removed, account, contact)

    def on_connection_state(
        self,
        account: Account,
        state: ConnectionState,
        reason: str,
        retry_at: float | None = None,
        gave_up: bool = False,  # noqa: FBT001, FBT002 - an event keyword
    ) -> None:
        self.worker.submit(self.contact.account_state, account, state, reason, retry_at, gave_up)
        if state is ConnectionState.CONNECTED:
            self.worker.submit(self.presence.account_connected, account)
            self.worker.submit(self.messaging.resend_unsent, account)
            self.worker.submit(self.presence.connected, account)
            self.worker.submit(self.groupchat.connected, account)
        else:
            # The account no longer sees its contacts: watchers learn they are offline.
            self.worker.submit(self.presence.disconnected, account)
            self.worker.submit(self.groupchat.disconnected, account)
