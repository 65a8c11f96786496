"""Presence: PUBLISH, SUBSCRIBE/NOTIFY, presentities and their watches.

``PresenceService`` is driven by the ``Gateway`` (purplegw.gateway.core):
the gateway routes PUBLISH and SUBSCRIBE here and forwards the account
events about contacts' presence.  Everything runs on the gateway's single
worker (purplegw.actors.worker), timers included, so the state below needs
no locks and the store (which blocks) is never touched from the SIP loop or
an account loop.  Why plain objects and not one pykka actor per presentity:
see docs/presence.md (same isolation, none of the thread or mailbox cost).
Authorization requests and answers: purplegw.gateway.authorization;
upstream publishing: purplegw.gateway.upstream.

Rules:

Rule 1. PUBLISH (RFC 3903) from a SIP user to its own AoR: the publication
        store (purplegw.sip.publication) decides the answer (ETag, 412, 423,
        body-less refresh).  A body is read before anything changes: an
        unreadable PIDF is answered with the parser's status (400/415) and
        the user's presence is left alone.  The user's presence is the most
        available of their live publications (two phones: the one in use
        wins); it goes to every account of the user, and only when it
        changed, so a refresh changes nothing.
Rule 2. basic=closed (or the last publication removed or expired) logs the
        user's accounts out; open logs them back in (``[presence]
        keep_online = true``: they stay online and show as offline).
Rule 3. SUBSCRIBE (RFC 6665/3856, Event: presence) from a SIP user to an
        external contact: the Request-URI is resolved as for MESSAGE
        (purplegw.gateway.addressing).  While the contact has not authorized the
        user, the subscription is ``pending`` (the NOTIFY says so; the answer is
        200, RFC 6665 retired 202) and the contact is added
        to the account's roster, which sends the subscription request.  The
        contact's answer or presence makes it ``active``; a refusal
        terminates it with ``reason=rejected``.  Before any of that, the
        contact must be valid for its network (the adapter's
        ``contact_error``): otherwise 404 at once, and nothing is kept.
        The request to the contact lives as long as a subscription wants
        it: when the user's last dialog to a contact that never authorized
        ends (unsubscribe, expiry, refusal), the account withdraws it
        (``remove_contact``), so no roster entry outlives the
        authorization flow that created it.
Rule 4. One ``Presentity`` per (sip_user, protocol, contact) holds the
        contact's last presence and the user's subscription dialogs, from
        any number of devices.  Every change is NOTIFYed to each dialog;
        each NOTIFY is its own client transaction whose answer comes back
        later as a future, so a slow or dead subscriber (timer F, 408)
        delays nobody and only ends its own subscription.
Rule 5. Subscriptions are written to the store on creation and refresh and
        deleted when they end; a restarted gateway loads the live ones and
        NOTIFYs them again as soon as the accounts report presence.
Rule 6. What one user may hold is capped: ``[presence]
        max_publications_per_user`` live publications (a new one beyond it:
        403) and ``max_subscriptions_per_user`` subscription dialogs (a new
        one beyond it: 403; refreshes, unsubscribes and fetches pass).  The
        request rate is capped before that, in identify() (503 +
        Retry-After, purplegw.gateway.identity).  Why 403 and not 503:
        docs/presence.md, "Limits per user".
Rule 7. Authorization requests: purplegw.gateway.authorization.
Rule 8. Upstream mode: purplegw.gateway.upstream.
Rule 9. The user's contacts as one resource list (RFC 4662,
        ``sip:USER-buddies@DOMAIN``): purplegw.gateway.buddylist, told of
        every change of a presentity and of the accounts' rosters
        (purplegw.gateway.roster).
Rule 10. Publications are written through to the database
        (``purplegw_publications``, by the state writer: the answer does not
        wait) and a started gateway loads the live ones, each until its own
        expiry (the stored absolute ``expires_at``), and tells the user's
        accounts the presence they make.  In a cluster, a node loads the
        subscriptions and publications of the users no other node holds.
Rule 11. Hand-over in a cluster: ``adopt(users)`` loads the user's dialogs
        and publications from the database when this node comes to hold the
        user, ``disown(users)`` forgets them from memory (nothing is deleted:
        the next holder adopts them).  Buddy-list subscriptions (Rule 9) are
        not kept in the database and do not move: the phone subscribes again.
Rule 12. ``Event: presence.winfo`` SUBSCRIBEs (RFC 3857, the user's pending
        authorization requests): purplegw.gateway.winfo.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from purplegw import metrics
from purplegw.actors.front.transport import Address, Source
from purplegw.exceptions import StoreError
from purplegw.gateway.addressing import NoRoute, Route
from purplegw.gateway.buddylist import BuddyLists, Snapshot
from purplegw.gateway.identity import respond
from purplegw.gateway.model import Account, AccountRef, ContactPresence, Presence, Status
from purplegw.gateway.roster import Rosters
from purplegw.gateway.timers import KeyedTimers
from purplegw.sip import actions as sip_actions
from purplegw.sip.dialog import Dialog, DialogId
from purplegw.sip.errors import SipError
from purplegw.sip.message import Request, Response
from purplegw.sip.presence import PidfError, parse_pidf, pidf_to_presence, presence_to_pidf
from purplegw.sip.presence.pidf import CONTENT_TYPE_PIDF
from purplegw.sip.publication import TIMER_PREFIX, Publication, PublicationStore
from purplegw.sip.rport import response_destination
from purplegw.sip.subscription import TIMER, Subscription, SubState
from purplegw.sip.uri import NameAddr, parse_name_addr, parse_uri
from purplegw.store.publications import StoredPublication
from purplegw.store.subscriptions import StoredSubscription, dialog_key

if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable, Hashable, Sequence

    from purplegw.gateway.addressing import AddressBook
    from purplegw.gateway.identity import Identity
    from purplegw.gateway.ports import (
        AccountHandlePort,
        DirectoryPort,
        FrontPort,
        OutcomeFuture,
        Reply,
        SharedStatePort,
        StorePort,
        WorkerPort,
    )
    from purplegw.gateway.settings import PresenceSettings
    from purplegw.gateway.upstream import UpstreamPublisher
    from purplegw.gateway.winfo import WatcherInfoLists
    from purplegw.protocols.base import RosterItem

logger = logging.getLogger(__name__)

# NOTIFY CSeqs reserved in the store at a time (see Watch.cseq_reserved).
CSEQ_BLOCK = 100

EVENT = "presence"
PresentityKey = tuple[str, str, str]  # (sip_user, protocol, contact folded to lower case)


@dataclass
class Watch:
    """One subscription dialog of one device of the SIP user."""

    subscription: Subscription
    key: PresentityKey
    account_id: int
    destination: Address | Source
    # Highest CSeq the store promises is above every NOTIFY sent in this dialog.
    cseq_reserved: int = 0

    @property
    def dialog_id(self) -> DialogId:
        assert self.subscription.dialog is not None
        return self.subscription.dialog.id


@dataclass
class Presentity:
    """An external contact as watched by one SIP user through one account."""

    key: PresentityKey
    contact: str  # the network's own form
    entity: str  # the contact's SIP URI (the PIDF entity)
    uri: str = ""  # the same with ;proto=, as a reply from a phone reads it back
    presence: ContactPresence | None = None
    authorized: bool | None = None  # None: not known yet
    requested: bool = False  # the account was asked to add it (Rule 3)
    watches: dict[DialogId, Watch] = field(default_factory=dict)

    def document(self, now: float) -> bytes:
        current = self.presence or ContactPresence(self.contact, {})
        return presence_to_pidf(
            self.entity, current, timestamp=datetime.fromtimestamp(now, UTC).replace(microsecond=0)
        )


class PresenceService:
    """The presence side of the gateway; every method runs on its worker thread."""

    def __init__(  # noqa: PLR0913 - the controller's collaborators, all keyword
        self,
        *,
        settings: PresenceSettings,
        identity: Identity,
        addresses: AddressBook,
        store: StorePort,
        directory: DirectoryPort,
        worker: WorkerPort,
        proxy_address: Address | None,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = secrets.token_bytes,
        contact_error: Callable[[str, str], str | None] = lambda _protocol, _contact: None,
    ) -> None:
        self.settings = settings
        # The presence of a room the user is in (purplegw.gateway.groupchat), else None.
        self.room_presence: Callable[[Account, str], ContactPresence | None] = (
            lambda _account, _contact: None
        )
        self.identity = identity
        self.addresses = addresses
        self.store = store
        self.directory = directory
        self.worker = worker
        self.proxy_address = proxy_address
        self.clock = clock
        self.contact_error = contact_error
        self.front: FrontPort | None = None
        self.upstream: UpstreamPublisher | None = None
        self.shared: SharedStatePort | None = None  # publications written through (Rule 10)
        self.node = ""  # this node's name in a cluster
        # True for a user another node of the cluster holds: its state is that node's.
        self.elsewhere: Callable[[str], bool] = lambda _user: False
        self.timers = KeyedTimers(worker)
        self.publications = PublicationStore(
            random,
            min_expires=settings.publish_min_expires,
            max_expires=settings.publish_max_expires,
            default_expires=settings.publish_default_expires,
        )
        self.presentities: dict[PresentityKey, Presentity] = {}
        self.watches: dict[DialogId, Watch] = {}
        self.watch_count: dict[str, int] = {}  # live dialogs per SIP user (Rule 6)
        self._applied: dict[str, Presence] = {}  # what each user's accounts were last told
        self.rosters = Rosters()
        self.buddylists = (
            BuddyLists(self, settings.buddy_list_user) if settings.buddy_list_user else None
        )
        self.winfo: WatcherInfoLists | None = None  # set by the gateway (Rule 12)
        self._logged_out: set[str] = set()

    def _start_timer(
        self, key: Hashable, seconds: float, fn: Callable[..., object], *args: object
    ) -> None:
        self.timers.start(("presence", key), seconds, fn, *args)

    def _cancel_timer(self, key: Hashable) -> None:
        self.timers.cancel(("presence", key))

    def stop(self) -> None:
        self.timers.cancel_all()

    # --- lifecycle ------------------------------------------------------------

    def restore(self) -> None:
        """Load the subscriptions a previous run left (Rule 5)."""
        store = self.store.subscriptions
        now = self.clock()
        store.purge(now)
        for row in store.live(now):
            if self.elsewhere(row.sip_user):
                continue  # another node of the cluster holds the user and its dialogs
            try:
                self._restore_one(row, now)
            except Exception:
                logger.exception(
                    "Cannot restore subscription of %s to %s", row.sip_user, row.contact
                )
                store.delete(row.dialog_key)
        if self.watches:
            logger.info("Restored %d presence subscription(s)", len(self.watches))
        self._restore_publications(now)

    def _restore_publications(self, now: float) -> None:
        """Load the live publications an earlier run left (Rule 10); with a state writer only."""
        if self.shared is None:
            return
        store = self.store.publications
        try:
            store.purge(now)
            rows = store.live(now)
        except StoreError as exc:
            logger.warning("Publications not restored (phones publish again): %s", exc)
            return
        users: dict[str, None] = {}
        rows = [row for row in rows if not self.elsewhere(row.resource)]
        for row in rows:
            publication = Publication(
                row.resource,
                row.event,
                row.etag,
                row.body,
                row.content_type or None,
                max(1, int(row.expires_at - now)),
            )
            timer = self.publications.restore(publication, row.expires_at - now)
            self._start_timer(timer.name, timer.seconds, self._publication_expired, timer.name)
            users[row.resource] = None
        if rows:
            logger.info("Restored %d publication(s) of %d user(s)", len(rows), len(users))
        for user in users:
            self._apply_user_presence(user)

    def _restore_one(self, row: StoredSubscription, now: float) -> None:
        local = parse_uri(row.local_uri)
        remote = parse_uri(row.remote_uri)
        dialog = Dialog(
            id=DialogId(row.call_id, row.local_tag, row.remote_tag),
            local=NameAddr(local, None, {}),
            remote=NameAddr(remote, None, {}),
            remote_target=parse_uri(row.remote_target),
            route_set=[_name_addr(r) for r in row.route_set.splitlines() if r],
            local_cseq=row.local_cseq,
            remote_cseq=row.remote_cseq,
            local_contact=row.local_contact or None,
        )
        sub = self.new_subscription()
        sub.dialog = dialog
        sub.state = SubState.ACTIVE if row.state == "active" else SubState.PENDING
        sub.expires_at = row.expires_at
        sub.event_id = row.event_id or None
        destination = Address(row.transport, row.host, row.port)
        presentity = self._presentity(row.sip_user, row.protocol, row.contact, row.account_id)
        if row.state == "active":
            presentity.authorized = True
        else:
            presentity.requested = True  # asked by the run that stored it
        watch = Watch(
            sub, presentity.key, row.account_id, destination, cseq_reserved=row.local_cseq
        )
        self._add_watch(presentity, watch)
        self._start_timer(dialog.id, max(0.0, row.expires_at - now), self._expired, dialog.id)

    # --- PUBLISH (Rules 1, 2) -------------------------------------------------

    def publish(self, request: Request, source: Source, reply: Reply) -> None:  # noqa: C901 - one branch per RFC 3903 outcome
        user = self.identity.identify(request, source)
        bad_event = self._check_event(request)
        if bad_event is not None:
            reply(bad_event)
            return
        to = request.to
        target = to.uri if to is not None else request.ruri
        if target.user is None or f"{target.user_unescaped}@{target.host.lower()}" != user:
            reply(respond(request, 403, "Forbidden: publish your own presence only"))
            return
        body = request.body
        if body:
            try:
                pidf_to_presence(parse_pidf(body, request.content_type))
            except PidfError as exc:
                logger.info("PUBLISH from %s refused: %s", user, exc)
                reply(
                    respond(
                        request,
                        exc.status_hint,
                        _reason(exc),
                        headers=[("Accept", CONTENT_TYPE_PIDF)] if exc.status_hint == 415 else None,
                    )
                )
                return
        if request.headers.get("SIP-If-Match") is None and body:
            cap = self.settings.max_publications_per_user
            if len(self.publications.states(user, EVENT)) >= cap:
                logger.warning("PUBLISH from %s refused: %d publications already", user, cap)
                reply(respond(request, 403, f"Forbidden: at most {cap} publications per user"))
                return
        result = self.publications.publish(
            user,
            EVENT,
            if_match=request.headers.get("SIP-If-Match"),
            expires=request.expires,
            body=body,
            content_type=request.content_type,
        )
        headers: list[tuple[str, str]] = []
        if result.etag is not None and result.status == 200:
            headers += [("SIP-ETag", result.etag), ("Expires", str(result.expires))]
        if result.min_expires is not None:
            headers.append(("Min-Expires", str(result.min_expires)))
        reply(respond(request, result.status, result.reason, headers=headers))
        for action in result.actions:
            if isinstance(action, sip_actions.StartTimer):
                self._start_timer(
                    action.name, action.seconds, self._publication_expired, action.name
                )
            elif isinstance(action, sip_actions.CancelTimer):
                self._cancel_timer(action.name)
        if result.change is None:
            logger.info("PUBLISH from %s: %d %s", user, result.status, result.reason)
            return
        logger.info("PUBLISH from %s: %s (etag %s)", user, result.change, result.etag)
        self._write_publication(
            result.change, result.publication, if_match=request.headers.get("SIP-If-Match")
        )
        self._apply_user_presence(user)

    def _write_publication(
        self, change: str, publication: Publication | None, *, if_match: str | None
    ) -> None:
        shared = self.shared
        if shared is None or publication is None:
            return
        if change == "removed":
            if if_match is not None:
                shared.delete_publication(if_match)
            return
        shared.put_publication(
            StoredPublication(
                etag=publication.etag,
                resource=publication.resource,
                event=publication.event,
                body=publication.body,
                content_type=publication.content_type or "",
                expires_at=self.clock() + publication.expires,
                node=self.node,
            ),
            replaces=if_match,
        )

    # --- cluster hand-over (Rule 11) -------------------------------------------------

    def adopt(self, sip_user: str) -> None:
        """This node now holds ``sip_user``: load its dialogs and publications (Rule 11)."""
        now = self.clock()
        count = 0
        for row in self.store.subscriptions.of_user(sip_user, now):
            dialog_id = DialogId(row.call_id, row.local_tag, row.remote_tag)
            if dialog_id in self.watches:
                continue
            try:
                self._restore_one(row, now)
                count += 1
            except Exception:
                logger.exception("Cannot adopt subscription of %s to %s", sip_user, row.contact)
        known = {p.etag for p in self.publications.states(sip_user, EVENT)}
        for stored in self.store.publications.of_resource(sip_user, now):
            if stored.etag in known or stored.event != EVENT:
                continue
            publication = Publication(
                stored.resource,
                stored.event,
                stored.etag,
                stored.body,
                stored.content_type or None,
                max(1, int(stored.expires_at - now)),
            )
            timer = self.publications.restore(publication, stored.expires_at - now)
            self._start_timer(timer.name, timer.seconds, self._publication_expired, timer.name)
        self._applied.pop(sip_user, None)
        if self.publications.states(sip_user, EVENT):
            self._apply_user_presence(sip_user)
        logger.info("Adopted %s: %d subscription(s)", sip_user, count)

    def release(self, sip_user: str) -> None:
        """Another node now holds ``sip_user``: forget its state here; the database keeps it."""
        for watch in [w for w in self.watches.values() if w.key[0] == sip_user]:
            self.watches.pop(watch.dialog_id, None)
            self._cancel_timer(watch.dialog_id)
        self.watch_count.pop(sip_user, None)
        for key in [k for k in self.presentities if k[0] == sip_user]:
            del self.presentities[key]
        for publication in self.publications.states(sip_user, EVENT):
            name = TIMER_PREFIX + publication.etag
            self.publications.on_timer(name)
            self._cancel_timer(name)
        self._applied.pop(sip_user, None)
        self._logged_out.discard(sip_user)

    def _publication_expired(self, name: str) -> None:
        publication = self.publications.on_timer(name)
        if publication is not None:
            logger.info("Publication %s of %s expired", name, publication.resource)
            if self.shared is not None:
                self.shared.delete_publication(publication.etag)
            self._apply_user_presence(publication.resource)

    def user_presence(self, sip_user: str) -> Presence:
        """The user's presence: the most available live publication, else offline."""
        states: dict[str, Presence] = {}
        for publication in self.publications.states(sip_user, EVENT):
            try:
                states[publication.etag] = pidf_to_presence(
                    parse_pidf(publication.body, publication.content_type)
                )
            except PidfError:  # checked when published; keep going anyway
                logger.debug("unreadable publication %s", publication.etag)
        return ContactPresence(sip_user, states).aggregate

    def _apply_user_presence(self, sip_user: str) -> None:
        presence = self.user_presence(sip_user)
        if self._applied.get(sip_user) == presence:
            return  # a refresh, or another phone saying the same
        self._applied[sip_user] = presence
        handles = self.directory.of_user(sip_user)
        log_out = not presence.is_open and not self.settings.keep_online
        logger.info(
            "Presence of %s: %s%s -> %d account(s)%s",
            sip_user,
            presence.status.value,
            f" ({presence.note})" if presence.note else "",
            len(handles),
            ", logging out" if log_out else "",
        )
        for handle in handles:
            if log_out:
                log_outcome(self.worker, handle.logout(), handle, "logout")
                continue
            if sip_user in self._logged_out:
                log_outcome(self.worker, handle.login(), handle, "login")
            log_outcome(self.worker, handle.set_presence(presence), handle, "set_presence")
        if log_out:
            self._logged_out.add(sip_user)
        else:
            self._logged_out.discard(sip_user)

    # --- SUBSCRIBE (Rules 3-5) --------------------------------------------------

    def subscribe(  # noqa: C901, PLR0911, PLR0912 - one return per refusal
        self, request: Request, source: Source, reply: Reply
    ) -> None:
        if self.winfo is not None and self.winfo.takes(request):
            self.winfo.subscribe(request, source, reply)
            return
        bad_event = self._check_event(request)
        if bad_event is not None:
            reply(bad_event)
            return
        if self._to_list(request, source, reply):
            return
        to = request.to
        if to is not None and to.tag:
            self._in_dialog(request, source, reply)
            return
        accept = request.headers.get("Accept")
        if accept is not None and accept.strip() and not _accepts_pidf(accept):
            reply(respond(request, 406, headers=[("Accept", CONTENT_TYPE_PIDF)]))
            return
        user = self.identity.identify(request, source)
        route = self._route(user, request)
        if isinstance(route, NoRoute):
            reply(respond(request, route.status, route.reason))
            return
        account = route.account
        problem = self.contact_error(account.protocol, route.contact)
        if problem is not None:
            reply(respond(request, 404, f"Not Found: {problem}"))
            return
        cap = self.settings.max_subscriptions_per_user
        if request.expires != 0 and self.watch_count.get(user, 0) >= cap:
            logger.warning("SUBSCRIBE from %s refused: %d subscriptions already", user, cap)
            reply(respond(request, 403, f"Forbidden: at most {cap} subscriptions per user"))
            return
        known = (user, account.protocol, route.contact.lower()) in self.presentities
        presentity = self._presentity(user, account.protocol, route.contact, account.account_id)
        self._room_presentity(presentity, account, route.contact)
        if not known:
            self._list_changed(presentity)
        sub = self.new_subscription()
        if presentity.authorized:
            sub.last_body = presentity.document(self.clock())
        local_tag = os.urandom(6).hex()
        try:
            actions = sub.receive_subscribe(
                request,
                self.clock(),
                local_tag=local_tag,
                authorized=bool(presentity.authorized),
                local_contact=self._local_contact(source, presentity),
            )
        except SipError as exc:
            reply(respond(request, exc.status_hint, _reason(exc)))
            return
        if sub.dialog is None:  # 423: nothing was created
            self._run(None, actions, reply)
            return
        watch = Watch(sub, presentity.key, account.account_id, self.destination(request, source))
        if sub.state is not SubState.TERMINATED:
            self._add_watch(presentity, watch)
            self._save(watch)
        logger.info(
            "%s subscribes to %s (%s): %s", user, route.contact, account.protocol, sub.state.value
        )
        self._run(watch, actions, reply)
        if sub.state is SubState.PENDING:
            handle = self.directory.get(user, account.protocol)
            if handle is not None:
                presentity.requested = True
                log_outcome(self.worker, handle.add_contact(route.contact), handle, "add_contact")

    def _room_presentity(self, presentity: Presentity, account: Account, contact: str) -> None:
        """A room the user is in: its presence is the gateway's to tell, nobody is asked."""
        room = self.room_presence(account, contact)
        if room is not None:  # purplegw.gateway.groupchat
            presentity.presence = room
            presentity.authorized = True

    def _to_list(self, request: Request, source: Source, reply: Reply) -> bool:
        """Hand a SUBSCRIBE for a buddy list (or in one's dialog) over (Rule 9)."""
        lists = self.buddylists
        if lists is None:
            return False
        to = request.to
        if to is not None and to.tag:
            return lists.in_dialog(request, source, reply)
        owner = lists.owner_of(request.ruri)
        if owner is None:
            return False
        lists.subscribe(request, source, reply, owner)
        return True

    def _in_dialog(self, request: Request, source: Source, reply: Reply) -> None:
        # Rule 1 holds inside a dialog too: its Call-ID and tags are no
        # credentials, and a refresh from a new connection moves the NOTIFYs.
        user = self.identity.identify(request, source)
        dialog_id = DialogId.of_incoming(request)
        watch = self.watches.get(dialog_id) if dialog_id is not None else None
        if watch is None:
            reply(respond(request, 481, "Call/Transaction Does Not Exist"))
            return
        if watch.key[0] != user:
            reply(respond(request, 403, "Forbidden: not your subscription"))
            return
        sub = watch.subscription
        presentity = self.presentities.get(watch.key)
        if sub.state is SubState.ACTIVE and presentity is not None:
            sub.last_body = presentity.document(self.clock())
        try:
            actions = sub.receive_subscribe(request, self.clock())
        except SipError as exc:
            reply(respond(request, exc.status_hint, _reason(exc)))
            return
        if source.connection is not None:
            watch.destination = source
        if sub.state is not SubState.TERMINATED:
            self._save(watch)
        self._run(watch, actions, reply)

    def _route(self, user: str, request: Request) -> Route | NoRoute:
        ruri = request.ruri
        if not ruri.is_sip or ruri.user is None:
            return NoRoute(404, "Not Found: no contact in the Request-URI")
        return self.addresses.resolve(user, ruri)

    def new_subscription(self) -> Subscription:
        return Subscription(
            event=EVENT,
            local_via="SIP/2.0/UDP replaced.invalid",
            new_branch=lambda: "z9hG4bK",
            min_expires=self.settings.subscribe_min_expires,
            max_expires=self.settings.subscribe_max_expires,
            default_expires=self.settings.subscribe_default_expires,
        )

    def _presentity(
        self, sip_user: str, protocol: str, contact: str, account_id: int
    ) -> Presentity:
        key = (sip_user, protocol, contact.lower())
        presentity = self.presentities.get(key)
        if presentity is None:
            presentity = self.presentities[key] = self._new_presentity(key, contact, account_id)
        return presentity

    def presentity_view(self, sip_user: str, protocol: str, contact: str) -> Presentity:
        """The presentity of ``contact``, or a transient one if the gateway keeps none.

        Roster contacts nobody subscribed to and nothing was heard from get no
        stored presentity (a roster can be long); lists read them through this.
        """
        key = (sip_user, protocol, contact.lower())
        presentity = self.presentities.get(key)
        return presentity if presentity is not None else self._new_presentity(key, contact, 0)

    def _new_presentity(self, key: PresentityKey, contact: str, account_id: int) -> Presentity:
        sip_user, protocol, _ = key
        handle = self.directory.get(sip_user, protocol)
        known = handle.info if handle is not None else self.rosters.account((sip_user, protocol))
        # An account that left the table still names its contacts as it did.
        account = AccountRef(account_id, sip_user, protocol, known.ext_user if known else "")
        entity = self.addresses.contact_uri(account, contact)
        return Presentity(key, contact, entity.split(";", 1)[0], uri=entity)

    def _local_contact(self, source: Source, presentity: Presentity) -> str:
        user = parse_uri(presentity.entity).user or "presence"
        transport = source.transport
        return f"<sip:{user}@{source.listener.sent_by};transport={transport}>"

    def destination(self, request: Request, source: Source) -> Address | Source:
        """Where this dialog's NOTIFYs go: the proxy, the route set, or the phone."""
        proxy = self.proxy_address
        if proxy is not None:
            return proxy
        if source.connection is not None:
            return source  # reuse the phone's TCP/TLS connection
        routes = request.headers.record_routes()
        target = routes[0].uri if routes else None
        if target is None:
            contacts = [c for c in request.headers.contacts() if isinstance(c, NameAddr)]
            target = contacts[0].uri if contacts else None
        if target is None or not _is_ip(target.host):
            return self._origin(request, source)
        transport = (target.params.get("transport") or source.transport).lower()
        return Address(transport, target.host.strip("[]"), target.port or 5060)

    def _origin(self, request: Request, source: Source) -> Address:
        """Where the SUBSCRIBE came from: for one another node forwarded, the sender below it."""
        if not self.identity.peer(source):
            return source.address
        vias = request.via
        if len(vias) < 2:
            return source.address
        sender = vias[1]
        where = response_destination(sender)
        if where is None:
            return source.address
        return Address(sender.transport.lower(), *where)

    # --- running the machine's actions ---------------------------------------------

    def _run(
        self, watch: Watch | None, actions: Sequence[sip_actions.Action], reply: Reply | None = None
    ) -> None:
        for action in actions:
            if isinstance(action, sip_actions.Send):
                message = action.message
                if isinstance(message, Response):
                    if reply is not None:
                        reply(message)
                elif isinstance(message, Request) and watch is not None:
                    # raw bytes are the front's stored answers, never a subscription's
                    self._send_notify(watch, message)
            elif isinstance(action, sip_actions.StartTimer) and watch is not None:
                self._start_timer(watch.dialog_id, action.seconds, self._expired, watch.dialog_id)
            elif isinstance(action, sip_actions.CancelTimer) and watch is not None:
                self._cancel_timer(watch.dialog_id)
            elif isinstance(action, sip_actions.Terminated) and watch is not None:
                self._forget(watch, action.reason)

    def _send_notify(self, watch: Watch, notify: Request) -> None:
        front = self.front
        if front is None:
            return
        notify.headers.remove("Via")  # the front adds its own
        dialog_id = watch.dialog_id
        cseq = notify.cseq
        if cseq is not None and dialog_id in self.watches and cseq.number > watch.cseq_reserved:
            # A restored dialog resumes above the stored value, so storing a
            # block ahead keeps CSeq increasing across restarts with one write
            # per CSEQ_BLOCK NOTIFYs instead of one per NOTIFY (gaps are legal).
            watch.cseq_reserved = cseq.number + CSEQ_BLOCK
            self.store.subscriptions.advance_cseq(
                dialog_key(*_id_parts(dialog_id)), watch.cseq_reserved
            )
        future = front.send_request(notify, watch.destination)

        def answered(done: concurrent.futures.Future[Response]) -> None:
            self._notify_answered(watch, done)

        future.add_done_callback(self.worker.completion(answered))

    def _notify_answered(self, watch: Watch, done: concurrent.futures.Future[Response]) -> None:
        sub = watch.subscription
        try:
            response = done.result()
        except Exception as exc:  # noqa: BLE001 - whatever failed, it was on our side
            metrics.notify_sent(None)
            # Our side failed (front stopping, no listener): not the
            # subscriber's fault, so the subscription stays (and survives a
            # restart); the next change is NOTIFYed as usual.
            logger.info(
                "NOTIFY to %s not sent: %s", sub.dialog.remote.uri if sub.dialog else "?", exc
            )
            return
        metrics.notify_sent(None if response.status == 408 else response.status)
        if response.status == 408:
            logger.info("NOTIFY to %s timed out; subscription ended", watch.dialog_id)
            self._run(watch, sub.notify_timeout())
            return
        self._run(watch, sub.receive_notify_response(response))

    def _expired(self, dialog_id: DialogId) -> None:
        watch = self.watches.get(dialog_id)
        if watch is None:
            return
        sub = watch.subscription
        if sub.expires_at > self.clock() + 0.5:
            return  # refreshed after the timer was armed; its own timer is running
        self._run(watch, sub.on_timer(TIMER, self.clock()))

    def _add_watch(self, presentity: Presentity, watch: Watch) -> None:
        presentity.watches[watch.dialog_id] = watch
        self.watches[watch.dialog_id] = watch
        user = watch.key[0]
        self.watch_count[user] = self.watch_count.get(user, 0) + 1

    def _forget(self, watch: Watch, reason: str) -> None:
        dialog_id = watch.dialog_id
        if self.watches.pop(dialog_id, None) is None:
            return
        user = watch.key[0]
        left = self.watch_count.get(user, 1) - 1
        if left > 0:
            self.watch_count[user] = left
        else:
            self.watch_count.pop(user, None)
        presentity = self.presentities.get(watch.key)
        if presentity is not None:
            presentity.watches.pop(dialog_id, None)
            if not presentity.watches and presentity.requested and not presentity.authorized:
                self._withdraw(presentity)
        self._cancel_timer(dialog_id)
        self.store.subscriptions.delete(dialog_key(*_id_parts(dialog_id)))
        logger.info("Subscription of %s to %s ended: %s", watch.key[0], watch.key[2], reason)

    def _withdraw(self, presentity: Presentity) -> None:
        """Nobody waits for the contact's answer any more: take the request back (Rule 3)."""
        presentity.requested = False
        user, protocol, _ = presentity.key
        handle = self.directory.get(user, protocol)
        if handle is not None:
            logger.info("%s withdraws its unanswered request to %s", user, presentity.contact)
            log_outcome(
                self.worker, handle.remove_contact(presentity.contact), handle, "remove_contact"
            )

    def _save(self, watch: Watch) -> None:
        sub = watch.subscription
        dialog = sub.dialog
        assert dialog is not None
        user, protocol, _ = watch.key
        presentity = self.presentities[watch.key]
        destination = watch.destination
        address = destination.address if isinstance(destination, Source) else destination
        self.store.subscriptions.save(
            StoredSubscription(
                dialog_key=dialog_key(*_id_parts(dialog.id)),
                sip_user=user,
                account_id=watch.account_id,
                protocol=protocol,
                contact=presentity.contact,
                event_id=sub.event_id or "",
                call_id=dialog.id.call_id,
                local_tag=dialog.id.local_tag,
                remote_tag=dialog.id.remote_tag,
                local_uri=str(dialog.local.uri),
                remote_uri=str(dialog.remote.uri),
                remote_target=str(dialog.remote_target),
                route_set="\n".join(str(r) for r in dialog.route_set),
                local_contact=dialog.local_contact or "",
                local_cseq=dialog.local_cseq,
                remote_cseq=dialog.remote_cseq or 0,
                state=sub.state.value,
                expires_at=sub.expires_at,
                transport=address.transport,
                host=address.host,
                port=address.port,
            )
        )

    # --- events from the accounts -----------------------------------------------

    def contact_presence(self, account: Account, presence: ContactPresence) -> None:
        logger.debug(
            "%s sees %s (%s): %s",
            account.sip_user,
            presence.contact,
            account.protocol,
            presence.aggregate.status.value,
        )
        presentity = self._presentity(
            account.sip_user, account.protocol, presence.contact, account.account_id
        )
        presentity.presence = presence
        if presence.aggregate.is_open and not presentity.authorized:
            # Seeing the contact's presence means the contact allowed it.
            self._authorize(presentity)
        self._notify_all(presentity)

    def disconnected(self, account: Account) -> None:
        # The account no longer sees its contacts: tell watchers they are offline
        # (those already offline have nothing new to say).
        for presentity in self.presentities.values():
            current = presentity.presence
            if (
                presentity.key[:2] == (account.sip_user, account.protocol)
                and current is not None
                and current.aggregate.status is not Status.OFFLINE
            ):
                presentity.presence = ContactPresence(presentity.contact, {})
                self._notify_all(presentity)

    def connected(self, account: Account) -> None:
        """An account is online: it gets its user's published presence (Rule 10).

        Publications restored at start were applied before the accounts
        existed; a later login of an account must not go out as plainly
        available while the user's phone says otherwise.
        """
        if not self.publications.states(account.sip_user, EVENT):
            return
        handle = self.directory.get(account.sip_user, account.protocol)
        if handle is None:
            return
        presence = self.user_presence(account.sip_user)
        if not presence.is_open and not self.settings.keep_online:
            log_outcome(self.worker, handle.logout(), handle, "logout")
            self._logged_out.add(account.sip_user)
            return
        log_outcome(self.worker, handle.set_presence(presence), handle, "set_presence")

    # --- rosters (Rule 9) -------------------------------------------------------------

    def roster(self, account: Account, items: Sequence[RosterItem]) -> None:
        """An account logged in with this whole roster."""
        before = self._list_snapshot(account.sip_user)
        self.rosters.replace(account, items)
        logger.info(
            "Roster of %s (%s): %d contact(s)", account.sip_user, account.protocol, len(items)
        )
        self._rosters_changed(account.sip_user, before)

    def roster_item(self, account: Account, item: RosterItem) -> None:
        """A contact was added to an account's roster, or changed there."""
        only = (account.protocol, item.contact)
        before = self._list_snapshot(account.sip_user, only)
        self.rosters.put(account, item)
        logger.info(
            "Roster of %s (%s): %s %r %s%s",
            account.sip_user,
            account.protocol,
            item.contact,
            item.name,
            item.subscription,
            " (asked)" if item.pending_out else "",
        )
        self._rosters_changed(account.sip_user, before, only)

    def roster_removed(self, account: Account, contact: str) -> None:
        """A contact left an account's roster."""
        only = (account.protocol, contact)
        before = self._list_snapshot(account.sip_user, only)
        if self.rosters.remove((account.sip_user, account.protocol), contact) is None:
            return
        logger.info("Roster of %s (%s): %s removed", account.sip_user, account.protocol, contact)
        self._rosters_changed(account.sip_user, before, only)

    def account_removed(self, account: Account) -> None:
        """A reload removed the account's row: its contacts leave the user's lists."""
        key = (account.sip_user, account.protocol)
        if key in self.rosters.gone:
            return
        before = self._list_snapshot(account.sip_user)
        self.rosters.drop(key)
        logger.info("%s (%s) left: off the user's lists", account.sip_user, account.protocol)
        self._rosters_changed(account.sip_user, before)

    def account_connected(self, account: Account) -> None:
        """An account connected: one removed earlier and added again is back on the lists."""
        key = (account.sip_user, account.protocol)
        if key not in self.rosters.gone:
            return
        before = self._list_snapshot(account.sip_user)
        self.rosters.back(key)
        self._rosters_changed(account.sip_user, before)

    def _list_snapshot(self, sip_user: str, only: tuple[str, str] | None = None) -> Snapshot:
        lists = self.buddylists
        return lists.snapshot(sip_user, only) if lists is not None else None

    def _rosters_changed(
        self, sip_user: str, before: Snapshot, only: tuple[str, str] | None = None
    ) -> None:
        if self.buddylists is not None:
            self.buddylists.update(sip_user, before, only)
        if self.winfo is not None:
            self.winfo.changed(sip_user)

    def watched(self, sip_user: str, protocol: str, contact: str) -> bool:
        """True while the user has a subscription dialog to ``contact``."""
        presentity = self.presentities.get((sip_user, protocol, contact.lower()))
        return presentity is not None and bool(presentity.watches)

    def authorized(self, account: Account, contact: str) -> None:
        """``contact`` allowed the user to see its presence: pending dialogs go active."""
        presentity = self._presentity(
            account.sip_user, account.protocol, contact, account.account_id
        )
        self._authorize(presentity)
        self._list_changed(presentity)

    def rejected(self, account: Account, contact: str) -> None:
        """``contact`` refused: the user's dialogs to it end with reason=rejected."""
        presentity = self._presentity(
            account.sip_user, account.protocol, contact, account.account_id
        )
        presentity.authorized = False
        now = self.clock()
        for watch in list(presentity.watches.values()):
            self._run(watch, watch.subscription.terminate(now, "rejected"))
        self._list_changed(presentity)

    def _list_changed(self, presentity: Presentity) -> None:
        if self.buddylists is not None:
            self.buddylists.changed(presentity)

    def _authorize(self, presentity: Presentity) -> None:
        presentity.authorized = True
        now = self.clock()
        for watch in list(presentity.watches.values()):
            sub = watch.subscription
            if sub.state is SubState.PENDING:
                sub.last_body = presentity.document(now)
                self._run(watch, sub.authorize(now))
                self.store.subscriptions.set_state(
                    dialog_key(*_id_parts(watch.dialog_id)), sub.state.value
                )

    def _notify_all(self, presentity: Presentity) -> None:
        now = self.clock()
        body = presentity.document(now)
        for watch in list(presentity.watches.values()):
            sub = watch.subscription
            if sub.state is SubState.ACTIVE:
                self._run(watch, sub.notify(now, body))
        if self.upstream is not None:
            self.upstream.publish(presentity.entity, body)
        self._list_changed(presentity)

    # --- checks ---------------------------------------------------------------

    def _check_event(self, request: Request) -> Response | None:
        event = (request.headers.get("Event") or "").partition(";")[0].strip().lower()
        if event == EVENT:
            return None
        return respond(request, 489, "Bad Event", headers=[("Allow-Events", EVENT)])


