"""The SIP users of standalone mode, in Kamailio's ``subscriber`` layout.

An operator's existing Kamailio table (auth_db) is used as it is; the table
is created only where it is missing, with Kamailio 5.x's columns, so that
Kamailio's own tools (kamctl add) and purplegw manage the same users.
"""

from purplegw.exceptions import StoreError
from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade

REQUIRED = {"id", "username", "domain", "password", "ha1"}


@upgrade("SIP users table (Kamailio subscriber layout)")
def create_subscriber_table(db: Database, tables: Tables) -> None:
    table = tables.subscribers
    if db.table_exists(table):
        missing = REQUIRED - set(db.columns(table))
        if missing:
            raise StoreError(f"table {table!r} exists but lacks columns {sorted(missing)}")
        return
    if db.dialect == "mysql":
        db.execute(
            f"CREATE TABLE {table} ("
            " id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,"
            " username VARCHAR(64) DEFAULT '' NOT NULL,"
            " domain VARCHAR(64) DEFAULT '' NOT NULL,"
            " password VARCHAR(64) DEFAULT '' NOT NULL,"
            " ha1 VARCHAR(128) DEFAULT '' NOT NULL,"
            " ha1b VARCHAR(128) DEFAULT '' NOT NULL,"
            f" CONSTRAINT {table}_account_idx UNIQUE (username, domain)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(
            f"CREATE TABLE {table} ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
            " username VARCHAR(64) DEFAULT '' NOT NULL,"
            " domain VARCHAR(64) DEFAULT '' NOT NULL,"
            " password VARCHAR(64) DEFAULT '' NOT NULL,"
            " ha1 VARCHAR(128) DEFAULT '' NOT NULL,"
            " ha1b VARCHAR(128) DEFAULT '' NOT NULL,"
            " CONSTRAINT account_idx UNIQUE (username, domain))"
        )
