"""A SIP user's IM contacts as one resource list (RFC 4662): ``sip:USER-buddies@DOMAIN``.

Driven by ``PresenceService`` (purplegw.gateway.presence), on the same
worker thread: it hands over SUBSCRIBEs to a list URI and tells the lists
when a contact changes.  The RLMI and multipart encoding is sans-IO code
in purplegw.sip.presence.rlmi; the dialog is the usual RFC 6665 machine.

Rules:

Rule 1. A SUBSCRIBE (Event: presence) whose Request-URI is ``[presence]
        buddy_list_user`` (``"{user}-buddies"``) at the gateway's domain names
        the list of SIP user ``user@domain``.  It is identified and counted
        like any SUBSCRIBE (digest or trusted proxy, the per-user rate and
        ``max_subscriptions_per_user``); anybody but that user gets 403.
Rule 2. Without ``Supported: eventlist`` the answer is 421 with ``Require:
        eventlist`` (RFC 4662: a subscriber must announce that it reads
        lists).  The 200 and every NOTIFY carry ``Require: eventlist``.
Rule 3. The list holds every contact the gateway knows for the user, over
        all their accounts: one resource per presentity (a contact an account
        reported presence or an authorization answer for, or one the user
        subscribed to).  Its URI is the ``;proto=`` form a reply from a phone
        reads back; its name is the contact's id (the adapters report no
        roster names).  A contact with known presence (or that authorized the
        user) is ``active`` with its PIDF; one that refused is ``terminated``
        (``rejected``); the others are ``pending``.
Rule 4. The list subscription is active at once (it is the user's own list).
        The first NOTIFY and the one after each refresh carry the full state;
        then each change of a contact is a partial NOTIFY (``fullState="false"``)
        naming that contact only.  ``version`` grows by one per NOTIFY of the
        dialog.  The final NOTIFY (unsubscribe, expiry) has no body.
Rule 5. List dialogs live in memory: after a restart a refresh gets 481 and
        the phone subscribes again (RFC 6665 4.1.2.2).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from purplegw.gateway.identity import respond
from purplegw.sip import actions as sip_actions
from purplegw.sip.dialog import DialogId
from purplegw.sip.errors import SipError
from purplegw.sip.message import Request, Response
from purplegw.sip.presence.rlmi import ResourceState, list_notification
from purplegw.sip.subscription import TIMER, Subscription, SubState

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Sequence

    from purplegw.actors.front.transport import Address, Source
    from purplegw.gateway.ports import Reply
    from purplegw.gateway.presence import PresenceService, Presentity
    from purplegw.sip.uri import SipURI

logger = logging.getLogger(__name__)

EVENTLIST = "eventlist"


@dataclass
class ListWatch:
    """One phone's subscription to one user's list."""

    subscription: Subscription
    owner: str  # user@domain
    uri: str  # the list's URI
    destination: Address | Source
    boundary: str
    version: int = -1  # of the last NOTIFY built

    @property
    def dialog_id(self) -> DialogId:
        assert self.subscription.dialog is not None
        return self.subscription.dialog.id


class BuddyLists:
    """Rules 1-5 above; every method runs on the presence service's worker."""

    def __init__(self, presence: PresenceService, template: str) -> None:
        if template.count("{user}") != 1:
            raise ValueError("[presence] buddy_list_user must contain {user} once")
        self.presence = presence
        self.prefix, self.suffix = template.split("{user}")
        self.domain = presence.addresses.gateway_domain.lower()
        self.watches: dict[DialogId, ListWatch] = {}

    # --- SIP side -------------------------------------------------------------------

    def owner_of(self, ruri: SipURI) -> str | None:
        """The SIP user whose list ``ruri`` names, or None (Rule 1)."""
        if not ruri.is_sip or ruri.user is None or ruri.host.lower() != self.domain:
            return None
        name = ruri.user_unescaped
        if name is None or len(name) <= len(self.prefix) + len(self.suffix):
            return None
        if not (name.startswith(self.prefix) and name.endswith(self.suffix)):
            return None
        return f"{name[len(self.prefix) : len(name) - len(self.suffix)]}@{self.domain}"

    def subscribe(self, request: Request, source: Source, reply: Reply, owner: str) -> None:
        presence = self.presence
        user = presence.identity.identify(request, source)
        if user != owner:
            reply(respond(request, 403, "Forbidden: not your buddy list"))
            return
        if EVENTLIST not in _tokens(request.headers.getall("Supported")):
            reply(respond(request, 421, "Extension Required", headers=[("Require", EVENTLIST)]))
            return
        cap = presence.settings.max_subscriptions_per_user
        if request.expires != 0 and presence.watch_count.get(user, 0) >= cap:
            reply(respond(request, 403, f"Forbidden: at most {cap} subscriptions per user"))
            return
        sub = presence.new_subscription()
        uri = f"sip:{self.prefix}{owner.partition('@')[0]}{self.suffix}@{self.domain}"
        watch = ListWatch(
            sub, owner, uri, presence.destination(request, source), boundary=os.urandom(12).hex()
        )
        self._full_state(watch, final=request.expires == 0)
        user_part = uri[4:].partition("@")[0]
        local_contact = f"<sip:{user_part}@{source.listener.sent_by};transport={source.transport}>"
        try:
            actions = sub.receive_subscribe(
                request,
                presence.clock(),
                local_tag=os.urandom(6).hex(),
                authorized=True,
                local_contact=local_contact,
            )
        except SipError as exc:
            reply(respond(request, exc.status_hint, str(exc)))
            return
        if sub.dialog is not None and sub.state is not SubState.TERMINATED:
            self.watches[watch.dialog_id] = watch
            presence.watch_count[user] = presence.watch_count.get(user, 0) + 1
            logger.info("%s subscribes to its buddy list", user)
        self._run(watch, actions, reply)

    def in_dialog(self, request: Request, source: Source, reply: Reply) -> bool:
        """Handle a refresh or unsubscribe of a list dialog; False: not one of ours."""
        dialog_id = DialogId.of_incoming(request)
        watch = self.watches.get(dialog_id) if dialog_id is not None else None
        if watch is None:
            return False
        user = self.presence.identity.identify(request, source)
        if user != watch.owner:
            reply(respond(request, 403, "Forbidden: not your subscription"))
            return True
        self._full_state(watch, final=request.expires == 0)
        try:
            actions = watch.subscription.receive_subscribe(request, self.presence.clock())
        except SipError as exc:
            reply(respond(request, exc.status_hint, str(exc)))
            return True
        if source.connection is not None:
            watch.destination = source
        self._run(watch, actions, reply)
        return True

    # --- the contacts' side ---------------------------------------------------------

    def changed(self, presentity: Presentity) -> None:
        """``presentity`` changed (presence, authorization, new): partial NOTIFYs (Rule 4)."""
        owner = presentity.key[0]
        now = self.presence.clock()
        for watch in list(self.watches.values()):
            sub = watch.subscription
            if watch.owner != owner or sub.state is not SubState.ACTIVE:
                continue
            self._build(watch, [presentity], full_state=False)
            self._run(watch, sub.notify(now, sub.last_body))

    # --- bodies ---------------------------------------------------------------------

    def _full_state(self, watch: ListWatch, *, final: bool) -> None:
        if final:  # the terminated NOTIFY carries no list
            watch.subscription.last_body = b""
            return
        contacts = sorted(
            (p for p in self.presence.presentities.values() if p.key[0] == watch.owner),
            key=lambda p: p.key,
        )
        self._build(watch, contacts, full_state=True)

    def _build(self, watch: ListWatch, contacts: Sequence[Presentity], *, full_state: bool) -> None:
        watch.version += 1
        now = self.presence.clock()
        content_type, body = list_notification(
            watch.uri,
            version=watch.version,
            full_state=full_state,
            resources=[_resource(p, now) for p in contacts],
            boundary=watch.boundary,
            cid_domain=self.domain,
        )
        watch.subscription.content_type = content_type
        watch.subscription.last_body = body

    # --- running the machine's actions ------------------------------------------------

    def _run(
        self, watch: ListWatch, actions: Sequence[sip_actions.Action], reply: Reply | None = None
    ) -> None:
        timers = self.presence.timers
        for action in actions:
            if isinstance(action, sip_actions.Send):
                message = action.message
                if isinstance(message, Response):
                    if message.status == 200:
                        message.headers.add("Require", EVENTLIST)
                    if reply is not None:
                        reply(message)
                elif isinstance(message, Request):
                    self._send_notify(watch, message)
            elif isinstance(action, sip_actions.StartTimer):
                timers.start(
                    ("buddylist", watch.dialog_id), action.seconds, self._expired, watch.dialog_id
                )
            elif isinstance(action, sip_actions.CancelTimer):
                timers.cancel(("buddylist", watch.dialog_id))
            elif isinstance(action, sip_actions.Terminated):
                self._forget(watch, action.reason)

    def _send_notify(self, watch: ListWatch, notify: Request) -> None:
        front = self.presence.front
        if front is None:
            return
        notify.headers.remove("Via")  # the front adds its own
        notify.headers.add("Require", EVENTLIST)
        future = front.send_request(notify, watch.destination)

        def answered(done: concurrent.futures.Future[Response]) -> None:
            try:
                response = done.result()
            except Exception as exc:  # noqa: BLE001 - our side failed; the dialog stays
                logger.info("List NOTIFY for %s not sent: %s", watch.owner, exc)
                return
            sub = watch.subscription
            self._run(
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
        self._run(watch, sub.on_timer(TIMER, self.presence.clock()))

    def _forget(self, watch: ListWatch, reason: str) -> None:
        if self.watches.pop(watch.dialog_id, None) is None:
            return
        counts = self.presence.watch_count
        left = counts.get(watch.owner, 1) - 1
        if left > 0:
            counts[watch.owner] = left
        else:
            counts.pop(watch.owner, None)
        self.presence.timers.cancel(("buddylist", watch.dialog_id))
        logger.info("Buddy list subscription of %s ended: %s", watch.owner, reason)


def _resource(presentity: Presentity, now: float) -> ResourceState:
    if presentity.authorized is False:
        return ResourceState(presentity.uri, presentity.contact, "terminated", reason="rejected")
    if presentity.presence is not None or presentity.authorized:
        return ResourceState(presentity.uri, presentity.contact, "active", presentity.document(now))
    return ResourceState(presentity.uri, presentity.contact, "pending")


def _tokens(values: Sequence[str]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",")}


__all__ = ["BuddyLists", "ListWatch"]
