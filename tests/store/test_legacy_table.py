"""An operator's existing purplemap, made by the original module's MySQL script."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.store import AccountRepository, Database, NewAccount, PasswordCipher
from purplegw.store.crypto import PREFIX
from purplegw.store.upgrades import check_schema, latest_version, run_upgrades

if TYPE_CHECKING:
    from pathlib import Path

    from tests.kit.mariadb import MariaDB

# utils/kamctl/mysql/purple-create.sql of Kamailio, as operators ran it
# (plus the Kamailio `version` table that script writes into).
ORIGINAL_SCRIPT = [
    (
        "CREATE TABLE version (table_name VARCHAR(32) NOT NULL, table_version INT UNSIGNED "
        "DEFAULT 0 NOT NULL, CONSTRAINT table_name_idx UNIQUE (table_name)) ENGINE=MyISAM"
    ),
    "INSERT INTO version (table_name, table_version) values ('purplemap','1')",
    (
        "CREATE TABLE purplemap (id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL, "
        "sip_user VARCHAR(128) NOT NULL, ext_user VARCHAR(128) NOT NULL, "
        "ext_prot VARCHAR(16) NOT NULL, ext_pass VARCHAR(64)) ENGINE=MyISAM"
    ),
    (
        "INSERT INTO purplemap (sip_user, ext_user, ext_prot, ext_pass) VALUES "
        "('sip:alice@example.org', 'alice@gmail.example', 'gtalk', 'alicepw'), "
        "('sip:bob@example.org', 'bob@jabber.example', 'prpl-jabber', 'bobpw'), "
        "('sip:bob@example.org', 'bobnick@irc.example', 'prpl-irc', NULL)"
    ),
]

SQLITE_SCRIPT = [
    (
        "CREATE TABLE purplemap (id INTEGER PRIMARY KEY AUTOINCREMENT, sip_user VARCHAR(128) "
        "NOT NULL, ext_user VARCHAR(128) NOT NULL, ext_prot VARCHAR(16) NOT NULL, "
        "ext_pass VARCHAR(64))"
    ),
    ORIGINAL_SCRIPT[3],
]


@pytest.fixture(params=["sqlite", "mysql"])
def legacy_db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if request.param == "sqlite":
        db = Database.create(f"sqlite://{tmp_path / 'legacy.db'}")
        for statement in SQLITE_SCRIPT:
            db.execute(statement)
        return db
    mariadb: MariaDB = request.getfixturevalue("mariadb")
    url = mariadb.create_database("openser_legacy")
    mariadb.execute("openser_legacy", *ORIGINAL_SCRIPT)
    return Database.create(url)


def test_legacy_table_works_as_it_is(legacy_db: Database, tmp_path: Path) -> None:
    # No upgrade, no key file: the rows must be usable straight away.
    repo = AccountRepository(legacy_db, "purplemap", PasswordCipher(tmp_path / "absent.key"))
    assert check_schema(legacy_db, "purplemap") == latest_version()  # upgrades pending, usable
    creds, problems = repo.credentials()
    assert problems == []
    assert [(c.sip_user, c.ext_user, c.original_protocol, c.password) for c in creds] == [
        ("alice@example.org", "alice@gmail.example", "gtalk", "alicepw"),
        ("bob@example.org", "bob@jabber.example", "prpl-jabber", "bobpw"),
        ("bob@example.org", "bobnick@irc.example", "prpl-irc", ""),
    ]
    assert [r.password_encrypted for r in repo.list()] == [False, False, False]


def test_upgrade_encrypts_legacy_passwords(legacy_db: Database, key_file: Path) -> None:
    repo = AccountRepository(legacy_db, "purplemap", PasswordCipher(key_file))
    assert len(run_upgrades(legacy_db, "purplemap")) == latest_version()
    assert repo.encrypt_plaintext() == 2  # the NULL password stays NULL
    raw = [r[0] for r in legacy_db.fetchall("SELECT ext_pass FROM purplemap ORDER BY id")]
    assert raw[0].startswith(PREFIX)
    assert raw[1].startswith(PREFIX)
    assert raw[2] is None
    assert [c.password for c in repo.credentials()[0]] == ["alicepw", "bobpw", ""]
    # The widened column now takes an encrypted password of any sensible length
    # (MySQL strict mode would refuse a token longer than the original VARCHAR(64)).
    long_id = repo.add(NewAccount("carol@example.org", "carol@x.example", "xmpp", "p" * 100))
    assert [c.password for c in repo.credentials()[0] if c.account_id == long_id] == ["p" * 100]
    assert repo.encrypt_plaintext() == 0
