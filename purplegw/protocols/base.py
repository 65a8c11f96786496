"""The adapter contract: what every protocol plugin provides.

A protocol plugin is a distribution that registers an ``Adapter`` subclass
in the ``purplegw.protocols`` entry-point group (the bundled XMPP, IRC and
dummy adapters are registered the same way, in setup.py).  The entry-point
name must equal ``Adapter.name``.

Two objects per protocol:

``Adapter``
    Stateless descriptor, one per protocol per process: name, aliases,
    default config fragment, config schema, environment check, and a
    factory for sessions.

``Session``
    One logged-in external account, owned by exactly one account actor.
    All its coroutines run on the asyncio loop the account actor hands it
    (``SessionContext.loop``) and must never block that loop: other
    accounts share it.  The session reports what happens on the network
    through the ``SessionEvents`` callbacks it was given; those callbacks
    are plain functions, safe to call from the loop, and never raise.

Error mapping (see ``purplegw.protocols.errors``): a coroutine that raises
``NotImplementedError`` means "this protocol cannot do that" (SIP 501),
``BadCredentialsError`` stops retrying until the account row changes,
``TransientError`` is retried with backoff, ``DeliveryError`` is a per-
message failure (SIP 4xx/5xx hint in ``status_hint``), anything else is a
bug in the adapter (SIP 500 and a log line).
"""

from __future__ import annotations

import copy
import enum
import functools
import tomllib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from purplegw.exceptions import AdapterError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path

    from purplegw.presence import ContactPresence, Presence


class ConnectionState(enum.Enum):
    """What an account's external connection is doing (reported by sessions)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    TRANSIENT_DISCONNECT = "transient_disconnect"  # will be retried with backoff
    BAD_CREDENTIALS = "bad_credentials"  # not retried until the row changes
    UNKNOWN_ERROR = "unknown_error"
    LOGGED_OUT = "logged_out"


class TypingState(enum.Enum):
    """Chat states common to XEP-0085 and RFC 3994 (is-composing)."""

    ACTIVE = "active"  # RFC 3994 state=idle after a message; XEP-0085 <active/>
    COMPOSING = "composing"  # RFC 3994 state=active; XEP-0085 <composing/>
    PAUSED = "paused"  # XEP-0085 <paused/>; RFC 3994 idle
    INACTIVE = "inactive"
    GONE = "gone"


class AuthorizationAnswer(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


# --- errors a session raises -------------------------------------------------


class SessionError(AdapterError):
    """Base of the errors a session raises on purpose."""

    status_hint: int = 500


class TransientError(SessionError):
    """Network trouble, server down, timeout: retry later with backoff."""

    status_hint = 503


class BadCredentialsError(SessionError):
    """The server rejected the account's credentials: do not retry."""

    status_hint = 403


class DeliveryError(SessionError):
    """One message could not be handed to the network."""

    def __init__(self, message: str, status_hint: int = 480) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class InvalidContactError(DeliveryError):
    """The contact id cannot exist on the network (a nick with CR/LF, a bad JID...).

    Raised before anything is sent; the message is for the SIP reason phrase
    and logs, so it must not repeat the contact (it may hold control characters).
    """

    def __init__(self, message: str = "not a valid contact", status_hint: int = 404) -> None:
        super().__init__(message, status_hint)


class UnacceptableContentError(DeliveryError):
    """The text cannot be carried by the network (a NUL on IRC): SIP 488.

    As for ``InvalidContactError``, the message never quotes the text.
    """

    def __init__(self, message: str = "content not acceptable", status_hint: int = 488) -> None:
        super().__init__(message, status_hint)


class Ignore(Exception):  # noqa: N818 - a sentinel, not an error
    """Raised by a session to say "drop this request silently"."""


# --- what a session is given ---------------------------------------------------


