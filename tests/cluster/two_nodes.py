"""Two purplegw daemons sharing one real MariaDB, for the forwarding tests.

Each node is a real ``purplegw run`` with ``[cluster] node`` and
``advertise`` set.  The node heartbeats and the user's lease are written by
the test itself (``Cluster``), as the cluster runtime does; until that
runtime decides who logs in, both nodes log the user's XMPP account in, each
with its own resource (``gw1``/``gw2``), so the contact sees which node sent
a message or a presence.
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import tomli_w

from purplegw.store import Database
from purplegw.store.cluster import ClusterRepository
from tests.e2e.deployment import SIP_PASSWORD
from tests.kit.gateway import GatewayProcess
from tests.kit.xmpp_peer import XmppPeer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

USER = "alice@sip.test"
NAMES = ("gw1", "gw2")


@dataclass
class Cluster:
    """Writes what the cluster runtime writes: heartbeats, and the user's lease."""

    db_url: str
    nodes: dict[str, GatewayProcess]
    db: Database = field(init=False)
    repo: ClusterRepository = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.db = Database.create(self.db_url)
        self.repo = ClusterRepository(self.db)

    def advertise(self, name: str) -> str:
        return f"127.0.0.1:{self.nodes[name].port}"

    def start_heartbeats(self) -> None:
        def beat() -> None:
            while not self._stop.wait(1.0):
                self._beat()

        self._beat()
        self._thread = threading.Thread(target=beat, daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        for name in self.nodes:
            self.repo.heartbeat(name, self.advertise(name))

    def give(self, sip_user: str, name: str) -> None:
        """``name`` holds ``sip_user``'s lease (for longer than the test)."""
        self.db.execute(
            "UPDATE purplegw_leases SET node = '', expires = 0 WHERE sip_user = ?", (sip_user,)
        )
        assert self.repo.acquire(sip_user, name, 600) is not None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.db.close()


def configure(node: GatewayProcess, name: str, db_url: str) -> None:
    config = tomllib.loads(node.config.read_text())
    config["store"]["db_url"] = db_url
    config["cluster"] = {"node": name, "advertise": f"127.0.0.1:{node.port}"}
    node.config.write_text(tomli_w.dumps(config))


def two_nodes(
    prosody: Any, mariadb: Any, tmp_path: Path, *, sip: dict[str, Any] | None = None
) -> Iterator[dict[str, Any]]:
    """Yields {"nodes", "cluster", "account", "bob", "peer"}; both daemons must exit 0."""
    tag = tmp_path.name[-8:].replace("_", "").lower()
    account = prosody.create_user(f"calice{tag}")
    bob = prosody.create_user(f"cbob{tag}")
    db_url = mariadb.create_database(f"cluster_{tag}")
    nodes: dict[str, GatewayProcess] = {}
    for name in NAMES:
        base = tmp_path / name
        base.mkdir()
        nodes[name] = GatewayProcess(
            base, extra_config=prosody.gateway_section(resource=name), sip=sip
        )
        configure(nodes[name], name, db_url)
    first = nodes[NAMES[0]]
    first.cli("db", "init")
    first.cli("users", "add", USER, "--password-stdin", stdin=SIP_PASSWORD + "\n")
    first.cli(
        "accounts",
        "add",
        USER,
        account.jid,
        "xmpp",
        "--password-stdin",
        stdin=account.password + "\n",
    )
    for name in NAMES[1:]:
        # The key file encrypts the account passwords: the same on every node.
        (nodes[name].base / "data").mkdir(exist_ok=True)
        key = first.base / "data" / "purplegw.key"
        (nodes[name].base / "data" / "purplegw.key").write_bytes(key.read_bytes())
        (nodes[name].base / "data" / "purplegw.key").chmod(0o600)
    cluster = Cluster(db_url, nodes)
    cluster.start_heartbeats()
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_accounts("connected")
        peer.start()
        yield {"nodes": nodes, "cluster": cluster, "account": account, "bob": bob, "peer": peer}
    finally:
        peer.stop()
        codes = {name: node.stop() for name, node in nodes.items()}
        cluster.stop()
        assert codes == dict.fromkeys(NAMES, 0), {n: nodes[n].log_text() for n in NAMES}
