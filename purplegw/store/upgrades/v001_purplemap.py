"""The original module's account table, created only where it is missing."""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("account table (the purple module's purplemap layout)")
def create_account_table(db: Database, tables: Tables) -> None:
    table = tables.accounts
    if db.table_exists(table):
        missing = {"id", "sip_user", "ext_user", "ext_prot", "ext_pass"} - set(db.columns(table))
        if missing:
            from purplegw.exceptions import StoreError  # noqa: PLC0415

            raise StoreError(f"table {table!r} exists but lacks columns {sorted(missing)}")
        return
    if db.dialect == "mysql":
        db.execute(
            f"CREATE TABLE {table} ("
            " id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " ext_user VARCHAR(128) NOT NULL,"
            " ext_prot VARCHAR(16) NOT NULL,"
            " ext_pass VARCHAR(64)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(
            f"CREATE TABLE {table} ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " ext_user VARCHAR(128) NOT NULL,"
            " ext_prot VARCHAR(16) NOT NULL,"
            " ext_pass VARCHAR(64))"
        )
