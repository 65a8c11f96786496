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
    upstream.py       contacts' presence PUBLISHed to an upstream presence server
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
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from purplegw.exceptions import StoreError
from purplegw.gateway.addressing import AddressBook
from purplegw.gateway.authorization import Authorization
from purplegw.gateway.groupchat import GroupChat
from purplegw.gateway.identity import Identity, Refused, respond
from purplegw.gateway.messaging import Messaging, Unsendable
from purplegw.gateway.presence import PresenceService, contact_checker
from purplegw.gateway.registrar import Registrar
from purplegw.gateway.settings import (
    GatewaySettings,
    GroupChatSettings,
    MessagingSettings,
    PresenceSettings,
)
from purplegw.gateway.upstream import UpstreamPublisher
from purplegw.protocols.base import ConnectionState
from purplegw.sip.errors import SipError

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.actors.front.transport import Source
    from purplegw.gateway.model import Account, ContactPresence
    from purplegw.gateway.ports import (
        DirectoryPort,
        FrontPort,
        Outcome,
        Reply,
        StorePort,
        WorkerPort,
    )
    from purplegw.protocols.base import AuthorizationAnswer, TypingState
    from purplegw.sip.message import Request

logger = logging.getLogger(__name__)

# SIP senders refused while the store is down are told to come back after this.
STORE_RETRY_AFTER = 10


class Gateway:
    allow = frozenset({"REGISTER", "MESSAGE", "PUBLISH", "SUBSCRIBE"})

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
        groupchat: GroupChatSettings | None = None,
        has_rooms: Callable[[str], bool] = lambda _protocol: False,
    ) -> None:
        presence = presence or PresenceSettings()
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
        self.registrar = Registrar(settings, self.identity, clock)
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
        self.registrar.on_registered = self.messaging.registered
        self.messaging.intercept = self.authorization.intercept_answer
        self.front: FrontPort | None = None
        self._routes: dict[str, Callable[[Request, Source, Reply], None]] = {
            "REGISTER": self._register,
            "MESSAGE": self.messaging.message,
            "PUBLISH": self.presence.publish,
            "SUBSCRIBE": self.presence.subscribe,
        }

    def _room_presence(self, account: Account, presence: ContactPresence) -> None:
        """A room's occupants changed: its watchers learn it (on the worker already)."""
        if self.presence.watched(account.sip_user, account.protocol, presence.contact):
            self.presence.contact_presence(account, presence)

    # --- lifecycle (the SIP front's Router protocol) -------------------------------

    def attach(self, front: FrontPort) -> None:
        self.front = front
        self.messaging.front = front
        self.presence.front = front
        if self.presence.upstream is not None:
            self.presence.upstream.front = front
        self.worker.submit(self.presence.restore)
        self.worker.submit(self.messaging.start)
        self.worker.submit(self.groupchat.start)

    def stop(self) -> None:
        """Finish the work already submitted, then drop the timers."""
        self.worker.stop()
        self.presence.stop()
        self.messaging.stop()
        self.groupchat.stop()

    # --- SIP side: called on the front's loop, handed over at once -------------------

    def handle(self, request: Request, source: Source, reply: Reply) -> None:
        self.worker.submit(self.dispatch, request, source, reply)

    def dispatch(self, request: Request, source: Source, reply: Reply) -> None:
        """Run ``request`` through its controller (on the worker)."""
        route = self._routes.get(request.method)
        try:
            if route is None:
                reply(respond(request, 405, headers=[("Allow", ", ".join(self.allow))]))
            else:
                route(request, source, reply)
        except Refused as refused:
            reply(refused.response)
        except SipError as exc:
            reply(respond(request, exc.status_hint, getattr(exc, "reason", str(exc))))
        except StoreError as exc:
            logger.warning("%s from %s refused, store unavailable: %s", request.method, source, exc)
            reply(
                respond(
                    request,
                    503,
                    "Service Unavailable: store unavailable",
                    headers=[("Retry-After", str(STORE_RETRY_AFTER))],
                )
            )

    def _register(self, request: Request, source: Source, reply: Reply) -> None:
        reply(self.registrar.register(request, source))

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

    def on_message(
        self,
        account: Account,
        contact: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
    ) -> None:
        self.worker.submit(self.messaging.incoming, account, contact, text, message_id, sent_at)

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

    def on_connection_state(self, account: Account, state: ConnectionState, reason: str) -> None:  # noqa: ARG002 - the event signature
        if state is ConnectionState.CONNECTED:
            self.worker.submit(self.messaging.resend_unsent, account)
            self.worker.submit(self.groupchat.connected, account)
        else:
            # The account no longer sees its contacts: watchers learn they are offline.
            self.worker.submit(self.presence.disconnected, account)
            self.worker.submit(self.groupchat.disconnected, account)
