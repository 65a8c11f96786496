"""The account table on SQLite and on a real MariaDB (same tests, both backends)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.exceptions import SchemaTooNewError, StoreError
from purplegw.store import AccountRepository, Database, NewAccount, PasswordCipher
from purplegw.store.crypto import PREFIX, generate_key_file
from purplegw.store.upgrades import VERSION_TABLE, check_schema, latest_version, run_upgrades

if TYPE_CHECKING:
    from pathlib import Path


def test_add_list_remove_round_trip(accounts: AccountRepository) -> None:
    first = accounts.add(NewAccount("sip:alice@example.org", "alice@jabber.example", "xmpp", "pw1"))
    second = accounts.add(NewAccount("bob@example.org", "bob", "irc", "pw2"))
    rows = accounts.list()
    assert [(r.id, r.sip_user, r.ext_user, r.ext_prot) for r in rows] == [
        (first, "sip:alice@example.org", "alice@jabber.example", "xmpp"),
        (second, "bob@example.org", "bob", "irc"),
    ]
    assert all(r.password_encrypted for r in rows)
    assert accounts.remove(first) is True
    assert accounts.remove(first) is False
    assert [r.id for r in accounts.list()] == [second]


def test_passwords_are_encrypted_at_rest(accounts: AccountRepository) -> None:
    password = "correct horse battery staple ünïcode"
    account_id = accounts.add(NewAccount("alice@example.org", "alice@x.example", "xmpp", password))
    raw = accounts.db.fetchone("SELECT ext_pass FROM purplemap WHERE id = ?", (account_id,))
    assert raw is not None
    assert raw[0].startswith(PREFIX)
    assert password not in raw[0]
    creds, problems = accounts.credentials()
    assert problems == []
    assert creds[0].password == password
    assert creds[0].sip_user == "alice@example.org"
    assert "correct horse" not in repr(creds[0])


def test_credentials_resolve_protocol_and_report_bad_rows(accounts: AccountRepository) -> None:
    accounts.add(NewAccount("a@example.org", "a@talk.example", "gtalk", "x"))
    accounts.db.execute(
        "INSERT INTO purplemap (sip_user, ext_user, ext_prot, ext_pass) "
        "VALUES ('b@example.org', 'b', 'prpl-msn-pecan', 'y')"
    )
    aliases = {"gtalk": "xmpp"}

    def canonical(protocol: str) -> str:
        if protocol in aliases:
            return aliases[protocol]
        raise ValueError(f"unknown protocol {protocol!r}")

    creds, problems = accounts.credentials(canonical)
    assert [(c.protocol, c.original_protocol) for c in creds] == [("xmpp", "gtalk")]
    assert len(problems) == 1
    assert "prpl-msn-pecan" in problems[0]
    assert "b@example.org" in problems[0]


def test_import_is_all_or_nothing(accounts: AccountRepository) -> None:
    accounts.add(NewAccount("a@example.org", "a@x.example", "xmpp", "p"))
    batch = [
        NewAccount("b@example.org", "b@x.example", "xmpp", "p"),
        NewAccount("a@example.org", "a@x.example", "xmpp", "p"),  # duplicate of the existing row
    ]
    with pytest.raises(StoreError, match="already has"):
        accounts.add_many(batch)
    assert [r.sip_user for r in accounts.list()] == ["a@example.org"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sip_user", "no-at-sign", "not user@domain"),
        ("ext_user", "", "ext_user is empty"),
        ("ext_user", "x" * 129, "longer than 128"),
        ("ext_prot", "xm\npp", "control character"),
    ],
)
def test_bad_rows_are_refused_with_a_reason(
    accounts: AccountRepository, field: str, value: str, message: str
) -> None:
    values = {"sip_user": "a@example.org", "ext_user": "a@x.example", "ext_prot": "xmpp"}
    values[field] = value
    with pytest.raises(StoreError, match=message):
        accounts.add(NewAccount(**values, password="p"))
    assert accounts.list() == []


def test_wrong_key_names_the_row(accounts: AccountRepository, tmp_path: Path) -> None:
    account_id = accounts.add(NewAccount("a@example.org", "a@x.example", "xmpp", "p"))
    other_key = tmp_path / "other.key"
    generate_key_file(other_key)
    stranger = AccountRepository(accounts.db, "purplemap", PasswordCipher(other_key))
    _, problems = stranger.credentials()
    assert len(problems) == 1
    assert f"account id {account_id}" in problems[0]
    assert "wrong or rotated-out key" in problems[0]


def test_missing_key_file_says_where_it_was_looked_for(db_url: str, tmp_path: Path) -> None:
    db = Database.create(db_url)
    run_upgrades(db, "purplemap")
    repo = AccountRepository(db, "purplemap", PasswordCipher(tmp_path / "nowhere.key"))
    with pytest.raises(StoreError, match=r"nowhere\.key"):
        repo.add(NewAccount("a@example.org", "a@x.example", "xmpp", "p"))
    assert repo.list() == []


def test_table_name_is_configurable(db_url: str, key_file: Path) -> None:
    db = Database.create(db_url)
    run_upgrades(db, "gateway_accounts")
    repo = AccountRepository(db, "gateway_accounts", PasswordCipher(key_file))
    repo.add(NewAccount("a@example.org", "a@x.example", "xmpp", "p"))
    assert db.table_exists("gateway_accounts")
    assert not db.table_exists("purplemap")
    assert len(repo.list()) == 1


def test_schema_newer_than_the_code_is_refused(db_url: str) -> None:
    db = Database.create(db_url)
    run_upgrades(db, "purplemap")
    db.execute(f"UPDATE {VERSION_TABLE} SET version = ?", (latest_version() + 1,))  # noqa: S608 - a constant table name
    with pytest.raises(SchemaTooNewError, match="newer than this purplegw"):
        check_schema(db, "purplemap")
    with pytest.raises(SchemaTooNewError):
        run_upgrades(db, "purplemap")


def test_upgrades_are_idempotent(db_url: str) -> None:
    db = Database.create(db_url)
    assert len(run_upgrades(db, "purplemap")) == latest_version()
    assert run_upgrades(db, "purplemap") == []
    assert check_schema(db, "purplemap") == 0


def test_injection_through_table_name_is_refused(db_url: str, key_file: Path) -> None:
    db = Database.create(db_url)
    with pytest.raises(StoreError, match="invalid table name"):
        AccountRepository(db, "purplemap; DROP TABLE x", PasswordCipher(key_file))
