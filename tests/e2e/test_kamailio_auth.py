"""Kamailio sharing purplegw's database: users made by ``purplegw users add`` register there.

A real Kamailio runs etc/kamailio.cfg with ``-A WITH_AUTH`` on the MariaDB
database that ``purplegw db init`` created (the ``subscriber`` table and
Kamailio's ``version`` rows), and pjsua2, a SIP stack that is not ours,
registers at it with digest authentication.
"""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
import pytest
import tomli_w

from purplegw.exceptions import StoreError
from purplegw.store.database import Database
from purplegw.store.upgrades import Tables, run_upgrades
from tests.e2e.test_kamailio_front import KAMAILIO_IP, shipped_cfg
from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.kamailio import Kamailio, KamailioError, kamailio_binary
from tests.kit.pjsua_agent import PjsuaAgent
from tests.kit.ports import free_port

if TYPE_CHECKING:
    from tests.kit.mariadb import MariaDB

SIP_PASSWORD = "kam-Digest-pw-71c3e0"
_names = itertools.count(1)


def db_module_missing() -> bool:
    """Kamailio's MySQL driver is a separate Debian package (kamailio-mysql-modules)."""
    return not any(Path("/usr/lib").glob("*/kamailio/modules/db_mysql.so"))


def kamailio_on(db_url: str) -> Kamailio:
    port = free_port("both", KAMAILIO_IP)
    cfg = shipped_cfg(port, free_port("udp"))  # the gateway does not take part here
    return Kamailio(
        cfg, port=port, host=KAMAILIO_IP, extra_args=("-A", "WITH_AUTH", "-A", f'DBURL="{db_url}"')
    )


def query(db_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    rest = db_url.split("://", 1)[1]
    credentials, _, location = rest.rpartition("@")
    user, _, password = credentials.partition(":")
    hostport, _, database = location.partition("/")
    host, _, port = hostport.partition(":")
    conn = pymysql.connect(
        host=host, port=int(port), user=user, password=password, database=database, autocommit=True
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture
def shared_db(mariadb: MariaDB, tmp_path: Path) -> str:
    """A database set up by purplegw alone: db init, one SIP user."""
    if kamailio_binary() is None:
        missing_peer("Kamailio", "kamailio")
    if db_module_missing():
        missing_peer("Kamailio's MySQL module", "kamailio-mysql-modules")
    db_url = mariadb.create_database(f"purplegw_kamailio_auth_{next(_names)}")
    gateway = GatewayProcess(tmp_path)
    config = tomllib.loads(gateway.config.read_text())
    config["store"]["db_url"] = db_url
    gateway.config.write_text(tomli_w.dumps(config))
    gateway.cli("db", "init")
    gateway.cli("users", "add", "alice@sip.test", "--password-stdin", stdin=SIP_PASSWORD + "\n")
    return db_url


def register(kamailio: Kamailio, username: str, password: str) -> dict[str, Any]:
    registrar = f"sip:{kamailio.host}:{kamailio.port}"
    with PjsuaAgent.start() as agent:
        agent.account(
            "sip:alice@sip.test",
            registrar=registrar,
            username=username,
            password=password,
            proxy=f"{registrar};lr",
        )
        return agent.wait_for(lambda e: e["event"] == "reg")


def test_db_init_writes_the_version_rows_kamailio_checks(shared_db: str) -> None:
    rows = dict(query(shared_db, "SELECT table_name, table_version FROM version"))
    assert rows == {"version": 1, "subscriber": 7}
    # What Kamailio 5.x's own schema writes, where the package is installed.
    schema = Path("/usr/share/kamailio/mysql/auth_db-create.sql")
    if schema.exists():
        assert "values ('subscriber','7')" in schema.read_text()


def test_a_user_added_by_purplegw_registers_at_kamailio(shared_db: str) -> None:
    stored = query(
        shared_db, "SELECT password, ha1, ha1b FROM subscriber WHERE username = %s", ("alice",)
    )
    assert stored
    assert stored[0][0] == ""  # no plaintext: Kamailio must read ha1
    with kamailio_on(shared_db) as kamailio:
        event = register(kamailio, "alice", SIP_PASSWORD)
        assert event["code"] == 200, (event, kamailio.log_text()[-3000:])
        # user@domain as the digest username: Kamailio reads ha1b.
        event = register(kamailio, "alice@sip.test", SIP_PASSWORD)
        assert event["code"] == 200, (event, kamailio.log_text()[-3000:])
        event = register(kamailio, "alice", "not-" + SIP_PASSWORD)
        assert event["code"] in (401, 403), event


def test_kamailio_refuses_to_start_without_the_version_row(shared_db: str) -> None:
    """Why db init writes it: auth_db checks the table version when it starts."""
    query(shared_db, "DELETE FROM version WHERE table_name = 'subscriber'")
    with pytest.raises(KamailioError, match="version check for db table: subscriber"):
        kamailio_on(shared_db).start(timeout=10)


# --- the upgrade on each backend, and on a database Kamailio set up first ---------------


def test_version_rows_on_each_backend(db_url: str) -> None:
    db = Database.create(db_url)
    try:
        run_upgrades(db, Tables(subscribers="sip_users"))
        rows = db.fetchall("SELECT table_name, table_version FROM version ORDER BY table_name")
        # The configured subscriber table is the one named, as auth_db is told.
        assert rows == [("sip_users", 7), ("version", 1)]
    finally:
        db.close()


def test_an_existing_kamailio_version_table_is_kept(db_url: str) -> None:
    """kamdbctl made the database: its rows stay as they are, none is added twice."""
    db = Database.create(db_url)
    try:
        db.execute(
            "CREATE TABLE version (id INTEGER PRIMARY KEY NOT NULL,"
            " table_name VARCHAR(32) NOT NULL, table_version INTEGER DEFAULT 0 NOT NULL)"
        )
        for row in ((1, "version", 1), (2, "subscriber", 7), (3, "location", 9)):
            db.execute("INSERT INTO version VALUES (?, ?, ?)", row)
        run_upgrades(db, Tables())
        run_upgrades(db, Tables())  # up to date: nothing more
        rows = db.fetchall("SELECT id, table_name, table_version FROM version ORDER BY id")
        assert rows == [(1, "version", 1), (2, "subscriber", 7), (3, "location", 9)]
    finally:
        db.close()


def test_a_version_table_of_another_layout_is_refused(db_url: str) -> None:
    db = Database.create(db_url)
    try:
        db.execute("CREATE TABLE version (name VARCHAR(32) NOT NULL)")
        with pytest.raises(StoreError, match="lacks Kamailio's columns"):
            run_upgrades(db, Tables())
    finally:
        db.close()
