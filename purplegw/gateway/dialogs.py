"""The subscription dialogs of a resource the gateway itself serves.

Three resources are not a contact's presence but documents the gateway
builds: the buddy list (purplegw.gateway.buddylist), watcher information
(purplegw.gateway.winfo) and the gateway contact
(purplegw.gateway.contact_service).  What they build differs; how their
dialogs live is the same, and is here once:

- a dialog is kept by id and per owner (the SIP user it shows), and counts
  against the owner's ``max_subscriptions_per_user`` like any subscription;
- the ``Subscription`` machine (purplegw.sip.subscription) decides, its
  actions are run here: responses go to the request's ``reply``, NOTIFYs
  to the phone through the front, timers on the presence service's timers
  under ``(kind, dialog id)``;
- a NOTIFY's answer (or its 408) goes back to the machine on the worker;
- an expiry timer that fires after a refresh does nothing; a dialog that
  ends is forgotten everywhere.

Every method runs on the gateway's worker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from purplegw.sip import actions as sip_actions
from purplegw.sip.message import Request, Response
from purplegw.sip.subscription import TIMER

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Sequence

    from purplegw.actors.front.transport import Address, Source
    from purplegw.gateway.ports import Reply
    from purplegw.gateway.presence import PresenceService
    from purplegw.sip.dialog import DialogId
    from purplegw.sip.subscription import Subscription

logger = logging.getLogger(__name__)


class Watch(Protocol):
    """One phone's subscription to one of the resources."""

    subscription: Subscription
    owner: str  # user@domain: whose document it shows
    destination: Address | Source

    @property
    def dialog_id(self) -> DialogId: ...


W = TypeVar("W", bound=Watch)


class Dialogs(Generic[W]):
    """The dialogs of one kind of resource; subclassed by each resource's rules."""

    def __init__(self, presence: PresenceService, kind: str, label: str, require: str = "") -> None:
        self.presence = presence
        self.kind = kind  # the timers' namespace
        self.label = label  # how the log names it
        # An option tag the 200 and every NOTIFY carry (the buddy list's eventlist).
        self.require = require
        self.watches: dict[DialogId, W] = {}
        self.by_owner: dict[str, dict[DialogId, W]] = {}  # the same, per owner

    def add(self, watch: W) -> None:
        """Keep a dialog the machine created; it counts against its owner's cap."""
        self.watches[watch.dialog_id] = watch
        self.by_owner.setdefault(watch.owner, {})[watch.dialog_id] = watch
        counts = self.presence.watch_count
        counts[watch.owner] = counts.get(watch.owner, 0) + 1

    def of_owner(self, owner: str) -> list[W]:
        return list(self.by_owner.get(owner, {}).values())

    def run(
        self, watch: W, actions: Sequence[sip_actions.Action], reply: Reply | None = None
    ) -> None:
        """Carry out what the subscription machine asked for."""
        timers = self.presence.timers
        for action in actions:
            if isinstance(action, sip_actions.Send):
                message = action.message
                if isinstance(message, Response):
                    if self.require and message.status == 200:
                        message.headers.add("Require", self.require)
                    if reply is not None:
                        reply(message)
                elif isinstance(message, Request):
                    self._send_notify(watch, message)
            elif isinstance(action, sip_actions.StartTimer):
                timers.start(
                    (self.kind, watch.dialog_id), action.seconds, self._expired, watch.dialog_id
                )
            elif isinstance(action, sip_actions.CancelTimer):
                timers.cancel((self.kind, watch.dialog_id))
            elif isinstance(action, sip_actions.Terminated):
                self._forget(watch, action.reason)

    def _send_notify(self, watch: W, notify: Request) -> None:
        front = self.presence.front
        if front is None:
            return
        notify.headers.remove("Via")  # the front adds its own
        if self.require:
            notify.headers.add("Require", self.require)
        future = front.send_request(notify, watch.destination)

        def answered(done: concurrent.futures.Future[Response]) -> None:
            try:
                response = done.result()
            except Exception as exc:  # noqa: BLE001 - our side failed; the dialog stays
                logger.info("%s NOTIFY for %s not sent: %s", self.label, watch.owner, exc)
                return
            sub = watch.subscription
            self.run(
                watch,
                sub.notify_timeout()
                if response.status == 408
                else sub.receive_notify_response(response),
            )

        future.add_done_callback(self.presence.worker.completion(answered))

    def _expired(self, dialog_id: DialogId) -> None:
        watch = self.watches.get(dialog_id)
        if watch is None:
            return
        sub = watch.subscription
        if sub.expires_at > self.presence.clock() + 0.5:
            return  # refreshed after the timer was armed
        sub.last_body = b""
        self.run(watch, sub.on_timer(TIMER, self.presence.clock()))

    def _forget(self, watch: W, reason: str) -> None:
        if self.watches.pop(watch.dialog_id, None) is None:
            return
        mine = self.by_owner.get(watch.owner, {})
        mine.pop(watch.dialog_id, None)
        if not mine:
            self.by_owner.pop(watch.owner, None)
        counts = self.presence.watch_count
        left = counts.get(watch.owner, 1) - 1
        if left > 0:
            counts[watch.owner] = left
        else:
            counts.pop(watch.owner, None)
        self.presence.timers.cancel((self.kind, watch.dialog_id))
        logger.info("%s subscription of %s ended: %s", self.label, watch.owner, reason)


__all__ = ["Dialogs", "Watch"]
