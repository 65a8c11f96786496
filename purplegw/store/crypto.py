"""Encryption of external account passwords at rest.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with the key in a
file outside the database, so a copied database or a leaked dump does not
leak the users' IM passwords.  Encrypted values carry a prefix; a value
without it is a legacy plaintext row from the original module, still read
as is and converted by ``purplegw db upgrade``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from purplegw.exceptions import StoreError

PREFIX = "enc:v1:"


def generate_key_file(path: Path) -> bool:
    """Create a new key file (mode 0600); False if one already exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(Fernet.generate_key() + b"\n")
    return True


class PasswordCipher:
    """Encrypts and decrypts ``ext_pass`` values.

    The key file may hold several keys, one per line, newest first: values
    are encrypted with the first and decrypted with any (key rotation).
    ``key_file`` missing is allowed: plaintext rows stay readable, and
    anything that needs the key says where it was looked for.
    """

    def __init__(self, key_file: Path) -> None:
        self.key_file = Path(key_file)
        self._fernet: MultiFernet | None = None
        if self.key_file.exists():
            self._fernet = self._load()

    def _load(self) -> MultiFernet:
        try:
            lines = [ln.strip() for ln in self.key_file.read_bytes().splitlines() if ln.strip()]
            return MultiFernet([Fernet(line) for line in lines])
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.key_file}: not a valid purplegw key file: {exc}") from exc

    @property
    def has_key(self) -> bool:
        return self._fernet is not None

    def _require(self) -> MultiFernet:
        if self._fernet is None:
            raise StoreError(
                f"no password key at {self.key_file}: run `purplegw db init` "
                "(or set [store] key_file)"
            )
        return self._fernet

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._require().encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str | None, *, account_id: int | None = None) -> str:
        if not stored:
            return ""
        if not is_encrypted(stored):
            return stored  # legacy plaintext row
        try:
            return self._require().decrypt(stored[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            row = f" of account id {account_id}" if account_id is not None else ""
            raise StoreError(
                f"cannot decrypt the password{row} with {self.key_file}: wrong or rotated-out key"
            ) from None


def is_encrypted(stored: str | None) -> bool:
    return bool(stored) and stored.startswith(PREFIX)  # type: ignore[union-attr]
