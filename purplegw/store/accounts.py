"""The account table (``purplemap``): one row per external account of a SIP user.

Columns are the original module's: id, sip_user, ext_user, ext_prot, ext_pass.
``sip_user`` may be written with or without the ``sip:`` scheme (the
original's rows vary); lookups compare the normalized form.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from purplegw.exceptions import StoreError
from purplegw.protocols.base import AccountCredentials
from purplegw.store.crypto import PasswordCipher, is_encrypted
from purplegw.store.database import Database, check_identifier
from purplegw.store.upgrades import check_schema

if TYPE_CHECKING:
    import builtins  # AccountRepository.list shadows the builtin in its class body
    from collections.abc import Callable, Iterable

logger = logging.getLogger(__name__)

MAX_FIELD = 128  # the original table's VARCHAR(128)


@dataclass(frozen=True)
class AccountRow:
    """A row as stored, password left out (use ``credentials`` for it)."""

    id: int
    sip_user: str
    ext_user: str
    ext_prot: str
    password_encrypted: bool
    has_password: bool


@dataclass(frozen=True)
class NewAccount:
    sip_user: str
    ext_user: str
    ext_prot: str
    password: str = field(default="", repr=False)


def normalize_sip_user(value: str) -> str:
    """``sip:Alice@Example.org`` and ``alice@example.org`` name the same user."""
    value = value.strip()
    for scheme in ("sips:", "sip:"):
        if value.lower().startswith(scheme):
            value = value[len(scheme) :]
            break
    user, sep, host = value.partition("@")
    return f"{user}{sep}{host.lower()}"


class AccountRepository:
    def __init__(self, db: Database, table: str, cipher: PasswordCipher) -> None:
        self.db = db
        self.table = check_identifier(table)
        self.cipher = cipher

    def check(self) -> int:
        """Raise if unusable; return the number of pending schema upgrades."""
        return check_schema(self.db, self.table)

    # --- reading ---------------------------------------------------------

    def list(self) -> list[AccountRow]:
        rows = self.db.fetchall(
            f"SELECT id, sip_user, ext_user, ext_prot, ext_pass FROM {self.table} ORDER BY id"
        )
        return [
            AccountRow(int(r[0]), r[1], r[2], r[3], is_encrypted(r[4]), bool(r[4])) for r in rows
        ]

    def get(self, account_id: int) -> AccountRow | None:
        return next((row for row in self.list() if row.id == account_id), None)

    def credentials(
        self, canonical: Callable[[str], str] | None = None
    ) -> tuple[builtins.list[AccountCredentials], builtins.list[str]]:
        """Every row with its password decrypted; also the rows that cannot be used.

        ``canonical`` maps ext_prot to the adapter name (aliases resolved);
        a row it refuses is reported in the second list with its id, not
        dropped silently, so an operator sees why an account never logs in.
        """
        rows = self.db.fetchall(
            f"SELECT id, sip_user, ext_user, ext_prot, ext_pass FROM {self.table} ORDER BY id"
        )
        good: list[AccountCredentials] = []
        problems: list[str] = []
        for account_id, sip_user, ext_user, ext_prot, ext_pass in rows:
            try:
                protocol = canonical(ext_prot) if canonical else ext_prot
                password = self.cipher.decrypt(ext_pass, account_id=int(account_id))
            except Exception as exc:  # noqa: BLE001 - reported per row
                problems.append(f"account id {account_id} ({sip_user} {ext_prot}): {exc}")
                continue
            good.append(
                AccountCredentials(
                    account_id=int(account_id),
                    sip_user=normalize_sip_user(sip_user),
                    ext_user=ext_user,
                    protocol=protocol,
                    password=password,
                    original_protocol=ext_prot,
                )
            )
        return good, problems

    # --- writing ---------------------------------------------------------

    def add(self, account: NewAccount) -> int:
        return self.add_many([account])[0]

    def add_many(
        self, accounts: Iterable[NewAccount], progress: Callable[[int], None] | None = None
    ) -> builtins.list[int]:
        """Insert all rows or none (one transaction)."""
        accounts = list(accounts)
        for number, account in enumerate(accounts, start=1):
            _validate(account, number if len(accounts) > 1 else None)
        existing = {(normalize_sip_user(r.sip_user), r.ext_user, r.ext_prot) for r in self.list()}
        ids = []
        with self.db.transaction():
            for account in accounts:
                key = (normalize_sip_user(account.sip_user), account.ext_user, account.ext_prot)
                if key in existing:
                    raise StoreError(
                        f"{account.sip_user} already has {account.ext_prot} "
                        f"account {account.ext_user}"
                    )
                existing.add(key)
                secret = self.cipher.encrypt(account.password) if account.password else None
                ids.append(
                    self.db.execute(
                        f"INSERT INTO {self.table} (sip_user, ext_user, ext_prot, ext_pass) "
                        "VALUES (?, ?, ?, ?)",
                        (account.sip_user, account.ext_user, account.ext_prot, secret),
                    )
                )
                if progress:
                    progress(1)
        return ids

    def remove(self, account_id: int) -> bool:
        return self.db.execute(f"DELETE FROM {self.table} WHERE id = ?", (account_id,)) > 0

    def encrypt_plaintext(self) -> int:
        """Encrypt every legacy plaintext password; returns how many rows changed."""
        rows = self.db.fetchall(f"SELECT id, ext_pass FROM {self.table}")
        changed = 0
        with self.db.transaction():
            for account_id, ext_pass in rows:
                if ext_pass and not is_encrypted(ext_pass):
                    self.db.execute(
                        f"UPDATE {self.table} SET ext_pass = ? WHERE id = ?",
                        (self.cipher.encrypt(ext_pass), account_id),
                    )
                    changed += 1
        return changed


def _validate(account: NewAccount, row: int | None) -> None:
    where = f"row {row}: " if row is not None else ""
    for name in ("sip_user", "ext_user", "ext_prot"):
        value = getattr(account, name)
        if not value or not value.strip():
            raise StoreError(f"{where}{name} is empty")
        if len(value) > MAX_FIELD:
            raise StoreError(f"{where}{name} is longer than {MAX_FIELD} characters")
        if any(ch in value for ch in "\r\n\0"):
            raise StoreError(f"{where}{name} contains a control character")
    if "@" not in normalize_sip_user(account.sip_user):
        raise StoreError(
            f"{where}sip_user {account.sip_user!r} is not user@domain (or sip:user@domain)"
        )
