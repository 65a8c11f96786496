"""Every Prometheus metric of the gateway, and the one-line calls that feed them.

The rest of the code never touches ``prometheus_client``: it calls the small
functions below (``metrics.sip_request("MESSAGE", 202)``), so each
instrumented site is one line and the names, labels and units live here
(docs/metrics.md lists them).  The HTTP exposition server is in
``purplegw/actors/metrics.py`` (a thread and a socket).

Where the numbers are counted.  Account actors live in worker processes
(``[actors] workers``), but every account event already reaches the main
process through the event bus (``purplegw/actors/listener.py``).  So the
account metrics are derived there, from those events, by ``AccountTracker``
-- never in a worker -- and the main process's registry is the whole
gateway.  No ``PROMETHEUS_MULTIPROC_DIR``, no per-pid files, no gauge
aggregation modes; a worker that dies loses nothing that was counted.
The rule that follows: call these functions in the main process only (the
SIP front, the gateway, the store and the worker pool all live there).

Label values are bounded: SIP methods outside the known set count as
``other`` (a peer must not be able to mint a time series per request);
protocols come from the installed adapters; reasons are a fixed set.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from purplegw.store import Store

NAMESPACE = "purplegw"

# The registry served on [metrics] listen.  Not prometheus_client's global
# one: importing purplegw must not add series to an embedding program's.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# --- accounts (derived from listener events by AccountTracker) ------------------------

LOGINS = Counter(
    "logins",
    "Successful logins of external accounts (reconnects included).",
    ["protocol"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
LOGIN_FAILURES = Counter(
    "login_failures",
    "Failed login attempts of external accounts, by reason.",
    ["protocol", "reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
LOGIN_DURATION = Histogram(
    "login_duration_seconds",
    "Seconds from an account starting to log in to its connection being up "
    "(includes waiting for a [actors] max_concurrent_logins slot).",
    ["protocol"],
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
OUTBOX_WRITE = Histogram(
    "outbox_write_seconds",
    "Seconds from a received message reaching the gateway (its account handed "
    "it on, the moment XEP-0198 counts it handled) to its outbox row committing.",
    namespace=NAMESPACE,
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DISCONNECTS = Counter(
    "account_disconnects",
    "Connections of external accounts lost after a successful login.",
    ["protocol"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# --- messages ----------------------------------------------------------------------

MESSAGES = Counter(
    "messages",
    "Instant messages by direction (in: external network -> SIP user, "
    "out: SIP user -> external network) and outcome (see docs/metrics.md).",
    ["direction", "outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# --- SIP ---------------------------------------------------------------------------

SIP_REQUESTS = Counter(
    "sip_requests",
    "SIP requests received, by method and class of the final response sent.",
    ["method", "status_class"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
TRANSACTION_TIMEOUTS = Counter(
    "sip_transaction_timeouts",
    "Client transactions of the gateway that got no final response (timer B/F).",
    ["method"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
NOTIFYS = Counter(
    "presence_notifies",
    "NOTIFY requests sent to watchers, by class of the answer (timeout: none came).",
    ["status_class"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# --- runtime and store ------------------------------------------------------------

WORKER_RESTARTS = Counter(
    "worker_restarts",
    "Worker processes that died and were started again.",
    ["worker"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "store_errors",
    "Database errors (each one raised as StoreError).",
    ["dialect"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

SIP_METHODS = frozenset(
    {
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "INVITE",
        "MESSAGE",
        "NOTIFY",
        "OPTIONS",
        "PRACK",
        "PUBLISH",
        "REFER",
        "REGISTER",
        "SUBSCRIBE",
        "UPDATE",
    }
)

# An account whose worker died and is being started again (not an AccountState:
# the account actor is gone, the main process still knows the row).
WORKER_RESTARTING = "worker_restarting"


def status_class(status: int) -> str:
    """``202`` -> ``"2xx"``; anything outside 100..699 -> ``"other"``."""
    return f"{status // 100}xx" if 100 <= status < 700 else "other"


def method_label(method: str) -> str:
    return method if method in SIP_METHODS else "other"


# --- the calls the rest of the code makes (one line each) --------------------------------


# (method, status) -> its counter child: ``labels()`` costs ~1.5 us, and the SIP
# front counts every request (a bounded table: known methods x status codes)
_sip_request_children: dict[tuple[str, int], Any] = {}


def sip_request(method: str, status: int) -> None:
    """A final response ``status`` was sent to a SIP request ``method``."""
    child = _sip_request_children.get((method, status))
    if child is None:
        child = SIP_REQUESTS.labels(method_label(method), status_class(status))
        if method in SIP_METHODS and len(_sip_request_children) < 4096:
            _sip_request_children[(method, status)] = child
    child.inc()


def transaction_timeout(method: str) -> None:
    """A client transaction for ``method`` ended without a final response."""
    TRANSACTION_TIMEOUTS.labels(method_label(method)).inc()


def notify_sent(status: int | None) -> None:
    """A NOTIFY was answered ``status``; ``None``: no answer came (timeout, transport error)."""
    NOTIFYS.labels("timeout" if status is None else status_class(status)).inc()


# outcome -> its counter child (two per message received from a network)
_message_in_children: dict[str, Any] = {}


def message_in(outcome: str) -> None:
    """External -> SIP: ``received`` (from the network, now in the outbox),
    ``delivered`` (the phone answered 2xx), ``retry`` (an attempt failed; kept)."""
    child = _message_in_children.get(outcome)
    if child is None:
        child = _message_in_children[outcome] = MESSAGES.labels("in", outcome)
    child.inc()


def outbox_written(seconds: float) -> None:
    """A received message is in the outbox, ``seconds`` after it reached the gateway."""
    OUTBOX_WRITE.observe(seconds)


def message_out(status: int) -> None:
    """SIP -> external: the outcome of a message the SIP user sent, as its status.

    2xx (but 202) ``sent``; 202 ``queued`` (accepted, sent later: its final
    outcome comes as ``on_send_result`` and is counted then); any other
    ``failed``.
    """
    MESSAGES.labels("out", _out_outcome(status)).inc()


def _out_outcome(status: int) -> str:
    if status == 202:  # accepted; its final outcome comes with on_send_result
        return "queued"
    return "sent" if 200 <= status < 300 else "failed"


def worker_restarted(worker: int, account_ids: Iterable[int]) -> None:
    """Worker ``worker`` died and is being restarted with these accounts."""
    WORKER_RESTARTS.labels(str(worker)).inc()
    accounts.mark(account_ids, WORKER_RESTARTING)


def store_error(dialect: str) -> None:
    STORE_ERRORS.labels(dialect or "unknown").inc()


# --- accounts: states and logins from the events --------------------------------------


def login_failure_reason(state: str, reason: str) -> str:
    """A bounded label for why a login failed (the state it ended in, or ``timeout``)."""
    if "timed out" in reason:
        return "timeout"
    return {"bad_credentials": "bad_credentials", "transient_disconnect": "network"}.get(
        state, "error"
    )


class AccountTracker:
    """Each account's last state and login start, fed by ``on_connection_state`` events.

    Called inline on the event sender's thread (the worker pipe readers, or
    the shared loop without workers): a lock and a dict update, nothing more.

    Rule 1. ``connecting`` starts a login, except ``connecting`` with a reason
            right after ``connected``: that is a session repairing its stream
            (XEP-0198 resumption), not a login.
    Rule 2. ``connected`` after a login start: one login, its duration observed.
    Rule 3. ``bad_credentials``, ``transient_disconnect`` or ``unknown_error``
            after a login start: one failure, labelled by ``login_failure_reason``;
            the same states from ``connected`` (or from a resumption) are one
            disconnect.
    Rule 4. ``logged_out`` ends a login start without counting anything.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[int, str] = {}
        self._login_started: dict[int, float] = {}

    def state_changed(self, account_id: int, protocol: str, state: str, reason: str) -> None:
        now = self._clock()
        with self._lock:
            previous = self._states.get(account_id)
            self._states[account_id] = state
            started = self._login_started.pop(account_id, None)
            if state == "connecting":
                if not reason or previous != "connected":  # Rule 1
                    self._login_started[account_id] = now if started is None else started
                return
        if state == "connected":
            if started is not None:  # Rule 2
                LOGINS.labels(protocol).inc()
                LOGIN_DURATION.labels(protocol).observe(max(0.0, now - started))
        elif state in ("bad_credentials", "transient_disconnect", "unknown_error"):
            if started is not None:  # Rule 3
                LOGIN_FAILURES.labels(protocol, login_failure_reason(state, reason)).inc()
            elif previous in ("connected", "connecting"):  # "connecting": a failed resumption
                DISCONNECTS.labels(protocol).inc()

    def mark(self, account_ids: Iterable[int], state: str) -> None:
        with self._lock:
            for account_id in account_ids:
                self._states[account_id] = state
                self._login_started.pop(account_id, None)

    def state_of(self, account_id: int) -> str | None:
        return self._states.get(account_id)

    def reset(self) -> None:
        with self._lock:
            self._states.clear()
            self._login_started.clear()


