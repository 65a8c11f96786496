"""Real peers for the end-to-end tests: Prosody, a purplegw daemon, pjsua2 phones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kit.binaries import missing_peer


@pytest.fixture(scope="session")
def prosody() -> Iterator[object]:
    from tests.kit.prosody import Prosody, prosody_binary  # noqa: PLC0415

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server
