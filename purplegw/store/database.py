"""URL-dispatched database access (mautrix's async_db idea, synchronous).

``Database.create("sqlite:///path")`` or ``Database.create("mysql://...")``.
SQL is written once with ``?`` placeholders and rewritten per dialect.
Every call holds the connection's lock: the DB-API connections of both
drivers must not be shared between threads, and the gateway's store traffic
is light (account rows, queued messages) so one serialized connection per
process is enough and keeps transactions simple.
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from purplegw import metrics
from purplegw.exceptions import StoreError
from purplegw.redact import mask_url

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

logger = logging.getLogger(__name__)

# The one URL masking rule (purplegw.redact), under the name the store modules import.
redact_url = mask_url

_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_identifier(name: str, what: str = "table name") -> str:
    """Table names come from config; refuse anything that is not a bare identifier."""
    if not _IDENTIFIER_RE.match(name):
        raise StoreError(f"invalid {what} {name!r}: letters, digits and _ only, at most 64")
    return name


class Database:
    """A database connection behind a lock.  Subclasses fill in the dialect."""

    schemes: ClassVar[dict[str, type[Database]]] = {}
    dialect: ClassVar[str] = ""
    placeholder: ClassVar[str] = "?"

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.RLock()
        self._conn: Any = None
        self._depth = 0

    # --- construction --------------------------------------------------

    @classmethod
    def create(cls, url: str, **options: Any) -> Database:
        """The backend registered for ``url``'s scheme (see ``purplegw/store/__init__.py``)."""
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        backend = cls.schemes.get(scheme)
        if backend is None:
            known = ", ".join(f"{s}://" for s in sorted(cls.schemes))
            raise StoreError(
                f"unsupported db_url scheme {scheme!r} in {redact_url(url)!r}; use one of {known}"
            )
        return backend(url, **options)

    # --- connection ----------------------------------------------------

    def connect(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.connect()
        return self._conn

    # --- queries --------------------------------------------------------

    def rewrite(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all (nestable)."""
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._begin()
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._rollback()
                raise
            self._depth -= 1
            if self._depth == 0:
                try:
                    self._commit()
                except StoreError:
                    # A failed COMMIT (deferred constraint, lost connection) may leave
                    # the transaction open; the next statement must not join it.
                    self._rollback()
                    raise

    def _begin(self) -> None:
        """Start the outermost transaction; backends that need it explicitly override."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns lastrowid for INSERTs, else rowcount."""
        with self._lock:
            cursor = self._run(sql, params)
            result = cursor.lastrowid if sql.lstrip()[:6].upper() == "INSERT" else cursor.rowcount
            cursor.close()
            if self._depth == 0:
                self._commit()
            return int(result or 0)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._run(sql, params)
            rows = [tuple(row) for row in cursor.fetchall()]
            cursor.close()
            if self._depth == 0:
                self._commit()  # ends the read snapshot (MySQL REPEATABLE READ)
            return rows

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.fetchall(sql, params)
        return rows[0] if rows else None

    def table_exists(self, name: str) -> bool:
        raise NotImplementedError

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> declared type (lower case) of an existing table."""
        raise NotImplementedError

    def _run(self, sql: str, params: Sequence[Any]) -> Any:
        try:
            cursor = self._connection().cursor()
            cursor.execute(self.rewrite(sql), tuple(params))
        except StoreError:
            raise
        except Exception as exc:
            if self._is_disconnect(exc) and self._depth == 0:
                # A MySQL server restart or idle timeout: reconnect once and retry,
                # outside transactions only (a retried half-transaction would lie).
                logger.warning("Database connection lost (%s); reconnecting", exc)
                self._conn = None
                try:
                    cursor = self._connection().cursor()
                    cursor.execute(self.rewrite(sql), tuple(params))
                except Exception as retry_exc:
                    raise self._wrap(retry_exc) from retry_exc
                return cursor
            raise self._wrap(exc) from exc
        return cursor

    def _is_disconnect(self, exc: Exception) -> bool:  # noqa: ARG002 - subclasses decide from the error; the base never reconnects
        return False

    def _wrap(self, exc: Exception) -> StoreError:
        metrics.store_error(self.dialect)
        return StoreError(f"{self.dialect} error on {redact_url(self.url)}: {exc}")

    def _commit(self) -> None:
        if self._conn is not None:
            try:
                self._conn.commit()
            except Exception as exc:
                raise self._wrap(exc) from exc

    def _rollback(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            except Exception:  # the original error is the one to report
                logger.exception("rollback failed")
                self._conn = None


def split_url(url: str) -> dict[str, Any]:
    """scheme://user:password@host:port/path?query into parts (decoded).

    The credentials end at the *last* ``@`` (``purplegw.redact`` masks by the
    same rule), so a password with a raw ``@`` or ``/`` is read whole instead
    of leaking its tail into the host name of a connection error.
    """
    scheme, slashes, rest = url.partition("://")
    userinfo, at, location = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    try:
        parts = urlsplit(f"{scheme}://{location}")
        port = parts.port
    except ValueError:
        parts = None
    if not slashes or parts is None:
        # Not the exception's text: it may quote a piece of the password.
        raise StoreError(
            f"cannot parse db_url {redact_url(url)!r}: expected "
            "scheme://user:password@host:port/database"
        )
    return {
        "scheme": parts.scheme,
        "user": unquote(user) if at and user else None,
        "password": unquote(password) if at and colon else None,
        "host": parts.hostname,
        "port": port,
        "path": unquote(parts.path),
        "query": {k: v[-1] for k, v in parse_qs(parts.query).items()},
    }
