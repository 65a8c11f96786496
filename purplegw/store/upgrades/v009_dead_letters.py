"""Messages the gateway gave up on: permanent failures and exhausted retries.

Both directions land here (``to_network``: accepted from a SIP user, meant
for an external contact; ``to_sip``: received from the network, meant for a
SIP user) with what is needed to send them again (``purplegw messages
retry``) and why they failed (``status`` code and ``reason`` text).  Nothing
the gateway accepted is ever dropped silently: it is delivered, still
queued, or here.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("dead letters: messages that failed for good, with the reason")
def create_dead_letters(db: Database, tables: Tables) -> None:  # noqa: ARG001
    if db.table_exists("purplegw_dead_letters"):
        return
    if db.dialect == "mysql":
        db.execute(
            "CREATE TABLE purplegw_dead_letters ("
            " id BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,"
            " direction VARCHAR(16) NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " protocol VARCHAR(16) NOT NULL,"
            " account_id INT UNSIGNED DEFAULT 0 NOT NULL,"
            " contact VARCHAR(255) NOT NULL,"
            " content_type VARCHAR(64) NOT NULL,"
            " body MEDIUMBLOB NOT NULL,"
            " message_id VARCHAR(64) DEFAULT '' NOT NULL,"
            " created DOUBLE NOT NULL,"
            " failed DOUBLE NOT NULL,"
            " attempts INT UNSIGNED DEFAULT 0 NOT NULL,"
            " status SMALLINT UNSIGNED DEFAULT 0 NOT NULL,"
            " reason VARCHAR(255) DEFAULT '' NOT NULL,"
            " INDEX dead_letters_user_idx (sip_user, id)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(
            "CREATE TABLE purplegw_dead_letters ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
            " direction VARCHAR(16) NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " protocol VARCHAR(16) NOT NULL,"
            " account_id INTEGER DEFAULT 0 NOT NULL,"
            " contact VARCHAR(255) NOT NULL,"
            " content_type VARCHAR(64) NOT NULL,"
            " body BLOB NOT NULL,"
            " message_id VARCHAR(64) DEFAULT '' NOT NULL,"
            " created REAL NOT NULL,"
            " failed REAL NOT NULL,"
            " attempts INTEGER DEFAULT 0 NOT NULL,"
            " status INTEGER DEFAULT 0 NOT NULL,"
            " reason VARCHAR(255) DEFAULT '' NOT NULL)"
        )
        db.execute("CREATE INDEX dead_letters_user_idx ON purplegw_dead_letters (sip_user, id)")
