"""Who owns which SIP user in a cluster, and what a node does about it: pure rules.

No threads, sockets, clocks or database here: the caller reads the nodes and
leases tables (purplegw.store.cluster), passes the times in, and carries out
the plan.

Rule 1: a user's owner is the live node with the highest rendezvous weight
        ``blake2b(node NUL user)`` (ties broken by name).  Every node computes
        the same answer from the same list of live nodes.  A joining node
        takes about 1/N of the users, all from the others; a leaving node's
        users, and only those, spread over the rest.
Rule 2: a node fences (logs out, then forgets) every user whose lease it has
        not renewed within ``lease_seconds - margin`` of the start of its last
        successful renewal.  The database set that lease's expiry at least
        ``lease_seconds`` after that start, so the accounts are logged out
        ``margin`` seconds before anyone else can take the user.
Rule 3: a draining node releases everything it holds and acquires nothing.
Rule 4: a held user whose owner is now another live node is released (logged
        out first): this is the bounded movement of Rule 1 when a node joins.
        A user that left the account table is released too.
Rule 5: a user this node owns and does not hold is acquired only when its
        lease is free or expired by the database clock; otherwise the node
        waits (the holder releases it, or its lease runs out).
Rule 6: every other held user is renewed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

# Renewals per lease: at 15 s a renewal every 3.75 s, so two can fail before
# Rule 2 fences with the default margin of a third of the lease.
RENEWALS_PER_LEASE = 4
MARGIN_FRACTION = 1 / 3
MIN_MARGIN = 1.0  # seconds: logging accounts out is not instantaneous


def weight(node: str, sip_user: str) -> int:
    """Rendezvous weight: stable across processes, Python versions and machines."""
    digest = hashlib.blake2b(f"{node}\0{sip_user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(sip_user: str, nodes: Iterable[str]) -> str | None:
    """The node that should own ``sip_user`` among ``nodes``; None when there is none."""
    best: tuple[int, str] | None = None
    for node in nodes:
        key = (weight(node, sip_user), node)
        if best is None or key > best:
            best = key
    return best[1] if best else None


def assign(users: Iterable[str], nodes: Iterable[str]) -> dict[str, str | None]:
    nodes = list(nodes)
    return {user: owner(user, nodes) for user in users}


@dataclass(frozen=True)
class Timing:
    """The intervals derived from ``[cluster] lease_seconds``."""

    lease_seconds: float
    margin: float

    @classmethod
    def from_lease(cls, lease_seconds: float) -> Timing:
        return cls(lease_seconds, max(MIN_MARGIN, lease_seconds * MARGIN_FRACTION))

    @property
    def renew_every(self) -> float:
        """Seconds between renewals (and heartbeats)."""
        return self.lease_seconds / RENEWALS_PER_LEASE

    @property
    def fence_after(self) -> float:
        """Seconds after the start of the last good renewal at which Rule 2 fences."""
        return self.lease_seconds - self.margin

    @property
    def node_timeout(self) -> float:
        """A node whose heartbeat is older than this is not live (it cannot hold leases)."""
        return self.lease_seconds


@dataclass(frozen=True)
class LeaseView:
    """A row of the leases table as the planner needs it."""

    node: str  # '' when free
    expires: float  # database time
    epoch: int


@dataclass(frozen=True)
class Held:
    """A lease this node holds: its epoch and when its last good renewal started.

    ``renewed_at`` is on the node's own monotonic clock, taken *before* the
    acquire or renew statement was sent.
    """

    epoch: int
    renewed_at: float


@dataclass
class Plan:
    acquire: list[str] = field(default_factory=list)  # take these leases, then log in
    renew: dict[str, int] = field(default_factory=dict)  # user -> epoch
    release: dict[str, int] = field(default_factory=dict)  # log out, then free the lease
    fence: list[str] = field(default_factory=list)  # log out now: the lease is at risk
    waiting: list[str] = field(default_factory=list)  # ours, held elsewhere until expiry


def plan(  # noqa: PLR0913 - the whole view of one tick, by name
    *,
    me: str,
    live: Sequence[str],
    users: Iterable[str],
    leases: Mapping[str, LeaseView],
    held: Mapping[str, Held],
    db_now: float,
    local_now: float,
    timing: Timing,
    draining: bool = False,
) -> Plan:
    """What node ``me`` does this tick (module docstring, Rules 1-6).

    ``live``: the live nodes by the database (heartbeat fresh, state live);
    ``users``: the SIP users with accounts; ``leases``: the leases table;
    ``held``: what this node holds; ``db_now``/``local_now``: both clocks now.
    """
    result = Plan()
    candidates = sorted({*live} - {me} if draining else {*live, me})
    wanted = set(users)
    for user, lease in sorted(held.items()):
        if local_now - lease.renewed_at >= timing.fence_after:
            result.fence.append(user)  # Rule 2 first: nothing else is safe
        elif draining or user not in wanted or owner(user, candidates) != me:
            result.release[user] = lease.epoch  # Rules 3 and 4
        else:
            result.renew[user] = lease.epoch  # Rule 6
    if draining:
        return result
    for user in sorted(wanted - set(held)):
        if owner(user, candidates) != me:
            continue
        row = leases.get(user)
        if row is None or not row.node or row.expires <= db_now:
            result.acquire.append(user)  # Rule 5
        else:
            result.waiting.append(user)
    return result
