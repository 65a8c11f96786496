"""Notifier side of an RFC 6665 subscription (one dialog, one watcher).

States: INIT -> PENDING/ACTIVE -> TERMINATED, transitions in ``TRANSITIONS``.

Rules:

1. A SUBSCRIBE whose Expires is below ``min_expires`` (and not 0) is answered
   423 with Min-Expires and changes nothing (RFC 6665 4.2.1.1).  Longer than
   ``max_expires`` is lowered; absent means ``default_expires``.
2. The initial SUBSCRIBE creates the dialog (our To tag), is answered 200
   even while PENDING (RFC 6665 8.3.1 retired 202), and is followed at once
   by a NOTIFY (4.2.1.2): ``active;expires=N`` or ``pending;expires=N``.
3. A refresh (in-dialog SUBSCRIBE, Expires > 0) answers 200, re-arms the
   expiry timer ``subscription_expires`` and sends a NOTIFY.
4. Expires: 0 (initial "fetch" or unsubscribe) answers 200 and sends a final
   NOTIFY ``terminated;reason=timeout``.
5. ``authorize()`` moves PENDING to ACTIVE; ``reject()``/``deactivate()``/
   ``noresource()`` terminate with that reason; the expiry timer terminates
   with ``reason=timeout``.  Each sends the NOTIFY that says so.
6. ``notify(body)`` in PENDING/ACTIVE sends the current state.
7. A 481/408 (or any non-2xx except 3xx-retry) to a NOTIFY terminates the
   subscription without another NOTIFY (4.2.2).

Clock values (``now``) are passed in so NOTIFYs carry the remaining time.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .actions import Action, CancelTimer, Send, StartTimer, Terminated
from .dialog import Dialog
from .errors import LocalProtocolError
from .headers import Headers
from .message import Request, Response, make_response

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

__all__ = ["TIMER", "TRANSITIONS", "SubState", "Subscription", "subscription_state"]

TIMER = "subscription_expires"


class SubState(enum.Enum):
    INIT = "init"
    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


INIT, PENDING, ACTIVE, TERMINATED = SubState

TRANSITIONS: dict[tuple[SubState, str], SubState] = {
    (INIT, "subscribe_pending"): PENDING,
    (INIT, "subscribe_active"): ACTIVE,
    (INIT, "subscribe_fetch"): TERMINATED,
    (PENDING, "refresh"): PENDING,
    (ACTIVE, "refresh"): ACTIVE,
    (PENDING, "unsubscribe"): TERMINATED,
    (ACTIVE, "unsubscribe"): TERMINATED,
    (PENDING, "authorize"): ACTIVE,
    (ACTIVE, "authorize"): ACTIVE,
    (PENDING, "terminate"): TERMINATED,
    (ACTIVE, "terminate"): TERMINATED,
    (PENDING, "timer"): TERMINATED,
    (ACTIVE, "timer"): TERMINATED,
    (PENDING, "notify"): PENDING,
    (ACTIVE, "notify"): ACTIVE,
    (PENDING, "notify_failed"): TERMINATED,
    (ACTIVE, "notify_failed"): TERMINATED,
}

REASONS = frozenset(
    {"deactivated", "probation", "rejected", "timeout", "giveup", "noresource", "invariant"}
)


def subscription_state(
    state: SubState, *, expires: int | None = None, reason: str | None = None
) -> str:
    """The Subscription-State value (RFC 6665 8.2.3)."""
    if state is TERMINATED:
        if reason is not None and reason not in REASONS:
            raise LocalProtocolError(f"unknown Subscription-State reason {reason}", 500)
        return f"terminated;reason={reason}" if reason else "terminated"
    if state not in (ACTIVE, PENDING):
        raise LocalProtocolError(f"no Subscription-State for {state.value}", 500)
    return f"{state.value};expires={expires}" if expires is not None else state.value


@dataclass
class Subscription:
    """One subscription; ``new_branch`` and ``local_via`` build the NOTIFY Via."""

    event: str
    local_via: str
    new_branch: Callable[[], str]
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    content_type: str = "application/pidf+xml"
    state: SubState = INIT
    dialog: Dialog | None = None
    expires_at: float = 0.0
    last_body: bytes = b""
    event_id: str | None = None
    pending_notifies: dict[int, str] = field(default_factory=dict)

    # -- helpers -------------------------------------------------------------
    def _go(self, event: str) -> SubState:
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise LocalProtocolError(
                f"{event} not allowed in subscription state {self.state.value}", 500
            )
        self.state = new
        return new

    def _granted(self, request: Request) -> int | Response:
        expires = request.expires
        if expires is None:
            expires = self.default_expires
        if 0 < expires < self.min_expires:
            return make_response(request, 423, headers=[("Min-Expires", str(self.min_expires))])
        return min(expires, self.max_expires)

    def _notify(self, now: float, *, reason: str | None = None, body: bytes | None = None) -> Send:
        if self.dialog is None:
            raise LocalProtocolError("no dialog yet", 500)
        remaining = max(0, round(self.expires_at - now))
        extra = Headers()
        event = self.event if self.event_id is None else f"{self.event};id={self.event_id}"
        extra.add("Event", event)
        extra.add(
            "Subscription-State",
            subscription_state(
                self.state, expires=None if self.state is TERMINATED else remaining, reason=reason
            ),
        )
        payload = self.last_body if body is None else body
        if payload:
            extra.add("Content-Type", self.content_type)
        notify = self.dialog.create_request(
            "NOTIFY",
            via=f"{self.local_via};branch={self.new_branch()}",
            headers=extra,
            body=payload,
        )
        self.pending_notifies[self.dialog.local_cseq] = reason or self.state.value
        return Send(notify, None)

    def _end_dialog(self) -> None:
        if self.dialog is not None:
            self.dialog.terminate()

    # -- SUBSCRIBE -------------------------------------------------------------
    def receive_subscribe(
        self,
        request: Request,
        now: float,
        *,
        local_tag: str | None = None,
        authorized: bool = True,
        local_contact: str | None = None,
    ) -> list[Action]:
        """Handle an initial (``local_tag`` given) or in-dialog SUBSCRIBE.

        Returns ``Send(response)`` first (destination None: back to the
        requester via its transaction), then NOTIFYs and timer actions.
        """
        granted = self._granted(request)
        if isinstance(granted, Response):
            return [Send(granted, None)]
        if self.state is INIT:
            if local_tag is None:
                raise LocalProtocolError("initial SUBSCRIBE needs a local tag", 500)
            self.dialog = Dialog.from_request(request, local_tag, local_contact=local_contact)
            event_header = request.headers.get("Event") or self.event
            _, _, params = event_header.partition(";")
            for param in params.split(";"):
                name, _, value = param.strip().partition("=")
                if name.lower() == "id" and value:
                    self.event_id = value
            event = (
                "subscribe_fetch"
                if granted == 0
                else ("subscribe_active" if authorized else "subscribe_pending")
            )
        else:
            if self.dialog is None:
                raise LocalProtocolError("subscription without dialog", 500)
            self.dialog.receive_request(request)
            event = "unsubscribe" if granted == 0 else "refresh"
        self._go(event)
        self.expires_at = now + granted
        status = 200  # also while pending: RFC 6665 8.3.1 retired 202 for SUBSCRIBE
        response = make_response(
            request,
            status,
            to_tag=self.dialog.id.local_tag,
            headers=[("Expires", str(granted))]
            + (
                [("Contact", local_contact or self.dialog.local_contact or "")]
                if (local_contact or self.dialog.local_contact)
                else []
            ),
        )
        actions: list[Action] = [Send(response, None)]
        if self.state is TERMINATED:
            actions += [
                self._notify(now, reason="timeout"),
                CancelTimer(TIMER),
                Terminated("unsubscribed"),
            ]
            self.dialog.terminate()
        else:
            actions += [self._notify(now), StartTimer(TIMER, granted)]
        return actions

    # -- notifier decisions ------------------------------------------------------
    def authorize(self, now: float) -> list[Action]:
        was = self.state
        self._go("authorize")
        return [self._notify(now)] if was is PENDING else []

    def terminate(self, now: float, reason: str = "deactivated") -> list[Action]:
        """End it: reason ``rejected``, ``deactivated``, ``noresource``..."""
        self._go("terminate")
        actions: list[Action] = [
            self._notify(now, reason=reason),
            CancelTimer(TIMER),
            Terminated(reason),
        ]
        self._end_dialog()
        return actions

    def notify(self, now: float, body: bytes) -> list[Action]:
        """A state change of the resource: send it (PENDING sends no body, RFC 6665 4.2.2)."""
        self._go("notify")
        self.last_body = body
        return [self._notify(now, body=b"" if self.state is PENDING else body)]

    def on_timer(self, name: str, now: float) -> list[Action]:
        if name != TIMER or self.state not in (ACTIVE, PENDING):
            return []
        self._go("timer")
        actions: list[Action] = [self._notify(now, reason="timeout"), Terminated("timeout")]
        self._end_dialog()
        return actions

    def receive_notify_response(self, response: Response) -> list[Action]:
        """Outcome of one of our NOTIFYs; failures end the subscription (4.2.2)."""
        cseq = response.cseq
        if cseq is not None:
            self.pending_notifies.pop(cseq.number, None)
        if response.status < 300 or self.state is TERMINATED:
            return []
        self._go("notify_failed")
        self._end_dialog()
        return [CancelTimer(TIMER), Terminated(f"NOTIFY answered {response.status}")]

    def notify_timeout(self) -> list[Action]:
        """The NOTIFY's client transaction timed out (408 equivalent)."""
        if self.state is TERMINATED:
            return []
        self._go("notify_failed")
        self._end_dialog()
        return [CancelTimer(TIMER), Terminated("NOTIFY timed out")]
