"""A restarted daemon logs its XMPP accounts in with the SCRAM keys it stored, deriving none.

Against a Prosody that stores SCRAM keys (``internal_hashed``): its salt is
fixed per account.  (With plaintext storage Prosody makes a new salt for each
login, so a stored key never matches and every login derives: correct, and
why the session checks the salt before using a key.)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.kit.gateway import GatewayProcess

if TYPE_CHECKING:
    from pathlib import Path


def _keys(gateway: GatewayProcess) -> dict[int, tuple[str, float]]:
    with sqlite3.connect(gateway.base / "data" / "purplegw.db") as db:
        rows = db.execute("SELECT account_id, value, updated FROM purplegw_account_keys")
        return {row[0]: (row[1], row[2]) for row in rows}


def _wait_keys(gateway: GatewayProcess, count: int, timeout: float = 15.0) -> dict[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        keys = _keys(gateway)
        if len(keys) >= count or time.monotonic() > deadline:
            return keys
        time.sleep(0.2)


@pytest.mark.parametrize("workers", [0, 2])
def test_restart_uses_stored_keys_and_derives_only_the_missing_one(
    hashed_prosody: Any, tmp_path: Path, workers: int
) -> None:
    prosody = hashed_prosody
    users = [prosody.create_user(f"keys{workers}x{i}") for i in range(3)]
    gateway = GatewayProcess(
        tmp_path, extra_config=prosody.gateway_section(keepalive=0), actors={"workers": workers}
    )
    gateway.cli("db", "init")
    for i, user in enumerate(users):
        gateway.cli(
            "accounts",
            "add",
            f"u{i}@sip.test",
            user.jid,
            "xmpp",
            "--password-stdin",
            stdin=user.password + "\n",
        )
    ids = sorted(a["id"] for a in json_status(gateway))

    gateway.start()
    try:
        gateway.wait_accounts("connected")
        first = _wait_keys(gateway, 3)
    finally:
        assert gateway.stop() == 0, gateway.log_text()
    assert sorted(first) == ids
    assert all(value.startswith("enc:v1:") for value, _ in first.values())
    for user in users:
        assert user.password not in gateway.log.read_text()

    # One key lost (as after a restore): that account alone derives it again.
    with sqlite3.connect(gateway.base / "data" / "purplegw.db") as db:
        db.execute("DELETE FROM purplegw_account_keys WHERE account_id = ?", (ids[0],))
    gateway.start()
    try:
        gateway.wait_accounts("connected")
        second = _wait_keys(gateway, 3)
        time.sleep(2.5)  # longer than the keeper's batch interval: nothing else comes
        second = _keys(gateway)
    finally:
        assert gateway.stop() == 0, gateway.log_text()
    assert sorted(second) == ids
    assert second[ids[0]][1] > first[ids[1]][1]  # derived and stored again
    for account_id in ids[1:]:
        assert second[account_id] == first[account_id]  # not rewritten: nothing was derived


def json_status(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """The account rows as `purplegw accounts list --json` shows them (daemon not running)."""
    return json.loads(gateway.cli("accounts", "list", "--json").stdout)


def test_a_killed_worker_comes_back_with_the_keys_derived_since_the_start(
    hashed_prosody: Any, tmp_path: Path
) -> None:
    prosody = hashed_prosody
    users = [prosody.create_user(f"keyskill{i}") for i in range(3)]
    gateway = GatewayProcess(
        tmp_path, extra_config=prosody.gateway_section(keepalive=0), actors={"workers": 2}
    )
    gateway.cli("db", "init")
    for i, user in enumerate(users):
        gateway.cli(
            "accounts",
            "add",
            f"u{i}@sip.test",
            user.jid,
            "xmpp",
            "--password-stdin",
            stdin=user.password + "\n",
        )
    gateway.start()
    try:
        before = {a["account_id"]: a["pid"] for a in gateway.wait_accounts("connected")}
        stored = _wait_keys(gateway, 3)  # derived in this run: none was stored at start
        victim = before[min(before)]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = {a["account_id"]: (a["pid"], a["state"]) for a in gateway.status()}
            moved = [aid for aid, pid in before.items() if pid == victim]
            if all(now[aid][0] != victim and now[aid][1] == "connected" for aid in moved):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"accounts of worker {victim} not back: {gateway.status()}")
        time.sleep(2.5)  # longer than the keeper's batch interval
        assert _keys(gateway) == stored  # the new worker derived nothing
    finally:
        assert gateway.stop() == 0, gateway.log_text()
