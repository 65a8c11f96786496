"""What leases cost the database: acquire, renew and release N users on a throw-away MariaDB.

    .venv/bin/python bench/cluster_leases.py --users 5000

The renew figure is the steady load of one node (docs/cluster.md, sizing):
every node renews all its users every lease_seconds / 4.  The acquire figure
is a takeover: one compare-and-set transaction per user.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from purplegw.store import Database
from purplegw.store.cluster import ClusterRepository
from purplegw.store.upgrades import run_upgrades

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.kit: the throw-away MariaDB

from tests.kit.mariadb import MariaDB  # noqa: E402


def measure(users: int, rounds: int) -> None:
    with MariaDB() as server:
        db = Database.create(server.create_database("bench_cluster"))
        run_upgrades(db, "purplemap")
        repo = ClusterRepository(db)
        names = [f"user{i:07d}@example.org" for i in range(users)]
        start = time.perf_counter()
        repo.ensure(names)
        ensure = time.perf_counter() - start
        start = time.perf_counter()
        held = {}
        for name in names:
            lease = repo.acquire(name, "gw1", 15)
            assert lease is not None
            held[name] = lease.epoch
        acquire = time.perf_counter() - start
        renews = []
        for _ in range(rounds):
            start = time.perf_counter()
            assert len(repo.renew("gw1", held, 15)) == users
            renews.append(time.perf_counter() - start)
        start = time.perf_counter()
        assert repo.release("gw1", held) == users
        release = time.perf_counter() - start
        db.close()
    renew = min(renews)
    print(
        f"| users | create rows | acquire one by one | renew all (best of {rounds}) | release all |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {users} | {ensure * 1000:.0f} ms | {acquire:.2f} s ({users / acquire:.0f}/s) "
        f"| {renew * 1000:.0f} ms ({users / renew:.0f} rows/s) | {release * 1000:.0f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    measure(args.users, args.rounds)


if __name__ == "__main__":
    main()
