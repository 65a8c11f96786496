"""Registrar bindings and phones' PUBLISH state, shared by every node and kept across restarts.

``purplegw_bindings`` holds one row per (address of record, contact): where
the REGISTER came from, its Call-ID and CSeq (RFC 3261 10.3 ordering) and
when the binding ends.  ``purplegw_publications`` holds one row per live
PUBLISH entity tag (RFC 3903): the resource, the event, the body and when
it ends.  Both ends are absolute times, seconds since the epoch on the wall
clock of the node that received the request (docs/cluster.md, "Shared
state"), as ``purplegw_subscriptions.expires_at`` already is.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("registrar bindings and PUBLISH state in the database (shared, kept across restarts)")
def create_shared_state(db: Database, tables: Tables) -> None:  # noqa: ARG001
    mysql = db.dialect == "mysql"
    real, integer, blob = (
        ("DOUBLE", "INT UNSIGNED", "MEDIUMBLOB") if mysql else ("REAL", "INTEGER", "BLOB")
    )
    suffix = ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" if mysql else ")"
    if not db.table_exists("purplegw_bindings"):
        db.execute(
            "CREATE TABLE purplegw_bindings ("
            " aor VARCHAR(128) NOT NULL,"
            " contact_key CHAR(40) NOT NULL,"
            " contact TEXT NOT NULL,"
            f" expires_at {real} NOT NULL,"
            " call_id TEXT NOT NULL,"
            f" cseq {integer} NOT NULL,"
            " transport VARCHAR(8) NOT NULL,"
            " host VARCHAR(64) NOT NULL,"
            f" port {integer} NOT NULL,"
            " node VARCHAR(64) DEFAULT '' NOT NULL,"
            f" updated {real} NOT NULL,"
            " PRIMARY KEY (aor, contact_key)"
            + (
                ", INDEX bindings_expires_idx (expires_at), INDEX bindings_updated_idx (updated)"
                if mysql
                else ""
            )
            + suffix
        )
        if not mysql:
            db.execute("CREATE INDEX bindings_expires_idx ON purplegw_bindings (expires_at)")
            db.execute("CREATE INDEX bindings_updated_idx ON purplegw_bindings (updated)")
    if not db.table_exists("purplegw_publications"):
        db.execute(
            "CREATE TABLE purplegw_publications ("
            " etag VARCHAR(64) PRIMARY KEY NOT NULL,"
            " resource VARCHAR(128) NOT NULL,"
            " event VARCHAR(32) NOT NULL,"
            f" body {blob} NOT NULL,"
            " content_type VARCHAR(128) DEFAULT '' NOT NULL,"
            f" expires_at {real} NOT NULL,"
            " node VARCHAR(64) DEFAULT '' NOT NULL"
            + (", INDEX publications_resource_idx (resource)" if mysql else "")
            + suffix
        )
        if not mysql:
            db.execute("CREATE INDEX publications_resource_idx ON purplegw_publications (resource)")
