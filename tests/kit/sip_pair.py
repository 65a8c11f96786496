"""Two SIP endpoints wired back to back in memory, with a fake clock.

The h11 ``ConnectionPair`` idea applied to transactions: every ``Send``
action is serialized, optionally dropped (to exercise retransmissions), parsed
again and fed to the other side's ``TransactionLayer``; timers live on a fake
clock that tests advance by hand.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from purplegw.sip.actions import Action, CancelTimer, DeliverToTU, Send, StartTimer, Terminated
from purplegw.sip.message import Message, Request, Response, serialize
from purplegw.sip.parser import parse_datagram
from purplegw.sip.transaction import Timers, TransactionKey, TransactionLayer

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Endpoint", "FakeClock", "SipPair"]


@dataclass
class FakeClock:
    now: float = 0.0
    _heap: list[tuple[float, int, object]] = field(default_factory=list)
    _seq: int = 0
    _live: dict[object, int] = field(default_factory=dict)

    def start(self, handle: object, seconds: float) -> None:
        self._seq += 1
        self._live[handle] = self._seq
        heapq.heappush(self._heap, (self.now + seconds, self._seq, handle))

    def cancel(self, handle: object) -> None:
        self._live.pop(handle, None)

    def pop_due(self, until: float) -> tuple[float, object] | None:
        while self._heap and self._heap[0][0] <= until:
            when, seq, handle = heapq.heappop(self._heap)
            if self._live.get(handle) == seq:
                del self._live[handle]
                return when, handle
        return None


@dataclass
class Endpoint:
    name: str
    layer: TransactionLayer
    delivered: list[DeliverToTU] = field(default_factory=list)
    sent: list[tuple[float, Message]] = field(default_factory=list)
    terminated: list[TransactionKey] = field(default_factory=list)
    # called with each request the TU gets; returns responses to send
    on_request: Callable[[Request], list[Response]] | None = None


class SipPair:
    """``client`` and ``server`` endpoints over a lossy in-memory wire."""

    def __init__(self, timers: Timers | None = None, *, reliable: bool = False) -> None:
        self.clock = FakeClock()
        self.reliable = reliable
        self.client = Endpoint("client", TransactionLayer(timers))
        self.server = Endpoint("server", TransactionLayer(timers))
        # predicate deciding whether a message on the wire gets lost
        self.drop: Callable[[Endpoint, Message], bool] = lambda _ep, _msg: False

    def _other(self, ep: Endpoint) -> Endpoint:
        return self.server if ep is self.client else self.client

    def _run(self, ep: Endpoint, actions: list[tuple[TransactionKey, Action]]) -> None:
        for key, action in actions:
            if isinstance(action, Send):
                ep.sent.append((self.clock.now, action.message))
                if not self.drop(ep, action.message):
                    self._deliver(self._other(ep), parse_datagram(serialize(action.message)))
            elif isinstance(action, StartTimer):
                self.clock.start((ep.name, key, action.name), action.seconds)
            elif isinstance(action, CancelTimer):
                self.clock.cancel((ep.name, key, action.name))
            elif isinstance(action, DeliverToTU):
                ep.delivered.append(action)
                if isinstance(action.message, Request) and ep.on_request is not None:
                    for response in ep.on_request(action.message):
                        self._run(ep, ep.layer.send_response(action.message, response))
            elif isinstance(action, Terminated):
                ep.terminated.append(key)

    def _deliver(self, ep: Endpoint, msg: Message) -> None:
        if isinstance(msg, Request):
            self._run(
                ep, ep.layer.receive_request(msg, ("127.0.0.1", 5060), reliable=self.reliable)
            )
        else:
            self._run(ep, ep.layer.receive_response(msg))

    def send_request(self, request: Request) -> None:
        self._run(
            self.client,
            self.client.layer.send_request(request, ("127.0.0.1", 5060), reliable=self.reliable),
        )

    def respond(self, request: Request, response: Response) -> None:
        self._run(self.server, self.server.layer.send_response(request, response))

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing due timers in order."""
        until = self.clock.now + seconds
        while (due := self.clock.pop_due(until)) is not None:
            self.clock.now, handle = due
            name, key, timer = handle  # type: ignore[misc]
            ep = self.client if name == "client" else self.server
            self._run(ep, ep.layer.on_timer(key, timer))
        self.clock.now = until
