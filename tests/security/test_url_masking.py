"""A database password with ``@`` and ``/`` in it never shows, wherever the URL is printed.

The rule (purplegw/redact.py): the user stays, everything from the ``:``
after it to the *last* ``@`` is masked, and the store reads the URL by the
same rule, so it connects with the whole password and its errors name the
real host, not a piece of the password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.exceptions import StoreError
from purplegw.redact import MASK, mask_url
from purplegw.store.database import Database
from tests.kit.gateway import GatewayProcess
from tests.kit.ports import free_port
from tests.security.conftest import set_config

if TYPE_CHECKING:
    from pathlib import Path

    from tests.kit.mariadb import MariaDB

# Each piece would leak on its own under a rule that stops at the first "@" or "/".
PIECES = ("pA-front7", "pB-middle8", "pC-tail9")
PASSWORD = f"{PIECES[0]}@{PIECES[1]}/{PIECES[2]}"


def leaked(text: str) -> list[str]:
    return [piece for piece in PIECES if piece in text]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://kam:p@ss/w@rd@db1/kamailio", f"mysql://kam:{MASK}@db1/kamailio"),
        (
            "mysql://kam:s3cr3t@127.0.0.1:3306/openser?ssl=off",
            f"mysql://kam:{MASK}@127.0.0.1:3306/openser?ssl=off",
        ),
        ("mysql://kam:a:b/c@db1/x", f"mysql://kam:{MASK}@db1/x"),
        ("mysql://:pw@db1/x", f"mysql://:{MASK}@db1/x"),
        # no password: nothing to hide
        ("mysql://kam@db1/x", "mysql://kam@db1/x"),
        ("sqlite:///var/lib/purplegw/purplegw.db", "sqlite:///var/lib/purplegw/purplegw.db"),
        # malformed (no //): from the first ":" on, whatever it is, up to the last "@"
        ("mysql:kam:pw@db1/x", f"mysql:{MASK}@db1/x"),
        ("kam:pw@db1", f"kam:{MASK}@db1"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_the_store_reads_the_password_mask_url_hides() -> None:
    url = f"mysql://dbuser:{PASSWORD}@127.0.0.1:3306/gw"
    db = Database.create(url)
    parts = db.parts  # type: ignore[attr-defined]
    assert (parts["user"], parts["password"]) == ("dbuser", PASSWORD)
    assert (parts["host"], parts["port"], parts["path"]) == ("127.0.0.1", 3306, "/gw")
    assert mask_url(url) == f"mysql://dbuser:{MASK}@127.0.0.1:3306/gw"


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://dbuser:{PASSWORD}@127.0.0.1:port/gw",  # the port does not parse
        f"mysql:dbuser:{PASSWORD}@127.0.0.1/gw",  # no //
        f"mysql://dbuser:{PASSWORD}@[::1/gw",  # broken IPv6 literal
        f"mysqlx://dbuser:{PASSWORD}@127.0.0.1/gw",  # unknown scheme
    ],
)
def test_url_errors_do_not_echo_the_password(url: str) -> None:
    with pytest.raises(StoreError) as error:
        Database.create(url)
    assert MASK in str(error.value)
    assert not leaked(str(error.value))
    assert error.value.__cause__ is None or not leaked(str(error.value.__cause__))


def _outputs(gateway: GatewayProcess, *commands: tuple[str, ...]) -> str:
    outputs = []
    for args in commands:
        try:
            result = gateway.cli(*args)
            outputs.append(result.stdout + result.stderr)
        except RuntimeError as exc:  # the error an operator sees
            outputs.append(str(exc))
    return "\n".join(outputs)


def test_config_check_and_connect_errors(tmp_path: Path) -> None:
    port = free_port("tcp")  # nothing listens there
    gateway = GatewayProcess(tmp_path)
    set_config(gateway, store={"db_url": f"mysql://dbuser:{PASSWORD}@127.0.0.1:{port}/gw"})
    text = _outputs(
        gateway,
        ("config", "check"),
        ("config", "check", "--json"),
        ("-vv", "accounts", "list"),
        ("-vv", "db", "init"),
    )
    assert f'db_url = "mysql://dbuser:{MASK}@127.0.0.1:{port}/gw"' in text
    assert f'"db_url": "mysql://dbuser:{MASK}@127.0.0.1:{port}/gw"' in text
    # The connection was tried at the real host, and refused there.
    assert f"cannot connect to mysql://dbuser:{MASK}@127.0.0.1:{port}/gw" in text
    assert not leaked(text), text


def test_a_password_with_at_and_slash_works_and_stays_hidden(
    mariadb: MariaDB, tmp_path: Path
) -> None:
    database = "purplegw_security_urlmask"
    mariadb.create_database(database)
    mariadb.execute(
        database,
        "DROP USER IF EXISTS 'urlmask'@'%'",
        f"CREATE USER 'urlmask'@'%' IDENTIFIED BY '{PASSWORD}'",
        f"GRANT ALL ON `{database}`.* TO 'urlmask'@'%'",
    )
    url = f"mysql://urlmask:{PASSWORD}@127.0.0.1:{mariadb.port}/{database}"
    gateway = GatewayProcess(tmp_path)
    set_config(gateway, store={"db_url": url})
    result = gateway.cli("-vv", "db", "init")
    text = result.stdout + result.stderr
    assert f"store: mysql://urlmask:{MASK}@127.0.0.1:{mariadb.port}/{database}" in text
    assert not leaked(text), text
