"""Fixtures for the actor runtime tests: dummy network, recording sink, runtimes."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pykka
import pytest

from purplegw.actors import listener
from purplegw.actors.state import ActorsConfig
from purplegw.actors.supervisor import LocalAccounts
from purplegw.protocols.base import AccountCredentials
from purplegw.protocols.dummy import NETWORK
from purplegw.protocols.loader import load_adapters

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# Short timings so that backoff, timeouts and flapping play out in seconds.
FAST = {
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "login_timeout": 0.5,
    "send_timeout": 0.5,
    "logout_timeout": 0.5,
    "shutdown_timeout": 20.0,
    "flap_attempts": 1000,
    "worker_restart_delay": 0.2,
}


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``condition`` until it is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.02)


def row(
    n: int, ext_user: str | None = None, password: str = "pw", sip_user: str | None = None
) -> AccountCredentials:
    return AccountCredentials(
        account_id=n,
        sip_user=sip_user or f"sip{n}",
        ext_user=ext_user or f"user{n}@dummy",
        protocol="dummy",
        password=password,
        original_protocol="dummy",
    )


class Recorder(listener.EventSink):
    """Plain sink recording every event as (event, kwargs)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def on_event(self, event: str, **kwargs: Any) -> None:
        with self._lock:
            self.events.append((event, kwargs))

    def of(self, event: str, sip_user: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                kw
                for name, kw in self.events
                if name == event and (sip_user is None or kw["account"].sip_user == sip_user)
            ]

    def messages_to(self, sip_user: str) -> list[tuple[str, str]]:
        return [(kw["contact"], kw["text"]) for kw in self.of("on_message", sip_user)]


@pytest.fixture
def network() -> Iterator[Any]:
    NETWORK.reset()
    yield NETWORK
    NETWORK.reset()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    sink = Recorder()
    listener.add_sink(sink)
    yield sink
    listener.remove_sink(sink)


@pytest.fixture
def adapters() -> Any:
    # The dummy adapter is off by default in production; these tests turn it on.
    return load_adapters({"dummy": {"enabled": True}}, check_environment=False)


@pytest.fixture
def make_accounts(network: Any, adapters: Any) -> Iterator[Callable[..., LocalAccounts]]:
    started: list[LocalAccounts] = []

    def make(protocols: dict[str, Any] | None = None, **overrides: Any) -> LocalAccounts:
        config = ActorsConfig.from_section({**FAST, **overrides})
        accounts = LocalAccounts(config, adapters, protocols or {"dummy": {}})
        started.append(accounts)
        return accounts

    yield make
    for accounts in started:
        accounts.stop()
    pykka.ActorRegistry.stop_all()


def state_of(accounts: Any, sip_user: str) -> dict[str, Any]:
    for entry in accounts.status():
        if entry["sip_user"] == sip_user:
            return entry
    return {}


@pytest.fixture(scope="session")
def prosody() -> Iterator[Any]:
    """One Prosody for the actor tests (STARTTLS, self-signed certificate)."""
    from tests.kit.binaries import missing_peer
    from tests.kit.prosody import Prosody, prosody_binary

    if prosody_binary() is None:
        missing_peer("Prosody", "prosody")
    with Prosody() as server:
        yield server
