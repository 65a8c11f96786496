"""The MySQL/MariaDB store over TLS: verified or not at all.

A MariaDB that speaks TLS with a self-signed certificate: trusted through
``ssl_ca`` the connection is encrypted; with the system CAs it is refused,
and the error names the server and the reason.  PyMySQL's own default would
have encrypted without checking who answers.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import pytest

from purplegw.exceptions import StoreError
from purplegw.store import Database
from purplegw.store.mysql import MysqlDatabase
from tests.kit.binaries import missing_peer
from tests.kit.mariadb import MariaDB, mariadb_binaries

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def tls_mariadb() -> Iterator[MariaDB]:
    if mariadb_binaries() is None:
        missing_peer("MariaDB server", "mariadb-server")
    with MariaDB(tls=True) as server:
        yield server


def cipher(url: str) -> str:
    db = Database.create(url)
    try:
        rows = db.fetchall("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        return str(rows[0][1]) if rows else ""
    finally:
        db.close()


def test_trusted_ca_gives_an_encrypted_verified_connection(tls_mariadb: MariaDB) -> None:
    url = tls_mariadb.create_database("tls_ok")
    assert cipher(f"{url}?ssl_ca={tls_mariadb.cert_file}")
    assert cipher(f"{url}?ssl=verify&ssl_ca={tls_mariadb.cert_file}")


def test_untrusted_certificate_is_refused_naming_host_and_reason(tls_mariadb: MariaDB) -> None:
    url = tls_mariadb.create_database("tls_untrusted")
    with pytest.raises(StoreError) as caught:
        cipher(f"{url}?ssl=verify")  # the system CAs do not know this server
    text = str(caught.value)
    assert f"127.0.0.1:{tls_mariadb.port}" in text
    assert "certificate verify failed" in text
    assert "purplegw-test-pw" not in text  # the URL's password stays masked


def test_loopback_without_options_stays_plaintext_and_ssl_off_is_explicit(
    tls_mariadb: MariaDB,
) -> None:
    url = tls_mariadb.create_database("tls_plain")
    assert cipher(url) == ""
    assert cipher(f"{url}?ssl=off") == ""


def test_verify_against_a_server_without_tls_says_how_to_opt_out(mariadb: MariaDB) -> None:
    url = mariadb.create_database("no_tls")
    with pytest.raises(StoreError, match="add ssl=off"):
        cipher(f"{url}?ssl=verify")


@pytest.mark.parametrize(
    ("url", "verified"),
    [
        ("mysql://u:p@db.example.net/gw", True),  # a remote host: verified TLS by default
        ("mysql://u:p@10.0.0.5:3306/gw?ssl_ca=/etc/ssl/certs/ca-certificates.crt", True),
        ("mysql://u:p@db.example.net/gw?ssl=off", False),
        ("mysql://u:p@localhost/gw", False),
        ("mysql://u:p@127.0.0.1/gw", False),
        ("mysql://u:p@[::1]/gw", False),
        ("mysql://u:p@db.example.net/gw?unix_socket=/run/mysqld/mysqld.sock", False),
    ],
)
def test_tls_decision(url: str, verified: bool) -> None:
    context = MysqlDatabase(url).tls_context()
    if not verified:
        assert context is None
        return
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_unknown_ssl_mode_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="ssl must be 'verify' or 'off', not 'maybe'"):
        MysqlDatabase("mysql://u:p@db.example.net/gw?ssl=maybe").tls_context()
