"""What a queued message owes its sender, kept with it across a restart.

``purplegw_outbox`` (messages for SIP users) gains ``message_id``, the id
the external network gave the message (a delivery receipt or an error
bounce names it), and ``receipts``, what its sender asked to be told
("receipt", "markable", comma separated; XEP-0184 / XEP-0333).
``purplegw_sendq`` (messages from SIP users) gains ``imdn_id`` and
``notify``, the phone's RFC 5438 IMDN Message-ID and
Disposition-Notification, so that the delivery or failure notification
the phone asked for still goes after a restart, and ``acked``: 1 once the
network took the message while the phone still waits for the contact's
receipt (the row stays until the receipt, or until it is too old to wait
for).  Rows written before this upgrade get empty values: nothing was
asked, as before.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade

_COLUMNS = {
    "purplegw_outbox": (
        ("message_id", "VARCHAR(255) DEFAULT '' NOT NULL"),
        ("receipts", "VARCHAR(64) DEFAULT '' NOT NULL"),
    ),
    "purplegw_sendq": (
        ("imdn_id", "VARCHAR(255) DEFAULT '' NOT NULL"),
        ("notify", "VARCHAR(128) DEFAULT '' NOT NULL"),
        ("acked", "INTEGER DEFAULT 0 NOT NULL"),
    ),
}


@upgrade("network message id and receipt requests kept with queued messages")
def add_receipt_columns(db: Database, tables: Tables) -> None:  # noqa: ARG001
    for table, columns in _COLUMNS.items():
        present = db.columns(table)
        for name, definition in columns:
            if name not in present:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
