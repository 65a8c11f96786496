"""Account actors: one per (sip_user, ext_prot) row, owning one Session.

An account actor logs its session in, keeps it connected (restart policy
in ``purplegw.actors.state``), queues requests while offline, and turns the
session's callbacks into ``listener`` events.  All of an account's state
lives on its asyncio loop thread; the pykka methods only hop onto it.  A
login or send that never returns is cut by ``login_timeout`` /
``send_timeout``; an exception is caught and becomes a state; so one
account's trouble never reaches another's.

Two runtimes (``[actors] runtime``, measured in docs/runtime.md):
``shared_loop`` -- ``LoopAccountActor``, the actor itself runs on the
process's shared loop thread; ``thread_per_account`` --
``ThreadAccountActor``, a pykka thread plus a private loop thread each.

Others talk to an account through ``AccountHandle`` (or its worker-process
twin ``purplegw.actors.workers.RemoteAccountHandle``): every method returns
a ``pykka.Future[Outcome]`` at once and never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pykka
from pykka import messages

from purplegw.actors import listener
from purplegw.actors.listener import AccountInfo
from purplegw.actors.loop import LoopActor, LoopThread, login_gate
from purplegw.actors.state import (
    AccountState,
    AccountStatus,
    ActorsConfig,
    Outcome,
    RestartPolicy,
)
from purplegw.fifo import Fifo
from purplegw.protocols.base import (
    AccountCredentials,
    Adapter,
    AuthorizationAnswer,
    BadCredentialsError,
    ConnectionState,
    OutgoingMessage,
    ProxySettings,
    Session,
    SessionContext,
    TransientError,
    TypingState,
)
from purplegw.protocols.errors import outcome_for
from purplegw.wakeup import Wakeup

if TYPE_CHECKING:
    from collections.abc import Sequence

    from purplegw.presence import ContactPresence, Presence
    from purplegw.protocols.base import RosterItem

logger = logging.getLogger(__name__)

# Requests that wait in the queue while the account is offline.  Typing
# notifications are dropped instead: stale "is typing" is worse than none.
_QUEUED_OPS = frozenset(
    {
        "send_message",
        "add_contact",
        "remove_contact",
        "answer_authorization",
        "bounce",
        "send_receipt",
    }
)
# Room requests need the live connection (a room joined is the session's):
# refused with 480 while offline, never queued.
_ROOM_OPS = frozenset(
    {
        "is_room",
        "join_room",
        "leave_room",
        "send_room_message",
        "room_occupants",
        "change_nick",
        "room_bookmarks",
    }
)
_OPS = _QUEUED_OPS | _ROOM_OPS | {"set_presence", "send_typing"}
# PIDF basic=closed logs the account out (the original module's behaviour)
# and parks it in LOGGED_OUT, without reconnecting, until "login".
_PARKING_OPS = frozenset({"login", "logout"})
# A stream that died this many times with the same message oldest in its
# XEP-0198 ledger died *on* that message: it is quarantined, not resent.
POISON_DEATHS = 2
POISON_OUTCOME = (488, "the server closed the stream on this message")
# A message already answered 202 that the session refuses with 503 ("not
# connected") hit a connection that is going away before the session said
# so: it waits at the head of the queue and is tried again, this often, so
# that it goes out on the next connection instead of failing.
NOT_NOW_RETRIES = 5
NOT_NOW_DELAY = 0.5
# ``queue_limit`` bounds what an offline or reconnecting account keeps.  While
# connected the queue only holds a burst on its way to the session (the
# gateway hands over every message of one group commit at once, all in one
# turn of the loop, before the drain runs): it is refused only beyond this.
ONLINE_QUEUE_LIMIT = 10000
# Requests the drain runs before it yields to the rest of the loop.
DRAIN_SLICE = 64


class OutcomeFuture(pykka.ThreadingFuture[Outcome]):
    """A pykka future that can also call back when it is set.

    Callbacks run on the thread that sets the result (often the shared
    loop): they must be quick and must not block -- hop to your own thread
    or actor (``tell``) from there.
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Any] = []
        self._callbacks_lock = threading.Lock()
        self._is_set = False

    def set(self, value: Any = None) -> None:
        super().set(value)
        with self._callbacks_lock:
            self._is_set = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._run(callback)

    def add_done_callback(self, callback: Any) -> None:
        """Call ``callback(future)`` once the outcome is known."""
        with self._callbacks_lock:
            if not self._is_set:
                self._callbacks.append(callback)
                return
        self._run(callback)

    def _run(self, callback: Any) -> None:
        try:
            callback(self)
        except Exception:
            logger.exception("Outcome callback %r failed", callback)


