"""How SIP URIs name external contacts, both ways (pure functions).

SIP -> external, for a MESSAGE/SUBSCRIBE whose Request-URI is ``user@host``
(with optional ``;proto=<protocol>``), sent by SIP user S:

1. Explicit: ``;proto=<id>`` (canonical id or alias) picks the protocol.
   The contact is ``user@host`` for protocols that address ``user@host``
   (XMPP); for the others (IRC) the contact is ``user`` (a nick, %-escaped
   where needed) and ``host`` names the network: S's account on that
   protocol whose ext_user ends in ``@host`` is used, else S's only account
   on it.
2. purple-compatible: ``user@host`` is another SIP user R of the account
   table.  The message goes from S's account to R's ``ext_user`` on the
   first protocol both have (in ``PROTOCOL_PREFERENCE`` order, then by
   lowest row id).
3. Any external contact: ``user@host`` goes out through S's account on a
   protocol that addresses ``user@host`` (XMPP): the account whose ext_user
   has the same domain as ``host`` if there is one, else S's account with
   the lowest row id.

A ``;nick=NICK`` parameter names an occupant of the room ``user@host``
(privately): the contact is ``user@host/NICK`` on protocols that address
``user@host`` (an XMPP MUC occupant's JID), the nick itself otherwise (IRC).
Rooms themselves are ordinary contacts here (``room@conference.example.org``,
``#channel`` from ``%23channel``): purplegw.gateway.groupchat tells them apart.

No match: 404 (S has no account that reaches it).  The gateway's answer
towards SIP names the contact in the form rule 1 reads back, so a reply
from any SIP phone reaches the same contact through the same account.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from purplegw.gateway.model import Account
    from purplegw.gateway.ports import DirectoryPort
    from purplegw.sip.uri import SipURI

# Deterministic choice when several protocols could carry a message.
PROTOCOL_PREFERENCE = ("xmpp", "irc")


@dataclass(frozen=True)
class Route:
    account: Account
    contact: str  # in the network's own id form


@dataclass(frozen=True)
class NoRoute:
    status: int
    reason: str


def _rank(account: Account) -> tuple[int, int]:
    try:
        preference = PROTOCOL_PREFERENCE.index(account.protocol)
    except ValueError:
        preference = len(PROTOCOL_PREFERENCE)
    return preference, account.account_id


def _domain(ext_user: str) -> str:
    return ext_user.rpartition("@")[2].lower() if "@" in ext_user else ""


def resolve(  # noqa: C901, PLR0911, PLR0912, PLR0913 - one return per rule reads best
    sender: str,
    user: str,
    host: str,
    proto: str | None,
    accounts: Iterable[Account],
    *,
    canonical: Callable[[str], str] = str.lower,
    user_at_host: Callable[[str], bool] = lambda protocol: protocol == "xmpp",
    nick: str | None = None,
) -> Route | NoRoute:
    """Pick the account and contact for a request from ``sender`` to ``user@host``.

    ``accounts`` is the whole table (sender's and other users' rows);
    ``canonical`` maps a protocol id/alias to its adapter name (raising
    for unknown ids); ``user_at_host(protocol)`` tells whether contacts on
    that protocol are ``user@host``.
    """
    accounts = list(accounts)
    mine = sorted((a for a in accounts if a.sip_user == sender), key=_rank)
    if not mine:
        return NoRoute(403, "No external accounts for this user")
    user = unquote(user)
    host = host.lower()

    if proto:
        try:
            protocol = canonical(proto)
        except Exception:  # noqa: BLE001 - any refusal means "unknown id"
            return NoRoute(404, f"Unknown protocol {proto}")
        on_protocol = [a for a in mine if a.protocol == protocol]
        if not on_protocol:
            return NoRoute(404, f"No {protocol} account for this user")
        if nick and not user_at_host(protocol):
            user = unquote(nick)  # an occupant of a channel is a nick like any other
        if user_at_host(protocol):
            contact = f"{user}@{host}" if host else user
            if nick:
                contact = f"{contact}/{unquote(nick)}"  # a room occupant, privately
            same = [a for a in on_protocol if _domain(a.ext_user) == host]
            return Route((same or on_protocol)[0], contact)
        same = [a for a in on_protocol if _domain(a.ext_user) == host]
        if same:
            return Route(same[0], user)
        if len(on_protocol) == 1:
            return Route(on_protocol[0], user)
        return NoRoute(404, f"Several {protocol} accounts; none on network {host}")

    target = f"{user}@{host}"
    theirs = sorted((a for a in accounts if a.sip_user == target), key=_rank)
    for other in theirs:
        for account in mine:
            if account.protocol == other.protocol:
                return Route(account, other.ext_user)
    if theirs:
        return NoRoute(404, "No shared protocol with that user")

    reachable = [a for a in mine if user_at_host(a.protocol)]
    if not reachable:
        return NoRoute(404, "No account that reaches user@host contacts")
    same = [a for a in reachable if _domain(a.ext_user) == host]
    return Route((same or reachable)[0], target)


def split_occupant(contact: str) -> tuple[str, str] | None:
    """``room@service/nick`` as (room, nick); None for any other contact.

    The ``/`` must follow the ``@``: a Matrix localpart may hold a ``/``.
    """
    at, slash = contact.find("@"), contact.find("/")
    if at <= 0 or slash < at:
        return None
    return contact[:slash], contact[slash + 1 :]


def contact_uri(account: Account, contact: str, *, user_at_host: bool, gateway_domain: str) -> str:
    """The SIP URI that names ``contact`` of ``account`` (what the user replies to).

    A room occupant (``room@service/nick``) is ``sip:room@service;proto=xmpp;nick=NICK``.
    """
    nick = ""
    occupant = split_occupant(contact) if user_at_host else None
    if occupant is not None:
        contact, nick = occupant
    if user_at_host and "@" in contact:
        user, _, host = contact.rpartition("@")
    else:
        user = contact
        host = _domain(account.ext_user) or gateway_domain
    uri = f"sip:{quote(user, safe='')}@{host};proto={account.protocol}"
    return f"{uri};nick={quote(nick, safe='')}" if nick else uri


class AddressBook:
    """The rules above applied to the running accounts (what the SIP handlers ask)."""

    def __init__(
        self,
        directory: DirectoryPort,
        *,
        canonical: Callable[[str], str],
        user_at_host: Callable[[str], bool],
        gateway_domain: str,
    ) -> None:
        self.directory = directory
        self.canonical = canonical
        self.user_at_host = user_at_host
        self.gateway_domain = gateway_domain

    def resolve(self, sender: str, ruri: SipURI) -> Route | NoRoute:
        """Route a request from ``sender`` to ``ruri`` (which must name a user)."""
        assert ruri.user is not None
        return resolve(
            sender,
            ruri.user,
            ruri.host,
            ruri.params.get("proto"),
            [handle.info for handle in self.directory.all()],
            canonical=self.canonical,
            user_at_host=self.user_at_host,
            nick=ruri.params.get("nick") or None,
        )

    def contact_uri(self, account: Account, contact: str) -> str:
        """The SIP URI naming ``contact`` of ``account`` (From of what the gateway sends)."""
        return contact_uri(
            account,
            contact,
            user_at_host=self.user_at_host(account.protocol),
            gateway_domain=self.gateway_domain,
        )
