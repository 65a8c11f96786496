"""The XMPP Adapter descriptor: discovery, ids, defaults, config checks."""

from __future__ import annotations

import tomllib

from purplegw.protocols.base import AccountCredentials, SessionContext
from purplegw.protocols.loader import AdapterStatus, load_adapters
from purplegw.protocols.xmpp import DEFAULTS_PATH, Adapter
from purplegw.protocols.xmpp.session import parse_server


def test_found_through_the_entry_point_with_its_aliases():
    registry = load_adapters()
    assert registry.infos["xmpp"].status is AdapterStatus.ENABLED, registry.infos["xmpp"].error
    assert isinstance(registry.get("xmpp"), Adapter)
    for alias in ("prpl-jabber", "jabber", "gtalk", "PRPL-JABBER"):
        assert registry.canonical(alias) == "xmpp"
    assert Adapter.addresses_user_at_host is True


def test_defaults_file_is_the_default_config_and_is_valid():
    with DEFAULTS_PATH.open("rb") as f:
        defaults = tomllib.load(f)
    adapter = Adapter()
    assert adapter.get_default_config() == defaults
    assert set(defaults) >= {
        "enabled",
        "server",
        "require_tls",
        "allow_plaintext",
        "ca_file",
        "resource",
        "connect_timeout",
        "login_timeout",
        "keepalive",
    }
    assert defaults["require_tls"] is True
    assert defaults["allow_plaintext"] is False
    assert adapter.validate_config(defaults) == []


def test_default_config_is_a_fresh_copy_each_time():
    # Parsed once per process: a caller changing its copy must not change the next.
    adapter = Adapter()
    first = adapter.get_default_config()
    first["server"] = "changed.example:5222"
    first["resource"] = "mine"
    assert adapter.get_default_config()["server"] == ""
    assert adapter.get_default_config()["resource"] == "purplegw"


def test_config_problems_are_all_reported(tmp_path):
    problems = Adapter().validate_config(
        {
            "server": "host:notaport",
            "allow_plaintext": True,
            "require_tls": True,
            "ca_file": str(tmp_path / "missing.pem"),
            "connect_timeout": 0,
            "keepalive": -1,
        }
    )
    keys = sorted(p.split(":", 1)[0] for p in problems)
    assert keys == ["allow_plaintext", "ca_file", "connect_timeout", "keepalive", "server"]


def test_parse_server_and_normalize():
    assert parse_server("") is None
    assert parse_server("xmpp.example.org") == ("xmpp.example.org", 5222)
    assert parse_server("127.0.0.1:5299") == ("127.0.0.1", 5299)
    assert parse_server("[::1]:5299") == ("::1", 5299)
    assert Adapter().normalize_contact(" Bob@Example.ORG/phone ") == "bob@example.org"


def test_sessions_of_one_section_share_one_merged_config():
    adapter = Adapter()
    shared: dict = {}

    def session(i: int, config: dict):
        credentials = AccountCredentials(i, f"sip:u{i}@x", f"u{i}@localhost", "xmpp", "pw")
        return adapter.create_session(
            credentials, SessionContext(loop=None, events=None, config=config, shared=shared)
        )

    one = session(1, {"server": "127.0.0.1:5222", "keepalive": 0})
    two = session(2, {"keepalive": 0, "server": "127.0.0.1:5222"})  # equal, another dict
    other = session(3, {"server": "127.0.0.1:5223", "keepalive": 0})
    assert one.config is two.config
    assert other.config is not one.config
    assert other.config["server"] == "127.0.0.1:5223"
    assert one.config["keepalive"] == 0
    assert one.config["resource"] == "purplegw"  # a default
    # A value that cannot be a key still works, merged per session.
    listed = session(4, {"server": "127.0.0.1:5222", "extra": ["a"]})
    assert listed.config["extra"] == ["a"]
    assert listed.config["resource"] == "purplegw"


def test_contact_error_refuses_what_rfc_7622_refuses():
    adapter = Adapter()
    for good in ("bob@example.com", "bob@example.com/phone", "éric@exámple.com", "example.com"):
        assert adapter.contact_error(good) is None, good
    for bad in ("bad jid@example.com", "@example.com", "bob@", "a@b@c", "x" * 1100 + "@b.c"):
        assert adapter.contact_error(bad) == "not a valid XMPP address", bad
