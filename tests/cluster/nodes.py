"""Several ``purplegw run`` processes sharing one database: a cluster on loopback.

Every node gets its own data directory, SIP port, pid file and control
socket, and shares the database (``db_url``) and the key file that encrypts
the accounts' passwords.  The account table is filled once, through the
first node's CLI; every node reads it.
"""

from __future__ import annotations

import csv
import random
import signal
import socket
import subprocess
import time
import tomllib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
import tomli_w

from purplegw.actors.control import ControlError, query_status
from purplegw.gateway.cluster import owner
from tests.kit.gateway import GatewayProcess
from tests.kit.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tests.kit.mariadb import MariaDB

POLL = 0.1


def quiet_port() -> int:
    """A loopback port free for UDP and TCP, below the kernel's ephemeral range.

    A port from the ephemeral range (``free_port``) can be taken by any
    outgoing connection on the machine in the seconds before the node binds
    it; a node restarted in a test binds its port again much later still.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port("both")
    for _ in range(200):
        port = random.randrange(10_000, low)  # noqa: S311 - not a secret
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    return free_port("both")


class Node(GatewayProcess):
    def __init__(
        self,
        base: Path,
        name: str,
        *,
        extra_config: str,
        store: dict[str, Any],
        sip: dict[str, Any] | None = None,
        actors: dict[str, Any] | None = None,
    ) -> None:
        base.mkdir(parents=True, exist_ok=True)
        actors = {"logout_timeout": 1.0, **(actors or {})}
        super().__init__(base, extra_config=extra_config, sip=sip, actors=actors)
        self.name = name
        self.port = quiet_port()
        config = tomllib.loads(self.config.read_text())
        config["sip"]["listen"] = [f"udp:127.0.0.1:{self.port}", f"tcp:127.0.0.1:{self.port}"]
        config["store"].update(store)
        config["cluster"]["advertise"] = f"127.0.0.1:{self.port}"
        self.config.write_text(tomli_w.dumps(config))
        self.socket = base / "data" / "purplegw.sock"

    def accounts(self) -> list[dict[str, Any]]:
        """This node's accounts (the control socket: no CLI process per look)."""
        return query_status(self.socket, timeout=10)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """Nodes named gw1, gw2... on one MariaDB database, accounts on one Prosody."""

    def __init__(
        self,
        base: Path,
        mariadb: MariaDB,
        prosody: Any,
        *,
        lease_seconds: int = 6,
        sip: dict[str, Any] | None = None,
    ) -> None:
        self.sip = sip  # [sip] keys of every node
        self.base = base
        self.mariadb = mariadb
        self.prosody = prosody
        self.database = f"cluster_{uuid.uuid4().hex[:8]}"
        self.db_url = mariadb.create_database(self.database)
        self.lease_seconds = lease_seconds
        self.key_file = base / "shared.key"
        self.nodes: dict[str, Node] = {}
        self.users: list[str] = []
        self.jids: dict[str, str] = {}  # sip user -> its XMPP account

    def node(
        self, name: str, *, db_url: str | None = None, resource: str | None = None, **actors: Any
    ) -> Node:
        """``resource``: the node's XMPP resource; ``actors``: more ``[actors]`` keys."""
        cluster = {"node": name, "lease_seconds": self.lease_seconds}
        xmpp = {"resource": resource} if resource else {}
        extra = self.prosody.gateway_section(**xmpp) + "\n" + tomli_w.dumps({"cluster": cluster})
        store = {"db_url": db_url or self.db_url, "key_file": str(self.key_file)}
        node = Node(
            self.base / name, name, extra_config=extra, store=store, sip=self.sip, actors=actors
        )
        self.nodes[name] = node
        return node

    def add_accounts(self, first: Node, count: int, prefix: str) -> None:
        """``count`` SIP users, one XMPP account each, through ``first``'s CLI.

        The SIP user names depend on ``prefix`` alone, so where the rule puts
        them is the same in every run (each test checks its spread once).
        """
        tag = uuid.uuid4().hex[:6]
        xmpp = self.prosody.create_users(count, prefix=f"c{tag}u")
        table = self.base / "accounts.csv"
        with table.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["sip_user", "ext_user", "ext_prot", "ext_pass"])
            for i, user in enumerate(xmpp):
                sip_user = f"{prefix}{i:02d}@sip.test"
                writer.writerow([sip_user, user.jid, "xmpp", user.password])
                self.users.append(sip_user)
                self.jids[sip_user] = user.jid
        first.cli("db", "init")
        first.cli("accounts", "import", str(table))

    def start(self, *names: str) -> list[Node]:
        return [self.nodes[name].start() for name in names]  # type: ignore[misc]

    def stop(self) -> dict[str, int]:
        """SIGTERM to every node at once: they drain side by side, no node takes another's users.

        The exit codes of the nodes that were still running.
        """
        codes: dict[str, int] = {}
        running = [node for node in self.nodes.values() if node.alive()]
        for node in running:
            assert node.process is not None
            node.process.send_signal(signal.SIGTERM)
        for node in self.nodes.values():
            if node.process is None:
                continue
            try:
                codes[node.name] = node.process.wait(30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                codes[node.name] = node.process.wait()
            node.process = None
        return codes

    # --- looking at it ----------------------------------------------------------

    def expected(self, names: Iterable[str]) -> dict[str, str]:
        """Where every user should be with these nodes live (the rendezvous rule)."""
        live = sorted(names)
        return {user: owner(user, live) or "" for user in self.users}

    def placement(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """sip user -> [(node, account status)] over the running nodes."""
        found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for name, node in self.nodes.items():
            if not node.alive():
                continue
            for entry in node.accounts():
                found.setdefault(entry["sip_user"], []).append((name, entry))
        return found

    def wait_placed(
        self, names: Iterable[str], timeout: float = 90.0
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """Every user connected on exactly the node the rule gives; sip user -> (node, status)."""
        want = self.expected(names)
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(f"{node.name} exited:\n{node.log_text()}")
            try:
                last = self.placement()
            except (OSError, ControlError):
                last = None  # a node still starting: no control socket yet
            if (
                last is not None
                and set(last) == set(want)
                and all(
                    len(at) == 1 and at[0][0] == want[user] and at[0][1]["state"] == "connected"
                    for user, at in last.items()
                )
            ):
                return {user: at[0] for user, at in last.items()}
            time.sleep(POLL)
        logs = "\n".join(f"--- {n.name}\n{n.log_text()}" for n in self.nodes.values())
        raise TimeoutError(f"not placed as {want} after {timeout}s: {last}\n{logs}")

    # --- the database, read directly -------------------------------------------------

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        from tests.kit.mariadb import PASSWORD, USER

        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.mariadb.port,
            user=USER,
            password=PASSWORD,
            database=self.database,
            autocommit=True,
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(query, params)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def db_now(self) -> float:
        rows = self.sql(
            "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) / 1000000"
        )
        return float(rows[0][0])

    def leases(self) -> dict[str, tuple[str, float, int, float]]:
        """sip user -> (node, expires, epoch, acquired), database times."""
        rows = self.sql("SELECT sip_user, node, expires, epoch, acquired FROM purplegw_leases")
        return {r[0]: (r[1], float(r[2]), int(r[3]), float(r[4])) for r in rows}


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(POLL)
    raise TimeoutError(f"{what}: not after {timeout}s")