@dataclass(frozen=True)
class ProxySettings:
    """HTTP CONNECT proxy for outgoing connections ([proxy] in the config)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AccountCredentials:
    """One row of the account table, password already decrypted.

    Slots: the main process keeps one per account (``runtime.rows``), and
    pickling a row to a worker would give a dict-backed one a ``__dict__``.
    """

    account_id: int
    sip_user: str
    ext_user: str
    protocol: str  # canonical adapter name, aliases resolved
    password: str = field(repr=False)
    original_protocol: str = ""  # the row's ext_prot as written (e.g. "gtalk")
    # Keys the session derived from the password in an earlier run
    # (``SessionEvents.on_key_derived``), by kind.  Not part of the row's
    # identity: a reload does not restart an account whose keys changed.
    derived_keys: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


def with_derived_keys(
    rows: Iterable[AccountCredentials], keys: Mapping[int, Mapping[str, str]]
) -> list[AccountCredentials]:
    """``rows`` with ``keys[account_id]`` added to their ``derived_keys`` (the given kinds win)."""
    return [
        replace(row, derived_keys={**row.derived_keys, **keys[row.account_id]})
        if row.account_id in keys
        else row
        for row in rows
    ]


@dataclass(frozen=True)
class OutgoingMessage:
    """A message a session sent that the network never acknowledged."""

    contact: str
    text: str
    message_id: str
    receipt: bool = False  # the sender asked for a delivery receipt (send_message)


# Roster subscription states (RFC 6121 2.1.2.5): who sees whose presence.
ROSTER_SUBSCRIPTIONS = frozenset({"none", "to", "from", "both"})


@dataclass(frozen=True, slots=True)
class RosterItem:
    """One contact on an account's roster (contact list), as the network keeps it.

    ``contact`` is in the network's id form (as in every event); ``name`` the
    display name the user gave it ("" when none).  ``subscription`` says who
    sees whose presence, in RFC 6121 terms: ``"to"`` the account sees the
    contact's, ``"from"`` the contact sees the account's, ``"both"``,
    ``"none"``.  ``pending_out`` is True while the account's own request to
    see the contact is unanswered (XMPP ``ask="subscribe"``).  Networks
    without authorization (IRC) report ``"both"``.  Picklable: it crosses
    from worker processes.
    """

    contact: str
    name: str = ""
    subscription: str = "none"
    pending_out: bool = False

    @property
    def sees_contact(self) -> bool:
        """Whether the account may see the contact's presence."""
        return self.subscription in ("to", "both")

    @property
    def contact_sees(self) -> bool:
        """Whether the contact may see the account's presence."""
        return self.subscription in ("from", "both")


