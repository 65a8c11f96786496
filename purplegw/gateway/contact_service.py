"""The gateway as a SIP contact, ``sip:gateway@DOMAIN``, on the gateway's worker.

The rules (commands, account lines, which account, trouble notices) are
pure code in purplegw.gateway.contact; this module applies them: it answers
SUBSCRIBE and MESSAGE addressed to the contact and follows the accounts'
connection states.  Driven by the ``Gateway`` (purplegw.gateway.core), on
its single worker like the other controllers.

Rules:

Rule 1. A SUBSCRIBE (Event: presence) or MESSAGE whose Request-URI is
        ``[gateway] contact_user`` at the gateway's domain is for this
        contact, from any authenticated SIP user (identified as for any
        request: digest or trusted proxy, the per-user rate).
Rule 2. The subscription is active at once.  Its PIDF has one tuple per
        account of the subscriber, open when connected, closed otherwise,
        each with the account's line as its note (contact.py Rule 5); the
        first tuple is an open one if any, so a phone showing one state
        shows "connected" while any account is.  Every change of one of the
        user's accounts is NOTIFYed.  The dialogs count against ``[presence]
        max_subscriptions_per_user`` and live in memory: after a restart a
        refresh gets 481 and the phone subscribes again (RFC 6665 4.1.2.2).
Rule 3. A MESSAGE is answered 200 at once (an is-composing 200 and nothing
        else); the command's answer is a MESSAGE from the contact to the
        user, through the durable outbox, so it reaches every registered
        phone (purplegw.gateway.messaging).  Commands that ask an account
        (add, remove, relogin) answer once the account did.
Rule 4. An account's state comes from its ``on_connection_state`` events;
        before the first event the gateway saw, from the status board
        (``statuses``, what ``purplegw status`` shows), which also lists the
        accounts whose protocol is disabled (they have no actor, and no
        event).  The board is read again at each request of the user
        (SUBSCRIBE, a command), not at each event: reading it copies every
        account's entry.
Rule 5. Trouble notices (``[gateway] notify_account_trouble``): contact.py
        Rule 6 decides, this module sends the MESSAGE.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from purplegw.gateway import contact as rules
from purplegw.gateway.bodies import read_body
from purplegw.gateway.dialogs import Dialogs
from purplegw.gateway.identity import respond
from purplegw.gateway.messaging import ACCEPT
from purplegw.gateway.model import ContactPresence, Presence, Status
from purplegw.gateway.presence import log_outcome
from purplegw.protocols.base import AuthorizationAnswer
from purplegw.sip.dialog import DialogId
from purplegw.sip.errors import SipError
from purplegw.sip.presence import presence_to_pidf
from purplegw.sip.subscription import Subscription, SubState

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from purplegw.actors.front.transport import Address, Source
    from purplegw.gateway.authorization import Authorization
    from purplegw.gateway.messaging import Messaging
    from purplegw.gateway.model import Account
    from purplegw.gateway.ports import AccountHandlePort, OutcomeFuture, Reply
    from purplegw.gateway.presence import PresenceService
    from purplegw.gateway.settings import ContactSettings
    from purplegw.protocols.base import ConnectionState
    from purplegw.sip.message import Request
    from purplegw.sip.uri import SipURI

logger = logging.getLogger(__name__)


@dataclass
class ContactWatch:
    """One phone's subscription to the gateway contact."""

    subscription: Subscription
    owner: str  # user@domain
    destination: Address | Source

    @property
    def dialog_id(self) -> DialogId:
        assert self.subscription.dialog is not None
        return self.subscription.dialog.id


