"""A throw-away MariaDB server on loopback for tests.

    server = MariaDB().start()        # temp datadir, free port, runs as root
    url = server.create_database("t")  # mysql://purplegw:...@127.0.0.1:PORT/t
    server.stop()                      # stop(); start() again keeps the data

Start-up takes about a second (mariadb-install-db plus the server).  The
server is started with --no-defaults so nothing from /etc/mysql applies.
Without ``base_dir`` the server lives in RAM (/dev/shm when there is one): a
test's database plus the store upgrades then take ~0.1 s instead of ~1 s of
fsyncs on a busy disk.  A process kill still loses nothing InnoDB committed;
benchmarks that measure the disk pass a ``base_dir`` of their own.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from tests.kit.certs import write_self_signed_cert
from tests.kit.ports import free_port

logger = logging.getLogger(__name__)

USER = "purplegw"
PASSWORD = "purplegw-test-pw"


def mariadb_binaries() -> tuple[str, str] | None:
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/libexec")
    install = shutil.which("mariadb-install-db")
    return (server, install) if server and install else None


def _fast_tmp() -> str | None:
    """The RAM-backed temp dir when usable (every commit and DDL statement fsyncs)."""
    shm = Path("/dev/shm")  # mkdtemp makes a private dir in it
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm)
    return None


_template: Path | None = None


def _install(install_bin: str, data_dir: Path) -> None:
    subprocess.run(
        [
            install_bin,
            "--no-defaults",
            f"--datadir={data_dir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--user=root",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _installed_data_dir(install_bin: str) -> Path:
    """A fresh data directory made once per process, copied by every new server (~1 s each)."""
    global _template  # noqa: PLW0603 - one template per test process
    if _template is None:
        base = Path(tempfile.mkdtemp(prefix="purplegw-mariadb-template-", dir=_fast_tmp()))
        atexit.register(shutil.rmtree, base, ignore_errors=True)
        _install(install_bin, base / "data")
        _template = base / "data"
    return _template


class MariaDB:
    """``tls=True``: the server also speaks TLS with a self-signed certificate
    for 127.0.0.1/localhost (``cert_file``: trust it as the CA)."""

    def __init__(self, base_dir: Path | None = None, *, tls: bool = False) -> None:
        binaries = mariadb_binaries()
        if binaries is None:
            raise FileNotFoundError(
                "mariadbd / mariadb-install-db not found (Debian: mariadb-server)"
            )
        self.server_bin, self.install_bin = binaries
        self._own_dir = base_dir is None
        self.base_dir = Path(
            base_dir or tempfile.mkdtemp(prefix="purplegw-mariadb-", dir=_fast_tmp())
        )
        self.data_dir = self.base_dir / "data"
        self.port = free_port("tcp")
        self.process: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.cert_file = self.base_dir / "server.crt"
        self.key_file = self.base_dir / "server.key"

    def start(self, timeout: float = 30.0) -> MariaDB:
        if not (self.data_dir / "mysql").exists():
            shutil.copytree(_installed_data_dir(self.install_bin), self.data_dir)
        tls_args: list[str] = []
        if self.tls:
            if not self.cert_file.exists():
                write_self_signed_cert(self.cert_file, self.key_file, "127.0.0.1")
            tls_args = [f"--ssl-cert={self.cert_file}", f"--ssl-key={self.key_file}"]
        self.process = subprocess.Popen(  # our own arguments
            [
                self.server_bin,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                *tls_args,
                f"--socket={self.base_dir / 'mysqld.sock'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--skip-name-resolve",
                f"--pid-file={self.base_dir / 'mysqld.pid'}",
                f"--log-error={self.base_dir / 'error.log'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(timeout)
        self._root_sql(
            f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'",
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'",
        )
        return self

    def _wait_ready(self, timeout: float) -> None:
        import pymysql

        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self.process.returncode}):\n{self.log()}")
            try:
                pymysql.connect(
                    host="127.0.0.1", port=self.port, user="root", password="", connect_timeout=1
                ).close()
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"mariadbd not ready after {timeout}s:\n{self.log()}"
                    ) from None
                time.sleep(0.1)
            else:
                return

    def _root_sql(self, *statements: str) -> None:
        import pymysql

        conn = pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", password="", autocommit=True
        )
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """A fresh, empty database; returns its mysql:// URL for the test user."""
        self._root_sql(
            f"DROP DATABASE IF EXISTS `{name}`", f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
        )
        return self.url(name)

    def url(self, database: str) -> str:
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def execute(self, database: str, *statements: str) -> None:
        """Run statements as root in ``database`` (to build legacy tables etc.)."""
        self._root_sql(f"USE `{database}`", *statements)

    def log(self) -> str:
        try:
            return (self.base_dir / "error.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
