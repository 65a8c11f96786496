"""SIP users of standalone mode (Kamailio ``subscriber`` layout).

HA1 values are what digest authentication needs: MD5(user:realm:password)
in ``ha1`` and MD5(user@domain:realm:password) in ``ha1b``, as Kamailio's
kamctl writes them.  The plaintext ``password`` column stays empty unless
asked for: it is only needed for SHA-256 digest (RFC 8760), for which
Kamailio's table has no HA1 column.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from purplegw.exceptions import StoreError
from purplegw.store.database import Database, check_identifier

_USERNAME_RE = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,64}$")  # RFC 3261 user chars
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,64}$")


@dataclass(frozen=True)
class SipUser:
    id: int
    username: str
    domain: str
    ha1: str = field(repr=False)
    password: str = field(default="", repr=False)

    @property
    def aor(self) -> str:
        return f"{self.username}@{self.domain}"


def md5_ha1(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode(), usedforsecurity=False).hexdigest()


class UserRepository:
    def __init__(self, db: Database, table: str = "subscriber") -> None:
        self.db = db
        self.table = check_identifier(table)

    def add(
        self, username: str, domain: str, password: str, *, keep_plaintext: bool = False
    ) -> int:
        if not _USERNAME_RE.match(username):
            raise StoreError(f"invalid SIP username {username!r}")
        if not _DOMAIN_RE.match(domain):
            raise StoreError(f"invalid SIP domain {domain!r}")
        if not password:
            raise StoreError("empty password")
        if self.get(username, domain) is not None:
            raise StoreError(f"SIP user {username}@{domain} already exists")
        return self.db.execute(
            f"INSERT INTO {self.table} (username, domain, password, ha1, ha1b) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                username,
                domain,
                password if keep_plaintext else "",
                md5_ha1(username, domain, password),
                md5_ha1(f"{username}@{domain}", domain, password),
            ),
        )

    def get(self, username: str, domain: str) -> SipUser | None:
        row = self.db.fetchone(
            f"SELECT id, username, domain, ha1, password FROM {self.table} "
            "WHERE username = ? AND domain = ?",
            (username, domain.lower()),
        )
        if row is None:
            return None
        user = SipUser(int(row[0]), row[1], row[2], row[3] or "", row[4] or "")
        if not user.ha1 and user.password:  # kamctl with STORE_PLAINTEXT_PW and no ha1
            user = SipUser(
                user.id,
                user.username,
                user.domain,
                md5_ha1(user.username, user.domain, user.password),
                user.password,
            )
        return user

    def list(self) -> list[SipUser]:
        rows = self.db.fetchall(
            f"SELECT id, username, domain, ha1, password FROM {self.table} "
            "ORDER BY domain, username"
        )
        return [SipUser(int(r[0]), r[1], r[2], r[3] or "", r[4] or "") for r in rows]

    def remove(self, username: str, domain: str) -> bool:
        return (
            self.db.execute(
                f"DELETE FROM {self.table} WHERE username = ? AND domain = ?",
                (username, domain.lower()),
            )
            > 0
        )
