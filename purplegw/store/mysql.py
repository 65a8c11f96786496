"""MySQL/MariaDB backend through PyMySQL: ``mysql://user:pass@host:port/db``.

Query options: ``charset`` (default utf8mb4), ``unix_socket``.  The
original module's default URL was mysql://openserro:openserro@localhost/openser.
"""

from __future__ import annotations

from typing import Any

from purplegw.exceptions import StoreError
from purplegw.store.database import Database, check_identifier, redact_url, split_url

# PyMySQL error codes that mean "the connection is gone" (CR_SERVER_GONE_ERROR,
# CR_SERVER_LOST, ER_SERVER_SHUTDOWN, CR_CONN_HOST_ERROR...).
_DISCONNECT_CODES = {2003, 2006, 2013, 2055, 1053, 4031}


@Database.register("mysql", "mariadb", "mysql+pymysql")
class MysqlDatabase(Database):
    dialect = "mysql"
    placeholder = "%s"

    def __init__(self, url: str, *, connect_timeout: int = 5, **_options: Any) -> None:
        super().__init__(url)
        self.parts = split_url(url)
        if not self.parts["path"].strip("/"):
            raise StoreError(f"MySQL URL needs a database name: {redact_url(url)!r}")
        self.connect_timeout = connect_timeout

    def connect(self) -> Any:
        try:
            import pymysql  # noqa: PLC0415 - optional driver, imported when used
        except ImportError as exc:
            raise StoreError("db_url is mysql:// but PyMySQL is not installed: "
                             "pip install PyMySQL") from exc
        p = self.parts
        try:
            return pymysql.connect(
                host=p["host"] or "localhost",
                port=p["port"] or 3306,
                user=p["user"] or "",
                password=p["password"] or "",
                database=p["path"].strip("/"),
                charset=p["query"].get("charset", "utf8mb4"),
                unix_socket=p["query"].get("unix_socket"),
                connect_timeout=self.connect_timeout,
                autocommit=False,
            )
        except pymysql.err.MySQLError as exc:
            raise StoreError(f"cannot connect to {redact_url(self.url)}: {exc}") from exc

    def _is_disconnect(self, exc: Exception) -> bool:
        import pymysql  # noqa: PLC0415

        if isinstance(exc, pymysql.err.InterfaceError):
            return True
        return bool(isinstance(exc, pymysql.err.OperationalError)
                    and exc.args and exc.args[0] in _DISCONNECT_CODES)

    def table_exists(self, name: str) -> bool:
        return bool(self.fetchall(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = DATABASE() AND table_name = ?", (name,)))

    def columns(self, table: str) -> dict[str, str]:
        check_identifier(table)
        return {
            str(row[0]): str(row[1]).lower()
            for row in self.fetchall(
                "SELECT column_name, column_type FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = ?", (table,))
        }
