"""A cluster node at run time: heartbeats, leases, and which accounts run here.

The rules are in ``purplegw.gateway.cluster`` (the planner) and
``purplegw.store.cluster`` (the compare-and-set statements); this module
only carries them out, on two threads of its own:

* ``purplegw-cluster`` (every ``renew_every``): heartbeat, read the live
  nodes, plan, then in this order: renew, release (log out first, then free
  the lease), acquire (take the lease first, then log in).  It talks to the
  database through a connection of its own whose reads time out, so a
  database that stops answering fails a tick instead of hanging it.
* ``purplegw-cluster-fence`` (several times a second): fences, i.e. forgets
  and logs out every user whose last good renewal started ``fence_after``
  ago or more.  It never touches the database, so it fences on time however
  long a renewal hangs.
* ``purplegw-cluster-apply``: logs accounts in and out, one change after the
  other, and frees a released user's lease once its accounts are out.
  Logging thousands of accounts in or out takes seconds; on a thread of its
  own it never delays a renewal.

The accounts that run are exactly those of the users in ``held``: the
runtime's ``select`` narrows the account rows to them, and every change of
``held`` is followed by ``runtime.refresh()`` (the supervisor's reload diff
starts and stops only what changed).  A user leaves ``held`` before its
accounts log out, and its lease is freed only after that; it enters
``held`` only after its lease was taken.  So an account runs on a node only
while that node holds its user's lease, and never on two nodes at once.

Drain (SIGTERM): ``begin_drain`` marks the node draining (no node counts
it live any more; it takes no user and only renews what it holds); the
process logs every account out; ``stop`` then frees every lease at once and
marks the node gone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from purplegw.exceptions import StoreError
from purplegw.gateway.cluster import Held, LeaseView, Timing, owner, plan
from purplegw.store.cluster import NodeState

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from purplegw.protocols.base import AccountCredentials
    from purplegw.store.cluster import ClusterRepository

logger = logging.getLogger(__name__)

FENCE_CHECKS_PER_MARGIN = 8  # the watchdog looks this often within one margin
MAX_FENCE_CHECK = 0.25  # seconds


class ClusterNode:
    """Ownership of this node's SIP users, kept by leases in the shared database."""

    def __init__(  # noqa: PLR0913 - the node's collaborators, all keyword-only
        self,
        *,
        name: str,
        advertise: str,
        timing: Timing,
        repo: ClusterRepository,
        users: Callable[[], Iterable[str] | None],
        refresh: Callable[[], Any],
        adopt: Callable[[list[str]], None] = lambda _users: None,
        disown: Callable[[list[str]], None] = lambda _users: None,
        clock: Callable[[], float] = time.monotonic,
        warmup: float = 0.0,
    ) -> None:
        self.name = name
        self.advertise = advertise
        self.timing = timing
        self.repo = repo
        self._users = users  # the SIP users with accounts; None before the table was read
        self._refresh = refresh  # make the running accounts match ``held``
        self._adopt = adopt
        self._disown = disown
        self._clock = clock
        # Seconds between this node's first heartbeat and its first plan: nodes
        # started together see each other before any takes users, instead of
        # the first one up taking everyone and handing most of them over.
        self._warmup = warmup
        self._first_beat: float | None = None
        self._lock = threading.Lock()
        self._ticking = threading.Lock()  # held through one tick (begin_drain waits for it)
        self._held: dict[str, Held] = {}
        # Released users whose accounts are still logging out: their leases are
        # renewed until the apply thread frees them (so none runs out under an
        # account still online), but they are no longer this node's to run.
        self._leaving: dict[str, Held] = {}
        self._draining = False
        self._frozen = False  # the process logs every account out: no more changes
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue()
        self._applying = False  # changes run on the apply thread (else at once: tests)
        self._applying_lock = threading.Lock()  # held through one change of the accounts
        self._stop = threading.Event()  # ends the planner thread
        self._stop_watch = threading.Event()  # ends the fencing thread
        self._threads: list[threading.Thread] = []
        self._failing = False  # the last tick failed (logged once, not every tick)
        self.ticks = 0

    # --- what runs here ------------------------------------------------------

    def held(self) -> set[str]:
        with self._lock:
            return set(self._held)

    def select(self, rows: Sequence[AccountCredentials]) -> list[AccountCredentials]:
        """The account rows of the users this node holds (the runtime's ``select``)."""
        held = self._held  # replaced, never changed in place: one consistent view
        return [row for row in rows if row.sip_user in held]

    # --- threads -------------------------------------------------------------

    def start(self) -> ClusterNode:
        self._applying = True
        for target, name in (
            (self._run, "purplegw-cluster"),
            (self._watch, "purplegw-cluster-fence"),
            (self._apply, "purplegw-cluster-apply"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _apply(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except Exception:
                logger.exception("Cluster: applying a change failed")
            finally:
                self._jobs.task_done()
            if self._stop_watch.is_set() and self._jobs.empty():
                return

    def _submit(self, job: Callable[[], None]) -> None:
        if self._applying:
            self._jobs.put(job)
        else:
            job()

    def _settle(self, timeout: float) -> bool:
        """Wait until every change submitted so far has been applied; False on timeout."""
        if not self._applying:
            return True
        done = threading.Event()
        self._jobs.put(done.set)
        return done.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = self._clock()
            try:
                with self._ticking:
                    self.tick()
            except StoreError as exc:
                if not self._failing:
                    logger.warning("Cluster: database unreachable (%s); fencing if it lasts", exc)
                self._failing = True
            except Exception:
                logger.exception("Cluster tick failed")
            else:
                if self._failing:
                    logger.info("Cluster: database reachable again")
                self._failing = False
            # Before the first read of the account table, look again soon.
            every = self.timing.renew_every if self._users() is not None else 0.2
            self._stop.wait(max(0.0, started + every - self._clock()))

    def _watch(self) -> None:
        every = min(MAX_FENCE_CHECK, self.timing.margin / FENCE_CHECKS_PER_MARGIN)
        while not self._stop_watch.wait(every):
            try:
                self.fence_due()
            except Exception:
                logger.exception("Cluster fencing check failed")

    # --- one tick ------------------------------------------------------------

    def tick(self) -> None:
        """Heartbeat, plan, renew, release, acquire (module docstring)."""
        self.ticks += 1
        me = self.name
        state = NodeState.DRAINING if self._draining else NodeState.LIVE
        self.repo.heartbeat(me, self.advertise, state)
        if self._first_beat is None:
            self._first_beat = self._clock()
        if self._draining:
            # The accounts are logging out (bounded by shutdown_timeout, which
            # may be longer than a lease): keep the leases until they are out.
            with self._lock:
                epochs = {u: h.epoch for u, h in {**self._leaving, **self._held}.items()}
            if epochs:
                self._renew(epochs)
            return
        listed = self._users()
        if listed is None or self._clock() - self._first_beat < self._warmup:
            return
        users = set(listed)
        live = self.repo.live_nodes(self.timing.node_timeout)
        with self._lock:
            held = dict(self._held)
        candidates = sorted({*live, me})
        mine = [u for u in users if u not in held and owner(u, candidates) == me]
        rows = self.repo.leases_of(mine) if mine else {}
        leases = {u: LeaseView(r.node, r.expires, r.epoch) for u, r in rows.items()}
        db_now = self.repo.now() if mine else 0.0
        todo = plan(
            me=me,
            live=live,
            users=users,
            leases=leases,
            held=held,
            db_now=db_now,
            local_now=self._clock(),
            timing=self.timing,
        )
        if todo.fence:
            self._forget(todo.fence, "not renewed in time")
        with self._lock:
            leaving = {u: h.epoch for u, h in self._leaving.items()}
        if todo.renew or leaving:
            self._renew({**leaving, **todo.renew})
        if todo.release:
            self._release(todo.release)
        if todo.acquire:
            self._acquire(todo.acquire)

    def _renew(self, epochs: dict[str, int]) -> None:
        sent = self._clock()
        renewed = self.repo.renew(self.name, epochs, self.timing.lease_seconds)
        lost = []
        with self._lock:
            updated, leaving = dict(self._held), dict(self._leaving)
            for user, epoch in epochs.items():
                for table in (updated, leaving):
                    current = table.get(user)
                    if current is None or current.epoch != epoch:
                        continue  # fenced or freed meanwhile: it stays out
                    if user in renewed:
                        table[user] = Held(epoch, sent)
                    else:
                        del table[user]
                        if table is updated:
                            lost.append(user)  # a leaving one is logging out already
            self._held, self._leaving = updated, leaving
        if lost:
            logger.warning("Cluster: %d lease(s) lost at renewal; logging out", len(lost))
            self._changed(lost, gained=False)

    def _release(self, epochs: dict[str, int]) -> None:
        with self._lock:
            moving = {u: h for u, h in self._held.items() if u in epochs}
            self._held = {u: h for u, h in self._held.items() if u not in moving}
            self._leaving = {**self._leaving, **moving}

        def free() -> None:  # after the logout (same thread, next job)
            if self._frozen:
                return  # the accounts may still be logging out: ``stop`` frees them
            with self._lock:
                going = {u: self._leaving.pop(u).epoch for u in moving if u in self._leaving}
            try:
                released = self.repo.release(self.name, going)
            except StoreError as exc:
                logger.warning("Cluster: %d lease(s) not freed (they expire): %s", len(going), exc)
                return
            logger.info("Cluster: released %d user(s) to other nodes", released)

        self._changed(sorted(epochs), gained=False)  # logged out first...
        self._submit(free)  # ...then free at once

    def _acquire(self, users: list[str]) -> None:
        sent = self._clock()
        taken = self.repo.acquire_many(users, self.name, self.timing.lease_seconds)
        if not taken:
            return
        with self._lock:
            self._held = {**self._held, **{u: Held(e, sent) for u, e in taken.items()}}
        logger.info("Cluster: acquired %d user(s)", len(taken))
        self._changed(sorted(taken), gained=True)

    def _changed(self, users: list[str], *, gained: bool) -> None:
        """Make the running accounts follow ``held`` (on the apply thread)."""

        def apply() -> None:
            with self._applying_lock:
                if self._frozen:
                    return  # the process logs every account out: starting any again is wrong
                if gained:
                    self._adopt(users)  # the queues are read before the accounts come up
                    self._refresh()
                else:
                    self._refresh()
                    self._disown(users)

        self._submit(apply)

    def _drop(self, users: Iterable[str]) -> list[str]:
        with self._lock:
            gone = [u for u in users if u in self._held]
            self._held = {u: h for u, h in self._held.items() if u not in set(gone)}
        return gone

    def _forget(self, users: Iterable[str], why: str) -> None:
        gone = self._drop(users)
        if gone:
            logger.warning("Cluster: fencing %d user(s) (%s); logging out", len(gone), why)
            self._changed(gone, gained=False)

    # --- fencing -------------------------------------------------------------

    def fence_due(self) -> list[str]:
        """Forget and log out the users whose leases may run out soon (Rule 2); which."""
        now = self._clock()
        with self._lock:
            due = [
                u for u, h in self._held.items() if now - h.renewed_at >= self.timing.fence_after
            ]
        if due:
            self._forget(due, f"no renewal for {self.timing.fence_after:g} s")
        return due

    # --- drain ---------------------------------------------------------------

    def begin_drain(self) -> None:
        """SIGTERM: take nothing more, tell the other nodes (before the accounts log out).

        The planner thread goes on heartbeating (draining) and renewing what
        is held until ``stop``; fencing goes on too.
        """
        self._draining = True
        # A tick under way may be taking users: let it finish, then let the
        # changes it made finish, before the process logs every account out.
        if self._ticking.acquire(timeout=self.timing.lease_seconds):
            self._ticking.release()
        if not self._settle(self.timing.lease_seconds):
            logger.warning("Cluster: account changes still under way at drain")
        # Not in the middle of a change: none can reach the accounts after this.
        with self._applying_lock:
            self._frozen = True
        try:
            self.repo.heartbeat(self.name, self.advertise, NodeState.DRAINING)
        except StoreError as exc:
            logger.warning("Cluster: draining not recorded: %s", exc)

    def stop(self) -> None:
        """After the accounts logged out: free every lease at once, mark the node gone."""
        self._draining = True
        self._frozen = True
        self._stop.set()
        self._stop_watch.set()
        self._submit(lambda: None)  # wakes the apply thread up to end
        for thread in self._threads:
            thread.join(self.timing.lease_seconds)
        with self._lock:
            epochs = {u: h.epoch for u, h in {**self._leaving, **self._held}.items()}
            self._held, self._leaving = {}, {}
        try:
            if epochs:
                released = self.repo.release(self.name, epochs)
                logger.info("Cluster: drained, %d user(s) released", released)
            self.repo.heartbeat(self.name, self.advertise, NodeState.GONE)
        except StoreError as exc:
            logger.warning("Cluster: leases not released (they expire by themselves): %s", exc)