# --- helpers ------------------------------------------------------------------------


def _id_parts(dialog_id: DialogId) -> tuple[str, str, str]:
    return dialog_id.call_id, dialog_id.local_tag, dialog_id.remote_tag


def _name_addr(value: str) -> NameAddr:
    return parse_name_addr(value)


def _accepts_pidf(accept: str) -> bool:
    types = {part.partition(";")[0].strip().lower() for part in accept.split(",")}
    return bool(types & {CONTENT_TYPE_PIDF, "application/*", "*/*"})


def _is_ip(host: str) -> bool:

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or str(exc)
    return reason.splitlines()[0][:200] if reason else "Error"


def contact_checker(canonical: Callable[[str], str]) -> Callable[[str, str], str | None]:
    """``(protocol, contact) -> why contact is invalid`` from the protocols' adapters.

    ``canonical`` is what the composition gives the gateway: the adapter
    registry's bound ``canonical`` (purplegw.app), whose registry also holds
    the adapters.  A plain function (tests) has none: nothing is checked
    here and the sessions still refuse what they cannot use.
    """
    lookup = getattr(getattr(canonical, "__self__", None), "get", None)
    if lookup is None:
        return lambda _protocol, _contact: None

    def check(protocol: str, contact: str) -> str | None:
        try:
            adapter = lookup(protocol)
        except Exception:  # noqa: BLE001 - an unusable adapter: its account reports why
            return None
        problem: str | None = adapter.contact_error(contact)
        return problem

    return check


def log_outcome(
    worker: WorkerPort, future: OutcomeFuture, handle: AccountHandlePort, op: str
) -> None:
    """Log an account's refusal of ``op`` (nothing else waits for the answer)."""

    def done(result: OutcomeFuture) -> None:
        outcome = result.get()
        if outcome.status >= 300:
            logger.info("%s %s: %s %s", handle, op, outcome.status, outcome.reason)

    future.add_done_callback(worker.completion(done))


__all__ = ["PresenceService", "Presentity", "Watch", "contact_checker", "log_outcome"]
