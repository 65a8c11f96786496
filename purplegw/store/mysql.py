"""MySQL/MariaDB backend through PyMySQL: ``mysql://user:pass@host:port/db``.

Query options: ``charset`` (default utf8mb4), ``unix_socket``, and TLS:

* ``ssl=verify``: TLS required, the server's certificate and host name
  verified against the system CAs, or against ``ssl_ca=/path/ca.pem``;
* ``ssl=off``: no TLS;
* neither: ``ssl_ca`` alone means ``verify``; otherwise a server on a
  loopback address or a Unix socket is reached without TLS (nothing to
  protect there) and any other host with ``verify``.

There is no "TLS without verification": PyMySQL's own default tries TLS and
accepts any certificate, which protects from nobody.  The original module's
default URL was mysql://openserro:openserro@localhost/openser.
"""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any

from purplegw.exceptions import StoreError
from purplegw.store.database import Database, check_identifier, redact_url, split_url

# PyMySQL error codes that mean "the connection is gone" (CR_SERVER_GONE_ERROR,
# CR_SERVER_LOST, ER_SERVER_SHUTDOWN, CR_CONN_HOST_ERROR...).
_DISCONNECT_CODES = {2003, 2006, 2013, 2055, 1053, 4031}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MysqlDatabase(Database):
    dialect = "mysql"
    placeholder = "%s"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: int = 5,
        read_timeout: float | None = None,
        **_options: Any,
    ) -> None:
        super().__init__(url)
        self.parts = split_url(url)
        if not self.parts["path"].strip("/"):
            raise StoreError(f"MySQL URL needs a database name: {redact_url(url)!r}")
        self.connect_timeout = connect_timeout
        # Seconds a read or write on the socket may block (None: no limit).  A
        # cluster node sets it so that a database that stops answering fails
        # its renewals instead of hanging them.
        self.read_timeout = read_timeout

    def connect(self) -> Any:
        try:
            import pymysql  # noqa: PLC0415 - optional driver, imported when used
        except ImportError as exc:
            raise StoreError(
                "db_url is mysql:// but PyMySQL is not installed: pip install PyMySQL"
            ) from exc
        p = self.parts
        context = self.tls_context()
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
                read_timeout=self.read_timeout,
                write_timeout=self.read_timeout,
                autocommit=False,
                ssl=context,
                ssl_disabled=context is None,
            )
        except pymysql.err.MySQLError as exc:
            hint = ""
            if context is not None and "doesn't support" in str(exc):
                hint = " (the server has no TLS: add ssl=off to db_url to connect without it)"
            raise StoreError(f"cannot connect to {redact_url(self.url)}: {exc}{hint}") from exc

    def tls_context(self) -> ssl.SSLContext | None:
        """The verifying TLS context the URL asks for, or None for no TLS (module docstring)."""
        query, host = self.parts["query"], self.parts["host"] or "localhost"
        mode = query.get("ssl", "").lower()
        if mode not in ("", "off", "verify"):
            msg = f"db_url: ssl must be 'verify' or 'off', not {mode!r}"
            raise StoreError(msg)
        ca_file = query.get("ssl_ca") or None
        if mode == "off":
            return None
        if not mode and not ca_file and (query.get("unix_socket") or _is_loopback(host)):
            return None
        try:
            # CERT_REQUIRED and check_hostname: verification is not optional.
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            msg = f"db_url: cannot read ssl_ca {ca_file!r}: {exc}"
            raise StoreError(msg) from exc

    def _is_disconnect(self, exc: Exception) -> bool:
        import pymysql  # noqa: PLC0415

        if isinstance(exc, pymysql.err.InterfaceError):
            return True
        return bool(
            isinstance(exc, pymysql.err.OperationalError)
            and exc.args
            and exc.args[0] in _DISCONNECT_CODES
        )

    def table_exists(self, name: str) -> bool:
        return bool(
            self.fetchall(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = ?",
                (name,),
            )
        )

    def columns(self, table: str) -> dict[str, str]:
        check_identifier(table)
        return {
            str(row[0]): str(row[1]).lower()
            for row in self.fetchall(
                "SELECT column_name, column_type FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = ?",
                (table,),
            )
        }
