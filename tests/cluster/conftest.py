"""A cluster's peers: the session's MariaDB (tests/conftest.py) and one Prosody for all cases."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.kit.binaries import missing_peer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def prosody() -> Iterator[object]:
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server


@pytest.fixture
def own_mariadb() -> Iterator[object]:
    """A MariaDB this test alone stops and starts again (same data, same port)."""
    from tests.kit.mariadb import MariaDB, mariadb_binaries

    if mariadb_binaries() is None:
        missing_peer("MariaDB server", "mariadb-server")
    with MariaDB() as server:
        yield server
