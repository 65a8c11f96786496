"""Cluster nodes and leases on SQLite and on a real MariaDB: heartbeats, the lease rules, races."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from purplegw.store import Database, Store
from purplegw.store.cluster import ClusterRepository, Lease, NodeState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ALICE = "alice@example.org"
BOB = "bob@example.org"


def backdate(store: Store, sip_user: str, seconds: float) -> None:
    """Make a lease expire ``seconds`` ago, as if that much time had passed."""
    store.db.execute(
        "UPDATE purplegw_leases SET expires = ? WHERE sip_user = ?",
        (store.cluster.now() - seconds, sip_user),
    )


def test_database_clock_and_tables(store: Store) -> None:
    now = store.cluster.now()
    # The same machine: the database clock agrees with ours to well within a second.
    assert abs(now - time.time()) < 1.0
    assert {"name", "advertise", "state", "heartbeat", "started"} <= set(
        store.db.columns("purplegw_nodes")
    )
    assert {"sip_user", "node", "expires", "epoch", "acquired"} <= set(
        store.db.columns("purplegw_leases")
    )
    # Sub-second resolution: leases of a few seconds need it.
    assert any(store.cluster.now() % 1 for _ in range(3))


def test_heartbeat_nodes_and_liveness(store: Store) -> None:
    cluster = store.cluster
    cluster.heartbeat("gw1", "10.0.0.1:5060")
    cluster.heartbeat("gw2", "10.0.0.2:5060")
    first = {n.name: n for n in cluster.nodes()}
    assert list(first) == ["gw1", "gw2"]
    assert first["gw1"].advertise == "10.0.0.1:5060"
    assert first["gw1"].state is NodeState.LIVE
    assert 0 <= first["gw1"].age < 1.0
    assert first["gw1"].leases == 0
    assert cluster.live_nodes(15) == ["gw1", "gw2"]

    # gw2 stops heartbeating: 100 s later it is no longer live.
    store.db.execute("UPDATE purplegw_nodes SET heartbeat = heartbeat - 100 WHERE name = 'gw2'")
    assert cluster.live_nodes(15) == ["gw1"]
    assert cluster.nodes()[1].age == pytest.approx(100, abs=1.0)

    # A new heartbeat updates address and time and keeps the start time.
    time.sleep(0.01)
    cluster.heartbeat("gw1", "10.0.0.9:5060")
    again = cluster.nodes()[0]
    assert (again.advertise, again.started) == ("10.0.0.9:5060", first["gw1"].started)
    assert again.heartbeat > first["gw1"].heartbeat

    # Draining nodes and gone nodes take no users.
    cluster.heartbeat("gw1", "10.0.0.9:5060", NodeState.DRAINING)
    assert cluster.live_nodes(15) == []
    assert cluster.set_state("gw2", NodeState.GONE)
    assert not cluster.set_state("gw9", NodeState.GONE)
    assert [n.state for n in cluster.nodes()] == [NodeState.DRAINING, NodeState.GONE]
    assert cluster.remove_node("gw2")
    assert [n.name for n in cluster.nodes()] == ["gw1"]
    assert cluster.nodes()[0].as_dict()["state"] == "draining"


def test_lease_rules(store: Store) -> None:
    cluster = store.cluster
    assert cluster.lease(ALICE) is None
    taken = cluster.acquire(ALICE, "gw1", 15)
    assert taken is not None
    assert (taken.sip_user, taken.node, taken.epoch) == (ALICE, "gw1", 1)
    assert taken.expires == pytest.approx(cluster.now() + 15, abs=1.0)

    # Held and unexpired: nobody takes it, not even its holder again (it renews).
    assert cluster.acquire(ALICE, "gw2", 15) is None
    assert cluster.acquire(ALICE, "gw1", 15) is None
    assert cluster.lease(ALICE) == taken

    # Renewal needs the holder and its epoch.
    renewed = cluster.renew("gw1", {ALICE: 1}, 30)
    assert list(renewed) == [ALICE]
    assert renewed[ALICE] == pytest.approx(cluster.now() + 30, abs=1.0)
    assert cluster.renew("gw1", {ALICE: 2}, 30) == {}
    assert cluster.renew("gw2", {ALICE: 1}, 30) == {}
    assert cluster.renew("gw1", {}, 30) == {}

    # Expired: not renewable, and free for the next taker at a new epoch.
    backdate(store, ALICE, 0.5)
    assert cluster.renew("gw1", {ALICE: 1}, 30) == {}
    second = cluster.acquire(ALICE, "gw2", 15)
    assert second is not None
    assert (second.node, second.epoch) == ("gw2", 2)
    # The old holder's release (a late drain) cannot free the new holder's lease.
    assert cluster.release("gw1", {ALICE: 1}) == 0
    assert cluster.lease(ALICE).node == "gw2"  # type: ignore[union-attr]

    # Release: free at once, the row and its epoch kept.
    assert cluster.release("gw2", {ALICE: 2}) == 1
    assert cluster.lease(ALICE) == Lease(ALICE, "", 0.0, 2)
    third = cluster.acquire(ALICE, "gw1", 15)
    assert third is not None
    assert third.epoch == 3


def test_listing_and_counts(store: Store) -> None:
    cluster = store.cluster
    cluster.heartbeat("gw1", "10.0.0.1:5060")
    cluster.heartbeat("gw2", "10.0.0.2:5060")
    for user in (ALICE, BOB, "carol@example.org"):
        assert cluster.acquire(user, "gw1", 15) is not None
    assert cluster.acquire("dave@example.org", "gw2", 15) is not None
    backdate(store, BOB, 1)
    assert [lease.sip_user for lease in cluster.leases()] == [
        ALICE,
        BOB,
        "carol@example.org",
        "dave@example.org",
    ]
    assert [lease.sip_user for lease in cluster.leases("gw1", unexpired=True)] == [
        ALICE,
        "carol@example.org",
    ]
    assert {n.name: n.leases for n in cluster.nodes()} == {"gw1": 2, "gw2": 1}


def test_many_users_in_chunks(store: Store) -> None:
    cluster = store.cluster
    users = [f"user{i:04d}@example.org" for i in range(450)]
    held = {}
    for user in users:
        lease = cluster.acquire(user, "gw1", 15)
        assert lease is not None
        held[user] = lease.epoch
    backdate(store, users[7], 1)
    renewed = cluster.renew("gw1", held, 20)
    assert set(renewed) == set(users) - {users[7]}
    assert cluster.release("gw1", held) == 450
    assert cluster.leases() == []


def _race(
    url: str,
    take: Callable[[ClusterRepository, str, str], Lease | None],
    rounds: int,
    prepare: Callable[[int], str],
) -> Iterator[tuple[str, list[Lease | None]]]:
    """Two nodes, each on its own connection, take the same user at the same instant."""
    dbs = [Database.create(url), Database.create(url)]
    repos = [ClusterRepository(db) for db in dbs]
    try:
        for number in range(rounds):
            user = prepare(number)
            barrier = threading.Barrier(2)
            results: list[Lease | None] = [None, None]
            errors: list[BaseException] = []

            def run(
                index: int,
                user: str = user,
                barrier: threading.Barrier = barrier,
                results: list[Lease | None] = results,
                errors: list[BaseException] = errors,
            ) -> None:
                try:
                    barrier.wait(timeout=10)
                    results[index] = take(repos[index], f"gw{index + 1}", user)
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    errors.append(exc)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert errors == []
            yield user, results
    finally:
        for db in dbs:
            db.close()


@pytest.mark.parametrize("existing", [True, False], ids=["expired_lease", "new_user"])
def test_two_nodes_race_for_one_lease(store: Store, db_url: str, existing: bool) -> None:
    """Exactly one of two concurrent takers wins, every time; the loser sees None, no error."""
    cluster = store.cluster

    def prepare(number: int) -> str:
        user = f"race{number}@example.org"
        if existing:
            taken = cluster.acquire(user, "gw-dead", 15)
            assert taken is not None
            backdate(store, user, 0.1)
        return user

    wins = {"gw1": 0, "gw2": 0}
    rounds = 40
    for user, results in _race(
        db_url, lambda repo, node, user: repo.acquire(user, node, 15), rounds, prepare
    ):
        winners = [r for r in results if r is not None]
        assert len(winners) == 1, (user, results)
        lease = cluster.lease(user)
        assert lease == winners[0]
        assert lease.epoch == (2 if existing else 1)  # type: ignore[union-attr]
        wins[winners[0].node] += 1
    assert sum(wins.values()) == rounds


def test_acquire_many_takes_free_and_expired_leases_only(store: Store) -> None:
    cluster = store.cluster
    users = [f"many{i:03d}@example.org" for i in range(250)]  # two chunks
    held_elsewhere, expired, old_run = users[3], users[4], users[5]
    assert cluster.acquire(held_elsewhere, "gw2", 15) is not None
    assert cluster.acquire(expired, "gw2", 15) is not None
    backdate(store, expired, 0.5)
    # An earlier run of gw1 still holds this one: not taken again, it must expire first.
    assert cluster.acquire(old_run, "gw1", 15) is not None
    taken = cluster.acquire_many(users, "gw1", 15)
    assert set(taken) == set(users) - {held_elsewhere, old_run}
    assert taken[expired] == 2  # a new epoch: the fencing token grew
    assert all(taken[u] == 1 for u in users if u not in {expired, held_elsewhere, old_run})
    assert cluster.leases_of([held_elsewhere, expired])[held_elsewhere].node == "gw2"
    assert cluster.leases_of([expired])[expired].node == "gw1"
    assert cluster.acquire_many(users, "gw1", 15) == {}  # nothing free any more
    assert set(cluster.renew("gw1", taken, 15)) == set(taken)


def test_two_nodes_acquire_overlapping_users_at_once(store: Store, db_url: str) -> None:
    """Every user goes to exactly one of two nodes batching at the same instant; no deadlock."""
    users = [f"batch{i:03d}@example.org" for i in range(300)]
    store.cluster.ensure(users)
    dbs = [Database.create(db_url), Database.create(db_url)]
    results: list[dict[str, int]] = [{}, {}]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(index: int) -> None:
        try:
            mine = users[index * 100 :] if index else users[:200]  # 100..199 in both
            barrier.wait(timeout=10)
            results[index] = ClusterRepository(dbs[index]).acquire_many(mine, f"gw{index + 1}", 15)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for db in dbs:
            db.close()
    assert errors == []
    assert set(results[0]) | set(results[1]) == set(users)
    assert not set(results[0]) & set(results[1])
    for index, taken in enumerate(results):
        for user in taken:
            assert store.cluster.lease(user).node == f"gw{index + 1}"  # type: ignore[union-attr]
