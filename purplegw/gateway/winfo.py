"""Watcher information (RFC 3857/3858): who asks to see a SIP user's presence.

Driven by ``PresenceService`` (purplegw.gateway.presence) on its worker: a
SUBSCRIBE with ``Event: presence.winfo`` is handed over here, and the
authorization requests (purplegw.gateway.authorization) and the accounts'
rosters (purplegw.gateway.roster) say when the watchers change.  The
documents are built by sans-IO code (purplegw.sip.presence.watcherinfo,
``WatcherInfoNotifier``); the dialog is the usual RFC 6665 machine.

Rules:

Rule 1. A SUBSCRIBE with ``Event: presence.winfo`` whose Request-URI is the
        sender's own address of record, identified as any SUBSCRIBE (digest
        or trusted proxy, the per-user rate, ``max_subscriptions_per_user``),
        gets 200 and an active subscription; anybody else's: 403.
Rule 2. The watchers of a user, over all their accounts, in one
        ``<watcher-list resource="sip:USER@DOMAIN" package="presence">``:
        every open authorization request from an IM contact is ``pending``
        (event ``subscribe``); every roster contact that sees the user's
        presence (subscription ``from`` or ``both``) and every contact the
        user allowed since is ``active`` (event ``approved``).  A watcher's
        URI is the contact's ``;proto=`` URI (what an answer to it is sent
        to), its display name the roster's name.
Rule 3. The first NOTIFY and the one after each refresh carry the full
        state; then each change is a partial document naming the watchers
        that changed; a request the user denied is listed once more as
        ``terminated`` with event ``rejected``, one that went away otherwise
        with ``deactivated``.  The final NOTIFY (unsubscribe, expiry) has no
        body.
Rule 4. Answers stay what they were: the user allows or denies by MESSAGE
        (purplegw.gateway.authorization); watcher info only shows them.
Rule 5. Dialogs live in memory: after a restart a refresh gets 481 and the
        phone subscribes again; open requests are re-sent by the networks
        at login (docs/presence.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from purplegw.gateway.dialogs import Dialogs
from purplegw.gateway.identity import respond
from purplegw.protocols.base import AuthorizationAnswer
from purplegw.sip.dialog import DialogId
from purplegw.sip.errors import SipError
from purplegw.sip.presence.watcherinfo import (
    CONTENT_TYPE_WATCHERINFO,
    Watcher,
    WatcherInfoNotifier,
    active_watcher,
    pending_watcher,
)
from purplegw.sip.subscription import Subscription, SubState

if TYPE_CHECKING:
    from collections.abc import Mapping

    from purplegw.actors.front.transport import Address, Source
    from purplegw.gateway.ports import Reply
    from purplegw.gateway.presence import PresenceService, PresentityKey
    from purplegw.sip.message import Request

logger = logging.getLogger(__name__)

EVENT = "presence.winfo"


@dataclass
class WinfoWatch:
    """One phone's subscription to its user's watcher information."""

    subscription: Subscription
    owner: str  # user@domain
    destination: Address | Source
    notifier: WatcherInfoNotifier = field(repr=False)

    @property
    def dialog_id(self) -> DialogId:
        assert self.subscription.dialog is not None
        return self.subscription.dialog.id


class WatcherInfoLists(Dialogs[WinfoWatch]):
    """Rules 1-5; every method runs on the presence service's worker."""

    def __init__(self, presence: PresenceService, asking: Mapping[PresentityKey, str]) -> None:
        super().__init__(presence, "winfo", "Watcher info")
        self.asking = asking  # the open requests (Authorization.asking), read only
        # Contacts allowed since, not on a roster yet: user -> key -> URI.
        self.allowed: dict[str, dict[PresentityKey, str]] = {}

    # --- SIP side -------------------------------------------------------------------

    @staticmethod
    def takes(request: Request) -> bool:
        """Whether ``request`` is a ``presence.winfo`` SUBSCRIBE (new or in a dialog)."""
        event = (request.headers.get("Event") or "").partition(";")[0].strip().lower()
        return event == EVENT

    def subscribe(self, request: Request, source: Source, reply: Reply) -> None:
        to = request.to
        if to is not None and to.tag:
            self._in_dialog(request, source, reply)
            return
        presence = self.presence
        user = presence.identity.identify(request, source)
        ruri = request.ruri
        if ruri.user is None or f"{ruri.user_unescaped}@{ruri.host.lower()}" != user:
            reply(respond(request, 403, "Forbidden: not your watcher information"))
            return
        cap = presence.settings.max_subscriptions_per_user
        if request.expires != 0 and presence.watch_count.get(user, 0) >= cap:
            reply(respond(request, 403, f"Forbidden: at most {cap} subscriptions per user"))
            return
        sub = self._new_subscription()
        watch = WinfoWatch(
            sub,
            user,
            presence.destination(request, source),
            WatcherInfoNotifier(f"sip:{user}"),
        )
        self._full_state(watch, final=request.expires == 0)
        local_contact = f"<sip:{ruri.user}@{source.listener.sent_by};transport={source.transport}>"
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
            self.add(watch)
            logger.info("%s subscribes to its watcher information", user)
        self.run(watch, actions, reply)

    def _in_dialog(self, request: Request, source: Source, reply: Reply) -> None:
        user = self.presence.identity.identify(request, source)
        dialog_id = DialogId.of_incoming(request)
        watch = self.watches.get(dialog_id) if dialog_id is not None else None
        if watch is None:
            reply(respond(request, 481, "Call/Transaction Does Not Exist"))
            return
        if user != watch.owner:
            reply(respond(request, 403, "Forbidden: not your subscription"))
            return
        self._full_state(watch, final=request.expires == 0)
        try:
            actions = watch.subscription.receive_subscribe(request, self.presence.clock())
        except SipError as exc:
            reply(respond(request, exc.status_hint, str(exc)))
            return
        if source.connection is not None:
            watch.destination = source
        self.run(watch, actions, reply)

    # --- the watchers (Rule 2) --------------------------------------------------------

    def watchers(self, owner: str) -> list[Watcher]:
        presence = self.presence
        rosters = presence.rosters
        found: dict[str, Watcher] = {}
        for account in rosters.keys_of(owner):
            for item in (rosters.of(account) or {}).values():
                if item.contact_sees:
                    uri = presence.presentity_view(*account, item.contact).uri
                    found[uri] = active_watcher(uri, item.name)
        for key, uri in self.allowed.get(owner, {}).items():
            found.setdefault(uri, active_watcher(uri, self._name(key)))
        for key, contact in self.asking.items():
            if key[0] == owner:
                uri = self._uri(key, contact)
                found[uri] = pending_watcher(uri, self._name(key))
        return list(found.values())

    def _uri(self, key: PresentityKey, contact: str) -> str:
        return self.presence.presentity_view(key[0], key[1], contact).uri

    def _name(self, key: PresentityKey) -> str | None:
        item = self.presence.rosters.get(*key)
        return item.name or None if item is not None else None

    # --- changes ----------------------------------------------------------------------

    def answered(
        self, owner: str, protocol: str, contact: str, answer: AuthorizationAnswer
    ) -> None:
        """The user (or the policy) answered ``contact``'s request (Rules 3, 4)."""
        key = (owner, protocol, contact.lower())
        uri = self._uri(key, contact)
        gone: dict[str, str] = {}
        if answer is AuthorizationAnswer.ALLOW:
            self.allowed.setdefault(owner, {})[key] = uri
        else:
            self.allowed.get(owner, {}).pop(key, None)
            gone[uri] = "rejected"
        self.changed(owner, gone)

    def changed(self, owner: str, gone: Mapping[str, str] | None = None) -> None:
        """The watchers of ``owner`` may have changed: partial NOTIFYs (Rule 3)."""
        allowed = self.allowed.get(owner, {})
        rosters = self.presence.rosters
        for key in list(allowed):
            item = rosters.get(*key)
            if (item is not None and item.contact_sees) or key[:2] in rosters.gone:
                del allowed[key]  # the roster says it now, or the account left
        if not allowed:
            self.allowed.pop(owner, None)
        watches = [
            w
            for w in self.by_owner.get(owner, {}).values()
            if w.subscription.state is SubState.ACTIVE
        ]
        if not watches:
            return
        current = self.watchers(owner)
        now = self.presence.clock()
        for watch in watches:
            body = watch.notifier.partial(current, gone)
            if body is not None:
                sub = watch.subscription
                sub.last_body = body
                self.run(watch, sub.notify(now, body))

    # --- dialogs --------------------------------------------------------------------

    def _new_subscription(self) -> Subscription:
        settings = self.presence.settings
        sub = Subscription(
            event=EVENT,
            local_via="SIP/2.0/UDP replaced.invalid",
            new_branch=lambda: "z9hG4bK",
            min_expires=settings.subscribe_min_expires,
            max_expires=settings.subscribe_max_expires,
            default_expires=settings.subscribe_default_expires,
        )
        sub.content_type = CONTENT_TYPE_WATCHERINFO
        return sub

    def _full_state(self, watch: WinfoWatch, *, final: bool) -> None:
        if final:
            watch.subscription.last_body = b""
            return
        watch.subscription.last_body = watch.notifier.full(self.watchers(watch.owner))


__all__ = ["EVENT", "WatcherInfoLists", "WinfoWatch"]
