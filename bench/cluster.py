"""Three cluster nodes on one MariaDB: takeover of a third of N accounts, and the database load.

    .venv/bin/python bench/cluster.py [--accounts 3000] [--lease 15] [--window 30]

N accounts on a real Prosody (SCRAM keys stored, 4096 iterations), the
account table on a throw-away MariaDB, three ``purplegw run`` nodes gw1..gw3
on loopback.  Measured, in this order:

* steady state: the database's statements per second (MariaDB's global
  ``Questions`` counter over ``--window`` seconds, all three nodes idle but
  renewing), per node and per 1,000 accounts;
* SIGKILL of gw3: seconds until every account gw3 ran is connected on gw1 or
  gw2, from the kill to the last of them connected (each account's status
  says when it connected); the lease expiry is most of it;
* gw3 starting again (join): seconds until its share is back on it;
* SIGTERM of gw3 (drain): the same takeover without waiting for expiry;
* the reference, in the same command: one single-node daemon (no cluster)
  logging in the same accounts (gw3's share) from a cold start, with the
  SCRAM keys the cluster stored for them (as the takers had them).

"login phase" is first to last login of the moved accounts: the part a
takeover shares with the reference's logins.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pymysql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purplegw.actors.control import ControlError, query_status  # noqa: E402
from tests.kit.gateway import GatewayProcess  # noqa: E402
from tests.kit.mariadb import PASSWORD, USER, MariaDB  # noqa: E402
from tests.kit.prosody import Prosody  # noqa: E402

POLL = 0.5
NODES = ("gw1", "gw2", "gw3")


class Bench:
    def __init__(self, base: Path, accounts: int, lease: int) -> None:
        self.base = base
        self.accounts = accounts
        self.lease = lease
        self.mariadb = MariaDB(base / "mariadb").start()
        self.prosody = Prosody(hashed=True, scram_iterations=4096).start()
        self.users = self.prosody.create_users(accounts, prefix=f"b{uuid.uuid4().hex[:4]}")
        self.key_file = base / "shared.key"
        self.nodes: dict[str, GatewayProcess] = {}

    def gateway(self, name: str, database: str, *, cluster: bool) -> GatewayProcess:
        extra = self.prosody.gateway_section(keepalive=0)
        if cluster:
            extra += f'\n[cluster]\nnode = "{name}"\nlease_seconds = {self.lease}\n'
        (self.base / name).mkdir()
        gateway = GatewayProcess(self.base / name, extra_config=extra, log_level="INFO")
        text = gateway.config.read_text().replace(
            "[store]\n",
            f'[store]\ndb_url = "{self.mariadb.url(database)}"\nkey_file = "{self.key_file}"\n',
            1,
        )
        if cluster:
            text = text.replace(
                "[cluster]\n", f'[cluster]\nadvertise = "127.0.0.1:{gateway.port}"\n', 1
            )
        gateway.config.write_text(text)
        return gateway

    def import_rows(self, gateway: GatewayProcess, indexes: list[int]) -> None:
        table = gateway.base / "accounts.csv"
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sip_user", "ext_user", "ext_prot", "ext_pass"])
            for i in indexes:
                user = self.users[i]
                writer.writerow([f"u{i:05d}@sip.test", user.jid, "xmpp", user.password])
        gateway.cli("db", "init")
        gateway.cli("accounts", "import", str(table))

    def sql(self, database: str, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.mariadb.port,
            user=USER,
            password=PASSWORD,
            database=database,
            autocommit=True,
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(query, params)
                return list(cursor.fetchall())
        finally:
            conn.close()


def connected(gateways: list[GatewayProcess]) -> dict[str, float]:
    """sip user -> when its account connected, over the gateways that answer."""
    found: dict[str, float] = {}
    for gateway in gateways:
        try:
            entries = query_status(gateway.base / "data" / "purplegw.sock", timeout=30)
        except (ControlError, OSError):
            continue
        for entry in entries:
            if entry.get("state") == "connected":
                found[entry["sip_user"]] = float(entry["since"])
    return found


def wait_connected(
    gateways: list[GatewayProcess], users: set[str], timeout: float
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = connected(gateways)
        if users <= set(found):
            return {u: found[u] for u in users}
        time.sleep(POLL)
    missing = len(users - set(connected(gateways)))
    raise TimeoutError(f"{missing} of {len(users)} accounts not connected after {timeout}s")


def questions(bench: Bench, database: str) -> int:
    rows = bench.sql(database, "SHOW GLOBAL STATUS LIKE 'Questions'")
    return int(rows[0][1])


def run(bench: Bench, window: float, timeout: float) -> list[tuple[str, ...]]:  # noqa: PLR0915 - the scenario in order
    database = "bench_cluster"
    bench.mariadb.create_database(database)
    nodes = {name: bench.gateway(name, database, cluster=True) for name in NODES}
    bench.import_rows(nodes["gw1"], list(range(bench.accounts)))
    everyone = {f"u{i:05d}@sip.test" for i in range(bench.accounts)}
    rows: list[tuple[str, ...]] = []
    try:
        for node in nodes.values():
            node.start()
        wait_connected(list(nodes.values()), everyone, timeout)

        # Steady state: renewals and heartbeats only.
        time.sleep(bench.lease / 2)
        before, started = questions(bench, database), time.monotonic()
        time.sleep(window)
        rate = (questions(bench, database) - before - 1) / (time.monotonic() - started)
        per_node = rate / len(NODES)
        per_1000 = per_node / (bench.accounts / len(NODES) / 1000)
        rows.append(
            (
                "steady state, database statements",
                f"{rate:.0f}/s in all",
                f"{per_node:.0f}/s per node",
                f"{per_1000:.1f}/s per node per 1,000 accounts",
                "",
            )
        )

        victims = {
            str(r[0])
            for r in bench.sql(database, "SELECT sip_user FROM purplegw_leases WHERE node = 'gw3'")
        }
        survivors = [nodes["gw1"], nodes["gw2"]]
        process = nodes["gw3"].process
        assert process is not None
        killed = time.time()
        process.send_signal(signal.SIGKILL)
        process.wait(60)
        nodes["gw3"].process = None
        times = wait_connected(survivors, victims, timeout)
        rows.append(takeover_row("SIGKILL gw3: takeover", victims, times, killed))

        joined = time.time()
        nodes["gw3"].start()
        share = set(victims)
        times = wait_connected([nodes["gw3"]], share, timeout)
        rows.append(takeover_row("gw3 joins: its share back", share, times, joined))

        drained = time.time()
        assert nodes["gw3"].stop(timeout=120) == 0
        times = wait_connected(survivors, victims, timeout)
        rows.append(takeover_row("SIGTERM gw3 (drain): takeover", victims, times, drained))
    finally:
        for node in nodes.values():
            if node.process is not None:
                node.stop(timeout=120)

    # The reference: the same accounts, one plain daemon, cold start, with
    # the same stored SCRAM keys as the takers had (copied with the rows).
    reference_db = "bench_reference"
    bench.mariadb.create_database(reference_db)
    single = bench.gateway("single", reference_db, cluster=False)
    single.cli("db", "init")
    marks = ", ".join(["%s"] * len(victims))
    bench.sql(
        reference_db,
        f"INSERT INTO purplemap SELECT * FROM {database}.purplemap WHERE sip_user IN ({marks})",  # noqa: S608 - our own names, values bound
        sorted(victims),
    )
    bench.sql(
        reference_db,
        f"INSERT INTO purplegw_account_keys SELECT * FROM {database}.purplegw_account_keys "  # noqa: S608 - our own name
        "WHERE account_id IN (SELECT id FROM purplemap)",
    )
    started = time.time()
    single.start()
    try:
        times = wait_connected([single], victims, timeout)
    finally:
        single.stop(timeout=120)
    rows.append(takeover_row("reference: one node, cold start", victims, times, started))
    return rows


def takeover_row(case: str, users: set[str], times: dict[str, float], t0: float) -> tuple[str, ...]:
    first, last = min(times.values()), max(times.values())
    phase = last - first
    return (
        case,
        f"{len(users)} accounts",
        f"{last - t0:.1f} s",
        f"login phase {phase:.2f} s",
        f"{len(users) / max(phase, 1e-3):.0f} logins/s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=3000, help="N, up to 10,000")
    parser.add_argument("--lease", type=int, default=15, help="[cluster] lease_seconds")
    parser.add_argument("--window", type=float, default=30.0, help="steady-state seconds")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the nodes' logs (path printed)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="purplegw-bench-cluster-")
    try:
        bench = Bench(Path(tmp), args.accounts, args.lease)
        try:
            rows = run(bench, args.window, args.timeout)
        finally:
            bench.prosody.cleanup()
            bench.mariadb.cleanup()
    finally:
        if args.keep:
            print(f"logs kept in {tmp}/*/gateway.log")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nN = {args.accounts} accounts on 3 nodes, lease_seconds = {args.lease}\n")
    print("| case | moved | from the event to the last login | login phase | rate |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    reference = float(rows[-1][3].split()[2])
    for row in rows[1:-1]:
        phase = float(row[3].split()[2])
        print(f"{row[0]}: login phase {phase / max(reference, 1e-3):.2f}x the reference's")


if __name__ == "__main__":
    main()
