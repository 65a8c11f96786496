"""Messages from external contacts waiting for their SIP user.

A message accepted from the external network is written here before
anything else happens to it and deleted only once a SIP 2xx came back, so
a gateway crash or an unreachable user never loses it (at-least-once).
``seq`` orders delivery per user.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("outbox of messages waiting for their SIP user")
def create_outbox(db: Database, tables: Tables) -> None:  # noqa: ARG001
    if db.table_exists("purplegw_outbox"):
        return
    if db.dialect == "mysql":
        db.execute(
            "CREATE TABLE purplegw_outbox ("
            " seq BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " account_id INT UNSIGNED NOT NULL,"
            " protocol VARCHAR(16) NOT NULL,"
            " contact VARCHAR(255) NOT NULL,"
            " content_type VARCHAR(64) NOT NULL,"
            " body MEDIUMBLOB NOT NULL,"
            " created DOUBLE NOT NULL,"
            " attempts INT UNSIGNED DEFAULT 0 NOT NULL,"
            " last_error VARCHAR(255) DEFAULT '' NOT NULL,"
            " INDEX outbox_user_idx (sip_user, seq)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(
            "CREATE TABLE purplegw_outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " account_id INTEGER NOT NULL,"
            " protocol VARCHAR(16) NOT NULL,"
            " contact VARCHAR(255) NOT NULL,"
            " content_type VARCHAR(64) NOT NULL,"
            " body BLOB NOT NULL,"
            " created REAL NOT NULL,"
            " attempts INTEGER DEFAULT 0 NOT NULL,"
            " last_error VARCHAR(255) DEFAULT '' NOT NULL)"
        )
        db.execute("CREATE INDEX outbox_user_idx ON purplegw_outbox (sip_user, seq)")
