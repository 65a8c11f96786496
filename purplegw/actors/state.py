"""Account state, outcomes, the ``[actors]`` settings and the restart policy.

Pure code (no threads, no sockets): the clock and the random source are
injected so the policy can be tested with fake time.

Restart policy, in the order it is applied after a failed login or a lost
connection:

Rule 1. Rejected credentials are never retried: the account waits in
        ``BAD_CREDENTIALS`` until its row changes (reload).
Rule 2. Every other failure is one *attempt*.  If ``flap_attempts`` attempts
        fall within ``flap_window`` seconds the account is *flapping* (circus'
        flapping plugin): it pauses ``flap_retry_in`` seconds, and after
        ``flap_max_retry`` such pauses it gives up (``flap_max_retry = -1``:
        never give up).  A given-up account stays in ``UNKNOWN_ERROR`` until
        its row changes.
Rule 3. Otherwise it waits a jittered exponential delay:
        ``min(backoff_max, backoff_initial * 2**n) * (1 - backoff_jitter * U)``
        with U uniform in [0, 1) and n the failures since the last successful
        login.  Jitter spreads the reconnect storm after a server restart.
"""

from __future__ import annotations

import random
import time
import zlib
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple, Self

from purplegw.exceptions import ConfigError
from purplegw.protocols.base import AccountCredentials, ConnectionState

if TYPE_CHECKING:
    from collections.abc import Callable

# The STYLE.md state enum is the adapter contract's: one enum, two names.
AccountState = ConnectionState

# How long a connection must stay up before its backoff exponent resets.
# Without it an account whose connection drops right after login would
# reconnect at backoff_initial forever instead of backing off.
_STABLE_AFTER = 10.0


class Outcome(NamedTuple):
    """The result of one request to an account, as a SIP status hint.

    200 the network took it; 202 queued until the account is online;
    403 bad credentials; 480 account unavailable or queue full;
    501 the protocol cannot do it; 504 the network did not answer in time;
    500 a bug in the adapter (logged); other codes come from ``DeliveryError``.
    """

    status: int
    reason: str = ""
    value: Any = None  # what a query returned (room occupants, is_room)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class AccountKey(NamedTuple):
    """One row of the account table: (sip_user, canonical protocol)."""

    sip_user: str
    protocol: str

    @classmethod
    def of(cls, credentials: AccountCredentials) -> AccountKey:
        return cls(credentials.sip_user, credentials.protocol)


def shard_of(sip_user: str, workers: int) -> int:
    """The worker that hosts ``sip_user``'s accounts.

    A stable hash (not ``hash()``, which is salted per process) so that a
    user's accounts live together and stay on the same worker across
    restarts and reloads.
    """
    if workers <= 0:
        return 0
    return zlib.crc32(sip_user.encode("utf-8")) % workers


@dataclass(frozen=True)
class ActorsConfig:
    """The ``[actors]`` config section (documented in docs/runtime.md)."""

    workers: int = 0
    runtime: str = "shared_loop"  # or "thread_per_account"
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    backoff_jitter: float = 0.5
    flap_attempts: int = 5
    flap_window: float = 60.0
    flap_retry_in: float = 300.0
    flap_max_retry: int = 5
    queue_limit: int = 100
    login_timeout: float = 60.0
    # Logins in progress at once per loop: a reload or restart of thousands of
    # accounts must not hit the server (and its listen backlog) all at once.
    max_concurrent_logins: int = 100
    send_timeout: float = 30.0
    logout_timeout: float = 5.0
    shutdown_timeout: float = 20.0
    worker_restart_delay: float = 1.0
    worker_start_timeout: float = 30.0
    # First-generation threshold of Python's cyclic garbage collector in every
    # gateway process (0: Python's own, 700).  See purplegw/actors/gc_tuning.py.
    gc_threshold: int = 50_000

    @classmethod
    def from_section(cls, section: dict[str, Any] | None) -> ActorsConfig:
        section = dict(section or {})
        known = {f.name: f for f in fields(cls)}
        errors = [f"actors.{key}: unknown setting" for key in section if key not in known]
        values: dict[str, Any] = {}
        for name, value in section.items():
            if name not in known:
                continue
            default = known[name].default
            try:
                if isinstance(default, bool) or not isinstance(default, (int, float)):
                    values[name] = type(default)(value)
                elif isinstance(default, int):
                    if isinstance(value, float) and not value.is_integer():
                        raise ValueError(value)  # noqa: TRY301 - a fractional int joins the conversion errors below
                    values[name] = int(value)
                else:
                    values[name] = float(value)
            except (TypeError, ValueError):
                errors.append(f"actors.{name}: expected {type(default).__name__}, got {value!r}")
        config = cls(**values)
        errors += config._problems()
        if errors:
            raise ConfigError(errors)
        return config

    def _problems(self) -> list[str]:
        problems = []
        if self.workers < 0:
            problems.append("actors.workers: must be >= 0")
        if self.runtime not in ("shared_loop", "thread_per_account"):
            problems.append("actors.runtime: must be 'shared_loop' or 'thread_per_account'")
        if not 0 <= self.backoff_jitter <= 1:
            problems.append("actors.backoff_jitter: must be between 0 and 1")
        if self.flap_attempts < 1:
            problems.append("actors.flap_attempts: must be >= 1")
        if self.max_concurrent_logins < 1:
            problems.append("actors.max_concurrent_logins: must be >= 1")
        if self.queue_limit < 0:
            problems.append("actors.queue_limit: must be >= 0")
        if self.gc_threshold < 0:
            problems.append("actors.gc_threshold: must be >= 0")
        problems.extend(
            f"actors.{name}: must be > 0"
            for name in (
                "backoff_initial",
                "backoff_max",
                "flap_window",
                "flap_retry_in",
                "login_timeout",
                "send_timeout",
                "logout_timeout",
                "shutdown_timeout",
            )
            if getattr(self, name) <= 0
        )
        return problems

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backoff_delay(
    failures: int, initial: float, maximum: float, jitter: float, rng: Callable[[], float]
) -> float:
    """Jittered exponential delay before retry number ``failures`` (0-based)."""
    ceiling = min(maximum, initial * (2 ** min(failures, 62)))
    return ceiling * (1.0 - jitter * rng())