@dataclass
class _Request:
    op: str
    args: tuple[Any, ...]
    reply: pykka.Future[Outcome] | None
    answered: bool = False  # the caller already got 202
    retries: int = 0  # "not connected" answers to a message we own (below)

    def answer(self, outcome: Outcome) -> None:
        if self.reply is not None and not self.answered:
            self.answered = True
            self.reply.set(outcome)


class _Events:
    """The ``SessionEvents`` given to one session (one login attempt).

    Bound to its generation: callbacks from a session the actor already
    abandoned (timed out, replaced) are ignored instead of corrupting the
    current connection's state.
    """

    def __init__(self, core: AccountCore, generation: int) -> None:
        self._core = core
        self._generation = generation

    def _current(self) -> bool:
        return self._core._generation == self._generation  # noqa: SLF001

    @property
    def takes_ack_tokens(self) -> bool:
        """Give ``on_message`` ack tokens: a sink reports the messages stored (listener)."""
        return listener.ack_tokens_confirmed()

    def on_connection_state(self, state: ConnectionState, reason: str = "") -> None:
        if self._current():
            self._core._session_state(state, reason)  # noqa: SLF001

    def on_message(  # noqa: PLR0913, PLR0917 - the event's fields
        self,
        contact: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        receipts: str = "",
        ack_token: int | None = None,
    ) -> None:
        if self._current():
            self._core.account_status.messages_in += 1
            kwargs: dict[str, Any] = {"contact": contact, "text": text, "message_id": message_id}
            if sent_at is not None:
                # Only when known: sinks written before sent_at keep working.
                kwargs["sent_at"] = sent_at
            if receipts:
                kwargs["receipts"] = receipts
            if ack_token is not None:
                kwargs["ack_token"] = ack_token
            self._core._emit("on_message", **kwargs)  # noqa: SLF001

    def on_contact_presence(self, presence: ContactPresence) -> None:
        if self._current():
            self._core._emit("on_contact_presence", presence=presence)  # noqa: SLF001

    def on_authorization_request(self, contact: str, text: str = "") -> None:
        if self._current():
            self._core._emit("on_authorization_request", contact=contact, text=text)  # noqa: SLF001

    def on_roster(self, items: Sequence[RosterItem]) -> None:
        if self._current():
            self._core._emit("on_roster", items=tuple(items))  # noqa: SLF001

    def on_roster_item(self, item: RosterItem) -> None:
        if self._current():
            self._core._emit("on_roster_item", item=item)  # noqa: SLF001

    def on_roster_removed(self, contact: str) -> None:
        if self._current():
            self._core._emit("on_roster_removed", contact=contact)  # noqa: SLF001

    def on_authorization_answer(self, contact: str, answer: AuthorizationAnswer) -> None:
        if self._current():
            self._core._emit("on_authorization_answer", contact=contact, answer=answer)  # noqa: SLF001

    def on_typing(self, contact: str, state: TypingState) -> None:
        if self._current():
            self._core._emit("on_typing", contact=contact, state=state)  # noqa: SLF001

    def on_receipt(self, contact: str, message_id: str) -> None:
        if self._current():
            self._core._emit("on_receipt", contact=contact, message_id=message_id)  # noqa: SLF001

    def on_message_failed(self, message_id: str, status: int, reason: str) -> None:
        if self._current():
            self._core._poison_deaths.pop(message_id, None)  # noqa: SLF001
            self._core._emit(  # noqa: SLF001 - the session-events adapter is the core's own helper
                "on_send_result",
                message_id=message_id,
                outcome=Outcome(status, reason),
            )

    def on_message_acked(self, message_id: str) -> None:
        if self._current():
            self._core._poison_deaths.pop(message_id, None)  # noqa: SLF001
            self._core._emit(  # noqa: SLF001 - the session-events adapter is the core's own helper
                "on_send_result",
                message_id=message_id,
                outcome=Outcome(200, "acknowledged by the server"),
            )

    def on_key_derived(self, kind: str, value: str) -> None:
        if self._current():
            self._core._emit("on_key_derived", kind=kind, value=value)  # noqa: SLF001

    def on_room_message(  # noqa: PLR0913, PLR0917 - the SessionEvents signature
        self,
        room: str,
        nick: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        is_history: bool = False,  # noqa: FBT001, FBT002
    ) -> None:
        if self._current():
            self._core.account_status.messages_in += 1
            self._core._emit(  # noqa: SLF001
                "on_room_message",
                room=room,
                nick=nick,
                text=text,
                message_id=message_id,
                sent_at=sent_at,
                is_history=is_history,
            )

    def on_room_private_message(
        self, room: str, nick: str, text: str, message_id: str | None = None
    ) -> None:
        if self._current():
            self._core.account_status.messages_in += 1
            self._core._emit(  # noqa: SLF001
                "on_room_private_message", room=room, nick=nick, text=text, message_id=message_id
            )

    def on_room_joined(self, room: str, nick: str, occupants: list[str]) -> None:
        if self._current():
            self._core._emit("on_room_joined", room=room, nick=nick, occupants=list(occupants))  # noqa: SLF001

    def on_room_occupants(self, room: str, occupants: list[str]) -> None:
        if self._current():
            self._core._emit("on_room_occupants", room=room, occupants=list(occupants))  # noqa: SLF001

    def on_room_left(self, room: str, reason: str = "") -> None:
        if self._current():
            self._core._emit("on_room_left", room=room, reason=reason)  # noqa: SLF001

    def on_room_error(self, room: str, status: int, reason: str) -> None:
        if self._current():
            self._core._emit("on_room_error", room=room, status=status, reason=reason)  # noqa: SLF001


