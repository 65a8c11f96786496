"""Gateways as a cluster: real processes sharing one MariaDB, accounts on a real Prosody."""

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


@pytest.fixture(scope="session")
def mariadb() -> Iterator[object]:
    from tests.kit.mariadb import MariaDB, mariadb_binaries

    if mariadb_binaries() is None:
        missing_peer("MariaDB server", "mariadb-server")
    with MariaDB() as server:
        yield server
