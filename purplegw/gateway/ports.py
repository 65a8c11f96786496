"""What the gateway's rules need from the rest of the program, as typed ports.

The rules (this package) are plain objects; the runtime in purplegw.actors
provides each port: ``FrontPort`` is the SIP front (purplegw.actors.front),
``WorkerPort`` the gateway's worker thread (purplegw.actors.worker),
``DirectoryPort`` the supervisor's directory of account actors, ``StorePort``
the repositories of purplegw.store.  Tests drive the rules with fakes of
the same shape and no threads (tests/gateway/fakes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import concurrent.futures

    from purplegw.actors.front.transport import Address, Source
    from purplegw.gateway.model import Account, Presence
    from purplegw.protocols.base import AuthorizationAnswer, TypingState
    from purplegw.sip.message import Request, Response
    from purplegw.store.bindings import StoredBinding
    from purplegw.store.database import Database
    from purplegw.store.outbox import NewIncoming, QueuedMessage
    from purplegw.store.publications import StoredPublication
    from purplegw.store.room_marks import RoomMark
    from purplegw.store.sendq import NewSend, PendingSend
    from purplegw.store.subscriptions import StoredSubscription
    from purplegw.store.users import SipUser

T = TypeVar("T")

Reply = Callable[["Response"], None]


# --- the worker ---------------------------------------------------------------------


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class WorkerPort(Protocol):
    """The one thread every rule runs on (purplegw.actors.worker.Worker)."""

    def submit(self, fn: Callable[..., object], /, *args: Any) -> None: ...

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> TimerHandle: ...

    def completion(self, callback: Callable[[T], object]) -> Callable[[T], None]:
        """A done-callback that runs ``callback(future)`` on the worker, from any thread."""
        ...

    def stop(self) -> None:
        """Refuse new work, finish what was submitted, drop the timers."""
        ...


# --- the SIP front ------------------------------------------------------------------


class FrontPort(Protocol):
    def send_request(
        self, request: Request, destination: Address | Source
    ) -> concurrent.futures.Future[Response]:
        """Send ``request`` in a new client transaction; the future holds its final response."""
        ...

    def forward(
        self, request: Request, destination: Address
    ) -> concurrent.futures.Future[Response]:
        """Pass a proxied request on (its own Via on top, nothing else added)."""
        ...


# --- the accounts -------------------------------------------------------------------


class Outcome(Protocol):
    """An account's answer to a request, as a SIP status (purplegw.actors.state.Outcome)."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str: ...

    @property
    def ok(self) -> bool: ...

    @property
    def value(self) -> Any:
        """What a query returned (a room's occupants, whether a contact is a room)."""
        ...


class OutcomeFuture(Protocol):
    """An account's pending answer; callbacks run on whichever thread sets it."""

    def get(self, timeout: float | None = None) -> Outcome: ...

    def add_done_callback(self, callback: Callable[[OutcomeFuture], object]) -> None: ...


class AccountHandlePort(Protocol):
    """One running account (purplegw.actors.account.AccountHandle or its remote twin)."""

    @property
    def info(self) -> Account: ...

    def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,
        receipt: bool = False,  # noqa: FBT001, FBT002 - positional: requests carry args as a tuple
    ) -> OutcomeFuture: ...

    def send_typing(self, contact: str, state: TypingState) -> OutcomeFuture: ...

    def set_presence(self, presence: Presence) -> OutcomeFuture: ...

    def add_contact(self, contact: str) -> OutcomeFuture: ...

    def remove_contact(self, contact: str) -> OutcomeFuture: ...

    def answer_authorization(self, contact: str, answer: AuthorizationAnswer) -> OutcomeFuture: ...

    def bounce(self, contact: str, message_id: str, status: int, reason: str) -> OutcomeFuture: ...

    def send_receipt(
        self, contact: str, message_id: str, kind: str, receipts: str = ""
    ) -> OutcomeFuture: ...

    def messages_stored(self, tokens: tuple[int, ...]) -> OutcomeFuture: ...

    def login(self) -> OutcomeFuture: ...

    def logout(self) -> OutcomeFuture: ...

    # Rooms (purplegw.gateway.groupchat; protocols/base.py Session.join_room...).

    def is_room(self, contact: str) -> OutcomeFuture: ...

    def join_room(
        self, room: str, nick: str, history: int = 0, since: float | None = None
    ) -> OutcomeFuture: ...

    def leave_room(self, room: str) -> OutcomeFuture: ...

    def send_room_message(self, room: str, text: str, message_id: str) -> OutcomeFuture: ...

    def room_occupants(self, room: str) -> OutcomeFuture: ...

    def change_nick(self, room: str, nick: str) -> OutcomeFuture: ...

    def room_bookmarks(self) -> OutcomeFuture: ...


class DirectoryPort(Protocol):
    """The running accounts (purplegw.actors.supervisor.Directory)."""

    def get(self, sip_user: str, protocol: str) -> AccountHandlePort | None: ...

    def of_user(self, sip_user: str) -> Sequence[AccountHandlePort]: ...

    def all(self) -> Sequence[AccountHandlePort]: ...


