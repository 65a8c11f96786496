"""Keys derived from an account's password, kept so a restart need not derive them again.

One row per account and kind (``scram``: the SCRAM salted password of
RFC 5802, with the salt and iteration count it was derived for).  Values
are encrypted with the password key, like ``ext_pass``: a derived key logs
in as well as the password it came from.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("keys derived from account passwords (SCRAM salted passwords)")
def create_account_keys(db: Database, tables: Tables) -> None:  # noqa: ARG001
    if db.table_exists("purplegw_account_keys"):
        return
    if db.dialect == "mysql":
        db.execute(
            "CREATE TABLE purplegw_account_keys ("
            " account_id INT UNSIGNED NOT NULL,"
            " kind VARCHAR(32) NOT NULL,"
            " value TEXT NOT NULL,"
            " updated DOUBLE NOT NULL,"
            " PRIMARY KEY (account_id, kind)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(
            "CREATE TABLE purplegw_account_keys ("
            " account_id INTEGER NOT NULL,"
            " kind VARCHAR(32) NOT NULL,"
            " value TEXT NOT NULL,"
            " updated REAL NOT NULL,"
            " PRIMARY KEY (account_id, kind))"
        )
