"""Persistence: URL-dispatched database, migrations, one repository per aggregate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from purplegw.store.accounts import AccountRepository, AccountRow, NewAccount
from purplegw.store.crypto import PasswordCipher
from purplegw.store.database import Database

if TYPE_CHECKING:
    from purplegw.config import Config

__all__ = ["AccountRepository", "AccountRow", "Database", "NewAccount", "PasswordCipher",
           "open_store"]


def open_store(config: Config) -> AccountRepository:
    """The account repository for a loaded config (connection opened lazily)."""
    db = Database.create(config.db_url, connect_timeout=config["store"]["connect_timeout"])
    return AccountRepository(db, config["store"]["db_table"], PasswordCipher(config.key_file))
