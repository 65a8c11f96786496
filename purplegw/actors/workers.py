"""Worker processes hosting account actors (``[actors] workers = N``).

Accounts are sharded by ``sip_user`` (``state.shard_of``, a stable hash) so
that a user's accounts live in one worker.  Each worker runs its own
``LocalAccounts`` (supervisor, shared loop, account actors); the main
process keeps the SIP front and presence actors and talks to workers over
one duplex pipe each, carrying small tuples:

main -> worker: ``("apply", id, rows)``,
               ``("request", id, (sip_user, protocol), op, args)``, ``("stop", id)``
worker -> main: ``("reply", id, value)``, ``("error", id, text)``,
               ``("event", name, kwargs)``, ``("statuses", changed, removed)``,
               ``("batch", [message, ...])``: what a loop thread sent in one
               turn of its loop (``_PipeSender``)

``purplegw status`` never waits on a worker: each worker pushes the status
entries that changed (an account's at once when its state changes, the
others every ``STATUS_PUSH_INTERVAL`` and before it answers an ``apply``),
the main process keeps the last one of every account and answers from
that.  A worker that died and is being started again shows its
accounts as ``worker_restarting``, with what they last reported.

Workers are fresh interpreters (``spawn.WorkerProcess``: multiprocessing's
``spawn`` without its resource tracker process and without running the main
module again): forking a process that already runs threads (the loop, pykka
actors) can copy a held lock into the child.  A worker imports the adapter
libraries (slixmpp, matrix-nio...) of the accounts it hosts only, when the
first session of that protocol is created.  A monitor thread waits on the
worker sentinels; a worker that dies (SIGKILL, OOM) is started again after
``worker_restart_delay`` and its accounts log in again, while the other
workers carry on.  Requests for its accounts meanwhile answer 480.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import pykka

from purplegw import logs
from purplegw.actors import listener
from purplegw.actors.account import OutcomeFuture
from purplegw.actors.gc_tuning import apply_gc_threshold
from purplegw.actors.listener import AccountInfo, EventSink
from purplegw.actors.spawn import WorkerProcess
from purplegw.actors.state import (
    WORKER_RESTARTING,
    AccountKey,
    AccountStatus,
    ActorsConfig,
    Outcome,
    shard_of,
    status_sort_key,
)
from purplegw.actors.supervisor import AdapterLookup, Directory, LocalAccounts, ReloadSummary
from purplegw.protocols.base import AccountCredentials, ProxySettings, with_derived_keys

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

# A status entry's keys, in the order of its values (``AccountStatus.as_tuple``).
STATUS_FIELDS = tuple(AccountStatus.__dataclass_fields__)
# The fields of a status entry (AccountStatus) that change; the others are the row's.
_VARYING = tuple(
    name
    for name in AccountStatus.__dataclass_fields__
    if name not in {"account_id", "sip_user", "protocol", "ext_user"}
)
_VARYING_AT = tuple(STATUS_FIELDS.index(name) for name in _VARYING)
_SIP_USER_AT = STATUS_FIELDS.index("sip_user")
_PROTOCOL_AT = STATUS_FIELDS.index("protocol")
_STATE = _VARYING.index("state")
_PID = _VARYING.index("pid")

# How stale a worker's counters (messages, queue) may be in `purplegw status`;
# states move at once, by event.  Diffing 5,000 entries costs ~2 ms.
STATUS_PUSH_INTERVAL = 0.5


class WorkerError(RuntimeError):
    """A worker died or failed while answering a command."""


# --- the worker side ------------------------------------------------------------


class _PipeSender:
    """The worker's end of the pipe: one pickle and one write per loop turn, not per message.

    What a thread running an asyncio loop (the accounts' shared loop) sends
    during one turn of it leaves at the end of that turn as one
    ``("batch", messages)``: in a login storm or a burst of messages each
    account's events, statuses and replies would otherwise be a pickle, a
    write and a wake-up of the main process's reader each.  Anything sent
    from another thread first sends the pending batch, under the same lock,
    so messages arrive in the order they were sent.  The lock is reentrant:
    the status pusher holds it across its snapshot and the send.
    """

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn
        self.lock = threading.RLock()
        self._batch: list[Any] = []
        self._batch_loop: asyncio.AbstractEventLoop | None = None  # whose turn ends it

    def send(self, message: Any) -> None:
        """Send ``message``, at the end of this loop turn if called on a loop's thread.

        Raises OSError/ValueError if the pipe is closed when this call writes
        (a direct send, or another loop's batch sent ahead of this one); the
        batch sent at the end of a turn logs its error instead.
        """
        loop = asyncio._get_running_loop()  # noqa: SLF001 - the C fast path of get_running_loop
        with self.lock:
            if loop is None:
                self._send_batch()
                self._conn.send(message)
                return
            if self._batch_loop is not loop:
                self._send_batch()  # another loop's: sent before this one starts
                self._batch_loop = loop
                loop.call_soon(self.flush)
            self._batch.append(message)

    def flush(self) -> None:
        """Send the pending batch now (end of a loop turn, worker shutdown)."""
        try:
            with self.lock:
                self._send_batch()
        except (OSError, ValueError):  # main process gone: we exit soon
            logger.debug("Dropped a batch of messages: pipe closed")

    def _send_batch(self) -> None:
        batch, self._batch, self._batch_loop = self._batch, [], None
        if len(batch) == 1:
            self._conn.send(batch[0])
        elif batch:
            self._conn.send(("batch", batch))


class _StatusPusher(EventSink):
    """Sends the main process the status entries that changed since the last push.

    Every ``STATUS_PUSH_INTERVAL``, those the board marked as written
    (``StatusBoard.track_changes``): an idle worker's push looks at no
    account; an account whose state changed at once, right behind its
    ``on_connection_state`` event.
    """

    def __init__(self, accounts: LocalAccounts, send: Any, send_lock: threading.RLock) -> None:
        self._accounts = accounts
        self._send = send
        # The pipe's lock: an event sent after the snapshot is taken arrives
        # after it, so an older snapshot never overwrites a newer state.
        self._lock = send_lock
        # What the main process was last sent, as each account's values
        # (``board.values_of``), which is also what is sent: a tuple is a third
        # of the dict it stands for, pickled without its keys.
        self._sent: dict[AccountKey, tuple[Any, ...]] = {}
        self._stop = threading.Event()
        accounts.board.track_changes()

    def push(self) -> None:
        with self._lock:
            board, sent = self._accounts.board, self._sent
            changed, removed = [], []
            for key in board.take_changed():
                values = board.values_of(key)
                if values is None:
                    if sent.pop(key, None) is not None:
                        removed.append(key)
                elif sent.get(key) != values:
                    sent[key] = values
                    changed.append(values)
            if changed or removed:
                self._send(("statuses", changed, removed))

    def on_event(self, event: str, **kwargs: Any) -> None:
        if event != "on_connection_state":
            return
        # The account's state was written (and marked) before its event was
        # sent: this push carries it, with whatever else is marked.
        try:
            self.push()
        except (OSError, ValueError):  # main process gone: we exit soon
            account = kwargs["account"]
            logger.debug(
                "Dropped the status of %s/%s: pipe closed", account.sip_user, account.protocol
            )

    def run(self) -> None:
        while not self._stop.wait(STATUS_PUSH_INTERVAL):
            try:
                self.push()
            except (OSError, ValueError):  # main process gone: we exit soon
                return

    def start(self) -> _StatusPusher:
        threading.Thread(target=self.run, name="status-pusher", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()


class _Forwarder(EventSink):
    """Sends every account event of the worker to the main process."""

    # The main process's gateway reports received messages stored, through
    # the account handles' ``messages_stored`` requests.
    confirms_ack_tokens = True

    def __init__(self, send: Any) -> None:
        self._send = send

    def on_event(self, event: str, **kwargs: Any) -> None:
        try:
            self._send(("event", event, kwargs))
        except (OSError, ValueError):  # main process gone: we exit soon
            logger.debug("Dropped event %s: pipe closed", event)


def worker_main(  # noqa: PLR0913, PLR0917 - multiprocessing passes a worker's start-up state positionally
    index: int,
    conn: multiprocessing.connection.Connection,
    config: dict[str, Any],
    protocols_config: dict[str, dict[str, Any]],
    proxy: ProxySettings | None,
    log_settings: dict[str, Any],
) -> None:
    """Entry point of a worker process."""
    # The main process coordinates shutdown and reload; a signal sent to the
    # whole process group must not kill workers before they log out.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda *_: pykka.debug.log_thread_tracebacks())
    logs.setup_worker(log_settings, index)
    import pykka.debug  # noqa: PLC0415 - for the SIGUSR1 handler above

    from purplegw.protocols.loader import load_adapters  # noqa: PLC0415

    sender = _PipeSender(conn)
    send = sender.send

    actors_config = ActorsConfig.from_section({**config, "workers": 0})
    apply_gc_threshold(actors_config.gc_threshold)
    adapters = load_adapters(protocols_config)
    accounts = LocalAccounts(actors_config, adapters, protocols_config, proxy)
    listener.add_sink(_Forwarder(send))
    pusher = _StatusPusher(accounts, send, sender.lock).start()
    listener.add_sink(pusher)
    send(("ready", os.getpid()))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                logger.warning("Main process gone; worker %d stopping", index)
                break
            if message[0] == "stop":
                pusher.stop()
                accounts.stop()
                send(("reply", message[1], None))
                break
            _serve(message, accounts, send, pusher)
    finally:
        pusher.stop()
        if accounts is not None:
            accounts.stop()
        pykka.ActorRegistry.stop_all()
        from purplegw.actors.loop import stop_shared_loop  # noqa: PLC0415

        stop_shared_loop()
        sender.flush()  # what the loop sent in its last turn
        conn.close()


def _serve(message: tuple[Any, ...], accounts: Any, send: Any, pusher: _StatusPusher) -> None:
    kind, request_id = message[0], message[1]
    try:
        if kind == "request":
            key, op, args = message[2], message[3], message[4]
            handle = accounts.directory.get(*key)
            if handle is None:
                send(("reply", request_id, Outcome(480, "no such account")))
                return
            future = handle._request(op, *args)  # noqa: SLF001
            future.add_done_callback(lambda f: send(("reply", request_id, f.get())))
        elif kind == "apply":
            summary = accounts.apply(message[2])
            pusher.push()  # the main process knows every new account before the reply
            send(("reply", request_id, summary))
        else:
            send(("error", request_id, f"unknown command {kind!r}"))
    except Exception as exc:
        logger.exception("Worker command %s failed", kind)
        send(("error", request_id, repr(exc)))


# --- the main-process side ----------------------------------------------------------


class RemoteAccountHandle:
    """``AccountHandle`` for an account hosted in a worker process."""

    __slots__ = ("_pool", "_worker", "info")  # one per account in the main process

    def __init__(self, pool: WorkerPool, worker: int, info: AccountInfo) -> None:
        self._pool = pool
        self._worker = worker
        self.info = info

    def __repr__(self) -> str:
        info = self.info
        return f"RemoteAccountHandle({info.sip_user!r}, {info.protocol!r}, worker={self._worker})"

    def _request(self, op: str, *args: Any) -> OutcomeFuture:
        future = OutcomeFuture()
        key = (self.info.sip_user, self.info.protocol)
        self._pool._workers[self._worker].request(key, op, args, future)  # noqa: SLF001
        return future

    def send_message(
        self,
        contact: str,
        text: str,
        message_id: str,
        receipt: bool = False,  # noqa: FBT001, FBT002 - positional: requests carry args as a tuple
    ) -> OutcomeFuture:
        future = self._request("send_message", contact, text, message_id, receipt)
        worker = self._pool._workers[self._worker]  # noqa: SLF001
        args = (contact, text, message_id, receipt)
        future.add_done_callback(lambda done: worker.track(self.info, args, done.get()))
        return future

    def set_presence(self, presence: Any) -> OutcomeFuture:
        return self._request("set_presence", presence)

    def add_contact(self, contact: str) -> OutcomeFuture:
        return self._request("add_contact", contact)

    def remove_contact(self, contact: str) -> OutcomeFuture:
        return self._request("remove_contact", contact)

    def answer_authorization(self, contact: str, answer: Any) -> OutcomeFuture:
        return self._request("answer_authorization", contact, answer)

    def send_typing(self, contact: str, state: Any) -> OutcomeFuture:
        return self._request("send_typing", contact, state)

    def bounce(
        self, contact: str, message_id: str | None, status: int, reason: str
    ) -> OutcomeFuture:
        return self._request("bounce", contact, message_id, status, reason)

    def send_receipt(
        self, contact: str, message_id: str, kind: str, receipts: str = ""
    ) -> OutcomeFuture:
        return self._request("send_receipt", contact, message_id, kind, receipts)

    def messages_stored(self, tokens: tuple[int, ...]) -> OutcomeFuture:
        return self._request("messages_stored", tokens)

    # --- rooms (purplegw.protocols.base.Session, group chat) ---------------------

    def is_room(self, contact: str) -> OutcomeFuture:
        return self._request("is_room", contact)

    def join_room(
        self, room: str, nick: str, history: int = 0, since: float | None = None
    ) -> OutcomeFuture:
        return self._request("join_room", room, nick, history, since)

    def leave_room(self, room: str) -> OutcomeFuture:
        return self._request("leave_room", room)

    def send_room_message(self, room: str, text: str, message_id: str) -> OutcomeFuture:
        return self._request("send_room_message", room, text, message_id)

    def room_occupants(self, room: str) -> OutcomeFuture:
        return self._request("room_occupants", room)

    def change_nick(self, room: str, nick: str) -> OutcomeFuture:
        return self._request("change_nick", room, nick)

    def room_bookmarks(self) -> OutcomeFuture:
        return self._request("room_bookmarks")

    def logout(self) -> OutcomeFuture:
        return self._request("logout")

    def login(self) -> OutcomeFuture:
        return self._request("login")


class _Worker:
    """The main process's end of one worker."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.rows: list[AccountCredentials] = []
        self.process: Any = None
        self.conn: multiprocessing.connection.Connection | None = None
        self.pid = 0
        self.restarts = 0
        self._send_lock = threading.Lock()
        self._pending: dict[int, Any] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        # Messages its accounts answered 202 (queued) and have not settled
        # with on_send_result yet: the worker's memory is their only queue.
        self.queued: dict[str, tuple[AccountInfo, tuple[str, str, str]]] = {}
        self._queued_lock = threading.Lock()
        # Keys its sessions derived since the rows were loaded (account id ->
        # kind -> value): a restarted worker gets them with its rows and
        # derives nothing again.
        self.derived: dict[int, dict[str, str]] = {}
        # The last status each of its accounts reported; `purplegw status` reads it.
        self.statuses: dict[AccountKey, tuple[Any, ...]] = {}  # _VARYING values
        self._statuses_lock = threading.Lock()
        # From its death until its replacement took its rows.
        self.restarting = False
        self.dead_pid = 0  # the pid of the process that died, while restarting

    def start(self) -> None:
        parent, child = multiprocessing.Pipe(duplex=True)
        pool = self.pool
        self._ready.clear()
        self.process = WorkerProcess(
            target=worker_main,
            args=(
                self.index,
                child,
                pool.config.as_dict(),
                pool.protocols_config,
                pool.proxy,
                logs.worker_settings(),
            ),
            name=f"purplegw-worker-{self.index}",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.conn = parent
        threading.Thread(
            target=self._read, args=(parent,), name=f"worker-{self.index}-reader", daemon=True
        ).start()
        if not self._ready.wait(pool.config.worker_start_timeout):
            msg = f"worker {self.index} did not start within {pool.config.worker_start_timeout:g}s"
            raise WorkerError(msg)
        logger.info("Worker %d started (pid %d)", self.index, self.pid)

    def _read(self, conn: multiprocessing.connection.Connection) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message[0] == "batch":
                for each in message[1]:
                    self._take(each)
            else:
                self._take(message)
        self._fail_all()

    def _take(self, message: tuple[Any, ...]) -> None:
        """One message of the worker's (``_PipeSender``), on the reader thread."""
        kind = message[0]
        if kind == "statuses":
            self._take_statuses(message[1], message[2])
        elif kind == "event":
            self._on_event(message[1], message[2])
        elif kind == "ready":
            self.pid = message[1]
            self._ready.set()
        elif kind in ("reply", "error"):
            with self._pending_lock:
                waiter = self._pending.pop(message[1], None)
            if waiter is None:
                return
            if kind == "reply":
                waiter.set(message[2])
            else:
                self._fail(waiter, WorkerError(message[2]))

    def _on_event(self, event: str, kwargs: dict[str, Any]) -> None:
        if event == "on_send_result" and kwargs["outcome"].status != 202:
            with self._queued_lock:
                self.queued.pop(kwargs["message_id"], None)
        elif event == "on_key_derived":
            kinds = self.derived.setdefault(kwargs["account"].account_id, {})
            kinds[sys.intern(kwargs["kind"])] = kwargs["value"]
        account = kwargs.get("account")
        if account is not None:
            kwargs["account"] = self._known(account)
        listener.send(event, **kwargs)

    def _known(self, account: AccountInfo) -> AccountInfo:
        """The main process's own ``AccountInfo`` equal to ``account``, if it has one.

        Each event arrives with an unpickled copy (new strings and ints,
        ~0.3 KiB); what the gateway keeps of an account (rosters, presence,
        contacts) should hold the one copy the directory already has.
        """
        handle = self.pool.directory.get(account.sip_user, account.protocol)
        info = getattr(handle, "info", None)
        return info if info == account else account

    def _take_statuses(self, changed: list[tuple[Any, ...]], removed: list[AccountKey]) -> None:
        with self._statuses_lock:
            for key in removed:
                self.statuses.pop(AccountKey(*key), None)
            for entry in changed:
                key = AccountKey(entry[_SIP_USER_AT], sys.intern(entry[_PROTOCOL_AT]))
                self.statuses[key] = self._compact(entry)

    def _compact(self, entry: tuple[Any, ...]) -> tuple[Any, ...]:
        """An entry's ``_VARYING`` values, without its row's fields.

        The main process keeps one per account (~0.2 KiB): the state name and
        the worker's pid shared, the row's fields taken from the row when
        ``status`` rebuilds the dict.
        """
        values = [entry[at] for at in _VARYING_AT]
        values[_STATE] = sys.intern(values[_STATE])
        if values[_PID] == self.pid:
            values[_PID] = self.pid
        return tuple(values)

    def status(self) -> list[dict[str, Any]]:
        """Every account of ``rows``, as last reported (``worker_restarting`` meanwhile)."""
        with self._statuses_lock:
            known = dict(self.statuses)
        restarting = self.restarting
        result = []
        for row in self.rows:
            values = known.get(AccountKey.of(row))
            if values is None:  # a row the worker is being given right now
                entry = AccountStatus(
                    account_id=row.account_id,
                    sip_user=row.sip_user,
                    protocol=row.protocol,
                    ext_user=row.ext_user,
                    pid=self.pid,
                ).as_dict()
            else:
                entry = {
                    "account_id": row.account_id,
                    "sip_user": row.sip_user,
                    "protocol": row.protocol,
                    "ext_user": row.ext_user,
                    **dict(zip(_VARYING, values, strict=True)),
                }
            # Until the new worker took all its rows: restarting, with the dead
            # worker's pid (the new one may have reported some accounts already).
            if restarting:
                entry = {
                    **entry,
                    "pid": self.dead_pid,
                    "state": WORKER_RESTARTING,
                    "last_error": f"worker {self.index} restarting",
                }
            result.append(entry)
        return result

    @staticmethod
    def _fail(waiter: Any, error: Exception) -> None:
        if isinstance(waiter, OutcomeFuture):
            waiter.set(Outcome(480, "worker unavailable"))
        else:
            waiter.set_exception(exc_info=(type(error), error, None))

    def _fail_all(self) -> None:
        with self._pending_lock:
            waiters, self._pending = list(self._pending.values()), {}
        for waiter in waiters:
            self._fail(waiter, WorkerError(f"worker {self.index} died"))

    def _send(self, message_for: Any, waiter: Any) -> None:
        request_id = next(self._ids)
        with self._pending_lock:
            self._pending[request_id] = waiter
        try:
            with self._send_lock:
                if self.conn is None:
                    raise OSError("no worker")  # noqa: TRY301 - no worker fails the waiter as a broken pipe does
                self.conn.send(message_for(request_id))
        except (OSError, ValueError) as exc:
            with self._pending_lock:
                self._pending.pop(request_id, None)
            self._fail(waiter, WorkerError(str(exc)))

    def request(
        self, key: tuple[str, str], op: str, args: tuple[Any, ...], future: OutcomeFuture
    ) -> None:
        self._send(lambda rid: ("request", rid, key, op, args), future)

    def call(self, kind: str, *args: Any, timeout: float) -> Any:
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        self._send(lambda rid: (kind, rid, *args), future)
        return future.get(timeout=timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def track(self, info: AccountInfo, args: tuple[str, str, str], outcome: Outcome) -> None:
        if outcome.status == 202:  # queued in the worker, or written and awaiting the server's ack
            with self._queued_lock:
                self.queued[args[2]] = (info, args)

    def take_queued(self) -> list[tuple[AccountInfo, tuple[str, str, str]]]:
        with self._queued_lock:
            lost, self.queued = list(self.queued.values()), {}
        return lost


class WorkerPool:
    """Accounts hosted in ``[actors] workers`` processes."""

    def __init__(
        self,
        config: ActorsConfig,
        protocols_config: dict[str, dict[str, Any]] | None = None,
        proxy: ProxySettings | None = None,
    ) -> None:
        self.config = config
        self.protocols_config = protocols_config or {}
        self.proxy = proxy
        self.directory = Directory()
        self._workers = [_Worker(self, i) for i in range(config.workers)]
        self._stopping = threading.Event()
        self._apply_lock = threading.Lock()
        for worker in self._workers:
            worker.start()
        self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)
        self._monitor.start()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def _timeout(self) -> float:
        return self.config.shutdown_timeout + 30.0

    def apply(self, rows: Sequence[AccountCredentials]) -> ReloadSummary:
        groups: list[list[AccountCredentials]] = [[] for _ in self._workers]
        for row in rows:
            groups[shard_of(row.sip_user, len(self._workers))].append(row)
        summary = ReloadSummary()
        with self._apply_lock:
            for worker, group in zip(self._workers, groups, strict=True):
                worker.rows = group
                try:
                    summary.merge(worker.call("apply", group, timeout=self._timeout()))
                except (WorkerError, pykka.Timeout) as exc:
                    # The monitor restarts it with its new rows.
                    logger.warning("Worker %d did not take its rows: %s", worker.index, exc)
                self._publish(worker)
        return summary

    def _publish(self, worker: _Worker) -> None:
        keep = {AccountKey.of(r) for w in self._workers for r in w.rows}
        changes: list[tuple[AccountKey, RemoteAccountHandle | None]] = [
            (key, None)
            for handle in self.directory.all()
            if (key := AccountKey(handle.info.sip_user, handle.info.protocol)) not in keep
        ]
        for row in worker.rows:
            info = AccountInfo(row.account_id, row.sip_user, row.protocol, row.ext_user)
            changes.append((AccountKey.of(row), RemoteAccountHandle(self, worker.index, info)))
        self.directory.publish_many(changes)  # one copy of the map, not one per row

    def status(self) -> list[dict[str, Any]]:
        """Every account, always, from what the workers last reported (asks none)."""
        result: list[dict[str, Any]] = []
        for worker in self._workers:
            result += worker.status()
        result.sort(key=status_sort_key)
        return result

    def _watch(self) -> None:
        while not self._stopping.is_set():
            sentinels = {w.process.sentinel: w for w in self._workers if w.process is not None}
            ready = multiprocessing.connection.wait(list(sentinels), timeout=0.5)
            for sentinel in ready:
                worker = sentinels[sentinel]
                if self._stopping.is_set():
                    return
                worker.dead_pid = worker.pid
                worker.restarting = True
                worker.process.join(1)  # reap it, for the exit code
                code = worker.process.exitcode
                logger.error(
                    "Worker %d (pid %d) died (exit code %s); restarting it with its %d accounts",
                    worker.index,
                    worker.pid,
                    code,
                    len(worker.rows),
                )
                self._restart(worker)

    def _restart(self, worker: _Worker) -> None:
        with self._apply_lock:
            if worker.conn is not None:
                worker.conn.close()
            worker.restarts += 1
            from purplegw import metrics  # noqa: PLC0415 - main process only: workers import no prometheus_client

            metrics.worker_restarted(worker.index, [row.account_id for row in worker.rows])
            while not self._stopping.is_set():
                self._stopping.wait(self.config.worker_restart_delay)
                if self._stopping.is_set():
                    return
                try:
                    worker.start()
                    rows = with_derived_keys(worker.rows, dict(worker.derived))
                    worker.call("apply", rows, timeout=self._timeout())
                    worker.restarting = False
                    self._requeue(worker)
                except (WorkerError, pykka.Timeout, OSError) as exc:
                    # expected while the cause lasts, and retried: one line, no traceback
                    logger.error("Worker %d failed to restart: %s", worker.index, exc)  # noqa: TRY400
                    if worker.process is not None and worker.process.is_alive():
                        worker.process.kill()
                        worker.process.join(5)
                else:
                    return

    def _requeue(self, worker: _Worker) -> None:
        """Hand the messages the dead worker had queued (answered 202) to the new one.

        Their callers were told 202 long ago, so the outcome goes out as
        ``on_send_result``, as the dead actor would have sent it.
        """
        lost = worker.take_queued()
        if lost:
            logger.warning(
                "Worker %d died with %d accepted message(s) queued; queued again",
                worker.index,
                len(lost),
            )
        for info, args in lost:
            handle = RemoteAccountHandle(self, worker.index, info)

            def settled(
                done: OutcomeFuture, info: AccountInfo = info, message_id: str = args[2]
            ) -> None:
                outcome = done.get()
                if outcome.status != 202:  # 202: the new actor reports the outcome later
                    listener.send(
                        "on_send_result", account=info, message_id=message_id, outcome=outcome
                    )

            handle.send_message(*args).add_done_callback(settled)

    def stop(self) -> None:
        self._stopping.set()
        for worker in self._workers:
            if not worker.alive():
                continue
            try:
                worker.call("stop", timeout=self._timeout())
            except (WorkerError, pykka.Timeout) as exc:
                logger.warning("Worker %d did not stop cleanly: %s", worker.index, exc)
        for worker in self._workers:
            if worker.process is None:
                continue
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            if worker.conn is not None:
                worker.conn.close()
        self._monitor.join(2)


def start_accounts(
    config: ActorsConfig,
    adapters: AdapterLookup,
    protocols_config: dict[str, dict[str, Any]] | None = None,
    proxy: ProxySettings | None = None,
) -> LocalAccounts | WorkerPool:
    """``LocalAccounts`` or, with ``workers > 0``, a ``WorkerPool``.

    Here rather than in supervisor.py, which would then import this module
    back: the supervisor knows nothing of worker processes.
    """
    if config.workers == 0:
        return LocalAccounts(config, adapters, protocols_config, proxy)
    return WorkerPool(config, protocols_config, proxy)


if sys.platform == "win32":  # pragma: no cover
    msg = "worker processes need POSIX"
    raise ImportError(msg)
