"""The [cluster] section: single node by default, cluster mode only on a shared MySQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from purplegw.config import load_config
from purplegw.config.loader import CLUSTER_MIN_MARGIN
from purplegw.exceptions import ConfigError
from purplegw.gateway.cluster import MIN_MARGIN, Timing

if TYPE_CHECKING:
    from pathlib import Path

MYSQL = "mysql://gw:secret@127.0.0.1:3306/purplegw"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "purplegw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return caught.value.errors


def test_defaults_are_a_single_node() -> None:
    cluster = load_config(environ={})["cluster"]
    assert cluster == {"node": "", "advertise": "", "lease_seconds": 15}


def test_cluster_mode_on_mysql(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[store]\ndb_url = "{MYSQL}"\n'
        '[cluster]\nnode = "gw-1.a"\nadvertise = "[2001:db8::5]:5060"\n'
        "lease_seconds = 30\n",
    )
    cluster = load_config(path, environ={})["cluster"]
    assert cluster == {"node": "gw-1.a", "advertise": "[2001:db8::5]:5060", "lease_seconds": 30}
    # The environment may switch a node into cluster mode too.
    plain = write(tmp_path, f'[store]\ndb_url = "{MYSQL}"\n')
    env = load_config(
        plain,
        environ={"PURPLEGW_CLUSTER__NODE": "gw2", "PURPLEGW_CLUSTER__ADVERTISE": "10.0.0.2:5060"},
    )
    assert env["cluster"]["node"] == "gw2"


def test_sqlite_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[sip]\ndomain = "example.org"\n\n[cluster]\nnode = "gw1"\nadvertise = "10.0.0.1:5060"\n',
    )
    assert errors_of(path) == [
        (
            f"{path}:5: [cluster] node: cluster mode needs a mysql:// db_url shared by every node, "
            "not SQLite (db_url is empty)"
        )
    ]
    explicit = write(
        tmp_path,
        f'[store]\ndb_url = "sqlite://{tmp_path}/x.db"\n'
        '[cluster]\nnode = "gw1"\nadvertise = "10.0.0.1:5060"\n',
    )
    assert errors_of(explicit) == [
        (
            f"{explicit}:4: [cluster] node: cluster mode needs a mysql:// db_url shared by every "
            f"node, not sqlite:// (set at {explicit}:2)"
        )
    ]


def test_advertise_is_ip_port_and_required(tmp_path: Path) -> None:
    bad = [
        "10.0.0.1",
        "gw1.example.org:5060",
        "10.0.0.1:0",
        "10.0.0.1:65536",
        "::1:5060",
        "[10.0.0.1]:5060",
        "10.0.0.1:50a",
    ]
    for value in bad:
        path = write(
            tmp_path,
            f'[store]\ndb_url = "{MYSQL}"\n[cluster]\nnode = "gw1"\nadvertise = "{value}"\n',
        )
        assert errors_of(path) == [
            (
                f"{path}:5: [cluster] advertise: {value!r} is not IP:PORT "
                '(e.g. "10.0.0.5:5060" or "[2001:db8::5]:5060")'
            )
        ], value
    missing = write(tmp_path, f'[store]\ndb_url = "{MYSQL}"\n[cluster]\nnode = "gw1"\n')
    assert errors_of(missing) == [
        (
            f"{missing}:4: [cluster] advertise: cluster mode needs the IP:PORT other nodes reach "
            "this node's SIP front at"
        )
    ]
    # Without a node name the key is only checked for form: single node, nothing needed.
    alone = write(tmp_path, '[cluster]\nadvertise = "127.0.0.1:5060"\n')
    assert load_config(alone, environ={})["cluster"]["node"] == ""


def test_node_name_and_lease_bounds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[store]\ndb_url = "{MYSQL}"\n'
        '[cluster]\nnode = "gw 1"\nadvertise = "10.0.0.1:5060"\n'
        "lease_seconds = 2\nnodes = 3\n",
    )
    assert errors_of(path) == [
        (
            f"{path}:4: [cluster] node: 'gw 1' is not a node name (letters, digits, '.', '_', '-'; "
            "at most 64)"
        ),
        f"{path}:6: [cluster] lease_seconds: 2 is below the minimum 3",
        f"{path}:7: [cluster] nodes: unknown key (did you mean 'node'?)",
    ]


def test_the_fencing_margin_covers_a_logout(tmp_path: Path) -> None:
    assert CLUSTER_MIN_MARGIN == MIN_MARGIN
    node = f'[store]\ndb_url = "{MYSQL}"\n[cluster]\nnode = "gw1"\nadvertise = "10.0.0.1:5060"\n'
    # The defaults fit exactly: 15 s leaves 5 s, the default logout_timeout.
    assert Timing.from_lease(15).margin == 5.0
    assert load_config(write(tmp_path, node), environ={})["actors"]["logout_timeout"] == 5.0
    path = write(tmp_path, node + "lease_seconds = 9\n")
    assert errors_of(path) == [
        (
            f"{path}:6: [cluster] lease_seconds: 9 leaves 3 s to log accounts out when fencing, "
            "less than [actors] logout_timeout (5 s): raise lease_seconds to 15 or lower "
            "logout_timeout"
        )
    ]
    fits = write(tmp_path, node + "lease_seconds = 9\n[actors]\nlogout_timeout = 3.0\n")
    assert load_config(fits, environ={})["cluster"]["lease_seconds"] == 9
