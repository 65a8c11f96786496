"""Messages from SIP users that an account accepted (202) but has not sent yet.

The account actor queues messages in memory while its connection is down;
this table keeps them across a gateway restart or crash, so a 202 is a
promise the gateway keeps.  ``message_id`` is the id the account uses on the
network, stable across resends.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("queue of accepted SIP messages not yet sent to the external network")
def create_sendq(db: Database, tables: Tables) -> None:  # noqa: ARG001
    if db.table_exists("purplegw_sendq"):
        return
    if db.dialect == "mysql":
        db.execute(
            "CREATE TABLE purplegw_sendq ("
            " seq BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " protocol VARCHAR(16) NOT NULL,"
            " contact VARCHAR(255) NOT NULL,"
            " body MEDIUMTEXT NOT NULL,"
            " message_id VARCHAR(64) NOT NULL,"
            " created DOUBLE NOT NULL,"
            " UNIQUE KEY sendq_message_idx (message_id)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(
            "CREATE TABLE purplegw_sendq ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,"
            " sip_user VARCHAR(128) NOT NULL,"
            " protocol VARCHAR(16) NOT NULL,"
            " contact VARCHAR(255) NOT NULL,"
            " body TEXT NOT NULL,"
            " message_id VARCHAR(64) NOT NULL UNIQUE,"
            " created REAL NOT NULL)"
        )
