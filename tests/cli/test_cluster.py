"""`purplegw cluster status`, run as an operator runs it, on SQLite and MariaDB, no daemon."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from purplegw.config import load_config
from purplegw.store import NewAccount, open_store
from tests.cli.test_cli import config, purplegw  # noqa: F401 - the parametrized config fixture

if TYPE_CHECKING:
    from pathlib import Path


def test_status_lists_nodes_users_accounts_and_state(config: Path) -> None:  # noqa: F811
    empty = purplegw(config, "cluster", "status", "--json")
    assert empty.returncode == 0, empty.stderr
    assert json.loads(empty.stdout) == []

    store = open_store(load_config(config, environ={}))
    try:
        for user, protocols in (
            ("alice@sip.test", ("xmpp", "irc")),
            ("bob@sip.test", ("xmpp",)),
            ("carol@sip.test", ("xmpp",)),
        ):
            for protocol in protocols:
                ext_user = f"{user.split('@')[0]}@im.test"
                store.accounts.add(NewAccount(user, ext_user, protocol, "pw"))
        cluster = store.cluster
        cluster.heartbeat("gw1", "127.0.0.1:5060")
        cluster.heartbeat("gw2", "127.0.0.2:5060")
        cluster.heartbeat("gw3", "127.0.0.3:5060")
        assert cluster.acquire("alice@sip.test", "gw1", 15) is not None
        assert cluster.acquire("bob@sip.test", "gw1", 15) is not None
        assert cluster.acquire("carol@sip.test", "gw2", 15) is not None
        # gw2 died a minute ago (its lease on carol ran out); gw3 is draining.
        store.db.execute("UPDATE purplegw_nodes SET heartbeat = heartbeat - 60 WHERE name = 'gw2'")
        store.db.execute(
            "UPDATE purplegw_leases SET expires = expires - 60 WHERE sip_user = 'carol@sip.test'"
        )
        cluster.heartbeat("gw3", "127.0.0.3:5060", "draining")  # type: ignore[arg-type]
    finally:
        store.close()

    listed = purplegw(config, "cluster", "status", "--json")
    assert listed.returncode == 0, listed.stderr
    nodes = {n["name"]: n for n in json.loads(listed.stdout)}
    assert [(n["advertise"], n["users"], n["accounts"], n["state"]) for n in nodes.values()] == [
        ("127.0.0.1:5060", 2, 3, "live"),
        ("127.0.0.2:5060", 0, 0, "lost"),
        ("127.0.0.3:5060", 0, 0, "draining"),
    ]
    assert nodes["gw2"]["age"] > 59
    assert nodes["gw1"]["heartbeat"] > nodes["gw2"]["heartbeat"]

    table = purplegw(config, "cluster", "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "NODE",
        "ADDRESS",
        "LAST",
        "HEARTBEAT",
        "AGE",
        "USERS",
        "ACCOUNTS",
        "STATE",
    ]
    assert lines[1].split()[:2] == ["gw1", "127.0.0.1:5060"]
    assert lines[1].split()[-3:] == ["2", "3", "live"]
    assert lines[2].split()[-1] == "lost"


def test_cluster_mode_on_sqlite_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "purplegw.toml"
    path.write_text(
        f'[store]\ndata_dir = "{tmp_path}"\n\n'
        '[cluster]\nnode = "gw1"\nadvertise = "127.0.0.1:5060"\n'
    )
    result = purplegw(path, "cluster", "status")
    assert result.returncode == 78
    assert (
        f"{path}:5: [cluster] node: cluster mode needs a mysql:// db_url shared by every "
        "node, not SQLite (db_url is empty)"
    ) in result.stderr
    assert result.stdout == ""
