"""Fan-out of account events to whoever listens (the SIP side, tests...).

Shape of Mopidy's ``mopidy/listener.py``: the sender never waits.  Events
go to every running pykka actor that subclasses ``EventSink`` with
``tell`` -- never ``ask``: an account actor asking a SIP actor that is
itself asking the account would deadlock, and a slow sink would stall the
shared loop.  Sinks catch and log their own errors (``EventSink.on_event``)
so one broken subscriber cannot kill the sender or the other sinks.

Plain objects may also listen (``add_sink``): worker processes use that to
forward events to the main process.  They are called inline on the
sender's thread, so they must be quick, thread-safe and must not block.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import pykka
from pykka import messages

if TYPE_CHECKING:
    from purplegw.actors.state import Outcome
    from purplegw.presence import ContactPresence
    from purplegw.protocols.base import (
        AuthorizationAnswer,
        ConnectionState,
        RosterItem,
        TypingState,
    )

logger = logging.getLogger(__name__)


class AccountInfo(NamedTuple):
    """Which account an event is about (picklable: it crosses processes)."""

    account_id: int
    sip_user: str
    protocol: str
    ext_user: str


class EventSink:
    """Receiver of account events.  Subclass, override what you need.

    As a pykka actor (``class SipFront(pykka.ThreadingActor, EventSink)``)
    it receives events by ``tell`` on its own thread.  Each method is
    "Triggered when..." and must not raise (errors are logged anyway).
    """

    def on_event(self, event: str, **kwargs: Any) -> None:
        """Dispatch one event to the method of the same name, logging errors."""
        try:
            handler = getattr(self, event)
            for optional in _OPTIONAL_KEYWORDS:
                if optional in kwargs and not _takes(handler, optional):
                    del kwargs[optional]  # a sink written before the event had it
            handler(**kwargs)
        except Exception:
            logger.exception("%s failed to handle %s", type(self).__name__, event)

    def on_connection_state(
        self,
        account: AccountInfo,
        state: ConnectionState,
        reason: str,
        retry_at: float | None = None,
        gave_up: bool = False,  # noqa: FBT001, FBT002 - an event keyword
    ) -> None:
        """Triggered when an account's state changes (CONNECTING ... LOGGED_OUT).

        ``retry_at`` (POSIX seconds) when the account waits to try again;
        ``gave_up`` when it stopped after flapping (until reload or login).
        Both keywords are only passed when set, so sinks without them keep
        working.
        """

    def on_message(  # noqa: PLR0913, PLR0917 - the event's fields
        self,
        account: AccountInfo,
        contact: str,
        text: str,
        message_id: str | None,
        sent_at: float | None = None,
        receipts: str = "",
        ack_token: int | None = None,
    ) -> None:
        """Triggered when an external contact sends the SIP user a message.

        ``sent_at`` (POSIX seconds) when the network said it was written
        earlier (XEP-0203 delay, Matrix ``origin_server_ts``); ``receipts``
        what the sender asked to be told ("receipt", "markable", comma
        separated).  Both keywords are only passed when known, so sinks
        without them keep working.  ``ack_token`` (only while a sink
        ``confirms_ack_tokens``): that sink calls the account handle's
        ``messages_stored`` with it once the message is stored or refused.
        """

    def on_contact_presence(self, account: AccountInfo, presence: ContactPresence) -> None:
        """Triggered when an external contact's presence changes."""

    def on_authorization_request(self, account: AccountInfo, contact: str, text: str) -> None:
        """Triggered when an external contact asks to see the SIP user's presence."""

    def on_authorization_answer(
        self, account: AccountInfo, contact: str, answer: AuthorizationAnswer
    ) -> None:
        """Triggered when a contact accepts or refuses the SIP user's request."""

    def on_account_removed(self, account: AccountInfo) -> None:
        """Triggered when a reload removed an account's row (it has logged out).

        ``account`` names the row's (sip_user, protocol); its id is 0.
        """

    def on_roster(self, account: AccountInfo, items: tuple[RosterItem, ...]) -> None:
        """Triggered when an account logged in, with its whole roster."""

    def on_roster_item(self, account: AccountInfo, item: RosterItem) -> None:
        """Triggered when a contact was added to an account's roster or changed there."""

    def on_roster_removed(self, account: AccountInfo, contact: str) -> None:
        """Triggered when a contact left an account's roster."""

    def on_typing(self, account: AccountInfo, contact: str, state: TypingState) -> None:
        """Triggered when an external contact starts/stops typing."""

    def on_receipt(self, account: AccountInfo, contact: str, message_id: str) -> None:
        """Triggered when the network confirms a message reached the contact."""

    def on_send_result(self, account: AccountInfo, message_id: str, outcome: Outcome) -> None:
        """Triggered when a message that was queued (202) was finally sent or failed."""

    def on_key_derived(self, account: AccountInfo, kind: str, value: str) -> None:
        """Triggered when a session derived a key from its password worth storing."""

    def on_room_message(  # noqa: PLR0913, PLR0917 - the event's shape
        self,
        account: AccountInfo,
        room: str,
        nick: str,
        text: str,
        message_id: str | None,
        sent_at: float | None,
        is_history: bool,  # noqa: FBT001
    ) -> None:
        """Triggered when an occupant of a room the account is in posts (SessionEvents)."""

    def on_room_private_message(
        self, account: AccountInfo, room: str, nick: str, text: str, message_id: str | None
    ) -> None:
        """Triggered when a room occupant writes to the account privately."""

    def on_room_joined(
        self, account: AccountInfo, room: str, nick: str, occupants: list[str]
    ) -> None:
        """Triggered when the account is in a room (joined, rejoined, renamed)."""

    def on_room_occupants(self, account: AccountInfo, room: str, occupants: list[str]) -> None:
        """Triggered when someone enters or leaves a room the account is in."""

    def on_room_left(self, account: AccountInfo, room: str, reason: str) -> None:
        """Triggered when the account is no longer in a room."""

    def on_room_error(self, account: AccountInfo, room: str, status: int, reason: str) -> None:
        """Triggered when a room refused the account after a join was answered."""


