"""Kamailio's ``version`` rows for the tables purplegw keeps in Kamailio's layout.

Kamailio checks, when a module opens a table, that Kamailio's ``version``
table names it with the version the module was built for
(``db_check_table_version``), and refuses to start otherwise.  So a database
where ``purplegw db init`` created ``subscriber`` needs the row auth_db
checks, or a Kamailio sharing it stops at start.

The ``version`` table is created as Kamailio's own schema does
(standard-create.sql) when it is missing; rows already there are left
alone (they are Kamailio's, written by kamdbctl for its own tables).  The
numbers are Kamailio 5.x's, as its schema files write them
(/usr/share/kamailio/mysql/auth_db-create.sql of kamailio-mysql-modules
5.6: ``subscriber`` 7, ``version`` 1).  purplegw keeps no other table in a
Kamailio layout: ``location`` is Kamailio's (etc/kamailio.cfg keeps
registrations in memory, ``usrloc`` db_mode 0) and ``purplemap`` belongs
to the old purple module, which does not run beside purplegw.
"""

from purplegw.exceptions import StoreError
from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade

KAMAILIO_VERSION_TABLE = "version"
SUBSCRIBER_VERSION = 7  # auth_db of Kamailio 5.x (4.x had 6)
VERSION_TABLE_VERSION = 1
REQUIRED = {"table_name", "table_version"}


@upgrade("Kamailio's version rows for the tables in its layout (subscriber)")
def write_kamailio_versions(db: Database, tables: Tables) -> None:
    table = KAMAILIO_VERSION_TABLE
    if db.table_exists(table):
        missing = REQUIRED - set(db.columns(table))
        if missing:
            raise StoreError(
                f"table {table!r} exists but lacks Kamailio's columns {sorted(missing)}"
            )
    elif db.dialect == "mysql":
        db.execute(
            f"CREATE TABLE {table} ("
            " id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,"
            " table_name VARCHAR(32) NOT NULL,"
            " table_version INT UNSIGNED DEFAULT 0 NOT NULL,"
            f" CONSTRAINT {table}_table_name_idx UNIQUE (table_name)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(
            f"CREATE TABLE {table} ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
            " table_name VARCHAR(32) NOT NULL,"
            " table_version INTEGER DEFAULT 0 NOT NULL,"
            " CONSTRAINT table_name_idx UNIQUE (table_name))"
        )
    wanted = {table: VERSION_TABLE_VERSION, tables.subscribers: SUBSCRIBER_VERSION}
    for name, version in wanted.items():
        query = f"SELECT table_version FROM {table} WHERE table_name = ?"
        if db.fetchone(query, (name,)) is None:
            db.execute(
                f"INSERT INTO {table} (table_name, table_version) VALUES (?, ?)",
                (name, version),
            )
