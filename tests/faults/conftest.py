"""Fault cases get servers of their own: they stop and restart them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.kit.binaries import missing_peer

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def own_prosody() -> Iterator[object]:
    """A Prosody this test alone may stop, restart or kill."""
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server


@pytest.fixture(scope="session")
def prosody() -> Iterator[object]:
    """One Prosody for the fault cases that only need it to stay up."""
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server
