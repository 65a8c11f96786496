"""Numbered schema upgrades and the version table.

Rule 1: an upgrade is never edited once released; a fix is a new upgrade.
Rule 2: version N means upgrades 1..N have run; the code knows LATEST.
Rule 3: a database whose version is above LATEST was upgraded by a newer
        purplegw; refuse it rather than corrupt it (SchemaTooNewError).
Rule 4: an existing ``purplemap`` without a version table is the original
        module's (version 0): readable as is, upgraded by ``db upgrade``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from purplegw.exceptions import SchemaTooNewError, StoreError
from purplegw.store.upgrades.registry import UPGRADES, Tables, Upgrade, upgrade

if TYPE_CHECKING:
    from purplegw.store.database import Database

logger = logging.getLogger(__name__)

VERSION_TABLE = "purplegw_version"

__all__ = [
    "UPGRADES",
    "VERSION_TABLE",
    "Tables",
    "Upgrade",
    "check_schema",
    "current_version",
    "latest_version",
    "run_upgrades",
    "upgrade",
]


def _tables(tables: Tables | str) -> Tables:
    return Tables(accounts=tables) if isinstance(tables, str) else tables


def latest_version() -> int:
    return len(UPGRADES)


def current_version(db: Database) -> int:
    if not db.table_exists(VERSION_TABLE):
        return 0
    row = db.fetchone(f"SELECT version FROM {VERSION_TABLE}")
    return int(row[0]) if row else 0


def check_schema(db: Database, tables: Tables | str) -> int:
    """Raise if the code cannot use this database; return pending upgrade count."""
    table = _tables(tables).accounts
    version = current_version(db)
    if version > latest_version():
        raise SchemaTooNewError(
            f"database schema version {version} is newer than this purplegw supports "
            f"({latest_version()}): upgrade purplegw, do not downgrade the database"
        )
    if not db.table_exists(table):
        raise StoreError(f"account table {table!r} does not exist: run `purplegw db init`")
    return latest_version() - version


def run_upgrades(db: Database, tables: Tables | str) -> list[str]:
    """Apply pending upgrades in order, each in its own transaction; return what ran."""
    tables = _tables(tables)
    version = current_version(db)
    if version > latest_version():
        check_schema(db, tables)
    done = []
    if not db.table_exists(VERSION_TABLE):
        db.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER NOT NULL)")
        db.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (0)")
    for number, (description, func) in enumerate(UPGRADES, start=1):
        if number <= version:
            continue
        logger.info("Upgrading database schema to version %d: %s", number, description)
        # MySQL commits DDL implicitly; each step is written to be re-runnable
        # so an interrupted upgrade can simply be started again.
        with db.transaction():
            func(db, tables)
            db.execute(f"UPDATE {VERSION_TABLE} SET version = ?", (number,))
        done.append(f"{number}: {description}")
    return done


from purplegw.store.upgrades import (  # noqa: E402, F401 - registers them, in order
    v001_purplemap,
    v002_wide_passwords,
    v003_subscriber,
    v004_outbox,
    v005_subscriptions,
    v006_sendq,
    v007_account_keys,
    v008_kamailio_versions,
    v009_dead_letters,
    v010_cluster,
    v011_shared_state,
    v012_room_marks,
    v013_message_receipts,
)
