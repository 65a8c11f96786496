"""Fixtures shared by the whole suite.

Servers are started once per session on loopback and free ports; tests get
fresh databases/accounts inside them.  Missing servers fail under CI.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from purplegw.store import (
    AccountRepository,
    Database,
    OutboxRepository,
    PasswordCipher,
    Store,
    Tables,
    UserRepository,
)
from purplegw.store.crypto import generate_key_file
from purplegw.store.upgrades import run_upgrades
from tests.kit.binaries import missing_peer
from tests.kit.compiled import stale_compiled_modules
from tests.kit.mariadb import MariaDB, mariadb_binaries
from tests.kit.prosody import Prosody, prosody_binary
from tests.kit.tally import REPORT

if TYPE_CHECKING:
    from collections.abc import Iterator

_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    if mariadb_binaries() is None:
        missing_peer("MariaDB server", "mariadb-server")
    with MariaDB() as server:
        yield server


@pytest.fixture(scope="session")
def hashed_prosody() -> Iterator[Prosody]:
    """A Prosody that keeps SCRAM keys, not passwords (``internal_hashed``, its default).

    Its salt is fixed per account, so a client can keep the salted password.
    """
    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody(hashed=True, scram_iterations=4096) as server:
        yield server


@pytest.fixture
def mysql_url(mariadb: MariaDB) -> str:
    return mariadb.create_database(f"purplegw_test_{next(_db_names)}")


@pytest.fixture(params=["sqlite", "mysql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on the embedded default and on a real MariaDB."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'purplegw.db'}"
    return request.getfixturevalue("mysql_url")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "purplegw.key"
    generate_key_file(path)
    return path


@pytest.fixture
def accounts(db_url: str, key_file: Path) -> Iterator[AccountRepository]:
    """An upgraded, empty account table on each backend."""
    db = Database.create(db_url)
    run_upgrades(db, "purplemap")
    yield AccountRepository(db, "purplemap", PasswordCipher(key_file))
    db.close()


@pytest.fixture
def store(db_url: str, key_file: Path) -> Iterator[Store]:
    """A fully upgraded store (all repositories) on each backend."""
    db = Database.create(db_url)
    tables = Tables()
    run_upgrades(db, tables)
    yield Store(
        db=db,
        tables=tables,
        accounts=AccountRepository(db, tables.accounts, PasswordCipher(key_file)),
        users=UserRepository(db, tables.subscribers),
        outbox=OutboxRepository(db),
    )
    db.close()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse stale compiled modules; byte-compile the package and the test kit once.

    An editable install's compiled SIP core (setup.py) shadows its sources:
    run on sources edited since, the suite would test the old code.

    With PYTHONDONTWRITEBYTECODE set (as on CI) every daemon, worker and
    command would compile purplegw's sources again: 0.1-0.2 s of CPU each,
    a few hundred times.  Where the tree is read-only nothing is written.
    """
    import compileall

    root = Path(__file__).resolve().parents[1]
    stale = stale_compiled_modules(root)
    if stale:
        pytest.exit(
            f"the compiled SIP core is older than {', '.join(stale)}: rebuild it "
            "(make test does; or .venv/bin/pip install --no-deps -e .)",
            returncode=4,
        )
    for package in (root / "purplegw", root / "tests" / "kit"):
        compileall.compile_dir(package, quiet=2)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Fault tallies and fuzz counts: the numbers, not just a pass."""
    if REPORT:
        terminalreporter.section("fault tallies and fuzz counts")
        for line in REPORT:
            terminalreporter.write_line(line)
