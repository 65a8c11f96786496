"""Cluster tables: the nodes sharing this database and who owns which SIP user.

``purplegw_nodes`` holds one row per node: its name, the SIP address the
others reach it at, its state (live, draining, gone) and its last heartbeat.
``purplegw_leases`` holds one row per SIP user ever owned: the owning node
('' when free), when the lease expires and its epoch, the fencing token that
grows by one at every acquisition.  A released lease keeps its row so that
the epoch never goes back.  Times are seconds since the epoch read from the
database's clock, never from a node's (docs/cluster.md).
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("cluster: nodes with heartbeats, and per-user ownership leases")
def create_cluster_tables(db: Database, tables: Tables) -> None:  # noqa: ARG001
    mysql = db.dialect == "mysql"
    suffix = ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4" if mysql else ")"
    if not db.table_exists("purplegw_nodes"):
        db.execute(
            "CREATE TABLE purplegw_nodes ("
            " name VARCHAR(64) PRIMARY KEY NOT NULL,"
            " advertise VARCHAR(64) DEFAULT '' NOT NULL,"
            " state VARCHAR(16) DEFAULT 'live' NOT NULL,"
            f" heartbeat {'DOUBLE' if mysql else 'REAL'} NOT NULL,"
            f" started {'DOUBLE' if mysql else 'REAL'} NOT NULL" + suffix
        )
    if not db.table_exists("purplegw_leases"):
        db.execute(
            "CREATE TABLE purplegw_leases ("
            " sip_user VARCHAR(128) PRIMARY KEY NOT NULL,"
            " node VARCHAR(64) DEFAULT '' NOT NULL,"
            f" expires {'DOUBLE' if mysql else 'REAL'} DEFAULT 0 NOT NULL,"
            f" epoch {'BIGINT UNSIGNED' if mysql else 'INTEGER'} DEFAULT 0 NOT NULL,"
            f" acquired {'DOUBLE' if mysql else 'REAL'} DEFAULT 0 NOT NULL"
            + (", INDEX leases_node_idx (node, expires)" if mysql else "")
            + suffix
        )
        if not mysql:
            db.execute("CREATE INDEX leases_node_idx ON purplegw_leases (node, expires)")
