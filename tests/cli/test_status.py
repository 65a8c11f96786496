"""`purplegw status` against a running daemon: filters, JSON, every account listed."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors.control import select_status
from tests.kit.gateway import GatewayProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

ENTRIES = [
    {"sip_user": "alice@example.org", "protocol": "xmpp", "state": "connected"},
    {"sip_user": "alice@example.org", "protocol": "irc", "state": "worker_restarting"},
    {"sip_user": "bob@example.org", "protocol": "xmpp", "state": "bad_credentials"},
]


@pytest.mark.parametrize(
    ("states", "sip_user", "expected"),
    [
        ((), None, [0, 1, 2]),
        (("connected",), None, [0]),
        (("CONNECTED", "bad_credentials"), None, [0, 2]),
        ((), "alice@example.org", [0, 1]),
        ((), "alice", [0, 1]),  # the user part alone
        ((), "alice@example.net", []),
        (("worker_restarting",), "alice@example.org", [1]),
    ],
)
def test_select_status(states: tuple[str, ...], sip_user: str | None, expected: list[int]) -> None:
    selected = select_status(ENTRIES, states=states, sip_user=sip_user)
    assert selected == [ENTRIES[i] for i in expected]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    base = tmp_path_factory.mktemp("status")
    gateway = GatewayProcess(
        base, extra_config="[protocols.dummy]\nenabled = true\n", log_level="INFO"
    )
    gateway.cli("db", "init")
    for sip_user, ext_user in (
        ("u0@sip.test", "good0@dummy"),
        ("u1@sip.test", "badpass@dummy"),
        ("u2@sip.test", "good2@dummy"),
    ):
        gateway.cli("accounts", "add", sip_user, ext_user, "dummy", stdin="pw\n")
    gateway.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                states = {a["sip_user"]: a["state"] for a in gateway.status()}
            except RuntimeError:  # not listening yet
                states = {}
            if states == {
                "u0@sip.test": "connected",
                "u1@sip.test": "bad_credentials",
                "u2@sip.test": "connected",
            }:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"accounts not settled: {gateway.log_text()}")
        yield gateway
    finally:
        assert gateway.stop() == 0, gateway.log_text()


def _json(gateway: GatewayProcess, *args: str) -> list[dict[str, Any]]:
    return json.loads(gateway.cli("status", "--json", *args).stdout)


def test_json_lists_every_account_with_its_counters(daemon: GatewayProcess) -> None:
    entries = _json(daemon)
    assert [(e["sip_user"], e["ext_user"]) for e in entries] == [
        ("u0@sip.test", "good0@dummy"),
        ("u1@sip.test", "badpass@dummy"),
        ("u2@sip.test", "good2@dummy"),
    ]
    assert all(e["pid"] == daemon.process.pid for e in entries)  # workers = 0: the daemon's
    assert {"messages_in", "messages_out", "reconnects", "queued", "since"} <= set(entries[0])


def test_state_and_user_filters(daemon: GatewayProcess) -> None:
    assert [e["sip_user"] for e in _json(daemon, "--state", "connected")] == [
        "u0@sip.test",
        "u2@sip.test",
    ]
    assert [e["sip_user"] for e in _json(daemon, "--state", "BAD_CREDENTIALS")] == ["u1@sip.test"]
    assert [
        e["sip_user"] for e in _json(daemon, "--state", "connected", "--state", "bad_credentials")
    ] == ["u0@sip.test", "u1@sip.test", "u2@sip.test"]
    assert _json(daemon, "--state", "worker_restarting") == []
    assert [e["ext_user"] for e in _json(daemon, "--user", "sip:u2@SIP.test")] == ["good2@dummy"]
    assert _json(daemon, "--user", "u2@sip.test", "--state", "bad_credentials") == []
    table = daemon.cli("status", "--user", "u1").stdout
    assert "badpass@dummy" in table
    assert "good0@dummy" not in table


def test_an_unknown_state_is_refused_with_the_known_ones(daemon: GatewayProcess) -> None:
    with pytest.raises(RuntimeError, match="worker_restarting"):
        daemon.cli("status", "--state", "online")
