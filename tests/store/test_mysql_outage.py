"""A MariaDB restart under a running store: a clear error while it is down, then recovery."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.exceptions import StoreError
from purplegw.store import AccountRepository, Database, NewAccount, PasswordCipher
from purplegw.store.upgrades import run_upgrades
from tests.kit.binaries import missing_peer
from tests.kit.mariadb import MariaDB, mariadb_binaries

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def own_mariadb() -> Iterator[MariaDB]:
    # Its own server: stopping the session-wide one would disturb other tests.
    if mariadb_binaries() is None:
        missing_peer("MariaDB server", "mariadb-server")
    with MariaDB() as server:
        yield server


def test_store_recovers_after_server_restart(own_mariadb: MariaDB, key_file: Path) -> None:
    db = Database.create(own_mariadb.create_database("outage"), connect_timeout=2)
    run_upgrades(db, "purplemap")
    repo = AccountRepository(db, "purplemap", PasswordCipher(key_file))
    repo.add(NewAccount("a@example.org", "a@x.example", "xmpp", "p"))

    own_mariadb.stop()
    with pytest.raises(StoreError) as excinfo:
        repo.list()
    assert own_mariadb.url("outage").split("@")[1] in str(excinfo.value)  # names the server
    assert "purplegw-test-pw" not in str(excinfo.value)  # never the password

    own_mariadb.start()
    assert [r.sip_user for r in repo.list()] == ["a@example.org"]  # same repo, reconnected