class RestartPolicy:
    """Decides how long an account waits before its next login attempt."""

    def __init__(
        self,
        config: ActorsConfig,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng
        self._failures = 0
        # A list, not a deque: at most flap_attempts entries, and an empty
        # deque is ~0.7 KiB, once per account.
        self._attempts: list[float] = []
        self.flap_pauses = 0
        self.flapping = False
        self._connected_at: float | None = None

    def connected(self) -> None:
        """Triggered when a login succeeded."""
        self._connected_at = self._clock()
        self.flapping = False

    def next_delay(self) -> float | None:
        """Seconds to wait before retrying, or ``None`` to give up."""
        config = self._config
        now = self._clock()
        if self._connected_at is not None and now - self._connected_at >= _STABLE_AFTER:
            self._failures = 0
        self._connected_at = None
        self._attempts.append(now)
        stale = 0
        while stale < len(self._attempts) and now - self._attempts[stale] > config.flap_window:
            stale += 1
        del self._attempts[:stale]
        if len(self._attempts) >= config.flap_attempts:
            self._attempts.clear()
            self.flap_pauses += 1
            if 0 <= config.flap_max_retry < self.flap_pauses:
                return None
            self.flapping = True
            return config.flap_retry_in
        self.flapping = False
        delay = backoff_delay(
            self._failures,
            config.backoff_initial,
            config.backoff_max,
            config.backoff_jitter,
            self._rng,
        )
        self._failures += 1
        return delay


@dataclass
class AccountStatus:
    """What ``purplegw status`` shows for one account (JSON-friendly).

    A board that tracks changes (``StatusBoard.track_changes``, a worker's)
    learns of every field write: the worker pushes the statuses that changed
    instead of comparing every account's twice a second.
    """

    # The watch (the board's set of changed keys, and this status's key)
    # lives in slots, out of ``__dict__``, which as_dict and as_tuple copy.
    __slots__ = ("__dict__", "_key", "_marks")

    def __new__(cls, *_args: Any, **_kwargs: Any) -> Self:
        # Set before __init__'s field writes read it: an unset slot would
        # raise in every one of them.
        self = super().__new__(cls)
        object.__setattr__(self, "_marks", None)
        return self

    account_id: int
    sip_user: str
    protocol: str
    ext_user: str
    state: str = AccountState.LOGGED_OUT.value
    last_error: str = ""
    messages_in: int = 0
    messages_out: int = 0
    reconnects: int = 0
    queued: int = 0
    gave_up: bool = False
    flapping: bool = False
    next_retry_in: float | None = None
    since: float = 0.0  # time.time() of the last state change
    pid: int = 0

    def __setattr__(self, name: str, value: Any) -> None:
        # One write of a field: its value first, then the mark, so a pusher
        # that takes the mark reads the new value.
        self.__dict__[name] = value
        marks = self._marks
        if marks is not None:
            marks.add(self._key)

    def watch(self, changed: set[AccountKey] | None, key: AccountKey | None = None) -> None:
        """Add ``key`` to ``changed`` on every later field write (None: stop)."""
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_marks", changed)

    def as_dict(self) -> dict[str, Any]:
        # Every field is a scalar: a shallow copy is what dataclasses.asdict
        # returns, at a tenth of its cost (`purplegw status` reads 10,000 of
        # these on the loop thread the logins run on).
        return dict(self.__dict__)

    def as_tuple(self) -> tuple[Any, ...]:
        """The fields' values in ``as_dict``'s order (a worker's status pushes)."""
        return tuple(self.__dict__.values())


# What `purplegw status` says of an account whose worker process died and is
# being started again: not a connection state (nothing is connected), so not
# in AccountState; the account's other fields are the last ones it reported.
WORKER_RESTARTING = "worker_restarting"
STATUS_STATES = (*(state.value for state in AccountState), WORKER_RESTARTING)


def status_sort_key(entry: dict[str, Any]) -> tuple[str, str]:
    return (entry["sip_user"], entry["protocol"])
