"""Token buckets of purplegw.sip.ratelimit, driven by a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from purplegw.sip.ratelimit import RateLimiter, Verdict

ALLOW, REFUSE, DROP = Verdict.ALLOW, Verdict.REFUSE, Verdict.DROP


def test_burst_then_refuse_then_drop() -> None:
    limiter = RateLimiter(rate=1, burst=3)
    verdicts = [limiter.hit("a", 0.0) for _ in range(8)]
    # 3 pass, 3 are answered 503 (answer budget), the rest get no answer
    assert verdicts == [ALLOW] * 3 + [REFUSE] * 3 + [DROP] * 2
    assert (limiter.allowed, limiter.refused, limiter.dropped) == (3, 3, 2)


def test_would_drop_agrees_with_hit_and_takes_nothing() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert not limiter.would_drop("new", 0.0)
    assert "new" not in limiter
    for expected in [ALLOW, ALLOW, REFUSE, REFUSE]:
        assert not limiter.would_drop("a", 0.0)
        assert limiter.hit("a", 0.0) is expected
    assert limiter.would_drop("a", 0.0)
    assert limiter.would_drop("a", 0.5)
    assert not limiter.would_drop("a", 1.0)  # a token is back
    assert limiter.hit("a", 1.0) is ALLOW


def test_tokens_come_back_at_the_rate() -> None:
    limiter = RateLimiter(rate=2, burst=2)
    assert [limiter.hit("a", 0.0) for _ in range(3)] == [ALLOW, ALLOW, REFUSE]
    assert limiter.hit("a", 0.25) is REFUSE  # half a token: not yet
    assert limiter.hit("a", 0.5) is ALLOW  # 0.5 s * 2/s = one token
    assert limiter.hit("a", 0.5) is REFUSE
    # a long pause refills to the burst, never beyond
    assert [limiter.hit("a", 100.0) for _ in range(3)] == [ALLOW, ALLOW, REFUSE]


def test_sustained_rate_is_what_passes() -> None:
    limiter = RateLimiter(rate=10, burst=5)
    # 1000 requests/s for 10 s: burst + rate * time pass
    passed = sum(limiter.hit("a", i / 1000) is ALLOW for i in range(10_000))
    assert passed == pytest.approx(5 + 10 * 10, abs=1)


def test_keys_are_independent() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.hit("flood", 0.0) is ALLOW
    assert limiter.hit("flood", 0.0) is REFUSE
    assert limiter.hit("victim", 0.0) is ALLOW


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    limiter = RateLimiter(rate=0.2, burst=1)  # one token per 5 s
    assert limiter.retry_after("unknown", 0.0) == 1
    limiter.hit("a", 0.0)
    assert limiter.retry_after("a", 0.0) == 5
    assert limiter.retry_after("a", 2.5) == 3
    assert RateLimiter(rate=100, burst=1).retry_after("a", 0.0) == 1  # never 0


def test_clock_going_backwards_gains_nothing() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.hit("a", 100.0) is ALLOW
    assert limiter.hit("a", 50.0) is REFUSE  # no negative refill, no free tokens
    assert limiter.hit("a", 51.0) is ALLOW  # restarted from the earlier reading


def test_key_table_is_bounded_under_a_spoofed_flood() -> None:
    limiter = RateLimiter(rate=1, burst=2, max_keys=1000)
    for i in range(100_000):
        limiter.hit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", i / 100_000)
        assert len(limiter) <= 1000
    assert limiter.evicted >= 99_000


def test_refilled_keys_go_before_throttled_ones() -> None:
    limiter = RateLimiter(rate=1, burst=2, max_keys=4)
    for i in range(3):
        limiter.hit(f"quiet{i}", 0.0)
    for _ in range(10):
        limiter.hit("attacker", 3.0)  # throttled: both buckets empty
    # at 3 s the quiet keys have refilled: a newcomer pushes them out, not the attacker
    assert limiter.hit("newcomer", 3.0) is ALLOW
    assert "attacker" in limiter
    assert not any(f"quiet{i}" in limiter for i in range(3))
    assert limiter.hit("attacker", 3.0) is DROP  # its state survived


def test_least_recently_seen_go_when_nothing_has_refilled() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_keys=4)
    for key in "abcd":
        for _ in range(3):
            limiter.hit(key, 0.0)
    limiter.hit("a", 0.0)
    limiter.hit("e", 0.0)
    assert "b" not in limiter
    assert all(key in limiter for key in "acde")


def test_eviction_is_lenient_only() -> None:
    # A forgotten key starts full: eviction never refuses anyone who would pass.
    limiter = RateLimiter(rate=1, burst=1, max_keys=1)
    assert limiter.hit("a", 0.0) is ALLOW
    assert limiter.hit("b", 0.0) is ALLOW  # "a" evicted
    assert limiter.hit("a", 0.0) is ALLOW


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=1, burst=0)
    with pytest.raises(ValueError, match="max_keys"):
        RateLimiter(rate=1, burst=1, max_keys=0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=100),
    gaps=st.lists(st.floats(min_value=0, max_value=2), min_size=1, max_size=300),
)
def test_never_more_than_burst_plus_rate_times_time(rate, burst, gaps) -> None:
    limiter = RateLimiter(rate=rate, burst=burst)
    now = 0.0
    passed = 0
    for gap in gaps:
        now += gap
        passed += limiter.hit("k", now) is ALLOW
    assert passed <= burst + rate * now + 1e-6
