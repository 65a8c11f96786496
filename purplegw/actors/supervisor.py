"""The supervisor: one account actor per account row, and the reload diff.

pykka has no supervision, so this is explicit policy (STYLE.md rule 11):
the account actors keep their own connections up (restart policy in
``state.py``); the supervisor starts and stops them as rows come and go,
restarts an actor that died of an unhandled exception, and publishes the
running accounts in a ``Directory`` that other actors read without asking
(an ``ask`` per SIP request would serialise the whole gateway on us), and
their statuses in a ``StatusBoard`` that ``purplegw status`` reads the same
way (an ``ask`` per account cost ~0.5 s of the loop at 10,000 accounts).

Reload diff (SIGHUP): rows are keyed by (sip_user, protocol).  An added row
starts an actor, a removed row logs out and stops, a row whose credentials
changed in any field (password, ext_user...) is stopped and started again;
every other account keeps its connection (one that gave up after flapping
tries again; one with bad credentials waits for its row to change).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pykka
from pykka import messages

from purplegw.actors.account import ACTOR_CLASSES, AccountHandle
from purplegw.actors.listener import AccountInfo
from purplegw.actors.loop import shared_loop
from purplegw.actors.state import (
    AccountKey,
    AccountState,
    AccountStatus,
    ActorsConfig,
    status_sort_key,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from purplegw.protocols.base import AccountCredentials, Adapter, ProxySettings

logger = logging.getLogger(__name__)

# How often dead account actors are looked for.
CHECK_INTERVAL = 1.0


class AdapterLookup(Protocol):
    def get(self, protocol_id: str) -> Adapter: ...


@dataclass
class ReloadSummary:
    added: list[AccountKey] = field(default_factory=list)
    removed: list[AccountKey] = field(default_factory=list)
    changed: list[AccountKey] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": [list(k) for k in self.added],
            "removed": [list(k) for k in self.removed],
            "changed": [list(k) for k in self.changed],
            "unchanged": self.unchanged,
        }

    def merge(self, other: ReloadSummary) -> None:
        self.added += other.added
        self.removed += other.removed
        self.changed += other.changed
        self.unchanged += other.unchanged


def diff_rows(
    current: dict[AccountKey, AccountCredentials], rows: Iterable[AccountCredentials]
) -> tuple[dict[AccountKey, AccountCredentials], ReloadSummary]:
    """Compare the running rows with the table (pure; used by both runtimes)."""
    wanted: dict[AccountKey, AccountCredentials] = {}
    for row in rows:
        key = AccountKey.of(row)
        if key in wanted:
            logger.warning("Duplicate account row for %s/%s: keeping the first", *key)
            continue
        wanted[key] = row
    summary = ReloadSummary()
    for key, row in wanted.items():
        if key not in current:
            summary.added.append(key)
        elif current[key] != row:  # dataclass equality compares the password too
            summary.changed.append(key)
        else:
            summary.unchanged += 1
    summary.removed = [key for key in current if key not in wanted]
    return wanted, summary


class Directory:
    """Thread-safe, lock-free-to-read map of the running accounts."""

    def __init__(self) -> None:
        self._by_key: dict[AccountKey, Any] = {}
        self._lock = threading.Lock()

    def publish(self, key: AccountKey, handle: Any | None) -> None:
        self.publish_many([(key, handle)])

    def publish_many(self, changes: Iterable[tuple[AccountKey, Any | None]]) -> None:
        """Several ``publish`` in one copy of the map (a worker's rows: one, not one per row)."""
        with self._lock:
            updated = dict(self._by_key)
            for key, handle in changes:
                if handle is None:
                    updated.pop(key, None)
                else:
                    updated[key] = handle
            self._by_key = updated  # readers see the old or the new dict, whole

    def get(self, sip_user: str, protocol: str) -> Any | None:
        """The handle of ``sip_user``'s account on ``protocol`` (canonical name)."""
        return self._by_key.get(AccountKey(sip_user, protocol))

    def of_user(self, sip_user: str) -> list[Any]:
        """All of ``sip_user``'s accounts (e.g. to apply a PUBLISH to each)."""
        return [h for k, h in self._by_key.items() if k.sip_user == sip_user]

    def all(self) -> list[Any]:
        return list(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)


class StatusBoard:
    """The status of every account of one process, read without asking any actor.

    It holds the ``AccountStatus`` objects the account actors update as
    things happen (each field write is atomic; ``as_dict`` copies one
    account's fields in one step), so ``purplegw status`` costs a copy per
    account on the caller's thread: no message, future or wake-up per actor,
    nothing queued behind a busy loop or a reload.
    """

    def __init__(self) -> None:
        self._by_key: dict[AccountKey, AccountStatus] = {}
        self._lock = threading.Lock()
        # Keys whose status was published, removed or written since they
        # were last taken (``track_changes``); None: nobody asks.  Never
        # swapped for a new set: statuses hold this one.
        self._changed: set[AccountKey] | None = None

    def track_changes(self) -> None:
        """From now on, ``take_changed`` names what changed (a worker's status pusher)."""
        with self._lock:
            if self._changed is None:
                self._changed = set(self._by_key)
                for key, status in self._by_key.items():
                    status.watch(self._changed, key)

    def publish(self, key: AccountKey, status: AccountStatus | None) -> None:
        with self._lock:
            old = self._by_key.pop(key, None)
            if old is not None and old is not status:
                old.watch(None)  # a stopped actor's late writes are not this key's
            if status is not None:
                self._by_key[key] = status
            if self._changed is not None:
                if status is not None:
                    status.watch(self._changed, key)
                self._changed.add(key)

    def clear(self) -> None:
        with self._lock:
            for key, status in self._by_key.items():
                status.watch(None)
                if self._changed is not None:
                    self._changed.add(key)
            self._by_key.clear()

    def take_changed(self) -> list[AccountKey]:
        """The keys marked since the last call, each once, unmarked (``track_changes`` first).

        Popped one at a time from the set the statuses write to: a write
        during the call is either taken now or stays marked for the next.
        """
        changed = self._changed
        taken: list[AccountKey] = []
        if changed is None:
            return taken
        while True:
            try:
                taken.append(changed.pop())
            except KeyError:
                return taken

    def values_of(self, key: AccountKey) -> tuple[Any, ...] | None:
        status = self._by_key.get(key)
        return None if status is None else status.as_tuple()

    def entries(self) -> dict[AccountKey, dict[str, Any]]:
        with self._lock:
            items = list(self._by_key.items())
        return {key: status.as_dict() for key, status in items}

    def snapshot(self) -> list[dict[str, Any]]:
        """Every account's status dict, by (sip_user, protocol)."""
        return sorted(self.entries().values(), key=status_sort_key)


def _call(ref: pykka.ActorRef[Any], method: str, *args: Any) -> pykka.Future[Any]:
    return ref.ask(messages.ProxyCall(attr_path=(method,), args=args, kwargs={}), block=False)


class Supervisor(pykka.ThreadingActor):
    """Starts, stops and revives the account actors of one process."""

    def __init__(  # noqa: PLR0913 - keyword-only collaborators (Mopidy's actor shape)
        self,
        *,
        config: ActorsConfig,
        adapters: AdapterLookup,
        protocols_config: dict[str, dict[str, Any]] | None = None,
        proxy: ProxySettings | None = None,
        directory: Directory | None = None,
        board: StatusBoard | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._adapters = adapters
        self._protocols_config = protocols_config or {}
        self._proxy = proxy
        self.directory = directory if directory is not None else Directory()
        self._rows: dict[AccountKey, AccountCredentials] = {}
        self._refs: dict[AccountKey, pykka.ActorRef[Any]] = {}
        self.board = board if board is not None else StatusBoard()
        self._shared: dict[str, Any] = {}  # per-process caches for sessions
        self._actor_class = ACTOR_CLASSES[config.runtime]
        self._ticker_stop = threading.Event()

    def on_start(self) -> None:
        threading.Thread(target=self._tick, name="supervisor-check", daemon=True).start()

    def on_stop(self) -> None:
        self._ticker_stop.set()

    def _tick(self) -> None:
        while not self._ticker_stop.wait(CHECK_INTERVAL):
            try:
                self.actor_ref.tell(messages.ProxyCall(attr_path=("check",), args=(), kwargs={}))
            except pykka.ActorDeadError:
                return

    def ping(self) -> bool:
        return True

    # --- rows ---------------------------------------------------------------

    def apply(self, rows: Sequence[AccountCredentials]) -> ReloadSummary:
        """Make the running accounts match ``rows``; touch only what changed."""
        wanted, summary = diff_rows(self._rows, rows)
        leaving = summary.removed + summary.changed
        self._stop_accounts(leaving)
        for key in summary.removed:
            self._rows.pop(key, None)
        for key in summary.added + summary.changed:
            self._rows[key] = wanted[key]
            self._start_account(key)
        retry = messages.ProxyCall(attr_path=("retry_if_given_up",), args=(), kwargs={})
        for key, ref in self._refs.items():
            if key not in summary.added and key not in summary.changed:
                try:  # noqa: SIM105 - kept explicit: the actor may die at any time
                    ref.tell(retry)
                except pykka.ActorDeadError:
                    pass  # check() replaces it
        if leaving or summary.added:
            logger.info(
                "Accounts: %d added, %d removed, %d changed, %d unchanged",
                len(summary.added),
                len(summary.removed),
                len(summary.changed),
                summary.unchanged,
            )
        return summary

    def _start_account(self, key: AccountKey) -> None:
        row = self._rows[key]
        # The actor updates this object as things happen; the board shows it.
        status = AccountStatus(
            account_id=row.account_id,
            sip_user=row.sip_user,
            protocol=row.protocol,
            ext_user=row.ext_user,
            since=time.time(),
            pid=os.getpid(),
        )
        try:
            adapter = self._adapters.get(row.protocol)
        except Exception as exc:
            status.state = AccountState.UNKNOWN_ERROR.value
            status.last_error = f"protocol unavailable: {exc}"
            self.board.publish(key, status)
            logger.exception("Account %s/%s not started: %s", row.sip_user, row.protocol, exc)  # noqa: TRY401 - the message names the exception for grep
            return
        kwargs: dict[str, Any] = {
            "credentials": row,
            "adapter": adapter,
            "config": self._config,
            "protocol_config": self._protocols_config.get(row.protocol, {}),
            "proxy": self._proxy,
            "shared": self._shared,
            "account_status": status,
        }
        if self._config.runtime == "shared_loop":
            kwargs["loop"] = shared_loop().loop
        ref = self._actor_class.start(**kwargs)  # type: ignore[attr-defined]
        self._refs[key] = ref
        self.board.publish(key, status)
        info = AccountInfo(row.account_id, row.sip_user, row.protocol, row.ext_user)
        self.directory.publish(key, AccountHandle(ref, info))

    def _stop_accounts(self, keys: Sequence[AccountKey]) -> None:
        pending: list[tuple[pykka.ActorRef[Any], pykka.Future[Any]]] = []
        for key in keys:
            self.directory.publish(key, None)
            self.board.publish(key, None)
            ref = self._refs.pop(key, None)
            if ref is None:
                continue
            try:
                pending.append((ref, _call(ref, "shutdown")))
            except pykka.ActorDeadError:
                continue
        deadline = time.monotonic() + self._config.shutdown_timeout
        for ref, future in pending:
            try:
                done: concurrent.futures.Future[None] = future.get(
                    timeout=max(0.1, deadline - time.monotonic())
                )
                done.result(timeout=max(0.1, deadline - time.monotonic()))
            except (pykka.ActorDeadError, concurrent.futures.TimeoutError, pykka.Timeout):
                logger.warning("Account actor %s did not log out in time", ref)
            except Exception:
                logger.exception("Account actor %s failed to log out", ref)
            if ref.is_alive():
                ref.stop(block=False)

    def stop_accounts(self) -> None:
        """Log every account out (SIGTERM), bounded by ``shutdown_timeout``."""
        self._stop_accounts(list(self._refs))
        self._rows.clear()
        self.board.clear()

    # --- health ---------------------------------------------------------------

    def check(self) -> list[AccountKey]:
        """Restart account actors that died of an unhandled exception."""
        revived = []
        for key, ref in list(self._refs.items()):
            if not ref.is_alive():
                logger.error("Account actor %s/%s died; restarting it", *key)
                del self._refs[key]
                self._start_account(key)
                revived.append(key)
        return revived


class LocalAccounts:
    """Accounts hosted in this process (``[actors] workers = 0``)."""

    def __init__(
        self,
        config: ActorsConfig,
        adapters: AdapterLookup,
        protocols_config: dict[str, dict[str, Any]] | None = None,
        proxy: ProxySettings | None = None,
    ) -> None:
        self.config = config
        self.directory = Directory()
        self.board = StatusBoard()
        self._ref = Supervisor.start(
            config=config,
            adapters=adapters,
            protocols_config=protocols_config,
            proxy=proxy,
            directory=self.directory,
            board=self.board,
        )
        self._supervisor = self._ref.proxy()
        self._supervisor.ping().get()

    def apply(self, rows: Sequence[AccountCredentials]) -> ReloadSummary:
        return self._supervisor.apply(list(rows)).get()

    def status(self) -> list[dict[str, Any]]:
        """Every account's last reported status (no actor is asked)."""
        return self.board.snapshot()

    def stop(self) -> None:
        if not self._ref.is_alive():
            return
        try:
            self._supervisor.stop_accounts().get(timeout=self.config.shutdown_timeout + 10)
        finally:
            self._ref.stop()
