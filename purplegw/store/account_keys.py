"""Keys derived from account passwords (``purplegw_account_keys``), encrypted like ``ext_pass``.

A cache, not a record: losing a row costs one key derivation at the next
login, so callers treat every failure here as a miss.  Rows are kept per
(account id, kind); a value says itself which password, salt and iteration
count it belongs to (the adapter checks that before using it), so a changed
password or a server that changed its salt simply misses.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from purplegw.exceptions import StoreError
from purplegw.store.database import Database, check_identifier

if TYPE_CHECKING:
    from purplegw.store.crypto import PasswordCipher

logger = logging.getLogger(__name__)


class AccountKeyRepository:
    TABLE = "purplegw_account_keys"

    def __init__(self, db: Database, cipher: PasswordCipher, accounts_table: str) -> None:
        self.db = db
        self.cipher = cipher
        self.accounts_table = check_identifier(accounts_table)

    def put(self, account_id: int, kind: str, value: str) -> None:
        """Store (or replace) one account's key of one kind."""
        self.put_many([(account_id, kind, value)])

    def put_many(self, keys: list[tuple[int, str, str]]) -> None:
        """Store (or replace) ``(account_id, kind, value)`` keys in one transaction."""
        now = time.time()
        rows = [(account_id, kind, self.cipher.encrypt(value)) for account_id, kind, value in keys]
        # One upsert per key, in key order: a DELETE of a missing row would
        # lock the gap around it, and cluster nodes writing their own accounts'
        # keys at once would deadlock each other in InnoDB.
        insert = f"INSERT INTO {self.TABLE} (account_id, kind, value, updated) VALUES (?, ?, ?, ?) "
        if self.db.dialect == "mysql":
            upsert = (
                insert + "ON DUPLICATE KEY UPDATE value = VALUES(value), updated = VALUES(updated)"
            )
        else:
            upsert = insert + (
                "ON CONFLICT (account_id, kind) DO UPDATE SET "
                "value = excluded.value, updated = excluded.updated"
            )
        with self.db.transaction():
            for account_id, kind, secret in sorted(rows):
                self.db.execute(upsert, (account_id, kind, secret, now))

    def load(self) -> dict[int, dict[str, str]]:
        """Every stored key, decrypted: ``{account_id: {kind: value}}``.

        A value that cannot be decrypted (rotated-out key) is skipped: the
        account derives its key again and the row is replaced.
        """
        keys: dict[int, dict[str, str]] = {}
        for account_id, kind, value in self.db.fetchall(
            f"SELECT account_id, kind, value FROM {self.TABLE}"
        ):
            try:
                plain = self.cipher.decrypt(value, account_id=int(account_id))
            except StoreError as exc:
                logger.info("Derived key %s of account %s ignored: %s", kind, account_id, exc)
                continue
            keys.setdefault(int(account_id), {})[kind] = plain
        return keys

    def prune(self) -> int:
        """Delete the keys of accounts that no longer exist; how many rows went."""
        return self.db.execute(
            f"DELETE FROM {self.TABLE} WHERE account_id NOT IN "
            f"(SELECT id FROM {self.accounts_table})"
        )
