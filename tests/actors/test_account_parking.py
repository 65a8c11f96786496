"""PIDF closed/open -> account logout/login: the account parks in LOGGED_OUT."""

from __future__ import annotations

from typing import Any

import pytest

from purplegw.presence import Presence, Status
from tests.actors.conftest import (  # noqa: F401 - fixtures
    adapters,
    make_accounts,
    network,
    row,
    state_of,
    wait_for,
)


@pytest.mark.parametrize("runtime", ["shared_loop", "thread_per_account"])
def test_logout_parks_the_account_and_login_brings_it_back(
    make_accounts: Any,  # noqa: F811 - the fixture imported above
    network: Any,  # noqa: F811
    runtime: str,
) -> None:
    accounts = make_accounts(runtime=runtime)
    accounts.apply([row(1)])
    wait_for(lambda: state_of(accounts, "sip1").get("state") == "connected", what="login")
    handle = accounts.directory.get("sip1", "dummy")
    assert handle.logout().get(timeout=10).status == 200
    assert state_of(accounts, "sip1")["state"] == "logged_out"
    assert "user1@dummy" not in network.online()
    assert handle.logout().get(timeout=10).reason == "already logged out"
    # Parked: no reconnect attempts.
    logins = network.logins.get("user1@dummy", 0)
    # A presence set while out is applied at the next login.
    away = Presence(Status.AWAY, "meeting")
    assert handle.set_presence(away).get(timeout=10).status == 202
    assert network.logins.get("user1@dummy", 0) == logins
    assert handle.login().get(timeout=10).status == 202
    wait_for(lambda: state_of(accounts, "sip1").get("state") == "connected", what="login again")
    wait_for(lambda: network.presences.get("user1@dummy") == away, what="presence re-applied")
    assert network.logins["user1@dummy"] == logins + 1
