"""Addressing rules (README "Addressing"): R-URI -> account and contact, and back."""

from __future__ import annotations

import pytest

from purplegw.gateway.addressing import NoRoute, Route, contact_uri, resolve
from purplegw.gateway.model import AccountRef

ALIASES = {"xmpp": "xmpp", "jabber": "xmpp", "prpl-jabber": "xmpp", "irc": "irc"}


def canonical(proto: str) -> str:
    return ALIASES[proto.lower()]


def acc(account_id: int, sip_user: str, ext_user: str, protocol: str) -> AccountRef:
    return AccountRef(account_id, sip_user, protocol, ext_user)


TABLE = [
    acc(1, "alice@example.org", "alice@jabber.example", "xmpp"),
    acc(2, "alice@example.org", "alice@work.example", "xmpp"),
    acc(3, "alice@example.org", "alicenick@irc.example", "irc"),
    acc(4, "bob@example.org", "bob@jabber.example", "xmpp"),
    acc(5, "carol@example.org", "carol@irc.example", "irc"),
    acc(6, "dave@example.org", "dave@net1.example", "irc"),
    acc(7, "dave@example.org", "dave@net2.example", "irc"),
]


def route(sender: str, user: str, host: str, proto: str | None = None) -> Route | NoRoute:
    return resolve(sender, user, host, proto, TABLE, canonical=canonical)


def test_purple_compatible_other_sip_user() -> None:
    assert route("alice@example.org", "bob", "example.org") == Route(TABLE[0], "bob@jabber.example")
    # Shared protocol only: carol is on IRC, alice's IRC account carries it.
    assert route("alice@example.org", "carol", "example.org") == Route(
        TABLE[2], "carol@irc.example"
    )
    assert route("bob@example.org", "carol", "example.org") == NoRoute(
        404, "No shared protocol with that user"
    )


def test_any_xmpp_contact_without_a_row() -> None:
    # Same domain as one of the accounts wins; otherwise the lowest row id.
    assert route("alice@example.org", "boss", "work.example") == Route(
        TABLE[1], "boss@work.example"
    )
    assert route("alice@example.org", "zed", "elsewhere.example") == Route(
        TABLE[0], "zed@elsewhere.example"
    )
    assert route("carol@example.org", "zed", "elsewhere.example") == NoRoute(
        404, "No account that reaches user@host contacts"
    )


def test_explicit_protocol_marker() -> None:
    assert route("alice@example.org", "somenick", "irc.example", "irc") == Route(
        TABLE[2], "somenick"
    )
    assert route("alice@example.org", "x", "jabber.example", "prpl-jabber") == Route(
        TABLE[0], "x@jabber.example"
    )
    assert route("dave@example.org", "n", "net2.example", "irc") == Route(TABLE[6], "n")
    assert route("dave@example.org", "n", "net3.example", "irc") == NoRoute(
        404, "Several irc accounts; none on network net3.example"
    )
    assert route("bob@example.org", "n", "irc.example", "irc") == NoRoute(
        404, "No irc account for this user"
    )
    assert route("alice@example.org", "n", "x", "msn") == NoRoute(404, "Unknown protocol msn")


def test_escaped_nicks() -> None:
    assert route("alice@example.org", "%5Bbot%5D", "irc.example", "irc") == Route(TABLE[2], "[bot]")


def test_unknown_sender_is_forbidden() -> None:
    assert route("mallory@example.org", "bob", "example.org") == NoRoute(
        403, "No external accounts for this user"
    )


@pytest.mark.parametrize(
    ("account", "contact", "user_at_host", "expected"),
    [
        (TABLE[0], "bob@jabber.example", True, "sip:bob@jabber.example;proto=xmpp"),
        (TABLE[2], "[bot]", False, "sip:%5Bbot%5D@irc.example;proto=irc"),
    ],
)
def test_contact_uri_round_trips(
    account: AccountRef, contact: str, user_at_host: bool, expected: str
) -> None:
    uri = contact_uri(account, contact, user_at_host=user_at_host, gateway_domain="gw.example")
    assert uri == expected
    user, _, rest = uri.removeprefix("sip:").partition("@")
    host, _, param = rest.partition(";proto=")
    assert route(account.sip_user, user, host, param) == Route(account, contact)
