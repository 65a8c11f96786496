"""The Matrix adapter's pure parts: ids, presence table, stored records, config checks."""

from __future__ import annotations

import json

import pytest

from purplegw.gateway.addressing import contact_uri, resolve
from purplegw.presence import Presence, Status
from purplegw.protocols.base import AccountCredentials
from purplegw.protocols.matrix import Adapter
from purplegw.protocols.matrix.ids import contact_from_mxid, mxid_from_contact
from purplegw.protocols.matrix.presence_map import (
    IDLE_AFTER_MS,
    MatrixPresence,
    presence_from_matrix,
    presence_to_matrix,
)
from purplegw.protocols.matrix.session import (
    device_from_record,
    parse_secret,
    session_from_record,
    session_record,
    since_from_record,
    since_record,
)


@pytest.mark.parametrize(
    ("contact", "mxid"),
    [
        ("bob@example.org", "@bob:example.org"),
        ("@bob:example.org", "@bob:example.org"),
        ("Bob@Example.ORG", "@bob:example.org"),
        ("a.b_c=d-e/f+g@example.org", "@a.b_c=d-e/f+g:example.org"),
        ("@bob:example.org:8448", "@bob:example.org:8448"),
        ("@bob:[2001:db8::1]:8448", "@bob:[2001:db8::1]:8448"),
    ],
)
def test_contact_to_mxid(contact: str, mxid: str) -> None:
    assert mxid_from_contact(contact) == mxid


@pytest.mark.parametrize(
    "bad",
    [
        "bob",
        "@bob",
        "bo b@example.org",
        "@:example.org",
        "bob@exa mple.org",
        "bob\r\n@example.org",
        "x" * 300 + "@example.org",
    ],
)
def test_invalid_contacts(bad: str) -> None:
    with pytest.raises(ValueError, match="Matrix id"):
        mxid_from_contact(bad)


def test_sip_uri_round_trip_through_the_addressing_rules() -> None:
    account = AccountCredentials(1, "alice@sip.test", "@alice:example.org", "matrix", "pw")
    for mxid in ("@bob:example.org", "@we/ird+name=x:example.org"):
        uri = contact_uri(
            account, contact_from_mxid(mxid), user_at_host=True, gateway_domain="sip.test"
        )
        assert uri.endswith(";proto=matrix")
        user, host = uri.removeprefix("sip:").split(";")[0].split("@")
        route = resolve(
            "alice@sip.test", user, host, "matrix", [account], user_at_host=lambda p: p == "matrix"
        )
        assert mxid_from_contact(route.contact) == mxid
    assert (
        contact_uri(account, "bob@example.org", user_at_host=True, gateway_domain="sip.test")
        == "sip:bob@example.org;proto=matrix"
    )


def test_normalize_contact() -> None:
    adapter = Adapter()
    assert adapter.normalize_contact("@Bob:Example.org") == "bob@example.org"
    assert adapter.normalize_contact("bob@example.org") == "bob@example.org"


@pytest.mark.parametrize(
    ("matrix", "status"),
    [
        ("online", Status.AVAILABLE),
        ("unavailable", Status.AWAY),
        ("offline", Status.OFFLINE),
        ("org.matrix.msc3026.busy", Status.BUSY),
        ("nonsense", Status.OFFLINE),
        (None, Status.OFFLINE),
    ],
)
def test_presence_from_matrix(matrix: str | None, status: Status) -> None:
    assert presence_from_matrix(matrix, "  note ").status is status
    assert presence_from_matrix(matrix, "  note ").note == "note"


def test_idle_from_matrix() -> None:
    assert presence_from_matrix(
        "online", currently_active=False, last_active_ago=IDLE_AFTER_MS + 1
    ).idle
    assert not presence_from_matrix(
        "online", currently_active=True, last_active_ago=IDLE_AFTER_MS + 1
    ).idle


@pytest.mark.parametrize(
    ("presence", "expected"),
    [
        (Presence(Status.AVAILABLE), MatrixPresence("online")),
        (Presence(Status.CHAT, note="hi"), MatrixPresence("online", "hi")),
        (Presence(Status.AVAILABLE, idle=True), MatrixPresence("unavailable")),
        (Presence(Status.AWAY), MatrixPresence("unavailable")),
        (Presence(Status.EXTENDED_AWAY), MatrixPresence("unavailable")),
        (
            Presence(Status.BUSY, activities=("on-the-phone",)),
            MatrixPresence("unavailable", "On the phone"),
        ),
        (Presence(Status.OFFLINE, note="bye"), MatrixPresence("offline", "bye")),
    ],
)
def test_presence_to_matrix(presence: Presence, expected: MatrixPresence) -> None:
    assert presence_to_matrix(presence) == expected


def test_secret_forms() -> None:
    assert parse_secret("hunter2") == ("hunter2", None)
    assert parse_secret("token:syt_abc") == (None, "syt_abc")
    assert parse_secret("password:token:really") == ("token:really", None)


def test_session_record_checks_password_user_and_server() -> None:
    record = session_record("pw", "@a:x.org", "https://x.org", "DEV", "tok")
    assert session_from_record(record, "pw", "@a:x.org", "https://x.org") == ("DEV", "tok")
    assert session_from_record(record, "other", "@a:x.org", "https://x.org") is None
    assert session_from_record(record, "pw", "@b:x.org", "https://x.org") is None
    assert session_from_record(record, "pw", "@a:x.org", "https://y.org") is None
    assert session_from_record("", "pw", "@a:x.org", "https://x.org") is None
    assert session_from_record("{not json", "pw", "@a:x.org", "https://x.org") is None
    # The device survives a password change; not a change of user.
    assert device_from_record(record, "@a:x.org", "https://x.org") == "DEV"
    assert device_from_record(record, "@b:x.org", "https://x.org") == ""
    tampered = json.loads(record)
    tampered["access_token"] = "stolen"
    assert session_from_record(json.dumps(tampered), "pw", "@a:x.org", "https://x.org") is None


def test_since_record() -> None:
    record = since_record("@a:x.org", "https://x.org", "s123_4")
    assert since_from_record(record, "@a:x.org", "https://x.org") == "s123_4"
    assert since_from_record(record, "@a:x.org", "https://other") is None
    assert since_from_record("[]", "@a:x.org", "https://x.org") is None
    assert since_from_record(None, "@a:x.org", "https://x.org") is None


def test_config_validation() -> None:
    adapter = Adapter()
    defaults = adapter.get_default_config()
    assert defaults["enabled"] is True
    assert adapter.validate_config(defaults) == []
    problems = adapter.validate_config(
        {**defaults, "homeserver": "matrix.org", "sync_timeout": 0, "ca_file": "/nonexistent.pem"}
    )
    assert len(problems) == 3
    assert any(p.startswith("homeserver:") for p in problems)


def test_network_failures_of_sip_requests_are_transient() -> None:
    import aiohttp

    from purplegw.protocols.base import TransientError
    from purplegw.protocols.errors import outcome_for
    from purplegw.protocols.matrix.session import _network

    with pytest.raises(TransientError) as info, _network("typing notice"):
        raise aiohttp.ServerDisconnectedError
    assert outcome_for(info.value).status == 503
