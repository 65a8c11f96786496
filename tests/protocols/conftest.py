"""Real IM servers for the protocol adapter tests (loopback, free ports)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.kit.binaries import missing_peer
from tests.kit.ngircd import Ngircd, ngircd_binary
from tests.kit.tinyproxy import tinyproxy_binary

from .xmpp_harness import LoopThread

if TYPE_CHECKING:
    from collections.abc import Iterator


def require_ngircd() -> None:
    if ngircd_binary() is None:
        missing_peer("ngIRCd", "ngircd")


def require_tinyproxy() -> None:
    if tinyproxy_binary() is None:
        missing_peer("tinyproxy", "tinyproxy")


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """An asyncio loop in its own thread, as the account actors' shared loop (one per module)."""
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def ngircd() -> Iterator[Ngircd]:
    """One ngIRCd for the session: plaintext port plus a TLS port, no password."""
    require_ngircd()
    with Ngircd(tls=True) as server:
        yield server


@pytest.fixture(scope="session")
def ngircd_password() -> Iterator[Ngircd]:
    """An ngIRCd that requires the server password ``letmein``."""
    require_ngircd()
    with Ngircd(password="letmein") as server:
        yield server


# --- XMPP ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def prosody():
    """One Prosody for the session (STARTTLS with a self-signed cert, smacks)."""
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server