class AccountCore:
    """The account logic shared by both runtimes (mixed into a pykka actor).

    Keyword-only constructor (Mopidy's actor shape).  ``loop`` is where the
    session runs; subclasses provide it.
    """

    actor_loop: asyncio.AbstractEventLoop

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        """Where the session runs (pykka's ``actor_loop`` of a ``LoopActor``).

        A property, not one more attribute: CPython shares an instance
        dict's keys among the instances of a class up to 30 attributes; one
        more and every account actor has a dict of its own (~1.3 KiB more).
        """
        return self.actor_loop

    def _setup(  # noqa: PLR0913 - keyword-only collaborators (Mopidy's actor shape)
        self,
        *,
        credentials: AccountCredentials,
        adapter: Adapter,
        config: ActorsConfig,
        protocol_config: dict[str, Any] | None = None,
        proxy: ProxySettings | None = None,
        shared: dict[str, Any] | None = None,
        account_status: AccountStatus | None = None,
        strangers: str | None = None,
    ) -> None:
        self.credentials = credentials
        self.info = AccountInfo(
            credentials.account_id,
            credentials.sip_user,
            credentials.protocol,
            credentials.ext_user,
        )
        self._adapter = adapter
        self._config = config
        # Shared by the accounts of a protocol (no one writes to it): not a copy each.
        self._protocol_config = protocol_config if protocol_config is not None else {}
        if strangers is not None:  # [messaging] strangers, given apart from the section
            self._protocol_config = {**self._protocol_config, "strangers": strangers}
        self._proxy = proxy
        self._shared = shared if shared is not None else {}
        # message id -> how many streams died with it oldest unacknowledged.
        self._poison_deaths: dict[str, int] = {}
        self._policy = RestartPolicy(config)
        self._generation = 0
        self._session: Session | None = None
        self._connected = False
        self._resuming = False
        self._lost: Wakeup | None = None
        # Why the stream was lost, and whether the server refused the credentials.
        self._lost_why: tuple[str, bool] = ("", False)
        # Requests waiting for the connection, on the loop's thread only: a
        # Fifo, since an idle account's is empty (an empty deque is ~0.7 KiB).
        self._outbox: Fifo[_Request] = Fifo()
        self._presence: Presence | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._parked = False
        self._park_task: asyncio.Task[None] | None = None
        # Given by the supervisor, whose StatusBoard shows it as this actor
        # updates it: `purplegw status` never has to ask the actor.
        self.account_status = account_status or AccountStatus(
            account_id=credentials.account_id,
            sip_user=credentials.sip_user,
            protocol=credentials.protocol,
            ext_user=credentials.ext_user,
            since=time.time(),
        )

    # --- pykka methods (any thread) -------------------------------------

    def ping(self) -> bool:
        return True

    def request(self, op: str, args: tuple[Any, ...], reply: pykka.Future[Outcome] | None) -> None:
        """Queue or run one request; ``reply`` gets its ``Outcome``."""
        if op == "messages_stored":
            self._on_loop(self._messages_stored, args[0], reply)
            return
        self._on_loop(self._accept, _Request(op, tuple(args), reply))

    def _messages_stored(self, tokens: Sequence[int], reply: pykka.Future[Outcome] | None) -> None:
        # Not a request to the network, never queued: the session that gave
        # the tokens (if it is still the current one) may acknowledge them now.
        if self._session is not None:
            self._session.messages_stored(tokens)
        if reply is not None:
            reply.set(Outcome(200, "noted"))

    def status(self) -> dict[str, Any]:
        snapshot = self.account_status.as_dict()
        snapshot["queued"] = len(self._outbox)
        return snapshot

    def retry_if_given_up(self) -> None:
        """Triggered on reload: an account that gave up flapping tries again.

        (Bad credentials are not retried: only a changed row does that.)
        """
        self._on_loop(self._revive)

    def _revive(self) -> None:
        status = self.account_status
        if self._stopping or not status.gave_up:
            return
        if self._run_task is not None and not self._run_task.done():
            return
        logger.info("Account %s/%s: retrying after reload", *self.info[1:3])
        status.gave_up = False
        self._policy = RestartPolicy(self._config)
        self._run_task = self._loop.create_task(
            self._run(), name=f"account-{self.info.sip_user}-{self.info.protocol}"
        )

    def _undeliverable(self, message: Any) -> None:
        # A request told just before the actor stopped still gets an answer.
        if isinstance(message, messages.ProxyCall) and message.attr_path == ("request",):
            reply = message.args[2]
            if reply is not None:
                reply.set(Outcome(480, "account stopped"))

    def current_session(self) -> Session | None:
        """The live Session object, for tests and debugging only.

        Its objects belong to the loop: read attributes, call nothing.
        """
        return self._session if self._connected else None

    def shutdown(self) -> concurrent.futures.Future[None]:
        """Log out, answer what is queued, then stop the actor.

        Returns a future that completes once logged out (the supervisor
        waits on it, bounded by ``shutdown_timeout``).
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._on_loop(self._start_shutdown, done)
        return done

    # --- loop side --------------------------------------------------------

    def _on_loop(self, fn: Any, *args: Any) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _begin(self) -> None:
        self._lost = Wakeup()
        self._run_task = self._loop.create_task(
            self._run(), name=f"account-{self.info.sip_user}-{self.info.protocol}"
        )

    def _emit(self, event: str, **kwargs: Any) -> None:
        listener.send(event, account=self.info, **kwargs)

    def _set_state(self, state: AccountState, reason: str = "") -> None:
        status = self.account_status
        if reason:
            status.last_error = reason
        if status.state == state.value and not reason:
            return
        status.state = state.value
        status.since = time.time()
        logger.info(
            "Account %s/%s (%s): %s%s",
            self.info.sip_user,
            self.info.protocol,
            self.info.ext_user,
            state.name,
            f" ({reason})" if reason else "",
        )
        extra: dict[str, Any] = {}
        # Only when set: sinks written before these keywords keep working.
        if status.next_retry_in is not None:
            extra["retry_at"] = status.since + status.next_retry_in
        if status.gave_up:
            extra["gave_up"] = True
        self._emit("on_connection_state", state=state, reason=reason, **extra)

    async def _run(self) -> None:
        try:
            await self._connect_loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug in this module, not in the adapter: keep it visible.
            logger.exception("Account %s/%s: runtime failure", *self.info[1:3])
            self._set_state(AccountState.UNKNOWN_ERROR, f"internal error: {exc!r}")
            self._fail_queue(Outcome(480, "account failed"))

    async def _connect_loop(self) -> None:
        config = self._config
        status = self.account_status
        while not self._stopping:
            self._generation += 1
            self._set_state(AccountState.CONNECTING)
            context = SessionContext(
                loop=self._loop,
                events=_Events(self, self._generation),
                config=self._protocol_config,
                proxy=self._proxy,
                shared=self._shared,
                # [messaging] strangers; the process merges it into each protocol section.
                strangers=str(self._protocol_config.get("strangers", "allow")),
            )
            error = ""
            state = AccountState.TRANSIENT_DISCONNECT
            session: Session | None = None
            try:
                async with login_gate(self._loop, config.max_concurrent_logins):
                    session = self._adapter.create_session(self.credentials, context)
                    self._session = session
                    await asyncio.wait_for(session.login(), config.login_timeout)
            except BadCredentialsError as exc:
                await self._discard(session)
                self._bad_credentials(str(exc) or "credentials rejected")
                return
            except TimeoutError:
                error = f"login timed out after {config.login_timeout:g}s"
            except (TransientError, OSError) as exc:
                error = str(exc) or type(exc).__name__
            except Exception as exc:
                # An adapter bug: the traceback once per streak, not per retry.
                logger.warning(
                    "Account %s/%s: login failed: %r",
                    *self.info[1:3],
                    exc,
                    exc_info=status.last_error != repr(exc),
                )
                state, error = AccountState.UNKNOWN_ERROR, repr(exc)
            else:
                bad = await self._stay_connected(session)
                if bad:
                    return
                error, state = self._lost_why[0], AccountState.TRANSIENT_DISCONNECT
                self._requeue_unacked(session)
            if self._stopping:
                return
            await self._discard(session)
            delay = self._policy.next_delay()
            status.flapping = self._policy.flapping
            if delay is None:
                status.gave_up = True
                status.next_retry_in = None
                self._set_state(
                    AccountState.UNKNOWN_ERROR,
                    f"gave up after {self._policy.flap_pauses - 1} flapping pauses: {error}",
                )
                self._fail_queue(Outcome(480, "account gave up reconnecting"))
                return
            status.next_retry_in = delay
            self._set_state(state, error)
            await asyncio.sleep(delay)
            status.next_retry_in = None
            status.reconnects += 1

    async def _stay_connected(self, session: Session) -> bool:
        """Serve one connection until it is lost; True if credentials went bad."""
        assert self._lost is not None
        self._lost.clear()
        self._lost_why = ("", False)
        self._connected = True
        self._resuming = False
        self._policy.connected()
        self.account_status.flapping = False
        self._set_state(AccountState.CONNECTED)
        if self._presence is not None:
            self._loop.create_task(self._apply_presence(session, self._presence))
        self._drain_soon()
        try:
            await self._lost.wait()
        finally:
            self._connected = False
            if self._drain_task is not None:
                self._drain_task.cancel()
                await asyncio.gather(self._drain_task, return_exceptions=True)
                self._drain_task = None
        if self._lost_why[1]:
            await self._discard(session)
            self._bad_credentials(self._lost_why[0] or "credentials rejected")
            return True
        return False

    def _requeue_unacked(self, session: Session) -> None:
        """Put what the lost connection never got acknowledged back at the head of the queue.

        Those messages were answered 202 when they were written and settle
        only with the server's acknowledgement; the session's ledger is the
        only copy in this process and it dies with the session.  Same ids,
        so a message the server did take before dying arrives twice rather
        than not at all.
        """
        try:
            unacked = session.unacked_messages()
        except Exception:
            logger.exception("Account %s/%s: unacked_messages failed", *self.info[1:3])
            return
        unacked = self._quarantine_poison(unacked)
        queued = {r.args[2] for r in self._outbox if r.op == "send_message"}
        again = [m for m in unacked if m.message_id not in queued]
        for message in reversed(again):
            self._outbox.appendleft(
                _Request(
                    "send_message",
                    (message.contact, message.text, message.message_id, message.receipt),
                    None,
                    answered=True,
                )
            )
        if again:
            self.account_status.queued = len(self._outbox)
            logger.info(
                "Account %s/%s: %d unacknowledged message(s) queued again",
                *self.info[1:3],
                len(again),
            )

    def _quarantine_poison(self, unacked: list[OutgoingMessage]) -> list[OutgoingMessage]:
        """``unacked`` without the message the stream keeps dying on.

        The server handles stanzas in order and acknowledges each one it
        handled, so the oldest unacknowledged message is the one it was
        reading when it closed the stream.  Once the same message was oldest
        at ``POISON_DEATHS`` deaths, resending it would only kill the next
        stream too (and hold back every later message): it fails for good
        (``on_send_result``, 488) and the others flow.
        """
        if not unacked:
            return unacked
        suspect = unacked[0].message_id
        deaths = self._poison_deaths.get(suspect, 0) + 1
        # Only the current suspect is worth remembering: an older one was
        # acknowledged or failed since.
        self._poison_deaths = {suspect: deaths}
        if deaths < POISON_DEATHS:
            return unacked
        del self._poison_deaths[suspect]
        logger.warning(
            "Account %s/%s: message %s quarantined: the stream died on it %d times",
            *self.info[1:3],
            suspect,
            deaths,
        )
        self._emit("on_send_result", message_id=suspect, outcome=Outcome(*POISON_OUTCOME))
        return unacked[1:]

    def _bad_credentials(self, reason: str) -> None:
        # Rule 1: no retry until the row changes (a reload replaces us).
        self.account_status.next_retry_in = None
        self._set_state(AccountState.BAD_CREDENTIALS, reason)
        self._fail_queue(Outcome(403, "bad credentials"))

    def _session_state(self, state: ConnectionState, reason: str) -> None:
        if not self._connected or self._lost is None:
            return
        if state is AccountState.CONNECTING:
            # The session repairs its own stream (XEP-0198 resumption):
            # requests queue meanwhile instead of failing on a dead stream.
            self._resuming = True
            self._set_state(AccountState.CONNECTING, reason)
            return
        if state is AccountState.CONNECTED:
            if self._resuming:
                self._resuming = False
                self._set_state(AccountState.CONNECTED)
                self._drain_soon()
            return
        self._lost_why = (reason or state.value, state is AccountState.BAD_CREDENTIALS)
        self._lost.set()

    async def _discard(self, session: Session | None) -> None:
        """Close a session we no longer use, whatever state it is in."""
        if session is None:
            return
        if session is self._session:
            self._session = None
        try:
            await asyncio.wait_for(session.logout(), self._config.logout_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.debug("Account %s/%s: logout failed", *self.info[1:3], exc_info=True)

    async def _apply_presence(self, session: Session, presence: Presence) -> None:
        await self._execute(session, _Request("set_presence", (presence,), None))

    def _accept(self, request: _Request) -> None:  # noqa: C901, PLR0911 - one branch per protocol case reads best in one place
        if request.op in _PARKING_OPS and not self._stopping:
            self._park_task = self._loop.create_task(self._parking(request, self._park_task))
            return
        if request.op not in _OPS:
            request.answer(Outcome(501, f"unknown request {request.op}"))
            return
        status = self.account_status
        if self._stopping:
            request.answer(Outcome(480, "account stopping"))
            return
        if status.state == AccountState.BAD_CREDENTIALS.value:
            request.answer(Outcome(403, "bad credentials"))
            return
        if status.gave_up:
            request.answer(Outcome(480, "account gave up reconnecting"))
            return
        online = self._connected and not self._resuming
        if request.op == "set_presence":
            # Only the latest presence matters; it is re-applied on every login.
            self._presence = request.args[0]
            if not online:
                request.answer(Outcome(202, "applied at next login"))
                return
        elif (request.op == "send_typing" or request.op in _ROOM_OPS) and not online:
            request.answer(Outcome(480, "account offline"))
            return
        limit = self._config.queue_limit
        if online:
            limit = max(limit, ONLINE_QUEUE_LIMIT)
        if len(self._outbox) >= limit:
            request.answer(Outcome(480, "queue full"))
            return
        if not online:
            request.answer(Outcome(202, "queued until the account is online"))
        self._outbox.append(request)
        status.queued = len(self._outbox)
        self._drain_soon()

    def _drain_soon(self) -> None:
        """Start a drain of the outbox, unless one runs or there is nothing it could do.

        A drain is a task only while there is work: it ends when the outbox
        is empty, the stream is resuming or the connection is lost, and the
        next request, resumption or connection starts another.  An idle
        account keeps no task, coroutine or waiter for it (~0.8 KiB).  On
        the loop's thread: a drain that found the outbox empty has ended
        (its task is done) before any other callback can append to it.
        """
        if not (self._outbox and self._connected and not self._resuming):
            return
        if self._drain_task is not None and not self._drain_task.done():
            return
        session = self._session
        assert session is not None
        self._drain_task = self._loop.create_task(self._drain(session))

    async def _drain(self, session: Session) -> None:
        try:
            await self._drain_ready(session)
        finally:
            if self._drain_task is asyncio.current_task():
                self._drain_task = None  # nothing of it kept until the next one

    async def _drain_ready(self, session: Session) -> None:
        """Run the queued requests in order while connected and not resuming."""
        done = 0
        while self._outbox and not self._resuming and self._connected:
            request = self._outbox.popleft()
            try:
                outcome = await self._execute(session, request)
            except asyncio.CancelledError:
                # Connection lost mid-request: retry it on the next
                # connection (message ids are stable across retries).
                self._outbox.appendleft(request)
                raise
            if (
                request.answered
                and request.op == "send_message"
                and outcome.status == 503
                and request.retries < NOT_NOW_RETRIES
            ):
                request.retries += 1
                self._outbox.appendleft(request)
                await asyncio.sleep(NOT_NOW_DELAY)  # cancelled if the connection is lost
                continue
            self.account_status.queued = len(self._outbox)
            self._finish(request, outcome)
            done += 1
            if done % DRAIN_SLICE == 0:
                await asyncio.sleep(0)  # a long burst lets the loop's other work in

    async def _execute(self, session: Session, request: _Request) -> Outcome:
        """Run one request on the session; its exception becomes the outcome.

        The mapping is ``purplegw.protocols.errors.outcome_for`` (501, drop,
        the error's hint, 500 + log); the actor adds what only it knows: its
        own timeout (504) and that rejected credentials end the connection.
        """
        method = getattr(session, request.op)
        try:
            # A timeout scope, not wait_for: no task per request, and a request
            # that never suspends (an XMPP message is only written) completes
            # in the drain's own step, so a burst goes out in one turn.
            async with asyncio.timeout(self._config.send_timeout):
                result = await method(*request.args)
        except TimeoutError:
            return Outcome(504, f"{request.op} timed out after {self._config.send_timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - every adapter failure is mapped, bugs logged
            if isinstance(exc, BadCredentialsError):
                self._session_state(AccountState.BAD_CREDENTIALS, str(exc))
            mapped = outcome_for(
                exc, what=request.op, account=f"{self.info.sip_user}/{self.info.protocol}"
            )
            if mapped.status is None:
                # Ignore: the request is dropped (not sent, not retried, not
                # counted); the SIP transaction still needs its final answer.
                return Outcome(200, f"dropped by the {self.info.protocol} adapter")
            return Outcome(mapped.status, mapped.detail or mapped.reason)
        if request.op == "send_message":
            self.account_status.messages_out += 1
            if result is True:
                # Written, not yet acknowledged: the caller keeps its durable
                # copy; on_message_acked settles it (or the ledger requeues it).
                return Outcome(202, "sent, awaiting the server's acknowledgement")
        if request.op in _ROOM_OPS:
            return Outcome(200, "done", result)
        return Outcome(200, "sent")

    def _finish(self, request: _Request, outcome: Outcome) -> None:
        if request.answered:
            if request.op == "send_message":
                self._emit("on_send_result", message_id=request.args[2], outcome=outcome)
        else:
            request.answer(outcome)

    def _fail_queue(self, outcome: Outcome) -> None:
        while self._outbox:
            self._finish(self._outbox.popleft(), outcome)
        self.account_status.queued = 0

    async def _parking(self, request: _Request, previous: asyncio.Task[None] | None) -> None:
        """Apply "logout" (park in LOGGED_OUT) or "login" (reconnect), in order."""
        if previous is not None and not previous.done():
            await asyncio.gather(previous, return_exceptions=True)
        if request.op == "login":
            if self._parked and not self._stopping:
                self._parked = False
                # A login asked for (presence, the user's "relogin") starts afresh:
                # an account that gave up flapping tries again.
                self.account_status.gave_up = False
                self._policy = RestartPolicy(self._config)
                self._run_task = self._loop.create_task(
                    self._run(), name=f"account-{self.info.sip_user}-{self.info.protocol}"
                )
            request.answer(Outcome(202, "logging in"))
            return
        if self._parked:
            request.answer(Outcome(200, "already logged out"))
            return
        self._parked = True
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._connected = False
        await self._discard(self._session)
        self.account_status.next_retry_in = None
        self._set_state(AccountState.LOGGED_OUT, "logged out by the SIP user's presence")
        request.answer(Outcome(200, "logged out"))

    def _start_shutdown(self, done: concurrent.futures.Future[None]) -> None:
        if self._stopping:
            done.set_result(None)
            return
        self._stopping = True
        self._loop.create_task(self._shutdown(done))

    async def _shutdown(self, done: concurrent.futures.Future[None]) -> None:
        try:
            task = self._run_task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            if self._drain_task is not None:
                self._drain_task.cancel()
                await asyncio.gather(self._drain_task, return_exceptions=True)
            self._connected = False
            await self._discard(self._session)
            self._fail_queue(Outcome(480, "account logged out"))
            self.account_status.next_retry_in = None
            self._set_state(AccountState.LOGGED_OUT)
        finally:
            self._generation += 1
            try:  # noqa: SIM105 - kept explicit: the actor may die at any time
                self.actor_ref.stop(block=False)  # type: ignore[attr-defined]
            except pykka.ActorDeadError:
                pass
            if not done.done():
                done.set_result(None)


class LoopAccountActor(AccountCore, LoopActor):
    """Account actor of the ``shared_loop`` runtime (runs on the loop)."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        LoopActor.__init__(self, loop=loop)
        self._setup(**kwargs)

    def on_start(self) -> None:
        self._begin()

    def on_failure(self, *_exc: object) -> None:
        # The actor is gone but its session task would live on the shared
        # loop: log it out so the supervisor's replacement is the only one.
        self._start_shutdown(concurrent.futures.Future())


class ThreadAccountActor(AccountCore, pykka.ThreadingActor):
    """Account actor of the ``thread_per_account`` runtime."""

    use_daemon_thread = True

    def __init__(self, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        kwargs.pop("loop", None)
        self._loop_thread = LoopThread(name=f"loop-{kwargs['credentials'].sip_user}").start()
        self.actor_loop = self._loop_thread.loop
        self._setup(**kwargs)

    def on_start(self) -> None:
        self._loop.call_soon_threadsafe(self._begin)

    def on_stop(self) -> None:
        self._loop_thread.stop()

    def _actor_loop_teardown(self) -> None:
        # pykka drops tells left in the inbox; answer our requests first.
        asks = []
        while not self.actor_inbox.empty():
            envelope = self.actor_inbox.get()
            if envelope.reply_to is None:
                self._undeliverable(envelope.message)
            else:
                asks.append(envelope)
        for envelope in asks:
            self.actor_inbox.put(envelope)
        super()._actor_loop_teardown()

    def on_failure(self, *_exc: object) -> None:
        self._loop_thread.stop()


ACTOR_CLASSES: dict[str, type[AccountCore]] = {
    "shared_loop": LoopAccountActor,
    "thread_per_account": ThreadAccountActor,
}


class AccountHandle:
    """What the rest of the gateway holds to talk to one account.

    Every method returns at once with an ``OutcomeFuture`` (a
    ``pykka.Future[Outcome]``); call ``.get(timeout=...)`` off the loop, or
    ``future.add_done_callback(fn)`` where blocking is not allowed.
    """

    def __init__(self, ref: pykka.ActorRef[Any], info: AccountInfo) -> None:
        self.ref = ref
        self.info = info

    def __repr__(self) -> str:
        return f"AccountHandle({self.info.sip_user!r}, {self.info.protocol!r})"

    def _request(self, op: str, *args: Any) -> OutcomeFuture:
        future = OutcomeFuture()
        try:
            call = messages.ProxyCall(attr_path=("request",), args=(op, args, future), kwargs={})
            self.ref.tell(call)
        except pykka.ActorDeadError:
            future.set(Outcome(480, "account not running"))
        return future

    def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,
        receipt: bool = False,  # noqa: FBT001, FBT002 - positional: requests carry args as a tuple
    ) -> pykka.Future[Outcome]:
        """Send ``text`` to ``contact``: 200 sent, 202 queued, 403/480/5xx failed.

        ``receipt``: the sender waits for the contact's receipt (Session.send_message).
        """
        return self._request("send_message", contact, text, message_id, receipt)

    def set_presence(self, presence: Presence) -> pykka.Future[Outcome]:
        return self._request("set_presence", presence)

    def add_contact(self, contact: str) -> pykka.Future[Outcome]:
        return self._request("add_contact", contact)

    def remove_contact(self, contact: str) -> pykka.Future[Outcome]:
        return self._request("remove_contact", contact)

    def answer_authorization(
        self, contact: str, answer: AuthorizationAnswer
    ) -> pykka.Future[Outcome]:
        return self._request("answer_authorization", contact, answer)

    def send_typing(self, contact: str, state: TypingState) -> pykka.Future[Outcome]:
        return self._request("send_typing", contact, state)

    def bounce(
        self, contact: str, message_id: str | None, status: int, reason: str
    ) -> pykka.Future[Outcome]:
        """Tell ``contact`` its message ``message_id`` failed for good (``Session.bounce``)."""
        return self._request("bounce", contact, message_id, status, reason)

    def send_receipt(
        self, contact: str, message_id: str, kind: str, receipts: str = ""
    ) -> pykka.Future[Outcome]:
        """Report ``message_id`` ``delivered`` or ``displayed`` (``Session.send_receipt``)."""
        return self._request("send_receipt", contact, message_id, kind, receipts)

    def messages_stored(self, tokens: tuple[int, ...]) -> OutcomeFuture:
        """The gateway stored or refused the messages of these ack tokens (``Session``'s)."""
        return self._request("messages_stored", tokens)

    # --- rooms (purplegw.protocols.base.Session, group chat) ---------------------

    def is_room(self, contact: str) -> OutcomeFuture:
        """200 with ``value`` True/False (a 501 means: no rooms on this network)."""
        return self._request("is_room", contact)

    def join_room(
        self, room: str, nick: str, history: int = 0, since: float | None = None
    ) -> OutcomeFuture:
        """200 with ``value`` the occupants' nicks; 403/404 with the server's reason."""
        return self._request("join_room", room, nick, history, since)

    def leave_room(self, room: str) -> OutcomeFuture:
        return self._request("leave_room", room)

    def send_room_message(self, room: str, text: str, message_id: str) -> OutcomeFuture:
        return self._request("send_room_message", room, text, message_id)

    def room_occupants(self, room: str) -> OutcomeFuture:
        """200 with ``value`` the nicks in ``room``."""
        return self._request("room_occupants", room)

    def change_nick(self, room: str, nick: str) -> OutcomeFuture:
        return self._request("change_nick", room, nick)

    def room_bookmarks(self) -> OutcomeFuture:
        """200 with ``value`` the bookmarked autojoin rooms as ``(room, nick)``."""
        return self._request("room_bookmarks")

    def logout(self) -> pykka.Future[Outcome]:
        """Log out and stay out (LOGGED_OUT, no reconnect) until ``login``."""
        return self._request("logout")

    def login(self) -> pykka.Future[Outcome]:
        """Undo ``logout``: connect again (202); no-op for a running account."""
        return self._request("login")

    def current_session(self, timeout: float = 5.0) -> Session | None:
        """See ``AccountCore.current_session`` (tests and debugging only)."""
        call = messages.ProxyCall(attr_path=("current_session",), args=(), kwargs={})
        return self.ref.ask(call, timeout=timeout)

    def status(self, timeout: float = 5.0) -> dict[str, Any]:
        call = messages.ProxyCall(attr_path=("status",), args=(), kwargs={})
        return self.ref.ask(call, timeout=timeout)