accounts = AccountTracker()


class AccountsCollector(Collector):
    """``purplegw_accounts{protocol,state}``: the running accounts, counted at scrape time.

    Which accounts exist comes from the supervisor's directory (the rows
    running now, whatever process hosts them); their states from the
    tracker.  An account with no event yet counts as ``logged_out``.
    """

    def __init__(self, directory: Any, tracker: AccountTracker | None = None) -> None:
        self._directory = directory
        self._tracker = tracker or accounts

    def collect(self) -> Iterator[Metric]:
        counts: dict[tuple[str, str], int] = {}
        for handle in self._directory.all():
            info = handle.info
            state = self._tracker.state_of(info.account_id) or "logged_out"
            counts[(info.protocol, state)] = counts.get((info.protocol, state), 0) + 1
        family = GaugeMetricFamily(
            f"{NAMESPACE}_accounts",
            "Running external accounts by protocol and state.",
            labels=["protocol", "state"],
        )
        for (protocol, state), count in sorted(counts.items()):
            family.add_metric([protocol, state], count)
        yield family


class StoreCollector(Collector):
    """Queue depths, oldest ages and live subscriptions, read from the store at scrape time.

    Answers are cached for ``ttl`` seconds and only one scrape at a time
    reads the database, so however often and however many Prometheus
    servers scrape, the store sees at most five small queries per ``ttl``.
    A failed read yields nothing for those series (Prometheus shows the gap)
    and counts in ``purplegw_store_errors_total``.
    """

    def __init__(
        self,
        store: Store,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._read_at: float | None = None
        self.reads = 0  # database round trips, for tests and docs

    def describe(self) -> Iterator[Metric]:
        # Describing must not query: the registry calls it on register().
        return iter(self._families({}, {}))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._ttl:
                self._cached = self._read()
                self._read_at = now
            return iter(self._cached)

    def _read(self) -> list[Metric]:
        # The tables through the store's repositories: importing purplegw.store
        # here would close a cycle (the store imports this module, store_error).
        from purplegw.exceptions import StoreError  # noqa: PLC0415

        self.reads += 1
        store = self._store
        db = store.db
        wall = self._wall()
        queues: dict[str, tuple[int, float | None]] = {}
        subscriptions: dict[str, int] = {}
        try:
            for name, table, where in (
                # Sent rows that only wait for the contact's receipt are not queued.
                ("sendq", store.sendq.TABLE, " WHERE acked = 0"),
                ("outbox", store.outbox.TABLE, ""),
            ):
                count = db.fetchone(f"SELECT COUNT(*) FROM {table}{where}")  # noqa: S608 - constants
                # seq grows with created: the first row by primary key is the oldest
                oldest = db.fetchone(f"SELECT created FROM {table}{where} ORDER BY seq LIMIT 1")  # noqa: S608
                queues[name] = (int(count[0]) if count else 0, float(oldest[0]) if oldest else None)
            for state, count in db.fetchall(
                f"SELECT state, COUNT(*) FROM {store.subscriptions.TABLE} "  # noqa: S608
                "WHERE expires_at > ? GROUP BY state",
                (wall,),
            ):
                subscriptions[str(state)] = int(count)
        except StoreError:
            return []  # counted by the store's error conversion
        return self._families(queues, subscriptions, wall)

    @staticmethod
    def _families(
        queues: dict[str, tuple[int, float | None]],
        subscriptions: dict[str, int],
        wall: float = 0.0,
    ) -> list[Metric]:
        depth = GaugeMetricFamily(
            f"{NAMESPACE}_queue_messages",
            "Messages waiting in a durable queue (sendq: SIP -> external accepted, not yet "
            "sent; outbox: external -> SIP not yet delivered).",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            f"{NAMESPACE}_queue_oldest_age_seconds",
            "Age of the oldest message in a durable queue (0 when empty).",
            labels=["queue"],
        )
        for name, (count, oldest) in sorted(queues.items()):
            depth.add_metric([name], count)
            age.add_metric([name], max(0.0, wall - oldest) if oldest is not None else 0.0)
        subs = GaugeMetricFamily(
            f"{NAMESPACE}_presence_subscriptions",
            "Unexpired presence subscriptions (SUBSCRIBE dialogs), by state.",
            labels=["state"],
        )
        if queues:  # a successful read: both states, so a query on either finds a series
            for state in ("active", "pending"):
                subs.add_metric([state], subscriptions.get(state, 0))
        return [depth, age, subs]


def register_gateway(
    directory: Any, store: Store | None, ttl: float = 5.0, workers: int = 0
) -> Callable[[], None]:
    """Add the scrape-time collectors of a running gateway; returns their removal.

    The counters whose label values are known now start at 0, so that the
    first worker restart or store error is an increase Prometheus can see
    (a series that appears at 1 has no earlier sample to rise from).
    """
    for worker in range(workers):
        WORKER_RESTARTS.labels(str(worker))
    collectors: list[Collector] = [AccountsCollector(directory)]
    if store is not None:
        STORE_ERRORS.labels(store.db.dialect)
        collectors.append(StoreCollector(store, ttl=ttl))
    for collector in collectors:
        REGISTRY.register(collector)

    def unregister() -> None:
        for collector in collectors:
            REGISTRY.unregister(collector)

    return unregister
