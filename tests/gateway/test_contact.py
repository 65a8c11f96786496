"""The gateway contact's pure rules (purplegw.gateway.contact): commands, accounts, notices."""

from __future__ import annotations

import calendar

import pytest

from purplegw.gateway import contact as rules
from purplegw.gateway.contact import AccountView, Command, ContactRef, Invalid

XMPP = AccountView(1, "xmpp", "alice@example.org", "connected")
IRC = AccountView(2, "irc", "alice@irc.example.net", "connected")
MATRIX = AccountView(3, "matrix", "@alice:matrix.example", "connected")


def canonical(protocol: str) -> str:
    names = {"xmpp": "xmpp", "jabber": "xmpp", "irc": "irc", "matrix": "matrix"}
    return names[protocol.lower()]


def user_at_host(protocol: str) -> bool:
    return protocol in ("xmpp", "matrix")


def pick(
    accounts: list[AccountView], text: str, protocol: str | None = None, **kw: object
) -> object:
    return rules.account_for(
        accounts,
        rules.contact_ref(text, protocol),
        canonical=canonical,
        user_at_host=user_at_host,
        **kw,  # type: ignore[arg-type]
    )


# --- Rule 1 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("help", Command("help")),
        ("  STATUS \n", Command("status")),
        ("Status.", Command("status")),
        ("relogin", Command("relogin")),
        ("relogin xmpp", Command("relogin", ("xmpp",))),
        ("add bob@example.org", Command("add", ("bob@example.org",))),
        ("add bob irc", Command("add", ("bob", "irc"))),
        (
            "remove sip:bob@example.org;proto=xmpp",
            Command("remove", ("sip:bob@example.org;proto=xmpp",)),
        ),
        ("Allow bob@example.org", Command("allow", ("bob@example.org",))),
        ("deny bob@example.org xmpp", Command("deny", ("bob@example.org", "xmpp"))),
    ],
)
def test_commands_are_read(text: str, expected: Command) -> None:
    assert rules.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hello there", "Unknown command 'hello'. Commands: help, status, relogin [ACCOUNT]"),
        ("", "Send 'help'"),
        ("add", "Usage: add CONTACT [PROTOCOL]"),
        ("add a b c", "Usage: add CONTACT [PROTOCOL]"),
        ("status now", "Usage: status"),
        ("relogin a b", "Usage: relogin [ACCOUNT]"),
        ("allow", "Usage: allow CONTACT"),
    ],
)
def test_what_is_not_a_command_is_answered_with_the_pointer_to_help(text: str, says: str) -> None:
    result = rules.parse(text)
    assert isinstance(result, Invalid)
    assert says in result.reply
    assert "help" in result.reply


def test_help_names_every_command() -> None:
    for verb in rules.VERBS:
        assert f"\n{verb}" in rules.HELP


# --- Rules 2-4 --------------------------------------------------------------------------


def test_a_contact_is_an_id_or_the_sip_uri_a_phone_shows() -> None:
    assert rules.contact_ref("bob@Example.org") == ContactRef("bob", "example.org", None)
    assert rules.contact_ref("bob", "irc") == ContactRef("bob", "", "irc")
    assert rules.contact_ref("<sip:bob@example.org;proto=xmpp>") == ContactRef(
        "bob", "example.org", "xmpp"
    )
    # The command's protocol wins over the URI's.
    assert rules.contact_ref("sip:b%7Cb@irc.example.net;proto=irc", "xmpp") == ContactRef(
        "b|b", "irc.example.net", "xmpp"
    )
    ref = rules.contact_ref("sip:nick@irc.example.net;proto=irc")
    assert ref.contact(user_at_host=False) == "nick"
    assert ref.contact(user_at_host=True) == "nick@irc.example.net"


def test_the_account_of_a_contact() -> None:
    both = [XMPP, IRC]
    assert pick(both, "bob@example.org") == XMPP
    assert pick(both, "bob") == IRC
    assert pick(both, "bob", "IRC") == IRC
    assert pick(both, "bob@example.org", "jabber") == XMPP
    assert pick(both, "sip:bob@irc.example.net;proto=irc") == IRC
    # Two accounts take user@host: the one on the contact's domain, else ask.
    three = [XMPP, IRC, MATRIX]
    assert pick(three, "bob@example.org") == XMPP
    assert "Several of your accounts could take 'bob@elsewhere.net' (matrix, xmpp)" in str(
        pick(three, "bob@elsewhere.net")
    )
    assert pick(three, "bob@elsewhere.net", "matrix") == MATRIX


