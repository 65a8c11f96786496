"""Drive an ``XmppSession`` from blocking test code, as the account actor would.

The session runs on an asyncio loop in its own thread (the actor's shared
loop); ``RecordingEvents`` is the ``SessionEvents`` implementation, keeping
every callback for ``wait_for``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from purplegw.protocols.base import AccountCredentials, SessionContext
from purplegw.protocols.xmpp import Adapter

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine


@dataclass(frozen=True)
class Event:
    name: str
    args: tuple[Any, ...]
    at: float = field(default_factory=time.monotonic)


class RecordingEvents:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def _add(self, name: str, *args: Any) -> None:
        with self._lock:
            self.events.append(Event(name, args))

    def on_connection_state(self, state: Any, reason: str = "") -> None:
        self._add("state", state, reason)

    def on_message(
        self,
        contact: str,
        text: str,
        message_id: str | None = None,
        sent_at: float | None = None,
        receipts: str = "",
    ) -> None:
        self._add("message", contact, text, message_id)
        if sent_at is not None:
            self._add("sent_at", message_id, sent_at)
        if receipts:
            self._add("receipts", message_id, receipts)

    def on_message_failed(self, message_id: str, status: int, reason: str) -> None:
        self._add("failed", message_id, status, reason)

    def on_contact_presence(self, presence: Any) -> None:
        self._add("presence", presence)

    def on_authorization_request(self, contact: str, text: str = "") -> None:
        self._add("auth_request", contact, text)

    def on_authorization_answer(self, contact: str, answer: Any) -> None:
        self._add("auth_answer", contact, answer)

    def on_typing(self, contact: str, state: Any) -> None:
        self._add("typing", contact, state)

    def on_receipt(self, contact: str, message_id: str) -> None:
        self._add("receipt", contact, message_id)

    def on_message_acked(self, message_id: str) -> None:
        self._add("acked", message_id)

    def on_key_derived(self, kind: str, value: str) -> None:
        self._add("key", kind, value)

    def on_roster(self, items: Any) -> None:
        self._add("roster", list(items))

    def on_roster_item(self, item: Any) -> None:
        self._add("roster_item", item)

    def on_roster_removed(self, contact: str) -> None:
        self._add("roster_removed", contact)

    def snapshot(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [e.args for e in self.snapshot() if e.name == name]

    def mark(self) -> int:
        """Position to pass as ``since`` to wait only for later events."""
        return len(self.snapshot())

    def wait_for(
        self,
        name: str,
        predicate: Callable[..., bool] = lambda *a: True,
        timeout: float = 20.0,
        since: int = 0,
    ) -> tuple[Any, ...]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.snapshot()[since:]:
                if event.name == name and predicate(*event.args):
                    return event.args
            if time.monotonic() > deadline:
                last = [(e.name, e.args) for e in self.snapshot()[-10:]]
                raise AssertionError(f"no {name} event within {timeout}s; last events: {last}")
            time.sleep(0.02)


class LoopThread:
    """An asyncio loop in a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="session-loop", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_rest(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def make_session(
    loop: LoopThread,
    jid: str,
    password: str,
    config: dict[str, Any],
    *,
    proxy: Any = None,
    shared: dict[str, Any] | None = None,
    original_protocol: str = "xmpp",
    derived_keys: dict[str, str] | None = None,
    strangers: str = "allow",
    events: RecordingEvents | None = None,
) -> tuple[Any, RecordingEvents]:
    events = events if events is not None else RecordingEvents()
    credentials = AccountCredentials(
        account_id=1,
        sip_user="sip:alice@127.0.0.1",
        ext_user=jid,
        protocol="xmpp",
        password=password,
        original_protocol=original_protocol,
        derived_keys=derived_keys or {},
    )
    context = SessionContext(
        loop=loop.loop,
        events=events,
        config=config,
        proxy=proxy,
        shared=shared if shared is not None else {},
        strangers=strangers,
    )
    return Adapter().create_session(credentials, context), events