class SessionEvents(Protocol):
    """Callbacks a session calls when something happens on its network.

    Implemented by the account actor.  Contacts are given in the network's
    own id form (``bob@example.org`` for XMPP, ``nick`` for IRC); the SIP
    side turns them into SIP URIs.
    """

    def on_connection_state(self, state: ConnectionState, reason: str = "") -> None:
        """Triggered when the connection changes state; ``reason`` for operators."""

    def on_message(  # noqa: PLR0913, PLR0917 - the event's fields
        self,
        contact: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        receipts: str = "",
        ack_token: int | None = None,
    ) -> None:
        """Triggered when a contact sends the account a text message.

        ``sent_at`` is when the sender wrote it (POSIX seconds) if the network
        says so and it was held on the way (XEP-0203 delay, Matrix
        ``origin_server_ts``); None means "just now".

        ``ack_token``: the session holds its acknowledgement to the server
        until ``Session.messages_stored`` names the token (the gateway stored
        the message, or refused it).  Passed only to events objects whose
        ``takes_ack_tokens`` is True; a session may hold acks no longer than
        it likes (XMPP: ``ACK_HOLD_MAX``).
        """

    def on_contact_presence(self, presence: ContactPresence) -> None:
        """Triggered when a contact's presence changes (all resources, current)."""

    def on_authorization_request(self, contact: str, text: str = "") -> None:
        """Triggered when a contact asks to see the account's presence."""

    def on_roster(self, items: Sequence[RosterItem]) -> None:
        """Triggered once per login with the whole roster (contact list).

        The full list replaces whatever an earlier login reported.  A network
        without a server-side roster reports the contacts the account watches
        (IRC: its MONITOR/ISON list), possibly none.  A session that never
        calls it leaves the gateway with the contacts it saw (presence,
        authorization): sessions written before rosters keep working.
        """

    def on_roster_item(self, item: RosterItem) -> None:
        """Triggered when a contact is added to the roster or changes there after login.

        A change of name or subscription state is a new ``RosterItem`` for the
        same contact (XMPP roster push).
        """

    def on_roster_removed(self, contact: str) -> None:
        """Triggered when a contact leaves the roster after login (by any client of the account)."""

    def on_authorization_answer(self, contact: str, answer: AuthorizationAnswer) -> None:
        """Triggered when a contact accepts or refuses our subscription request."""

    def on_typing(self, contact: str, state: TypingState) -> None:
        """Triggered when a contact starts/stops typing to the account."""

    def on_receipt(self, contact: str, message_id: str) -> None:
        """Triggered when the network confirms a message reached the contact."""

    def on_message_acked(self, message_id: str) -> None:
        """Triggered when the server acknowledged a message ``send_message`` wrote.

        Only for sessions whose ``send_message`` returned ``True`` for it.
        """

    def on_message_failed(self, message_id: str, status: int, reason: str) -> None:
        """Triggered when the network refused a message ``send_message`` already wrote.

        For good (an XMPP stanza error came back with its id): the gateway
        reports it as a permanent failure (``status`` a SIP code, 4xx/5xx)
        instead of waiting for an acknowledgement or resending it.
        """

    def on_room_message(  # noqa: PLR0913, PLR0917 - one argument per fact the phone is shown
        self,
        room: str,
        nick: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        is_history: bool = False,  # noqa: FBT001, FBT002 - the event's shape
    ) -> None:
        """Triggered when occupant ``nick`` of a joined ``room`` posts ``text``.

        ``room`` in the network's form (``room@conference.example.org``,
        ``#channel``).  The account's own messages echoed by the room are not
        reported.  ``is_history`` marks the backlog a room sends on join
        (with ``sent_at`` from its delay stamp); ``message_id`` is the room's
        stable id where it has one (XEP-0359 stanza-id), for de-duplication.
        """

    def on_room_private_message(
        self,
        room: str,
        nick: str,
        text: str,
        message_id: str | None = None,
    ) -> None:
        """Triggered when occupant ``nick`` of ``room`` writes to the account privately."""

    def on_room_joined(self, room: str, nick: str, occupants: list[str]) -> None:
        """Triggered when the account is in ``room`` as ``nick`` (a join, a rejoin, a new nick)."""

    def on_room_occupants(self, room: str, occupants: list[str]) -> None:
        """Triggered when someone enters or leaves a joined ``room`` (all nicks, current)."""

    def on_room_left(self, room: str, reason: str = "") -> None:
        """Triggered when the account is no longer in ``room`` (left, kicked, room gone)."""

    def on_room_error(self, room: str, status: int, reason: str) -> None:
        """Triggered when a room refused the account after the join was answered.

        ``status`` as a SIP code (403 members-only/banned/password, 404 no
        such room, 409 nick taken), ``reason`` the server's own text.
        """

    def on_key_derived(self, kind: str, value: str) -> None:
        """Triggered when the session derived a key from the password worth keeping.

        The gateway stores ``value`` encrypted, like the password, and hands
        it back in ``AccountCredentials.derived_keys[kind]`` on the next
        start, so that a restart need not derive it again.  ``value`` must
        say itself what it was derived from: the session checks that before
        using it.
        """


@dataclass
class SessionContext:
    """Everything a session needs besides its credentials."""

    loop: asyncio.AbstractEventLoop
    events: SessionEvents
    config: dict[str, Any]  # the [protocols.<name>] section, validated
    proxy: ProxySettings | None = None
    shared: dict[str, Any] = field(default_factory=dict)  # per-process caches (ssl context...)
    # [messaging] strangers: "deny" refuses messages from senders not on the
    # account's roster (with the network's policy error), "allow" takes them.
    strangers: str = "allow"


