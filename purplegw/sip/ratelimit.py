"""Token buckets per key (source address, authenticated user), sans-IO.

``RateLimiter(rate, burst).hit(key, now)`` takes one token from ``key``'s
bucket and says what to do with the request: ``ALLOW`` it, ``REFUSE`` it
(answer 503 + Retry-After, RFC 3261 21.5.4) or ``DROP`` it without an answer.
The caller passes the clock reading, so tests drive it with a fake clock and
nothing here reads the time.

Rules:

Rule 1. A bucket holds at most ``burst`` tokens and gains ``rate`` tokens per
        second; a request takes one.  A new key starts full: the first
        ``burst`` requests of anyone pass.
Rule 2. A request that finds its bucket empty takes a token from a second
        bucket of the same key, the answer budget (same rate and burst):
        while that has tokens the request is REFUSEd (answered), after that it
        is DROPped.  So a source sending far above its rate gets at most
        ``rate`` answers per second for its excess; the rest costs us a dict
        lookup.  Over UDP, where the source address may be spoofed, that
        bounds what the gateway reflects towards a victim; callers on
        connected transports (TCP/TLS) may answer DROP with a 503 anyway.
Rule 3. The key table is bounded (``max_keys``): a flood from spoofed
        addresses cannot grow it without end.  When it is full, keys whose
        buckets have refilled are forgotten first (a full bucket is the same
        as no entry, so this loses nothing); if that frees too little, the
        least recently seen keys go.  A forgotten key starts full again:
        eviction can only ever be lenient, never lock anyone out.
Rule 4. ``retry_after`` is whole seconds until the next token (at least 1):
        Retry-After is delta-seconds (RFC 3261 20.33).

Why hand-written: the PyPI libraries (``limits``, ``pyrate-limiter``) read
the wall clock themselves, keep their in-memory state with background
threads, timers or locks, and bound neither the key table nor the cost per
check; the whole algorithm here is a few lines, and it must run on the SIP
front's hot path at ~1 µs per check.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Hashable

__all__ = ["RateLimiter", "Verdict"]


class Verdict(enum.Enum):
    ALLOW = "allow"
    REFUSE = "refuse"  # answer 503 + Retry-After
    DROP = "drop"  # over the answer budget as well: no answer (UDP)


ALLOW = Verdict.ALLOW
REFUSE = Verdict.REFUSE
DROP = Verdict.DROP


class _Bucket:
    __slots__ = ("answers", "stamp", "tokens")

    def __init__(self, tokens: float, answers: float, stamp: float) -> None:
        self.tokens = tokens
        self.answers = answers
        self.stamp = stamp


class RateLimiter:
    """Token buckets keyed by anything hashable; see the module rules."""

    def __init__(self, rate: float, burst: float, *, max_keys: int = 16384) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self.allowed = 0
        self.refused = 0
        self.dropped = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._buckets

    def hit(self, key: Hashable, now: float) -> Verdict:
        """Take a token for one request of ``key`` at time ``now`` (seconds)."""
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                self._make_room(now)
            buckets[key] = _Bucket(self.burst - 1.0, self.burst, now)
            self.allowed += 1
            return ALLOW
        buckets.move_to_end(key)
        elapsed = now - bucket.stamp
        if elapsed > 0:
            gained = elapsed * self.rate
            bucket.tokens = min(self.burst, bucket.tokens + gained)
            bucket.answers = min(self.burst, bucket.answers + gained)
        # a clock that went backwards gains nothing but restarts from now
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self.allowed += 1
            return ALLOW
        if bucket.answers >= 1.0:
            bucket.answers -= 1.0
            self.refused += 1
            return REFUSE
        self.dropped += 1
        return DROP

    def would_drop(self, key: Hashable, now: float) -> bool:
        """Whether ``hit`` would say DROP, without taking a token (a pre-parse gate).

        A True answer counts as a drop.
        """
        bucket = self._buckets.get(key)
        if bucket is None:
            return False
        gained = max(0.0, now - bucket.stamp) * self.rate
        if bucket.tokens + gained >= 1.0 or bucket.answers + gained >= 1.0:
            return False
        self.dropped += 1
        return True

    def retry_after(self, key: Hashable, now: float) -> int:
        """Whole seconds until ``key`` has a token again (at least 1)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 1
        tokens = bucket.tokens + max(0.0, now - bucket.stamp) * self.rate
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        # Rule 3: refilled buckets carry no state; sweep them all while we are
        # at it, so the next sweeps are far apart (amortized O(1) per key)
        full = self.burst
        rate = self.rate
        idle = [
            key
            for key, b in buckets.items()
            if min(b.tokens, b.answers) + (now - b.stamp) * rate >= full
        ]
        for key in idle:
            del buckets[key]
        target = self.max_keys - max(1, self.max_keys // 4)
        while len(buckets) > target:
            buckets.popitem(last=False)
            self.evicted += 1
        self.evicted += len(idle)
