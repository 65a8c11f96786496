"""Presence service: PUBLISH, SUBSCRIBE/NOTIFY and authorization requests.

``PresenceService`` is driven by the ``Gateway`` (purplegw.actors.gateway):
the gateway routes PUBLISH and SUBSCRIBE here and forwards the account
events about contacts' presence and authorization.  Everything runs on the
gateway's single worker thread, so the state below needs no locks and the
store (which blocks) is never touched from the SIP loop or an account loop.
Why plain objects and not one pykka actor per presentity: see
docs/presence.md (same isolation, none of the thread or mailbox cost).

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
        (purplegw.addressing).  While the contact has not authorized the
        user, the subscription is ``pending`` (the NOTIFY says so; the answer is
        200, RFC 6665 retired 202) and the contact is added
        to the account's roster, which sends the subscription request.  The
        contact's answer or presence makes it ``active``; a refusal
        terminates it with ``reason=rejected``.
Rule 4. One ``Presentity`` per (sip_user, protocol, contact) holds the
        contact's last presence and the user's subscription dialogs, from
        any number of devices.  Every change is NOTIFYed to each dialog;
        each NOTIFY is its own client transaction whose answer comes back
        later as a future, so a slow or dead subscriber (timer F, 408)
        delays nobody and only ends its own subscription.
Rule 5. Subscriptions are written to the store on creation and refresh and
        deleted when they end; a restarted gateway loads the live ones and
        NOTIFYs them again as soon as the accounts report presence.
Rule 6. An external contact asking to see the user's presence is answered
        by ``[presence] authorization``: "deny", "allow_roster" (allowed if
        the user subscribes to that contact, else asked), or "ask": a
        MESSAGE from the contact's SIP URI through the durable outbox.  The
        user's MESSAGE "allow" or "deny" (any case) to that contact, while a
        request is open, answers it and is not forwarded to the contact.
Rule 7. Upstream mode (``[presence] upstream``, as the original module did
        with Kamailio's ``presence``): every contact presence the accounts
        report is also PUBLISHed there (RFC 3903, one publication per
        contact: initial with a body, modify with SIP-If-Match, body-less
        refresh before expiry, 412 -> publish afresh), so that phones can
        subscribe at that server.  One PUBLISH in flight per contact; the
        latest state waits for it.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from purplegw.actors.front.transport import Address, Source
from purplegw.addressing import NoRoute, Route, contact_uri, resolve
from purplegw.presence import ContactPresence, Presence, Status
from purplegw.protocols.base import AccountCredentials, AuthorizationAnswer
from purplegw.sip import actions as sip_actions
from purplegw.sip.dialog import Dialog, DialogId
from purplegw.sip.errors import SipError
from purplegw.sip.headers import Headers
from purplegw.sip.message import Request, Response, make_response
from purplegw.sip.presence import PidfError, parse_pidf, pidf_to_presence, presence_to_pidf
from purplegw.sip.presence.pidf import CONTENT_TYPE_PIDF
from purplegw.sip.publication import PublicationStore
from purplegw.sip.subscription import TIMER, Subscription, SubState
from purplegw.sip.uri import NameAddr, parse_name_addr, parse_uri
from purplegw.store.subscriptions import StoredSubscription, dialog_key

if TYPE_CHECKING:
    import concurrent.futures

    from purplegw.actors.listener import AccountInfo

logger = logging.getLogger(__name__)

# NOTIFY CSeqs reserved in the store at a time (see Watch.cseq_reserved).
CSEQ_BLOCK = 100

EVENT = "presence"
POLICIES = ("ask", "allow_roster", "deny")
ASK_TEXT = "{contact} asks to see your presence. Reply 'allow' or 'deny'."
Reply = Callable[[Response], None]
PresentityKey = tuple[str, str, str]  # (sip_user, protocol, contact folded to lower case)


@dataclass
class PresenceSettings:
    authorization: str = "ask"
    keep_online: bool = False
    publish_min_expires: int = 60
    publish_max_expires: int = 3600
    publish_default_expires: int = 3600
    subscribe_min_expires: int = 60
    subscribe_max_expires: int = 3600
    subscribe_default_expires: int = 3600
    upstream: str = ""
    upstream_expires: int = 3600

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> PresenceSettings:
        known = set(cls.__dataclass_fields__)
        settings = cls(**{k: v for k, v in (section or {}).items() if k in known})
        if settings.authorization not in POLICIES:
            raise ValueError(f"[presence] authorization must be one of {', '.join(POLICIES)}")
        return settings


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
    presence: ContactPresence | None = None
    authorized: bool | None = None  # None: not known yet
    watches: dict[DialogId, Watch] = field(default_factory=dict)

    def document(self, now: float) -> bytes:
        current = self.presence or ContactPresence(self.contact, {})
        return presence_to_pidf(
            self.entity, current, timestamp=datetime.fromtimestamp(now, UTC).replace(microsecond=0)
        )


class PresenceService:
    """The presence side of the gateway; every method runs on its worker thread."""

    def __init__(
        self,
        *,
        gateway: Any,
        settings: PresenceSettings,
        clock: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.gateway = gateway
        self.settings = settings
        self.clock = clock
        self.publications = PublicationStore(
            random,
            min_expires=settings.publish_min_expires,
            max_expires=settings.publish_max_expires,
            default_expires=settings.publish_default_expires,
        )
        self.presentities: dict[PresentityKey, Presentity] = {}
        self.watches: dict[DialogId, Watch] = {}
        self.asking: dict[PresentityKey, str] = {}  # open authorization requests
        self._applied: dict[str, Presence] = {}  # what each user's accounts were last told
        self._logged_out: set[str] = set()
        self.upstream = (
            UpstreamPublisher(self, settings.upstream, settings.upstream_expires)
            if settings.upstream
            else None
        )

    # --- helpers shared with the gateway --------------------------------------------

    def _response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        to_tag: str | None = None,
    ) -> Response:
        return make_response(
            request, status, reason, to_tag=to_tag or os.urandom(4).hex(), headers=headers or []
        )

    def _submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.gateway._submit(fn, *args)  # noqa: SLF001 - the gateway's own worker

    def _start_timer(self, key: Any, seconds: float, fn: Callable[..., Any], *args: Any) -> None:
        front = self.gateway.front
        if front is None:
            return

        def fired(_key: Any) -> None:  # on the front's loop: hop to our thread
            self._submit(fn, *args)

        front.call_in_loop(front.timers.start, ("presence", key), seconds, fired)

    def _cancel_timer(self, key: Any) -> None:
        front = self.gateway.front
        if front is not None:
            front.call_in_loop(front.timers.cancel, ("presence", key))

    # --- lifecycle ------------------------------------------------------------

    def restore(self) -> None:
        """Load the subscriptions a previous run left (Rule 5)."""
        store = self.gateway.store.subscriptions
        now = self.clock()
        store.purge(now)
        for row in store.live(now):
            try:
                self._restore_one(row, now)
            except Exception:
                logger.exception(
                    "Cannot restore subscription of %s to %s", row.sip_user, row.contact
                )
                store.delete(row.dialog_key)
        if self.watches:
            logger.info("Restored %d presence subscription(s)", len(self.watches))

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
        sub = self._new_subscription()
        sub.dialog = dialog
        sub.state = SubState.ACTIVE if row.state == "active" else SubState.PENDING
        sub.expires_at = row.expires_at
        sub.event_id = row.event_id or None
        destination = Address(row.transport, row.host, row.port)
        presentity = self._presentity(row.sip_user, row.protocol, row.contact, row.account_id)
        if row.state == "active":
            presentity.authorized = True
        watch = Watch(sub, presentity.key, row.account_id, destination,
                      cseq_reserved=row.local_cseq)
        presentity.watches[dialog.id] = watch
        self.watches[dialog.id] = watch
        self._start_timer(dialog.id, max(0.0, row.expires_at - now), self._expired, dialog.id)

    # --- PUBLISH (Rules 1, 2) -------------------------------------------------

    def publish(self, request: Request, source: Source, reply: Reply) -> None:  # noqa: C901 - one branch per RFC 3903 outcome
        user, refusal = self.gateway._identify(request, source)  # noqa: SLF001
        if refusal is not None:
            reply(refusal)
            return
        assert user is not None
        bad_event = self._check_event(request)
        if bad_event is not None:
            reply(bad_event)
            return
        to = request.to
        target = to.uri if to is not None else request.ruri
        if target.user is None or f"{target.user_unescaped}@{target.host.lower()}" != user:
            reply(self._response(request, 403, "Forbidden: publish your own presence only"))
            return
        body = request.body
        if body:
            try:
                pidf_to_presence(parse_pidf(body, request.content_type))
            except PidfError as exc:
                logger.info("PUBLISH from %s refused: %s", user, exc)
                reply(
                    self._response(
                        request,
                        exc.status_hint,
                        _reason(exc),
                        headers=[("Accept", CONTENT_TYPE_PIDF)] if exc.status_hint == 415 else None,
                    )
                )
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
        reply(self._response(request, result.status, result.reason, headers=headers))
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
        self._apply_user_presence(user)

    def _publication_expired(self, name: str) -> None:
        publication = self.publications.on_timer(name)
        if publication is not None:
            logger.info("Publication %s of %s expired", name, publication.resource)
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
        handles = self.gateway.directory.of_user(sip_user)
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
                _log_outcome(handle.logout(), handle, "logout")
                continue
            if sip_user in self._logged_out:
                _log_outcome(handle.login(), handle, "login")
            _log_outcome(handle.set_presence(presence), handle, "set_presence")
        if log_out:
            self._logged_out.add(sip_user)
        else:
            self._logged_out.discard(sip_user)

    # --- SUBSCRIBE (Rules 3-5) --------------------------------------------------

    def subscribe(  # noqa: C901, PLR0911 - one return per refusal
        self, request: Request, source: Source, reply: Reply
    ) -> None:
        bad_event = self._check_event(request)
        if bad_event is not None:
            reply(bad_event)
            return
        to = request.to
        if to is not None and to.tag:
            self._in_dialog(request, source, reply)
            return
        accept = request.headers.get("Accept")
        if accept is not None and accept.strip() and not _accepts_pidf(accept):
            reply(self._response(request, 406, headers=[("Accept", CONTENT_TYPE_PIDF)]))
            return
        user, refusal = self.gateway._identify(request, source)  # noqa: SLF001
        if refusal is not None:
            reply(refusal)
            return
        assert user is not None
        route = self._route(user, request)
        if isinstance(route, NoRoute):
            reply(self._response(request, route.status, route.reason))
            return
        account = route.account
        presentity = self._presentity(user, account.protocol, route.contact, account.account_id)
        sub = self._new_subscription()
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
            reply(self._response(request, exc.status_hint, _reason(exc)))
            return
        if sub.dialog is None:  # 423: nothing was created
            self._run(None, actions, reply)
            return
        watch = Watch(sub, presentity.key, account.account_id, self._destination(request, source))
        if sub.state is not SubState.TERMINATED:
            presentity.watches[watch.dialog_id] = watch
            self.watches[watch.dialog_id] = watch
            self._save(watch)
        logger.info(
            "%s subscribes to %s (%s): %s", user, route.contact, account.protocol, sub.state.value
        )
        self._run(watch, actions, reply)
        if sub.state is SubState.PENDING:
            handle = self.gateway.directory.get(user, account.protocol)
            if handle is not None:
                _log_outcome(handle.add_contact(route.contact), handle, "add_contact")

    def _in_dialog(self, request: Request, source: Source, reply: Reply) -> None:
        # Rule 1 holds inside a dialog too: its Call-ID and tags are no
        # credentials, and a refresh from a new connection moves the NOTIFYs.
        user, refusal = self.gateway._identify(request, source)  # noqa: SLF001
        if refusal is not None:
            reply(refusal)
            return
        dialog_id = DialogId.of_incoming(request)
        watch = self.watches.get(dialog_id) if dialog_id is not None else None
        if watch is None:
            reply(self._response(request, 481, "Call/Transaction Does Not Exist"))
            return
        if watch.key[0] != user:
            reply(self._response(request, 403, "Forbidden: not your subscription"))
            return
        sub = watch.subscription
        presentity = self.presentities.get(watch.key)
        if sub.state is SubState.ACTIVE and presentity is not None:
            sub.last_body = presentity.document(self.clock())
        try:
            actions = sub.receive_subscribe(request, self.clock())
        except SipError as exc:
            reply(self._response(request, exc.status_hint, _reason(exc)))
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
        return resolve(
            user,
            ruri.user,
            ruri.host,
            ruri.params.get("proto"),
            self.gateway._accounts(),  # noqa: SLF001
            canonical=self.gateway.canonical,
            user_at_host=self.gateway.user_at_host,
        )

    def _new_subscription(self) -> Subscription:
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
            credentials = AccountCredentials(account_id, sip_user, "", protocol, "")
            handle = self.gateway.directory.get(sip_user, protocol)
            if handle is not None:
                credentials = AccountCredentials(
                    account_id, sip_user, handle.info.ext_user, protocol, ""
                )
            entity = contact_uri(
                credentials,
                contact,
                user_at_host=self.gateway.user_at_host(protocol),
                gateway_domain=self.gateway.settings.domain,
            )
            presentity = Presentity(key, contact, entity.split(";", 1)[0])
            self.presentities[key] = presentity
        return presentity

    def _local_contact(self, source: Source, presentity: Presentity) -> str:
        user = parse_uri(presentity.entity).user or "presence"
        transport = source.transport
        return f"<sip:{user}@{source.listener.sent_by};transport={transport}>"

    def _destination(self, request: Request, source: Source) -> Address | Source:
        """Where this dialog's NOTIFYs go: the proxy, the route set, or the phone."""
        proxy = self.gateway.proxy_address
        if proxy is not None:
            return proxy  # type: ignore[no-any-return]
        if source.connection is not None:
            return source  # reuse the phone's TCP/TLS connection
        routes = request.headers.record_routes()
        target = routes[0].uri if routes else None
        if target is None:
            contacts = [c for c in request.headers.contacts() if isinstance(c, NameAddr)]
            target = contacts[0].uri if contacts else None
        if target is None or not _is_ip(target.host):
            return source.address
        transport = (target.params.get("transport") or source.transport).lower()
        return Address(transport, target.host.strip("[]"), target.port or 5060)

    # --- running the machine's actions ---------------------------------------------

    def _run(self, watch: Watch | None, actions: list[Any], reply: Reply | None = None) -> None:
        for action in actions:
            if isinstance(action, sip_actions.Send):
                message = action.message
                if isinstance(message, Response):
                    if reply is not None:
                        reply(message)
                elif watch is not None:
                    self._send_notify(watch, message)
            elif isinstance(action, sip_actions.StartTimer) and watch is not None:
                self._start_timer(watch.dialog_id, action.seconds, self._expired, watch.dialog_id)
            elif isinstance(action, sip_actions.CancelTimer) and watch is not None:
                self._cancel_timer(watch.dialog_id)
            elif isinstance(action, sip_actions.Terminated) and watch is not None:
                self._forget(watch, action.reason)

    def _send_notify(self, watch: Watch, notify: Request) -> None:
        front = self.gateway.front
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
            self.gateway.store.subscriptions.advance_cseq(
                dialog_key(*_id_parts(dialog_id)), watch.cseq_reserved
            )
        future = front.send_request(notify, watch.destination)

        def answered(done: concurrent.futures.Future[Response]) -> None:
            self._submit(self._notify_answered, watch, done)

        future.add_done_callback(answered)

    def _notify_answered(self, watch: Watch, done: concurrent.futures.Future[Response]) -> None:
        sub = watch.subscription
        try:
            response = done.result()
        except Exception as exc:  # noqa: BLE001
            # Our side failed (front stopping, no listener): not the
            # subscriber's fault, so the subscription stays (and survives a
            # restart); the next change is NOTIFYed as usual.
            logger.info(
                "NOTIFY to %s not sent: %s", sub.dialog.remote.uri if sub.dialog else "?", exc
            )
            return
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

    def _forget(self, watch: Watch, reason: str) -> None:
        dialog_id = watch.dialog_id
        if self.watches.pop(dialog_id, None) is None:
            return
        presentity = self.presentities.get(watch.key)
        if presentity is not None:
            presentity.watches.pop(dialog_id, None)
        self._cancel_timer(dialog_id)
        self.gateway.store.subscriptions.delete(dialog_key(*_id_parts(dialog_id)))
        logger.info("Subscription of %s to %s ended: %s", watch.key[0], watch.key[2], reason)

    def _save(self, watch: Watch) -> None:
        sub = watch.subscription
        dialog = sub.dialog
        assert dialog is not None
        user, protocol, _ = watch.key
        presentity = self.presentities[watch.key]
        destination = watch.destination
        address = destination.address if isinstance(destination, Source) else destination
        self.gateway.store.subscriptions.save(
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

    def contact_presence(self, account: AccountInfo, presence: ContactPresence) -> None:
        presentity = self._presentity(
            account.sip_user, account.protocol, presence.contact, account.account_id
        )
        presentity.presence = presence
        if presence.aggregate.is_open and not presentity.authorized:
            # Seeing the contact's presence means the contact allowed it.
            self._authorize(presentity)
        self._notify_all(presentity)

    def connection_state(self, account: AccountInfo, state: Any) -> None:
        if getattr(state, "value", state) == "connected":
            return
        # The account no longer sees its contacts: tell watchers they are offline.
        for presentity in self.presentities.values():
            if presentity.key[:2] == (account.sip_user, account.protocol) and presentity.presence:
                presentity.presence = ContactPresence(presentity.contact, {})
                self._notify_all(presentity)

    def authorization_answer(
        self, account: AccountInfo, contact: str, answer: AuthorizationAnswer
    ) -> None:
        presentity = self._presentity(
            account.sip_user, account.protocol, contact, account.account_id
        )
        logger.info(
            "%s %s %s's subscription",
            contact,
            "allowed" if answer is AuthorizationAnswer.ALLOW else "refused",
            account.sip_user,
        )
        if answer is AuthorizationAnswer.ALLOW:
            self._authorize(presentity)
            return
        presentity.authorized = False
        now = self.clock()
        for watch in list(presentity.watches.values()):
            self._run(watch, watch.subscription.terminate(now, "rejected"))

    def _authorize(self, presentity: Presentity) -> None:
        presentity.authorized = True
        now = self.clock()
        for watch in list(presentity.watches.values()):
            sub = watch.subscription
            if sub.state is SubState.PENDING:
                sub.last_body = presentity.document(now)
                self._run(watch, sub.authorize(now))
                self.gateway.store.subscriptions.set_state(
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

    # --- authorization requests (Rule 6) -------------------------------------------

    def authorization_request(self, account: AccountInfo, contact: str, text: str) -> None:
        policy = self.settings.authorization
        key = (account.sip_user, account.protocol, contact.lower())
        presentity = self.presentities.get(key)
        on_roster = presentity is not None and bool(presentity.watches)
        if policy == "deny" or (policy == "allow_roster" and on_roster):
            answer = AuthorizationAnswer.DENY if policy == "deny" else AuthorizationAnswer.ALLOW
            logger.info(
                "Authorization request of %s to %s: %s by policy %s",
                contact,
                account.sip_user,
                answer.value,
                policy,
            )
            self._answer(account.sip_user, account.protocol, contact, answer)
            return
        self.asking[key] = contact
        logger.info("Authorization request of %s to %s: asking the user", contact, account.sip_user)
        message = ASK_TEXT.format(contact=contact)
        if text:
            message += f" ({text})"
        self.gateway.store.outbox.put(
            sip_user=account.sip_user,
            account_id=account.account_id,
            protocol=account.protocol,
            contact=contact,
            body=message.encode("utf-8"),
        )
        self.gateway._flush(account.sip_user)  # noqa: SLF001

    def intercept_answer(self, sip_user: str, route: Route, text: str) -> bool:
        """True if ``text`` answered an open authorization request (not to be forwarded)."""
        word = text.strip().rstrip(".!").strip().lower()
        if word not in ("allow", "deny"):
            return False
        key = (sip_user, route.account.protocol, route.contact.lower())
        contact = self.asking.pop(key, None)
        if contact is None:
            return False
        answer = AuthorizationAnswer.ALLOW if word == "allow" else AuthorizationAnswer.DENY
        logger.info("%s answered %s's authorization request: %s", sip_user, contact, answer.value)
        self._answer(sip_user, route.account.protocol, contact, answer)
        return True

    def _answer(
        self, sip_user: str, protocol: str, contact: str, answer: AuthorizationAnswer
    ) -> None:
        handle = self.gateway.directory.get(sip_user, protocol)
        if handle is not None:
            _log_outcome(
                handle.answer_authorization(contact, answer), handle, "answer_authorization"
            )

    # --- checks ---------------------------------------------------------------

    def _check_event(self, request: Request) -> Response | None:
        event = (request.headers.get("Event") or "").partition(";")[0].strip().lower()
        if event == EVENT:
            return None
        return self._response(request, 489, "Bad Event", headers=[("Allow-Events", EVENT)])


@dataclass
class _Upstream:
    etag: str | None = None
    body: bytes = b""  # the last state published (for a 412)
    in_flight: bool = False
    waiting: bytes | None = None  # newest state while a PUBLISH is in flight


class UpstreamPublisher:
    """PUBLISH contacts' presence into an upstream presence server (Rule 7)."""

    def __init__(self, service: PresenceService, uri: str, expires: int) -> None:
        self.service = service
        self.expires = expires
        target = parse_uri(uri)
        self.address = Address(
            (target.params.get("transport") or "udp").lower(),
            target.host.strip("[]"),
            target.port or 5060,
        )
        self.entities: dict[str, _Upstream] = {}

    def publish(self, entity: str, body: bytes) -> None:
        """Publish ``body`` for ``entity`` (b"" refreshes the current one)."""
        state = self.entities.setdefault(entity, _Upstream())
        if state.in_flight:
            state.waiting = body or state.waiting
            return
        self._send(entity, state, body)

    def _send(self, entity: str, state: _Upstream, body: bytes) -> None:
        front = self.service.gateway.front
        if front is None:
            return
        if not body and state.etag is None:
            body = state.body  # nothing to refresh: publish afresh
        if body:
            state.body = body
        headers = Headers()
        headers.add("From", f"<{entity}>;tag={os.urandom(4).hex()}")
        headers.add("To", f"<{entity}>")
        headers.add("Call-ID", f"{uuid.uuid4().hex}@{self.service.gateway.settings.domain}")
        headers.add("CSeq", "1 PUBLISH")
        headers.add("Event", EVENT)
        headers.add("Expires", str(self.expires))
        if state.etag is not None:
            headers.add("SIP-If-Match", state.etag)
        if body:
            headers.add("Content-Type", CONTENT_TYPE_PIDF)
        state.in_flight = True
        future = front.send_request(Request("PUBLISH", entity, headers, body), self.address)

        def answered(done: concurrent.futures.Future[Response]) -> None:
            self.service._submit(self._answered, entity, done)  # noqa: SLF001

        future.add_done_callback(answered)

    def _answered(self, entity: str, done: concurrent.futures.Future[Response]) -> None:
        state = self.entities[entity]
        state.in_flight = False
        try:
            response = done.result()
        except Exception as exc:  # noqa: BLE001 - our side; the next change retries
            logger.info("Upstream PUBLISH of %s not sent: %s", entity, exc)
            state.etag = None
            return
        if 200 <= response.status < 300:
            state.etag = response.headers.get("SIP-ETag")
            granted = response.expires or self.expires
            self.service._start_timer(  # noqa: SLF001
                ("upstream", entity), max(1.0, granted * 0.8), self._refresh, entity
            )
        else:
            logger.info("Upstream PUBLISH of %s: %d %s", entity, response.status, response.reason)
            state.etag = None
            if response.status == 412 and state.waiting is None:
                state.waiting = state.body  # the server lost it: publish afresh
        waiting, state.waiting = state.waiting, None
        if waiting is not None:
            self._send(entity, state, waiting)

    def _refresh(self, entity: str) -> None:
        state = self.entities.get(entity)
        if state is not None and not state.in_flight:
            self._send(entity, state, b"")


# --- helpers ------------------------------------------------------------------------


def _id_parts(dialog_id: DialogId) -> tuple[str, str, str]:
    return dialog_id.call_id, dialog_id.local_tag, dialog_id.remote_tag


def _name_addr(value: str) -> NameAddr:
    return parse_name_addr(value)


def _accepts_pidf(accept: str) -> bool:
    types = {part.partition(";")[0].strip().lower() for part in accept.split(",")}
    return bool(types & {CONTENT_TYPE_PIDF, "application/*", "*/*"})


def _is_ip(host: str) -> bool:
    import ipaddress  # noqa: PLC0415

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or str(exc)
    return reason.splitlines()[0][:200] if reason else "Error"


def _log_outcome(future: Any, handle: Any, op: str) -> None:
    def done(result: Any) -> None:
        outcome = result.get()
        if outcome.status >= 300:
            logger.info("%s %s: %s %s", handle, op, outcome.status, outcome.reason)

    future.add_done_callback(done)


__all__ = ["PresenceService", "PresenceSettings", "Presentity", "Status", "Watch"]