class GatewayContact(Dialogs[ContactWatch]):
    """Rules 1-5 above; every method runs on the gateway's worker."""

    def __init__(  # noqa: PLR0913 - the controller's collaborators, all keyword
        self,
        *,
        settings: ContactSettings,
        presence: PresenceService,
        messaging: Messaging,
        authorization: Authorization,
        statuses: Callable[[str], Sequence[dict[str, Any]]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(presence, "gateway-contact", "Gateway contact")
        self.settings = settings
        self.messaging = messaging
        self.authorization = authorization
        self.directory = presence.directory
        self.worker = presence.worker
        self.statuses = statuses or (lambda _user: ())
        self.clock = clock
        self.user = settings.contact_user
        self.domain = presence.addresses.gateway_domain.lower()
        self.uri = f"sip:{self.user}@{self.domain}"
        self.seen: dict[int, rules.AccountView] = {}  # account id -> its last event (Rule 4)
        self._board: dict[int, rules.AccountView] = {}  # account id -> its status board entry
        self._idle: dict[str, list[rules.AccountView]] = {}  # user -> accounts without actor
        self.notices = rules.TroubleNotices(settings.trouble_min_interval)

    # --- Rule 1 -----------------------------------------------------------------------

    def addressed(self, ruri: SipURI) -> bool:
        return (
            bool(self.user)
            and ruri.is_sip
            and ruri.user is not None
            and (ruri.user_unescaped or "").lower() == self.user.lower()
            and ruri.host.lower() == self.domain
        )

    # --- the user's accounts (Rule 4) -------------------------------------------------

    def accounts(self, sip_user: str, *, fresh: bool = False) -> list[rules.AccountView]:
        """The user's accounts and their states (Rule 4).

        ``fresh``: read the status board again (a request of the user); an
        account event reads it only for a user never read, since it copies
        every account's entry.
        """
        if fresh or sip_user not in self._idle:
            self._read_board(sip_user)
        found: dict[int, rules.AccountView] = {}
        for handle in self.directory.of_user(sip_user):
            info = handle.info
            found[info.account_id] = self.seen.get(info.account_id) or self._board.get(
                info.account_id,
                rules.AccountView(info.account_id, info.protocol, info.ext_user, "connecting"),
            )
        for view in self._idle[sip_user]:
            found.setdefault(view.account_id, self.seen.get(view.account_id, view))
        return sorted(found.values(), key=lambda a: (a.protocol, a.account_id))

    def _read_board(self, sip_user: str) -> None:
        running = {handle.info.account_id for handle in self.directory.of_user(sip_user)}
        idle = []
        for entry in self.statuses(sip_user):
            state = entry.get("state", "")
            view = rules.AccountView(
                account_id=int(entry["account_id"]),
                protocol=entry["protocol"],
                ext_user=entry["ext_user"],
                state=state,
                reason=entry.get("last_error", "") if state != rules.CONNECTED else "",
                retry_at=_retry_at(entry),
                gave_up=bool(entry.get("gave_up")),
            )
            self._board[view.account_id] = view
            if view.account_id not in running:
                idle.append(view)  # no actor (its protocol is disabled): no events either
        self._idle[sip_user] = idle

    def account_state(
        self,
        account: Account,
        state: ConnectionState,
        reason: str,
        retry_at: float | None = None,
        gave_up: bool = False,  # noqa: FBT001, FBT002 - an event keyword
    ) -> None:
        """An account's ``on_connection_state`` event (Rules 2, 4, 5)."""
        view = rules.AccountView(
            account.account_id,
            account.protocol,
            account.ext_user,
            state.value,
            reason,
            retry_at,
            gave_up,
        )
        self.seen[account.account_id] = view
        self._notify_owner(account.sip_user)
        if not self.settings.notify_account_trouble or not self.user:
            return
        text = self.notices.observe(view, self.clock())
        if text is not None:
            logger.info(
                "Telling %s its %s account is in trouble", account.sip_user, account.protocol
            )
            self.say(account.sip_user, text)

    def say(self, sip_user: str, text: str) -> None:
        """A MESSAGE from the contact to ``sip_user``'s phones (Rule 3)."""
        self.messaging.queue_from_gateway(sip_user, self.uri, text)

    # --- MESSAGE: commands (Rule 3) -----------------------------------------------------

    def message(self, request: Request, source: Source, reply: Reply) -> None:
        user = self.presence.identity.identify(request, source)
        body = read_body(request.content_type, request.body)
        if body.kind == "imdn" or body.typing is not None:
            reply(respond(request, 200))
            return
        if body.kind == "unsupported":
            reply(respond(request, 415, headers=[("Accept", ACCEPT)]))
            return
        if body.kind != "text":
            reply(respond(request, 400, f"Bad Request: {body.text}"))
            return
        reply(respond(request, 200))
        command = rules.parse(body.text)
        logger.info("%s asks the gateway: %s", user, body.text.strip()[:80])
        if isinstance(command, rules.Invalid):
            self.say(user, command.reply)
            return
        run = getattr(self, f"_cmd_{command.verb}")
        run(user, *command.args)

    def _cmd_help(self, user: str) -> None:
        self.say(user, rules.HELP)

    def _cmd_status(self, user: str) -> None:
        self.say(user, rules.status_text(self.accounts(user, fresh=True)))

    def _cmd_relogin(self, user: str, name: str | None = None) -> None:
        chosen = rules.accounts_named(self.accounts(user, fresh=True), name)
        if isinstance(chosen, str):
            self.say(user, chosen)
            return
        started = []
        for view in chosen:
            handle = self._handle(user, view.protocol)
            if handle is None:
                continue
            # The actor runs these two in order.
            log_outcome(self.worker, handle.logout(), handle, "logout")
            log_outcome(self.worker, handle.login(), handle, "login")
            started.append(f"{view.protocol} {view.ext_user}")
        if not started:
            self.say(user, "None of those accounts is running on this gateway.")
            return
        self.say(user, f"Logging in again: {', '.join(started)}.")

    def _cmd_add(self, user: str, contact: str, protocol: str | None = None) -> None:
        self._roster(user, "add", contact, protocol)

    def _cmd_remove(self, user: str, contact: str, protocol: str | None = None) -> None:
        self._roster(user, "remove", contact, protocol)

    def _cmd_allow(self, user: str, contact: str, protocol: str | None = None) -> None:
        self._authorize(user, contact, protocol, AuthorizationAnswer.ALLOW)

    def _cmd_deny(self, user: str, contact: str, protocol: str | None = None) -> None:
        self._authorize(user, contact, protocol, AuthorizationAnswer.DENY)

    def _pick(
        self, user: str, contact: str, protocol: str | None, *, known: bool
    ) -> tuple[rules.AccountView, str] | str:
        ref = rules.contact_ref(contact, protocol)
        addresses = self.presence.addresses
        known_on: list[str] = []
        if known:
            for key in self.presence.presentities:
                if key[0] == user:
                    name = ref.contact(user_at_host=addresses.user_at_host(key[1]))
                    if key[2] == name.lower():
                        known_on.append(key[1])
        view = rules.account_for(
            self.accounts(user, fresh=True),
            ref,
            canonical=addresses.canonical,
            user_at_host=addresses.user_at_host,
            known_on=known_on,
        )
        if isinstance(view, str):
            return view
        return view, ref.contact(user_at_host=addresses.user_at_host(view.protocol))

    def _roster(self, user: str, verb: str, contact: str, protocol: str | None) -> None:
        picked = self._pick(user, contact, protocol, known=verb == "remove")
        if isinstance(picked, str):
            self.say(user, picked)
            return
        view, name = picked
        problem = self.presence.contact_error(view.protocol, name)
        if problem is not None:
            self.say(user, f"{name} is not a {view.protocol} contact: {problem}.")
            return
        handle = self._handle(user, view.protocol)
        if handle is None:
            self.say(user, f"Your {view.protocol} account is not running on this gateway.")
            return
        future = handle.add_contact(name) if verb == "add" else handle.remove_contact(name)
        future.add_done_callback(
            self.worker.completion(partial(self._roster_done, user, verb, name, view))
        )

    def _roster_done(
        self, user: str, verb: str, name: str, view: rules.AccountView, done: OutcomeFuture
    ) -> None:
        outcome = done.get()
        where = f"{view.protocol} account {view.ext_user}"
        if outcome.ok and verb == "add":
            queued = " (queued until the account is online)" if outcome.status == 202 else ""
            text = f"Added {name} to your {where} and asked to see their presence{queued}."
        elif outcome.ok:
            queued = " (queued until the account is online)" if outcome.status == 202 else ""
            text = f"Removed {name} from your {where}{queued}."
        else:
            reason = outcome.reason or str(outcome.status)
            text = f"Could not {verb} {name} on your {where}: {reason}."
        logger.info("%s: %s %s (%s): %d", user, verb, name, view.protocol, outcome.status)
        self.say(user, text)

    def _authorize(
        self, user: str, contact: str, protocol: str | None, answer: AuthorizationAnswer
    ) -> None:
        ref = rules.contact_ref(contact, protocol)
        addresses = self.presence.addresses
        open_requests = self.authorization.open_requests(user)
        wanted = None
        if ref.protocol:
            try:
                wanted = addresses.canonical(ref.protocol)
            except Exception:  # noqa: BLE001 - any refusal means "unknown id"
                self.say(user, f"Unknown protocol {ref.protocol!r}.")
                return
        matches = [
            (proto, folded)
            for proto, folded in open_requests
            if (wanted is None or proto == wanted)
            and folded == ref.contact(user_at_host=addresses.user_at_host(proto)).lower()
        ]
        verb = "allow" if answer is AuthorizationAnswer.ALLOW else "deny"
        if not matches:
            waiting = ", ".join(sorted(open_requests.values())) or "none"
            self.say(user, f"No open request from {contact}. Open requests: {waiting}.")
            return
        if len(matches) > 1:
            protocols = ", ".join(sorted(p for p, _ in matches))
            self.say(user, f"{contact} asked on several accounts ({protocols}); name the protocol.")
            return
        proto, folded = matches[0]
        asked = self.authorization.answer_open(user, proto, folded, answer)
        done = "allowed to see" if answer is AuthorizationAnswer.ALLOW else "refused"
        self.say(user, f"{asked} {done} your presence ({proto})." if asked else f"Cannot {verb}.")

    def _handle(self, user: str, protocol: str) -> AccountHandlePort | None:
        return self.directory.get(user, protocol)

    # --- SUBSCRIBE (Rule 2) -----------------------------------------------------------

    def document(self, sip_user: str, *, fresh: bool = False) -> bytes:
        tuples = {}
        for view in self.accounts(sip_user, fresh=fresh):
            is_open, words = rules.describe(view)
            status = Status.AVAILABLE if is_open else Status.OFFLINE
            name = f"{view.protocol} {view.ext_user}"
            tuples[name] = Presence(status, note=f"{name}: {words}")
        now = datetime.fromtimestamp(self.clock(), UTC).replace(microsecond=0)
        return presence_to_pidf(self.uri, ContactPresence(self.user, tuples), timestamp=now)

    def subscribe(self, request: Request, source: Source, reply: Reply) -> bool:
        """Handle a SUBSCRIBE for the contact or in one of its dialogs; False: not ours."""
        to = request.to
        if to is not None and to.tag:
            return self._in_dialog(request, source, reply)
        if not self.addressed(request.ruri):
            return False
        event = (request.headers.get("Event") or "").partition(";")[0].strip().lower()
        if event != "presence":
            reply(respond(request, 489, "Bad Event", headers=[("Allow-Events", "presence")]))
            return True
        presence = self.presence
        user = presence.identity.identify(request, source)
        cap = presence.settings.max_subscriptions_per_user
        if request.expires != 0 and presence.watch_count.get(user, 0) >= cap:
            reply(respond(request, 403, f"Forbidden: at most {cap} subscriptions per user"))
            return True
        sub = presence.new_subscription()
        watch = ContactWatch(sub, user, presence.destination(request, source))
        sub.last_body = b"" if request.expires == 0 else self.document(user, fresh=True)
        local_contact = f"<sip:{self.user}@{source.listener.sent_by};transport={source.transport}>"
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
            return True
        if sub.dialog is not None and sub.state is not SubState.TERMINATED:
            self.add(watch)
            logger.info("%s subscribes to the gateway contact", user)
        self.run(watch, actions, reply)
        return True

    def _in_dialog(self, request: Request, source: Source, reply: Reply) -> bool:
        dialog_id = DialogId.of_incoming(request)
        watch = self.watches.get(dialog_id) if dialog_id is not None else None
        if watch is None:
            return False
        user = self.presence.identity.identify(request, source)
        if user != watch.owner:
            reply(respond(request, 403, "Forbidden: not your subscription"))
            return True
        sub = watch.subscription
        sub.last_body = b"" if request.expires == 0 else self.document(user, fresh=True)
        try:
            actions = sub.receive_subscribe(request, self.presence.clock())
        except SipError as exc:
            reply(respond(request, exc.status_hint, str(exc)))
            return True
        if source.connection is not None:
            watch.destination = source
        self.run(watch, actions, reply)
        return True

    def _notify_owner(self, sip_user: str) -> None:
        mine = [
            watch
            for watch in self.of_owner(sip_user)
            if watch.subscription.state is SubState.ACTIVE
        ]
        if not mine:
            return
        body = self.document(sip_user)
        now = self.presence.clock()
        for watch in mine:
            self.run(watch, watch.subscription.notify(now, body))


def _retry_at(entry: dict[str, Any]) -> float | None:
    retry_in = entry.get("next_retry_in")
    if retry_in is None:
        return None
    return float(entry.get("since", 0.0)) + float(retry_in)


__all__ = ["ContactWatch", "GatewayContact"]