def test_no_account_for_a_contact_is_a_clear_answer() -> None:
    assert pick([], "bob") == "You have no accounts on this gateway."
    assert pick([XMPP], "bob", "irc") == "You have no irc account."
    assert pick([XMPP], "bob", "icq") == "Unknown protocol 'icq'."
    assert "name the protocol (xmpp)" in str(pick([XMPP], "bob"))
    two_irc_like = [IRC, AccountView(4, "dummy", "alice", "connected")]
    answer = str(
        rules.account_for(
            two_irc_like,
            rules.contact_ref("bob"),
            canonical=str.lower,
            user_at_host=lambda _p: False,
        )
    )
    assert "Several of your accounts could take 'bob' (dummy, irc)" in answer


def test_a_known_contact_is_removed_where_the_gateway_knows_it() -> None:
    three = [XMPP, IRC, MATRIX]
    assert pick(three, "bob@elsewhere.net", known_on=["matrix"]) == MATRIX
    # Known on two: the usual rules (here: ambiguous).
    assert isinstance(pick(three, "bob@elsewhere.net", known_on=["matrix", "xmpp"]), str)


def test_relogin_names_accounts_by_protocol_id_or_row() -> None:
    both = [XMPP, IRC]
    assert rules.accounts_named(both, None) == both
    assert rules.accounts_named(both, "IRC") == [IRC]
    assert rules.accounts_named(both, "alice@example.org") == [XMPP]
    assert rules.accounts_named(both, "#2") == [IRC]
    assert rules.accounts_named(both, "icq") == (
        "No account 'icq'; yours: xmpp alice@example.org, irc alice@irc.example.net."
    )
    assert rules.accounts_named([], None) == "You have no accounts on this gateway."


# --- Rule 5 ------------------------------------------------------------------------------


def test_account_lines() -> None:
    at = calendar.timegm((2026, 5, 4, 13, 7, 30))
    cases = [
        (XMPP, True, "connected"),
        (XMPP._replace(state="connecting"), False, "connecting"),
        (
            XMPP._replace(state="bad_credentials", reason="not-authorized"),
            False,
            "bad credentials (not-authorized)",
        ),
        (
            XMPP._replace(state="transient_disconnect", reason="Connection refused", retry_at=at),
            False,
            "server unreachable (Connection refused), backing off until 13:07 UTC",
        ),
        (
            XMPP._replace(
                state="unknown_error", reason="gave up after 3 flapping pauses: x", gave_up=True
            ),
            False,
            "gave up after flapping (gave up after 3 flapping pauses: x)",
        ),
        (
            XMPP._replace(
                state="unknown_error",
                reason="protocol unavailable: protocol 'xmpp' is disabled",
            ),
            False,
            "disabled (protocol 'xmpp' is disabled)",
        ),
        (XMPP._replace(state="logged_out", gave_up=True), False, "logged out"),
        (XMPP._replace(state="worker_restarting"), False, "restarting"),
    ]
    for account, is_open, words in cases:
        assert rules.describe(account) == (is_open, words), account
    assert rules.status_text([XMPP, IRC]) == (
        "xmpp alice@example.org: connected\nirc alice@irc.example.net: connected"
    )


# --- Rule 6 ------------------------------------------------------------------------------


def test_trouble_is_told_once_per_account_until_connected_again_and_not_too_often() -> None:
    notices = rules.TroubleNotices(min_interval=600)
    bad = XMPP._replace(state="bad_credentials", reason="not-authorized")
    text = notices.observe(bad, 1000)
    assert text is not None
    assert "xmpp account alice@example.org stopped: bad credentials (not-authorized)" in text
    assert "relogin" in text
    # The same trouble again (a relogin that failed the same way): nothing.
    assert notices.observe(XMPP._replace(state="connecting"), 1010) is None
    assert notices.observe(bad, 1020) is None
    # Another account has its own notice.
    gave_up = IRC._replace(state="unknown_error", reason="gave up", gave_up=True)
    assert notices.observe(gave_up, 1030) is not None
    # Connected in between, but within the interval: still nothing.
    assert notices.observe(XMPP, 1100) is None
    assert notices.observe(bad, 1200) is None
    # Connected again after the interval: told again.
    assert notices.observe(XMPP, 1700) is None
    assert notices.observe(bad, 1700) is not None
    # Mere disconnections are never trouble.
    flaky = XMPP._replace(state="transient_disconnect", reason="reset")
    assert notices.observe(XMPP, 5000) is None
    assert notices.observe(flaky, 5001) is None
