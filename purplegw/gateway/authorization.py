"""Authorization requests, both ways, between SIP users and external contacts.

Rules:

Rule 1. An external contact asking to see the user's presence is answered by
        ``[presence] authorization``: "deny", "allow_roster" (allowed if the
        user subscribes to that contact, else asked), or "ask": a MESSAGE
        from the contact's SIP URI through the durable outbox
        (purplegw.gateway.messaging).
Rule 2. The user's MESSAGE "allow" or "deny" (any case, trailing "." or "!")
        to that contact, while a request is open, answers it and is not
        forwarded to the contact.  So does "allow CONTACT" or "deny CONTACT"
        to the gateway contact (purplegw.gateway.contact_service).
Rule 3. The contact's answer to the user's own request (sent when the user
        SUBSCRIBEs) makes the user's pending subscriptions active, or ends
        them with reason=rejected (purplegw.gateway.presence).
Rule 4. Every open request and every answer is shown to the user's
        ``presence.winfo`` subscriptions (purplegw.gateway.winfo).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from purplegw.gateway.presence import log_outcome
from purplegw.protocols.base import AuthorizationAnswer

if TYPE_CHECKING:
    from purplegw.gateway.addressing import Route
    from purplegw.gateway.messaging import Messaging
    from purplegw.gateway.model import Account
    from purplegw.gateway.ports import DirectoryPort, WorkerPort
    from purplegw.gateway.presence import PresenceService, PresentityKey
    from purplegw.gateway.winfo import WatcherInfoLists

logger = logging.getLogger(__name__)

ASK_TEXT = "{contact} asks to see your presence. Reply 'allow' or 'deny'."


class Authorization:
    def __init__(
        self,
        *,
        policy: str,
        presence: PresenceService,
        messaging: Messaging,
        directory: DirectoryPort,
        worker: WorkerPort,
    ) -> None:
        self.policy = policy
        self.presence = presence
        self.messaging = messaging
        self.directory = directory
        self.worker = worker
        self.asking: dict[PresentityKey, str] = {}  # open requests -> the contact as sent
        self.winfo: WatcherInfoLists | None = None  # Rule 4

    def request(self, account: Account, contact: str, text: str) -> None:
        """``contact`` asks to see the user's presence (Rule 1)."""
        policy = self.policy
        key = (account.sip_user, account.protocol, contact.lower())
        on_roster = self.presence.watched(*key)
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
        self.messaging.queue_for_user(account, contact, message)
        if self.winfo is not None:
            self.winfo.changed(account.sip_user)

    def intercept_answer(self, sip_user: str, route: Route, text: str) -> bool:
        """True if ``text`` answered an open authorization request (Rule 2: not forwarded)."""
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

    def open_requests(self, sip_user: str) -> dict[tuple[str, str], str]:
        """The user's open requests: (protocol, contact folded) -> the contact as sent."""
        return {(p, c): contact for (u, p, c), contact in self.asking.items() if u == sip_user}

    def answer_open(
        self, sip_user: str, protocol: str, contact: str, answer: AuthorizationAnswer
    ) -> str | None:
        """Answer the open request of ``contact`` (the gateway contact's allow/deny, Rule 2)."""
        asked = self.asking.pop((sip_user, protocol, contact.lower()), None)
        if asked is not None:
            logger.info("%s answered %s's authorization request: %s", sip_user, asked, answer.value)
            self._answer(sip_user, protocol, asked, answer)
        return asked

    def answered(self, account: Account, contact: str, answer: AuthorizationAnswer) -> None:
        """``contact`` answered the user's own request (Rule 3)."""
        logger.info(
            "%s %s %s's subscription",
            contact,
            "allowed" if answer is AuthorizationAnswer.ALLOW else "refused",
            account.sip_user,
        )
        if answer is AuthorizationAnswer.ALLOW:
            self.presence.authorized(account, contact)
        else:
            self.presence.rejected(account, contact)

    def _answer(
        self, sip_user: str, protocol: str, contact: str, answer: AuthorizationAnswer
    ) -> None:
        if self.winfo is not None:
            self.winfo.answered(sip_user, protocol, contact, answer)
        handle = self.directory.get(sip_user, protocol)
        if handle is not None:
            log_outcome(
                self.worker,
                handle.answer_authorization(contact, answer),
                handle,
                "answer_authorization",
            )