# --- the store ----------------------------------------------------------------------


class UsersPort(Protocol):
    def get(self, username: str, domain: str) -> SipUser | None: ...


class OutboxPort(Protocol):
    """Messages towards SIP users, kept until a 2xx (purplegw.store.outbox)."""

    def put(
        self, *, sip_user: str, account_id: int, protocol: str, contact: str, body: bytes
    ) -> int: ...

    def put_many(self, messages: Sequence[NewIncoming]) -> list[int]: ...

    def pending(self, sip_user: str | None = None, limit: int = 1000) -> list[QueuedMessage]: ...

    def users_with_pending(self) -> list[str]: ...

    def failed_attempt(self, seq: int, error: str) -> None: ...

    def done(self, seq: int) -> None: ...

    def done_many(self, seqs: Iterable[int]) -> int: ...


class SendQueuePort(Protocol):
    """Messages from SIP users answered 202, until sent (purplegw.store.sendq)."""

    def put(
        self, *, sip_user: str, protocol: str, contact: str, body: str, message_id: str
    ) -> bool: ...

    def put_many(self, sends: Sequence[NewSend]) -> list[bool]: ...

    def done(self, message_id: str) -> None: ...

    def done_many(self, message_ids: Iterable[str]) -> int: ...

    def acked_many(self, message_ids: Sequence[str]) -> int: ...

    def receipts_done(self, message_ids: Sequence[str]) -> int: ...

    def awaiting_receipt(self, since: float) -> list[PendingSend]: ...

    def pending(self) -> list[PendingSend]: ...

    def get(self, message_id: str) -> PendingSend | None: ...

    def pending_after(self, seq: int) -> list[PendingSend]: ...

    def pending_of(self, sip_users: Iterable[str]) -> list[PendingSend]: ...


class SubscriptionsPort(Protocol):
    """Presence subscription dialogs (purplegw.store.subscriptions)."""

    def save(self, sub: StoredSubscription) -> None: ...

    def advance_cseq(self, key: str, local_cseq: int) -> None: ...

    def set_state(self, key: str, state: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def live(self, now: float) -> list[StoredSubscription]: ...

    def of_user(self, sip_user: str, now: float) -> list[StoredSubscription]: ...

    def purge(self, now: float) -> int: ...


class BindingsPort(Protocol):
    """Registrar bindings in the database, read on the worker (purplegw.store.bindings)."""

    def of_aor(self, aor: str, now: float) -> list[StoredBinding]: ...

    def live(self, now: float) -> list[StoredBinding]: ...

    def changed_since(self, since: float, now: float) -> list[tuple[str, float, str]]: ...

    def purge(self, now: float) -> int: ...


class PublicationsPort(Protocol):
    """Phones' PUBLISH state in the database, read on the worker (purplegw.store.publications)."""

    def of_resource(self, resource: str, now: float) -> list[StoredPublication]: ...

    def live(self, now: float) -> list[StoredPublication]: ...

    def purge(self, now: float) -> int: ...


class OwnersPort(Protocol):
    """Who holds a user's lease, and the nodes' addresses (purplegw.store.owners)."""

    def holder(self, sip_user: str) -> tuple[str, str] | None: ...

    def addresses(self, max_age: float) -> dict[str, str]: ...


class SharedStatePort(Protocol):
    """Writes of bindings and publications, queued: never blocks (purplegw.actors.state_writer)."""

    def put_binding(self, binding: StoredBinding, uri: str) -> None: ...

    def delete_binding(self, aor: str, uri: str) -> None: ...

    def clear_bindings(self, aor: str) -> None: ...

    def put_publication(self, publication: StoredPublication, replaces: str | None) -> None: ...

    def delete_publication(self, etag: str) -> None: ...


class DeadLettersPort(Protocol):
    """Messages given up on, with the reason (purplegw.store.dead_letters)."""

    def bury_send(
        self, sendq: Any, message_id: str, *, status: int, reason: str, attempts: int = 1
    ) -> int | None: ...

    def bury_incoming(
        self, outbox: Any, seq: int, *, status: int, reason: str, message_id: str = ""
    ) -> int | None: ...


class RoomMarksPort(Protocol):
    """The rooms each account is in, and the last message delivered (purplegw.store.room_marks)."""

    def save_many(self, marks: list[RoomMark]) -> None: ...

    def delete(self, account_id: int, room: str) -> None: ...

    def all(self) -> list[RoomMark]: ...


class StorePort(Protocol):
    @property
    def db(self) -> Database:
        """For group commits (purplegw.store.groupcommit)."""
        ...

    @property
    def users(self) -> UsersPort: ...

    @property
    def dead_letters(self) -> DeadLettersPort: ...

    @property
    def outbox(self) -> OutboxPort: ...

    @property
    def sendq(self) -> SendQueuePort: ...

    @property
    def subscriptions(self) -> SubscriptionsPort: ...

    @property
    def bindings(self) -> BindingsPort: ...

    @property
    def publications(self) -> PublicationsPort: ...

    @property
    def owners(self) -> OwnersPort: ...

    @property
    def room_marks(self) -> RoomMarksPort: ...
