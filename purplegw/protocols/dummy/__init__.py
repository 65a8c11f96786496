"""The ``dummy`` protocol: an in-process fake network for tests and demos.

Shape of slidge's ``plugins/dummy.py``.  Accounts of this protocol talk to
each other: a message to a contact that is another logged-in dummy account
is delivered to it, and ``echo@dummy`` answers every message with the same
text.  ``NETWORK`` records what was sent and lets tests inject events.

Misbehaviour on demand, chosen by a keyword in the ext_user's local part
(before ``@``; ``raise-3@dummy`` works too), by ``[protocols.dummy]
behaviours = {"<ext_user>" = "<keyword>"}``, or at run time with
``NETWORK.set_behaviour(ext_user, keyword)``:

``raise``      login raises RuntimeError (an adapter bug)
``hang``       login never returns
``flaky``      login raises TransientError
``badpass``    login raises BadCredentialsError (so does password ``wrong``)
``drop``       the connection drops ``drop_after`` seconds after each login
``sendhang``   send_message never returns
``sendraise``  send_message raises RuntimeError
``sendfail``   send_message raises DeliveryError(404)

``[protocols.dummy]`` keys, documented in ``defaults.toml``: ``enabled``
(false: a production gateway does not offer it), ``login_delay`` (0.0 s),
``drop_after`` (0.2 s), ``behaviours`` ({}).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from purplegw.presence import ContactPresence, Presence
from purplegw.protocols import base

_DEFAULTS = Path(__file__).with_name("defaults.toml")
BEHAVIOURS = ("raise", "hang", "flaky", "badpass", "drop", "sendhang", "sendraise", "sendfail")
ECHO = "echo@dummy"


@dataclass(frozen=True)
class SentMessage:
    ext_user: str
    contact: str
    text: str
    message_id: str
    receipt: bool = False  # the sender waits for a delivery receipt


class DummyNetwork:
    """Process-wide record of the fake network; every method is thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.sent: list[SentMessage] = []
            self.sessions: dict[str, DummySession] = {}  # logged-in, by ext_user
            self.logins: dict[str, int] = {}  # successful logins
            self.attempts: dict[str, int] = {}  # login attempts, failed ones included
            self.behaviours: dict[str, str] = {}
            self.presences: dict[str, Presence] = {}
            self.contacts: dict[str, set[str]] = {}

    def set_behaviour(self, ext_user: str, behaviour: str | None) -> None:
        with self._lock:
            if behaviour is None:
                self.behaviours.pop(ext_user, None)
            else:
                self.behaviours[ext_user] = behaviour

    def behaviour_of(self, ext_user: str, config: dict[str, Any]) -> str:
        with self._lock:
            if ext_user in self.behaviours:
                return self.behaviours[ext_user]
        configured = dict(config.get("behaviours") or {})
        if ext_user in configured:
            return configured[ext_user]
        local = ext_user.split("@", 1)[0]
        for keyword in sorted(BEHAVIOURS, key=len, reverse=True):
            if local == keyword or local.startswith(keyword + "-"):
                return keyword
        return ""

    def session(self, ext_user: str) -> DummySession | None:
        with self._lock:
            return self.sessions.get(ext_user)

    def sent_to(self, contact: str) -> list[SentMessage]:
        with self._lock:
            return [m for m in self.sent if m.contact == contact]

    def online(self) -> set[str]:
        with self._lock:
            return set(self.sessions)

    def inject(self, ext_user: str, event: str, *args: Any) -> bool:
        """Make ``ext_user``'s session report ``event`` (a SessionEvents name)."""
        session = self.session(ext_user)
        if session is None:
            return False
        session.call_event(event, *args)
        return True

    def drop(self, ext_user: str, reason: str = "connection reset by test") -> bool:
        session = self.session(ext_user)
        if session is None:
            return False
        session.context.loop.call_soon_threadsafe(session.drop, reason)
        return True

    # --- used by sessions -------------------------------------------------

    def _logged_in(self, session: DummySession) -> None:
        ext_user = session.credentials.ext_user
        with self._lock:
            self.sessions[ext_user] = session
            self.logins[ext_user] = self.logins.get(ext_user, 0) + 1

    def _logged_out(self, session: DummySession) -> None:
        with self._lock:
            if self.sessions.get(session.credentials.ext_user) is session:
                del self.sessions[session.credentials.ext_user]

    def _record(self, message: SentMessage) -> None:
        with self._lock:
            self.sent.append(message)


NETWORK = DummyNetwork()


