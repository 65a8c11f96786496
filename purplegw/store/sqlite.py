"""SQLite backend: the embedded default, ``sqlite:///absolute/path.db``."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from purplegw.exceptions import StoreError
from purplegw.store.database import Database, check_identifier, redact_url

logger = logging.getLogger(__name__)
_warned_modes: set[str] = set()  # paths already warned about: once per process


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, **_options: Any) -> None:
        super().__init__(url)
        # Everything after "sqlite://" is the path: sqlite:///var/lib/x.db is
        # absolute, sqlite://var/x.db relative to the working directory.
        path = url.split("?", 1)[0][len("sqlite://") :]
        if path.startswith("//"):
            path = path[1:]
        if path in ("/:memory:", ":memory:"):
            path = ":memory:"
        if not path or path.endswith("/"):
            raise StoreError(
                f"sqlite URL needs a file path: {redact_url(url)!r} "
                "(e.g. sqlite:///var/lib/purplegw/purplegw.db)"
            )
        self.path = path

    def connect(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._create_private()
        try:
            conn = sqlite3.connect(
                self.path, timeout=30, check_same_thread=False, isolation_level="DEFERRED"
            )
            conn.execute("PRAGMA journal_mode=WAL")  # readers never block the daemon's writes
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc
        return conn

    def _create_private(self) -> None:
        """Create the file 0600 (SQLite gives its -wal/-shm files the same mode).

        The subscriber table's HA1 values are password-equivalent for digest
        authentication: a world-readable file would let any local user act
        as any SIP user.  An existing file keeps its mode, with a warning.
        """
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(Path(self.path).stat().st_mode)
            if mode & 0o077 and self.path not in _warned_modes:
                _warned_modes.add(self.path)
                logger.warning(
                    "%s is readable by other users (mode %o): it holds password "
                    "hashes; chmod 600 it",
                    self.path,
                    mode,
                )

    def _begin(self) -> None:
        # Take the write lock first: a deferred transaction that reads, then
        # writes after another connection (the state writer thread) committed
        # fails at once with SQLITE_BUSY, whatever the busy timeout.  With
        # BEGIN IMMEDIATE it waits for the lock (timeout=30) instead.
        try:
            conn = self._connection()
            if not conn.in_transaction:
                conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot begin a transaction on {self.path}: {exc}") from exc

    def table_exists(self, name: str) -> bool:
        return bool(
            self.fetchall("SELECT name FROM sqlite_master WHERE type='table' AND name=?", (name,))
        )

    def columns(self, table: str) -> dict[str, str]:
        check_identifier(table)
        return {row[1]: str(row[2]).lower() for row in self.fetchall(f"PRAGMA table_info({table})")}
