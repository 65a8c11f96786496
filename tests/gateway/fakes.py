"""Fakes of the gateway's ports (purplegw.gateway.ports): no threads, no sockets.

The test thread is the worker: ``InlineWorker`` runs submitted work and
completions at once and keeps timers until the test fires them;
``FakeFront`` records each request it is asked to send, with a future the
test completes (or not); account handles record what they are asked and
answer with the outcome the test chose.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from purplegw.actors.account import OutcomeFuture
from purplegw.actors.listener import AccountInfo
from purplegw.actors.state import Outcome
from purplegw.sip.message import Request, Response, make_response

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


@dataclass
class FakeTimer:
    delay: float
    fn: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class InlineWorker:
    """A WorkerPort whose thread is the caller's."""

    def __init__(self) -> None:
        self.timers: list[FakeTimer] = []
        self.stopped = False

    def submit(self, fn: Callable[..., object], /, *args: Any) -> None:
        if not self.stopped:
            fn(*args)

    def call_later(self, delay: float, fn: Callable[..., object], /, *args: Any) -> FakeTimer:
        timer = FakeTimer(delay, fn, args, cancelled=self.stopped)
        self.timers.append(timer)
        return timer

    def completion(self, callback: Callable[[T], object]) -> Callable[[T], None]:
        def hop(done: T) -> None:
            self.submit(callback, done)

        return hop

    def stop(self) -> None:
        self.stopped = True
        for timer in self.timers:
            timer.cancel()

    def pending(self, match: Callable[[FakeTimer], bool] = lambda _t: True) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled and match(t)]

    def delete_settled(self) -> int:
        """Fire the timer of the deferred deletion of settled rows (messaging Rule 9)."""
        return self.fire(lambda t: getattr(t.fn, "__name__", "") == "_cleanup_fired")

    def fire(self, match: Callable[[FakeTimer], bool] = lambda _t: True) -> int:
        """Run the pending timers ``match`` picks; how many ran."""
        due = self.pending(match)
        for timer in due:
            timer.cancelled = True  # fired
            self.submit(timer.fn, *timer.args)
        return len(due)


class FakeFront:
    def __init__(self) -> None:
        self.sent: list[tuple[Request, Any, concurrent.futures.Future[Response]]] = []

    def send_request(
        self, request: Request, destination: Any
    ) -> concurrent.futures.Future[Response]:
        future: concurrent.futures.Future[Response] = concurrent.futures.Future()
        self.sent.append((request, destination, future))
        return future

    def forward(self, request: Request, destination: Any) -> concurrent.futures.Future[Response]:
        return self.send_request(request, destination)

    def requests(self, method: str, port: int | None = None) -> list[Request]:
        return [
            r
            for r, d, _f in self.sent
            if r.method == method and (port is None or getattr(d, "port", None) == port)
        ]

    def notifies(self, port: int | None = None) -> list[Request]:
        return self.requests("NOTIFY", port)

    def answer_all(self, status: int = 200) -> None:
        for request, _d, future in self.sent:
            if not future.done():
                future.set_result(make_response(request, status))


class Handle:
    """An account handle answering every request with ``outcome``."""

    def __init__(
        self,
        sip_user: str,
        protocol: str,
        ext_user: str,
        account_id: int = 1,
        outcome: Outcome | None = None,
    ) -> None:
        self.info = AccountInfo(account_id, sip_user, protocol, ext_user)
        self.calls: list[tuple[Any, ...]] = []
        self.outcome = outcome or Outcome(200, "ok")
        self.hold = False  # True: futures stay unanswered (see self.futures)
        self.futures: list[OutcomeFuture] = []

    def _op(self, *call: Any) -> OutcomeFuture:
        self.calls.append(call)
        future = OutcomeFuture()
        self.futures.append(future)
        if not self.hold:
            future.set(self.outcome)
        return future

    def set_presence(self, presence: Any) -> OutcomeFuture:
        return self._op("set_presence", presence)

    def logout(self) -> OutcomeFuture:
        return self._op("logout")

    def login(self) -> OutcomeFuture:
        return self._op("login")

    def add_contact(self, contact: str) -> OutcomeFuture:
        return self._op("add_contact", contact)

    def remove_contact(self, contact: str) -> OutcomeFuture:
        return self._op("remove_contact", contact)

    def answer_authorization(self, contact: str, answer: Any) -> OutcomeFuture:
        return self._op("answer_authorization", contact, answer)

    def bounce(self, contact: str, message_id: str, status: int, reason: str) -> OutcomeFuture:
        return self._op("bounce", contact, message_id, status, reason)

    def messages_stored(self, tokens: tuple[int, ...]) -> OutcomeFuture:
        return self._op("messages_stored", tokens)

    def send_receipt(
        self, contact: str, message_id: str, kind: str, receipts: str = ""
    ) -> OutcomeFuture:
        return self._op(
            "send_receipt", contact, message_id, kind, *([receipts] if receipts else [])
        )

    def send_message(
        self, contact: str, text: str, message_id: str, receipt: bool = False
    ) -> OutcomeFuture:
        return self._op("send_message", contact, text, message_id, *([receipt] if receipt else []))

    def send_typing(self, contact: str, state: Any) -> OutcomeFuture:
        return self._op("send_typing", contact, state)

    def is_room(self, contact: str) -> OutcomeFuture:
        return self._op("is_room", contact)

    def join_room(
        self, room: str, nick: str, history: int = 0, since: float | None = None
    ) -> OutcomeFuture:
        return self._op("join_room", room, nick, history, since)

    def leave_room(self, room: str) -> OutcomeFuture:
        return self._op("leave_room", room)

    def send_room_message(self, room: str, text: str, message_id: str) -> OutcomeFuture:
        return self._op("send_room_message", room, text, message_id)

    def room_occupants(self, room: str) -> OutcomeFuture:
        return self._op("room_occupants", room)

    def change_nick(self, room: str, nick: str) -> OutcomeFuture:
        return self._op("change_nick", room, nick)

    def room_bookmarks(self) -> OutcomeFuture:
        return self._op("room_bookmarks")


class Directory:
    def __init__(self, *handles: Handle) -> None:
        self.handles = list(handles)

    def of_user(self, sip_user: str) -> list[Handle]:
        return [h for h in self.handles if h.info.sip_user == sip_user]

    def get(self, sip_user: str, protocol: str) -> Handle | None:
        for h in self.handles:
            if (h.info.sip_user, h.info.protocol) == (sip_user, protocol):
                return h
        return None

    def all(self) -> list[Handle]:
        return list(self.handles)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now
