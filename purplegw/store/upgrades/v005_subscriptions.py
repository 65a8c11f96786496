"""SUBSCRIBE dialogs of SIP users watching external contacts.

A subscription is a dialog the phone expects to keep getting NOTIFYs in
until it expires; keeping it here lets a restarted gateway carry on with
the same dialog (same Call-ID, tags and next CSeq) instead of leaving the
phone's buddy list silent until its next refresh.
"""

from purplegw.store.database import Database
from purplegw.store.upgrades.registry import Tables, upgrade


@upgrade("presence subscriptions that survive a restart")
def create_subscriptions(db: Database, tables: Tables) -> None:  # noqa: ARG001
    if db.table_exists("purplegw_subscriptions"):
        return
    text, real, integer = (
        ("TEXT", "DOUBLE", "INT UNSIGNED") if db.dialect == "mysql" else ("TEXT", "REAL", "INTEGER")
    )
    columns = (
        " dialog_key CHAR(40) PRIMARY KEY NOT NULL,"
        " sip_user VARCHAR(128) NOT NULL,"
        f" account_id {integer} NOT NULL,"
        " protocol VARCHAR(16) NOT NULL,"
        " contact VARCHAR(255) NOT NULL,"
        " event_id VARCHAR(64) DEFAULT '' NOT NULL,"
        f" call_id {text} NOT NULL,"
        " local_tag VARCHAR(64) NOT NULL,"
        " remote_tag VARCHAR(255) NOT NULL,"
        f" local_uri {text} NOT NULL,"
        f" remote_uri {text} NOT NULL,"
        f" remote_target {text} NOT NULL,"
        f" route_set {text} NOT NULL,"
        f" local_contact {text} NOT NULL,"
        f" local_cseq {integer} NOT NULL,"
        f" remote_cseq {integer} NOT NULL,"
        " state VARCHAR(16) NOT NULL,"
        f" expires_at {real} NOT NULL,"
        " transport VARCHAR(8) NOT NULL,"
        " host VARCHAR(64) NOT NULL,"
        f" port {integer} NOT NULL"
    )
    if db.dialect == "mysql":
        db.execute(
            f"CREATE TABLE purplegw_subscriptions ({columns},"
            " INDEX subscriptions_user_idx (sip_user)"
            ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        )
    else:
        db.execute(f"CREATE TABLE purplegw_subscriptions ({columns})")
        db.execute("CREATE INDEX subscriptions_user_idx ON purplegw_subscriptions (sip_user)")
