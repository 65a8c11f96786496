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
Rule 3. The list holds the user's roster, over all their accounts: one
        resource per contact each account's session reported
        (purplegw.gateway.roster; XMPP: the server's roster, IRC: the
        watched nicks, Matrix: the peers of direct rooms).  An account whose
        session reports no roster contributes the contacts the gateway saw
        for it instead (presence, authorization answers, the user's
        SUBSCRIBEs); an account removed from the table contributes nothing.
        A resource's URI is the ``;proto=`` form a reply from a phone reads
        back; its name is the roster's name for the contact, else its id.
        A contact with known presence, that authorized the user, or whose
        roster subscription lets the account see it is ``active`` with its
        PIDF; one that refused is ``terminated`` (``rejected``); the others
        are ``pending``.
Rule 4. The list subscription is active at once (it is the user's own list).
        The first NOTIFY and the one after each refresh carry the full state;
        then each change is a partial NOTIFY (``fullState="false"``) naming
        the contacts that changed only: presence, authorization, a contact
        added, renamed or removed on a roster, an account that logged in
        (its roster) or left the table.  A contact that left the list is
        named once more, ``terminated`` with reason ``noresource``.
        ``version`` grows by one per NOTIFY of the dialog.  The final NOTIFY
        (unsubscribe, expiry) has no body.
Rule 5. List dialogs live in memory: after a restart a refresh gets 481 and
        the phone subscribes again (RFC 6665 4.1.2.2).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from purplegw.gateway.dialogs import Dialogs
from purplegw.gateway.identity import respond
from purplegw.sip.dialog import DialogId
from purplegw.sip.errors import SipError
from purplegw.sip.presence.rlmi import ResourceState, list_notification
from purplegw.sip.subscription import Subscription, SubState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from purplegw.actors.front.transport import Address, Source
    from purplegw.gateway.ports import Reply
    from purplegw.gateway.presence import PresenceService, Presentity
    from purplegw.protocols.base import RosterItem
    from purplegw.sip.message import Request
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


class BuddyLists(Dialogs[ListWatch]):
    """Rules 1-5 above; every method runs on the presence service's worker."""

    def __init__(self, presence: PresenceService, template: str) -> None:
        if template.count("{user}") != 1:
            raise ValueError("[presence] buddy_list_user must contain {user} once")
        super().__init__(presence, "buddylist", "Buddy list", require=EVENTLIST)
        self.prefix, self.suffix = template.split("{user}")
        self.domain = presence.addresses.gateway_domain.lower()

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
            self.add(watch)
            logger.info("%s subscribes to its buddy list", user)
        self.run(watch, actions, reply)

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
        self.run(watch, actions, reply)
        return True

    # --- the contacts' side ---------------------------------------------------------

    def changed(self, presentity: Presentity) -> None:
        """``presentity`` changed (presence, authorization, new): partial NOTIFYs (Rule 4)."""
        owner = presentity.key[0]
        if not self._watched(owner) or not self._member(presentity):
            return
        self._partial(owner, [self._resource(presentity)])

    def snapshot(self, owner: str, only: tuple[str, str] | None = None) -> Snapshot:
        """What ``owner``'s list shows now, to compare after a change (None: nobody watches).

        ``only`` (protocol, contact): just that contact, for a change that can
        touch no other (a roster push): the cost does not grow with the roster.
        """
        if not self._watched(owner):
            return None
        return {p.key: self._entry(p) for p in self._members(owner, only)}

    def update(self, owner: str, before: Snapshot, only: tuple[str, str] | None = None) -> None:
        """Partial NOTIFYs with what changed since ``before`` (Rule 4: rosters, accounts)."""
        if before is None:
            return
        after = {p.key: p for p in self._members(owner, only)}
        resources = [
            self._resource(p) for key, p in after.items() if before.get(key) != self._entry(p)
        ]
        resources += [
            ResourceState(entry.uri, entry.name, "terminated", reason="noresource")
            for key, entry in before.items()
            if key not in after
        ]
        if resources:
            self._partial(owner, sorted(resources, key=lambda r: r.uri))

    def _partial(self, owner: str, resources: list[ResourceState]) -> None:
        now = self.presence.clock()
        for watch in list(self.by_owner.get(owner, {}).values()):
            sub = watch.subscription
            if sub.state is not SubState.ACTIVE:
                continue
            self._build(watch, resources, full_state=False)
            self.run(watch, sub.notify(now, sub.last_body))

    def _watched(self, owner: str) -> bool:
        return owner in self.by_owner

    # --- members (Rule 3) -------------------------------------------------------------

    def _members(self, owner: str, only: tuple[str, str] | None = None) -> list[Presentity]:
        presence = self.presence
        if only is not None:
            presentity = presence.presentity_view(owner, *only)
            return [presentity] if self._member(presentity) else []
        rosters = presence.rosters
        members: list[Presentity] = []
        rostered = set()
        for key in rosters.keys_of(owner):
            rostered.add(key)
            members += [
                presence.presentity_view(*key, item.contact)
                for item in (rosters.of(key) or {}).values()
            ]
        members += [
            p
            for p in presence.presentities.values()
            if p.key[0] == owner and p.key[:2] not in rostered and p.key[:2] not in rosters.gone
        ]
        return sorted(members, key=lambda p: p.key)

    def _member(self, presentity: Presentity) -> bool:
        rosters = self.presence.rosters
        account = presentity.key[:2]
        if account in rosters.gone:
            return False
        roster = rosters.of(account)
        return roster is None or presentity.key[2] in roster

    def _item(self, presentity: Presentity) -> RosterItem | None:
        return self.presence.rosters.get(*presentity.key)

    def _entry(self, presentity: Presentity) -> _Entry:
        item = self._item(presentity)
        state, reason = _state(presentity, item)
        name = item.name if item is not None and item.name else presentity.contact
        return _Entry(presentity.uri, name, state, reason, presentity.presence)

    def _resource(self, presentity: Presentity) -> ResourceState:
        entry = self._entry(presentity)
        body = presentity.document(self.presence.clock()) if entry.state == "active" else b""
        return ResourceState(entry.uri, entry.name, entry.state, body, reason=entry.reason)

    # --- bodies ---------------------------------------------------------------------

    def _full_state(self, watch: ListWatch, *, final: bool) -> None:
        if final:  # the terminated NOTIFY carries no list
            watch.subscription.last_body = b""
            return
        resources = [self._resource(p) for p in self._members(watch.owner)]
        self._build(watch, resources, full_state=True)

    def _build(self, watch: ListWatch, resources: list[ResourceState], *, full_state: bool) -> None:
        watch.version += 1
        content_type, body = list_notification(
            watch.uri,
            version=watch.version,
            full_state=full_state,
            resources=resources,
            boundary=watch.boundary,
            cid_domain=self.domain,
        )
        watch.subscription.content_type = content_type
        watch.subscription.last_body = body


@dataclass(frozen=True)
class _Entry:
    """What the list shows of one contact (compared to find what changed)."""

    uri: str
    name: str
    state: str
    reason: str | None
    presence: object


# What a list showed before a change (None: nobody was watching it).
Snapshot = dict[tuple[str, str, str], _Entry] | None


def _state(presentity: Presentity, item: RosterItem | None) -> tuple[str, str | None]:
    if presentity.authorized is False:
        return "terminated", "rejected"
    if (
        presentity.presence is not None
        or presentity.authorized
        or (item is not None and item.sees_contact)
    ):
        return "active", None
    return "pending", None


def _tokens(values: Sequence[str]) -> set[str]:
    return {token.strip().lower() for value in values for token in value.split(",")}


__all__ = ["BuddyLists", "ListWatch"]
