"""The cluster node's steps on a real store (SQLite and MariaDB), without its threads.

The test calls ``tick()`` and ``fence_due()`` itself with a clock it moves,
and records the order in which the node logs accounts in and out and
writes leases: logout always comes before a lease is freed or lost, a lease
is always taken before the accounts log in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from purplegw.actors.cluster import ClusterNode
from purplegw.exceptions import StoreError
from purplegw.gateway.cluster import Timing, assign
from purplegw.store.cluster import ClusterRepository, NodeState

if TYPE_CHECKING:
    from purplegw.store import Store

USERS = [f"user{i:02d}@example.org" for i in range(30)]
TIMING = Timing.from_lease(15)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder(ClusterRepository):
    """The real repository, writing down the lease changes it makes; can be cut off."""

    def __init__(self, store: Store, events: list[tuple[str, ...]]) -> None:
        super().__init__(store.db)
        self.events = events
        self.cut = False

    def _check(self) -> None:
        if self.cut:
            raise StoreError("cut off")

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().heartbeat(*args, **kwargs)

    def renew(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        self._check()
        return super().renew(*args, **kwargs)

    def acquire_many(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        self._check()
        taken = super().acquire_many(*args, **kwargs)
        self.events.append(("acquired", *sorted(taken)))
        return taken

    def release(self, node: str, held: Any) -> int:
        self._check()
        self.events.append(("released", *sorted(held)))
        return super().release(node, held)


def make_node(
    store: Store,
    name: str,
    clock: Clock,
    events: list[tuple[str, ...]],
    users: list[str],
    warmup: float = 0.0,
) -> tuple[ClusterNode, Recorder]:
    repo = Recorder(store, events)
    holder: list[ClusterNode] = []

    def refresh() -> None:
        events.append((f"{name} runs", *sorted(holder[0].held())))

    node = ClusterNode(
        name=name,
        advertise=f"{name}:5060",
        timing=TIMING,
        repo=repo,
        users=lambda: users,
        refresh=refresh,
        adopt=lambda taken: events.append((f"{name} adopts", *taken)),
        disown=lambda gone: events.append((f"{name} disowns", *gone)),
        clock=clock,
        warmup=warmup,
    )
    holder.append(node)
    return node, repo


def test_nodes_take_their_share_and_hand_it_over_on_a_join(store: Store) -> None:
    clock, events = Clock(), []
    gw1, _ = make_node(store, "gw1", clock, events, USERS)
    gw1.tick()
    assert gw1.held() == set(USERS)  # alone: everything
    assert events == [
        ("acquired", *USERS),
        ("gw1 adopts", *USERS),  # the queues are read before the accounts log in
        ("gw1 runs", *USERS),
    ]
    gw2, _ = make_node(store, "gw2", clock, events, USERS)
    gw2.tick()  # live now, but gw1 holds everything: gw2 waits
    assert gw2.held() == set()
    events.clear()
    gw1.tick()  # sees gw2: gives up gw2's share, logging it out first
    share = sorted(u for u, n in assign(USERS, ["gw1", "gw2"]).items() if n == "gw2")
    assert share
    assert gw1.held() == set(USERS) - set(share)
    assert events == [
        ("gw1 runs", *sorted(set(USERS) - set(share))),
        ("gw1 disowns", *share),
        ("released", *share),
    ]
    gw2.tick()  # free rows: taken at once, no expiry to wait for
    assert gw2.held() == set(share)
    assert {lease.sip_user: lease.node for lease in store.cluster.leases()} == assign(
        USERS, ["gw1", "gw2"]
    )


def test_fencing_logs_out_before_the_lease_can_expire(store: Store) -> None:
    clock, events = Clock(), []
    gw1, repo = make_node(store, "gw1", clock, events, USERS)
    gw1.tick()
    events.clear()
    repo.cut = True
    for _ in range(2):  # two renewals fail: still within the lease's safe part
        clock.now += TIMING.renew_every
        with pytest.raises(StoreError):
            gw1.tick()
        assert gw1.fence_due() == []
    clock.now = 1000.0 + TIMING.fence_after - 0.01
    assert gw1.fence_due() == []
    assert gw1.held() == set(USERS)
    clock.now = 1000.0 + TIMING.fence_after
    assert sorted(gw1.fence_due()) == USERS
    assert gw1.held() == set()
    assert events == [("gw1 runs",), ("gw1 disowns", *USERS)]
    # The leases are still the database's: nobody may take them before they expire.
    assert all(lease.node == "gw1" for lease in store.cluster.leases(unexpired=True))
    # Back in touch: its own unexpired leases are not taken again, only once expired.
    repo.cut = False
    gw1.tick()
    assert gw1.held() == set()
    store.db.execute("UPDATE purplegw_leases SET expires = 1")
    gw1.tick()
    assert gw1.held() == set(USERS)


def test_a_lease_lost_at_renewal_logs_out(store: Store) -> None:
    clock, events = Clock(), []
    gw1, _ = make_node(store, "gw1", clock, events, USERS[:3])
    gw1.tick()
    store.db.execute("UPDATE purplegw_leases SET expires = 1 WHERE sip_user = ?", (USERS[0],))
    events.clear()
    gw1.tick()  # the renewal leaves the expired one out
    assert USERS[0] not in gw1.held()
    assert events[:2] == [("gw1 runs", *USERS[1:3]), ("gw1 disowns", USERS[0])]


def test_drain_keeps_renewing_then_frees_everything(store: Store) -> None:
    clock, events = Clock(), []
    gw1, _ = make_node(store, "gw1", clock, events, USERS)
    gw1.tick()
    gw1.begin_drain()
    assert [n.state for n in store.cluster.nodes()] == [NodeState.DRAINING]
    events.clear()
    clock.now += TIMING.renew_every
    gw1.tick()  # renews, takes nothing, starts no account again
    assert gw1.held() == set(USERS)
    assert events == []
    clock.now += TIMING.renew_every
    assert gw1.fence_due() == []  # renewed while draining
    gw1.stop()
    assert events == [("released", *USERS)]
    assert store.cluster.leases() == []
    assert [n.state for n in store.cluster.nodes()] == [NodeState.GONE]


def test_select_runs_only_the_held_users_rows(store: Store) -> None:
    clock, events = Clock(), []
    gw1, _ = make_node(store, "gw1", clock, events, USERS[:2])
    rows = [type("Row", (), {"sip_user": u})() for u in USERS[:3]]
    assert gw1.select(rows) == []  # type: ignore[arg-type]
    gw1.tick()
    assert [r.sip_user for r in gw1.select(rows)] == USERS[:2]  # type: ignore[arg-type]


def test_nodes_started_together_see_each_other_before_taking_users(store: Store) -> None:
    clock, events = Clock(), []
    nodes = []
    for name in ("gw1", "gw2"):
        node, _ = make_node(store, name, clock, events, USERS, warmup=TIMING.renew_every)
        nodes.append(node)
    for node in nodes:
        node.tick()  # heartbeat only
    assert events == []
    clock.now += TIMING.renew_every
    for node in nodes:
        node.tick()
    placed = {lease.sip_user: lease.node for lease in store.cluster.leases()}
    assert placed == assign(USERS, ["gw1", "gw2"])  # each took its share, nothing moved twice
    assert not any(event[0] == "released" for event in events)
