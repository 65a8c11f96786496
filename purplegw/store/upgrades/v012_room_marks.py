"""Rooms a SIP user is in, and the last message delivered from each (group chat).

One row per (account, room): the nick the account holds there and the time
of the newest room message that reached the user's outbox, with the
fingerprints of the last few (a room's whole-second stamps cannot tell a
message from one in the same second).  After a gateway
restart the rooms are joined again with history since that time, so the
phone gets what it missed and nothing twice (docs/groupchat.md).
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("room marks: the rooms each account is in and the last message delivered")
def create_room_marks(db: Database, tables: Tables) -> None:  # noqa: ARG001
    if db.table_exists("purplegw_room_marks"):
        return
    mysql = db.dialect == "mysql"
    real = "DOUBLE" if mysql else "REAL"
    db.execute(
        "CREATE TABLE purplegw_room_marks ("
        f" account_id {'INT UNSIGNED' if mysql else 'INTEGER'} NOT NULL,"
        " room VARCHAR(255) NOT NULL,"
        " nick VARCHAR(128) DEFAULT '' NOT NULL,"
        f" last_at {real} DEFAULT 0 NOT NULL,"
        " recent VARCHAR(255) DEFAULT '' NOT NULL,"
        f" updated {real} DEFAULT 0 NOT NULL,"
        " PRIMARY KEY (account_id, room)"
        + (") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" if mysql else ")")
    )