class DummySession(base.Session):
    def __init__(self, credentials: base.AccountCredentials, context: base.SessionContext) -> None:
        super().__init__(credentials, context)
        self._online = False
        self._drop_handle: asyncio.TimerHandle | None = None

    def _behaviour(self) -> str:
        return NETWORK.behaviour_of(self.credentials.ext_user, self.context.config)

    def call_event(self, event: str, *args: Any) -> None:
        """Run a SessionEvents callback on this session's loop (any thread)."""
        callback = getattr(self.context.events, event)
        self.context.loop.call_soon_threadsafe(callback, *args)

    async def login(self) -> None:
        with NETWORK._lock:  # noqa: SLF001
            ext_user = self.credentials.ext_user
            NETWORK.attempts[ext_user] = NETWORK.attempts.get(ext_user, 0) + 1
        behaviour = self._behaviour()
        delay = float(self.context.config.get("login_delay", 0.0))
        if delay:
            await asyncio.sleep(delay)
        if behaviour == "hang":
            await asyncio.Event().wait()
        if behaviour == "raise":
            msg = f"dummy adapter bug for {self.credentials.ext_user}"
            raise RuntimeError(msg)
        if behaviour == "flaky":
            msg = "dummy server unreachable"
            raise base.TransientError(msg)
        if behaviour == "badpass" or self.credentials.password == "wrong":  # noqa: S105 - the dummy server's scripted wrong password
            msg = "not-authorized"
            raise base.BadCredentialsError(msg)
        self._online = True
        NETWORK._logged_in(self)  # noqa: SLF001
        if behaviour == "drop":
            after = float(self.context.config.get("drop_after", 0.2))
            self._drop_handle = self.context.loop.call_later(after, self.drop, "dummy drop")

    def drop(self, reason: str) -> None:
        if not self._online:
            return
        self._online = False
        NETWORK._logged_out(self)  # noqa: SLF001
        self.context.events.on_connection_state(base.ConnectionState.TRANSIENT_DISCONNECT, reason)

    async def logout(self) -> None:
        if self._drop_handle is not None:
            self._drop_handle.cancel()
        if self._online:
            self._online = False
            NETWORK._logged_out(self)  # noqa: SLF001

    def _check_online(self) -> None:
        if not self._online:
            msg = "not connected"
            raise base.TransientError(msg)

    async def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,
        receipt: bool = False,  # noqa: FBT001, FBT002 - positional: requests carry args as a tuple
    ) -> None:
        behaviour = self._behaviour()
        if behaviour == "sendhang":
            await asyncio.Event().wait()
        if behaviour == "sendraise":
            msg = "dummy send bug"
            raise RuntimeError(msg)
        if behaviour == "sendfail":
            msg = f"{contact} does not exist"
            raise base.DeliveryError(msg, status_hint=404)
        self._check_online()
        sent = SentMessage(self.credentials.ext_user, contact, text, message_id, receipt)
        NETWORK._record(sent)  # noqa: SLF001
        me = self.credentials.ext_user
        if contact == ECHO:
            self.context.events.on_message(ECHO, text, f"echo-{message_id}")
            return
        peer = NETWORK.session(contact)
        if peer is not None:
            peer.call_event("on_message", me, text, message_id)

    async def set_presence(self, presence: Presence) -> None:
        self._check_online()
        with NETWORK._lock:  # noqa: SLF001
            NETWORK.presences[self.credentials.ext_user] = presence
        for peer_id, contacts in list(NETWORK.contacts.items()):
            peer = NETWORK.session(peer_id)
            if peer is not None and self.credentials.ext_user in contacts:
                peer.call_event(
                    "on_contact_presence",
                    ContactPresence(self.credentials.ext_user, {"": presence}),
                )

    async def add_contact(self, contact: str) -> None:
        self._check_online()
        with NETWORK._lock:  # noqa: SLF001
            NETWORK.contacts.setdefault(self.credentials.ext_user, set()).add(contact)
            presence = NETWORK.presences.get(contact)
        if presence is not None:
            self.context.events.on_contact_presence(ContactPresence(contact, {"": presence}))

    async def remove_contact(self, contact: str) -> None:
        self._check_online()
        with NETWORK._lock:  # noqa: SLF001
            NETWORK.contacts.get(self.credentials.ext_user, set()).discard(contact)

    async def answer_authorization(self, contact: str, answer: base.AuthorizationAnswer) -> None:
        self._check_online()
        peer = NETWORK.session(contact)
        if peer is not None:
            peer.call_event("on_authorization_answer", self.credentials.ext_user, answer)

    async def send_typing(self, contact: str, state: base.TypingState) -> None:
        self._check_online()
        peer = NETWORK.session(contact)
        if peer is not None:
            peer.call_event("on_typing", self.credentials.ext_user, state)


class Adapter(base.Adapter):
    name: ClassVar[str] = "dummy"
    version: ClassVar[str] = "1.0"
    aliases: ClassVar[tuple[str, ...]] = ("prpl-dummy",)
    addresses_user_at_host: ClassVar[bool] = True

    def get_default_config(self) -> dict[str, Any]:
        return base.load_defaults(_DEFAULTS)

    def validate_config(self, section: dict[str, Any]) -> list[str]:
        problems = []
        for ext_user, behaviour in dict(section.get("behaviours") or {}).items():
            if behaviour not in BEHAVIOURS:
                problems.append(f"behaviours.{ext_user}: unknown behaviour {behaviour!r}")
        return problems

    def create_session(
        self, credentials: base.AccountCredentials, context: base.SessionContext
    ) -> DummySession:
        return DummySession(credentials, context)