class Session:
    """One external account's connection.  Subclass and override.

    Every method is a coroutine run on ``context.loop``.  The default
    implementations raise ``NotImplementedError`` (mapped to SIP 501).
    """

    def __init__(self, credentials: AccountCredentials, context: SessionContext) -> None:
        self.credentials = credentials
        self.context = context

    async def login(self) -> None:
        """Triggered when the account actor starts or reconnects the account.

        Return once logged in (roster received where the protocol has one).
        Raise ``BadCredentialsError`` or ``TransientError``.
        """
        raise NotImplementedError

    async def logout(self) -> None:
        """Triggered on shutdown, row removal, or PIDF basic=closed.

        Must not raise when already disconnected.
        """
        raise NotImplementedError

    async def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,
        receipt: bool = False,  # noqa: FBT001, FBT002 - positional: requests carry args as a tuple
    ) -> bool | None:
        """Triggered when the SIP user sends ``text`` to ``contact``.

        Return once the network took the message (not when it was read).
        ``message_id`` is stable across retries: use it for receipts and
        to let the server drop duplicates where the protocol allows.
        Raise ``DeliveryError`` for a message that cannot be delivered.

        ``receipt`` is True when the sender waits for the contact's delivery
        receipt (the phone asked for an IMDN ``positive-delivery``): ask the
        contact's client for one where the protocol can (XMPP: XEP-0184) and
        report it as ``events.on_receipt``.  When False nobody waits for it;
        a session may still ask (XMPP does when the server has no stream
        management), but should not make every message cost a receipt.
        Keep the wish with the message: ``unacked_messages`` returns it.

        Return ``True`` when the message was only written and the server's
        acknowledgement will follow as ``events.on_message_acked`` (XEP-0198):
        the gateway then keeps its durable copy until that acknowledgement,
        and ``unacked_messages`` must return it if the connection dies first.
        """
        raise NotImplementedError

    async def set_presence(self, presence: Presence) -> None:
        """Triggered when the SIP user publishes a new presence (PUBLISH)."""
        raise NotImplementedError

    async def add_contact(self, contact: str) -> None:
        """Triggered when the SIP user subscribes to ``contact``'s presence.

        Add it to the roster/watch list and ask for authorization where the
        protocol requires it; current presence arrives by ``on_contact_presence``.
        """
        raise NotImplementedError

    async def remove_contact(self, contact: str) -> None:
        """Triggered when the last SIP subscription to ``contact`` ends."""
        raise NotImplementedError

    async def answer_authorization(self, contact: str, answer: AuthorizationAnswer) -> None:
        """Triggered when the SIP user allows or denies a contact's request."""
        raise NotImplementedError

    async def send_typing(self, contact: str, state: TypingState) -> None:
        """Triggered when the SIP user's client reports is-composing (RFC 3994)."""
        raise NotImplementedError

    async def bounce(self, contact: str, message_id: str | None, status: int, reason: str) -> None:
        """Triggered when a message from ``contact`` could not be delivered to the SIP user.

        For good (a permanent failure, not a retry): tell the sender.

        ``message_id`` is the id ``on_message`` gave (None if the network had
        none), ``status`` the final SIP status (404, 403, 413, 488, 503...)
        and ``reason`` a short text for the sender.  Protocols with error
        replies send one (XMPP: a type="error" message with the original
        id); others may send a short notice or leave the default (501).
        """
        raise NotImplementedError

    def messages_stored(self, tokens: Sequence[int]) -> None:
        """Triggered when the gateway stored (or refused) messages ``on_message`` gave ack tokens.

        Called on the session's loop, never queued: the session may now tell
        its network they were received (XMPP: the XEP-0198 ``<a/>``).  Tokens
        it does not know (a stream that ended since) are ignored.  Default:
        the session gives no tokens.
        """

    async def send_receipt(
        self, contact: str, message_id: str, kind: str, receipts: str = ""
    ) -> None:
        """Triggered when the SIP user's phone reports a message ``delivered`` or ``displayed``.

        ``kind`` is ``"delivered"`` or ``"displayed"`` (RFC 5438 IMDN).  Send
        it only where the contact asked for it (XEP-0184 / XEP-0333);
        otherwise return quietly.  ``receipts`` is what the contact asked as
        the session reported it in ``on_message`` (kept with the queued
        message, so it survives a restart); empty: the session's own memory.
        Default: the protocol has none (501).
        """
        raise NotImplementedError

    # --- group chat (rooms) --------------------------------------------------
    # A room is a multi-user conversation of the network: an XMPP MUC
    # (XEP-0045) or an IRC channel.  Rooms are named in the network's form
    # (``room@conference.example.org``, ``#channel``).  The defaults refuse
    # (501): a protocol without rooms says so and the phone gets a clear
    # answer.  What is joined does not survive the session: the gateway
    # joins again after a reconnect (``join_room`` with ``since``).

    async def is_room(self, contact: str) -> bool:  # noqa: ARG002 - for subclasses
        """Triggered before a message to ``contact`` is sent: is it a room?

        Cheap after the first call for a service (cache it).  Default: no
        rooms on this network.
        """
        return False

    async def join_room(
        self,
        room: str,
        nick: str,
        history: int = 0,
        since: float | None = None,
    ) -> list[str]:
        """Triggered when the SIP user first writes to ``room`` (or autojoin, rejoin).

        Return once in the room; the value is the occupants' nicks.  A nick
        already taken is retried with a suffix (``nick_``, ``nick2``...): the
        nick in use arrives in ``on_room_joined``.  ``history`` asks for the
        last N messages, ``since`` (POSIX seconds) for only those after it
        (a rejoin).  Raise ``DeliveryError`` with the server's reason: 403
        (members-only, banned, password), 404 (no such room).
        """
        raise NotImplementedError

    async def leave_room(self, room: str) -> None:
        """Triggered by ``/leave``: leave ``room`` (quietly when not in it)."""
        raise NotImplementedError

    async def send_room_message(self, room: str, text: str, message_id: str) -> None:
        """Triggered when the SIP user posts ``text`` to a joined ``room``."""
        raise NotImplementedError

    async def room_occupants(self, room: str) -> list[str]:
        """Triggered by ``/who``: the nicks in ``room`` now (the account's own included)."""
        raise NotImplementedError

    async def change_nick(self, room: str, nick: str) -> None:
        """Triggered by ``/nick NEW``: return once renamed; 409 when ``nick`` is taken."""
        raise NotImplementedError

    async def room_bookmarks(self) -> list[tuple[str, str]]:
        """Triggered after login: the bookmarked rooms to join (``(room, nick)``, nick may be "").

        XMPP: XEP-0402 bookmarks with autojoin, else XEP-0048's.  Default: none.
        """
        return []

    def unacked_messages(self) -> list[OutgoingMessage]:
        """Triggered when the session reported ``TRANSIENT_DISCONNECT``.

        Return the messages ``send_message`` accepted but the network never
        acknowledged, oldest first: the account actor resends them (same
        ``message_id``) through the next session.  Default: the protocol
        tracks nothing, so nothing is returned.
        """
        return []


