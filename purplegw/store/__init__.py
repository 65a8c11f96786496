"""Persistence: URL-dispatched database, migrations, one repository per aggregate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from purplegw.store.account_keys import AccountKeyRepository
from purplegw.store.accounts import AccountRepository, AccountRow, NewAccount
from purplegw.store.bindings import BindingRepository, StoredBinding
from purplegw.store.cluster import ClusterRepository
from purplegw.store.crypto import PasswordCipher
from purplegw.store.database import Database
from purplegw.store.dead_letters import DeadLetterRepository
from purplegw.store.mysql import MysqlDatabase
from purplegw.store.outbox import OutboxRepository
from purplegw.store.owners import OwnerRepository
from purplegw.store.publications import PublicationRepository, StoredPublication
from purplegw.store.room_marks import RoomMarkRepository
from purplegw.store.sendq import SendQueueRepository
from purplegw.store.sqlite import SqliteDatabase
from purplegw.store.subscriptions import StoredSubscription, SubscriptionRepository
from purplegw.store.upgrades import Tables, check_schema, run_upgrades
from purplegw.store.users import UserRepository

if TYPE_CHECKING:
    from purplegw.config import Config

__all__ = [
    "AccountKeyRepository",
    "AccountRepository",
    "AccountRow",
    "BindingRepository",
    "Database",
    "DeadLetterRepository",
    "NewAccount",
    "OutboxRepository",
    "OwnerRepository",
    "PasswordCipher",
    "PublicationRepository",
    "SendQueueRepository",
    "Store",
    "StoredBinding",
    "StoredPublication",
    "StoredSubscription",
    "SubscriptionRepository",
    "Tables",
    "UserRepository",
    "open_store",
]

# The backends by db_url scheme, as mautrix's ``Database.schemes``: every
# import of the store runs this, so ``Database.create`` finds them; each
# backend imports its driver only when it connects (PyMySQL is optional).
Database.schemes.update(
    {
        "sqlite": SqliteDatabase,
        "mysql": MysqlDatabase,
        "mariadb": MysqlDatabase,
        "mysql+pymysql": MysqlDatabase,
    }
)


@dataclass
class Store:
    """One database and its repositories."""

    db: Database
    tables: Tables
    accounts: AccountRepository
    users: UserRepository
    outbox: OutboxRepository
    # Defaulted so that code building a Store by hand keeps working.
    subscriptions: SubscriptionRepository = field(default=None)  # type: ignore[assignment]
    sendq: SendQueueRepository = field(default=None)  # type: ignore[assignment]
    account_keys: AccountKeyRepository = field(default=None)  # type: ignore[assignment]
    dead_letters: DeadLetterRepository = field(default=None)  # type: ignore[assignment]
    cluster: ClusterRepository = field(default=None)  # type: ignore[assignment]
    bindings: BindingRepository = field(default=None)  # type: ignore[assignment]
    publications: PublicationRepository = field(default=None)  # type: ignore[assignment]
    owners: OwnerRepository = field(default=None)  # type: ignore[assignment]
    room_marks: RoomMarkRepository = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.subscriptions is None:
            self.subscriptions = SubscriptionRepository(self.db)
        if self.sendq is None:
            self.sendq = SendQueueRepository(self.db)
        if self.account_keys is None:
            self.account_keys = AccountKeyRepository(
                self.db, self.accounts.cipher, self.tables.accounts
            )
        if self.dead_letters is None:
            self.dead_letters = DeadLetterRepository(self.db)
        if self.cluster is None:
            self.cluster = ClusterRepository(self.db)
        if self.bindings is None:
            self.bindings = BindingRepository(self.db)
        if self.publications is None:
            self.publications = PublicationRepository(self.db)
        if self.owners is None:
            self.owners = OwnerRepository(self.db)
        if self.room_marks is None:
            self.room_marks = RoomMarkRepository(self.db)

    def check(self) -> int:
        """Raise if unusable (schema too new, no account table); return pending upgrades."""
        return check_schema(self.db, self.tables)

    def upgrade(self) -> list[str]:
        return run_upgrades(self.db, self.tables)

    def close(self) -> None:
        self.db.close()


def open_store(config: Config) -> Store:
    """The store for a loaded config (the connection opens on first use)."""
    section = config["store"]
    db = Database.create(config.db_url, connect_timeout=section["connect_timeout"])
    tables = Tables(accounts=section["db_table"], subscribers=section["subscriber_table"])
    return Store(
        db=db,
        tables=tables,
        accounts=AccountRepository(db, tables.accounts, PasswordCipher(config.key_file)),
        users=UserRepository(db, tables.subscribers),
        outbox=OutboxRepository(db),
    )