# Event keywords added after the first sinks were written: passed only when
# known, and dropped for a handler that does not take them.
_OPTIONAL_KEYWORDS = ("sent_at", "receipts", "retry_at", "gave_up", "ack_token")


@functools.cache
def _accepts(function: Any, keyword: str) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return True
    return keyword in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def _takes(handler: Any, keyword: str) -> bool:
    return _accepts(getattr(handler, "__func__", handler), keyword)


_plain_sinks: list[EventSink] = []
_plain_lock = threading.Lock()
# Whether a plain sink reports received messages stored (``confirms_ack_tokens``).
_confirming = False


def add_sink(sink: EventSink) -> None:
    """Make a plain (non-actor) object receive every event inline."""
    with _plain_lock:
        _plain_sinks.append(sink)
        _sinks_changed()


def remove_sink(sink: EventSink) -> None:
    with _plain_lock:
        if sink in _plain_sinks:
            _plain_sinks.remove(sink)
        _sinks_changed()


def _sinks_changed() -> None:
    """Recompute the flag ``ack_tokens_confirmed`` reads (under ``_plain_lock``)."""
    global _confirming  # noqa: PLW0603 - one flag, read per received message
    _confirming = any(getattr(s, "confirms_ack_tokens", False) for s in _plain_sinks)


def ack_tokens_confirmed() -> bool:
    """Whether a sink calls ``messages_stored`` back for the ack tokens of ``on_message``.

    The gateway does (its outbox commit, or its refusal), and so does a
    worker's forwarder to the main process's gateway.  Sessions hold their
    network's acknowledgement of a received message only then.
    """
    return _confirming


class _SinkCache:
    """The EventSink actors, looked up again only when the registry changed.

    ``ActorRegistry.get_by_class`` scans every actor; with 5,000 account
    actors that was ~1 ms per event.  The registry's list (pykka private,
    pinned) only grows at its end, so its length plus its last ref change
    whenever an actor started or stopped: scan again only then.
    """

    def __init__(self) -> None:
        self._mark: tuple[int, Any] = (-1, None)
        self._refs: list[Any] = []

    def refs(self) -> list[Any]:
        registry_refs = getattr(pykka.ActorRegistry, "_actor_refs", None)
        if registry_refs is None:  # pykka changed: stay correct, if slower
            return pykka.ActorRegistry.get_by_class(EventSink)
        try:
            mark = (len(registry_refs), registry_refs[-1])
        except IndexError:
            mark = (0, None)
        if mark[0] != self._mark[0] or mark[1] is not self._mark[1]:
            self._refs = pykka.ActorRegistry.get_by_class(EventSink)
            self._mark = mark
        return self._refs


_sink_cache = _SinkCache()


def send(event: str, **kwargs: Any) -> None:
    """Send ``event`` to every sink.  Never blocks, never raises."""
    refs = _sink_cache.refs()
    if refs:  # no message built when only plain sinks listen (the gateway's own)
        call = messages.ProxyCall(attr_path=("on_event",), args=(event,), kwargs=kwargs)
        for ref in refs:
            try:
                ref.tell(call)
            except pykka.ActorDeadError:
                # It stopped between the registry lookup and the tell.
                logger.debug("Event sink %s stopped; dropped %s", ref, event)
    with _plain_lock:
        sinks = list(_plain_sinks)
    for sink in sinks:
        sink.on_event(event, **kwargs)