class Adapter:
    """Descriptor of one protocol.  Subclass, set the class attributes.

    ``name`` must equal the entry-point name.  ``aliases`` are other ids
    that may appear in the ``ext_prot`` column (the original module's
    libpurple plugin ids such as ``prpl-jabber``).
    """

    name: ClassVar[str]
    dist_name: ClassVar[str] = "purplegw"
    version: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    # Which SIP URI hosts this protocol can reach without an explicit
    # ;proto= marker: True means "any user@host" (XMPP), False means only
    # explicit addressing (IRC nicks).
    addresses_user_at_host: ClassVar[bool] = False
    # Whether the network has rooms (``Session.is_room``, ``join_room``...):
    # the gateway asks about rooms only on protocols that say True.
    has_rooms: ClassVar[bool] = False

    def get_default_config(self) -> dict[str, Any]:
        """Default values of ``[protocols.<name>]``; must contain ``enabled``."""
        return {"enabled": True}

    def validate_config(self, section: dict[str, Any]) -> list[str]:  # noqa: ARG002 - the base signature
        """Problems with ``[protocols.<name>]`` as "key: what is wrong" strings."""
        return []

    def validate_environment(self) -> None:
        """Raise ``AdapterError`` when a dependency is missing or unusable.

        Called in every process that loads the adapters (the daemon, each
        worker process), hosting accounts of this protocol or not: find the
        library (``importlib.util.find_spec``) rather than import it, and
        import it in ``create_session``.
        """

    def create_session(self, credentials: AccountCredentials, context: SessionContext) -> Session:
        """Triggered once per login attempt by the account actor."""
        raise NotImplementedError

    def normalize_contact(self, contact: str) -> str:
        """The canonical form of a contact id (case, resource stripped...)."""
        return contact

    def contact_error(self, contact: str) -> str | None:  # noqa: ARG002 - for subclasses
        """Triggered before a contact enters the gateway's state (a SUBSCRIBE).

        Return why ``contact`` cannot name anyone on this network (a short
        fixed text that does not echo it), or None.  Default: None (the
        session still checks what it is given).
        """
        return None

    def unsendable(self, text: str) -> tuple[int, str] | None:
        """Triggered before a SIP MESSAGE is accepted (202) for this network.

        Return None when the network can carry ``text`` as it is (or with the
        adapter's documented, lossless-as-possible cleaning), else a SIP
        status and a short reason: 488 for content it cannot carry, 413 for
        size.  Must be cheap and pure: it runs on the SIP side for every
        message.  Default: NUL is refused everywhere (binary content).
        """
        if "\0" in text:
            return 488, "NUL characters cannot be sent"
        return None


@functools.cache
def _parsed_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def load_defaults(path: Path) -> dict[str, Any]:
    """An adapter's ``defaults.toml``, parsed once per process; a fresh copy each call.

    Every session merges the defaults into its config: parsing the file per
    login cost 0.1 ms of the loop thread, 1.4 % of a mass login.
    """
    return copy.deepcopy(_parsed_toml(path))
