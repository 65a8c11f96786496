"""Pure tests of the restart policy, config section, sharding and reload diff."""

from __future__ import annotations

import pytest

from purplegw.actors.state import (
    AccountKey,
    ActorsConfig,
    RestartPolicy,
    backoff_delay,
    shard_of,
)
from purplegw.actors.supervisor import diff_rows
from purplegw.exceptions import ConfigError

from .conftest import row


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_grows_exponentially_up_to_the_maximum() -> None:
    no_jitter = [backoff_delay(n, 1.0, 30.0, 0.5, lambda: 0.0) for n in range(7)]
    assert no_jitter == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    full_jitter = backoff_delay(3, 1.0, 30.0, 0.5, lambda: 0.999999)
    assert 4.0 <= full_jitter < 4.01
    assert backoff_delay(10_000, 1.0, 30.0, 0.0, lambda: 0.5) == 30.0


def test_policy_backs_off_then_resets_after_a_stable_connection() -> None:
    clock = FakeClock()
    config = ActorsConfig(
        backoff_initial=1, backoff_max=100, backoff_jitter=0, flap_attempts=100, flap_window=60
    )
    policy = RestartPolicy(config, clock=clock, rng=lambda: 0.0)
    delays = []
    for _ in range(4):
        delays.append(policy.next_delay())
        clock.now += 5
    assert delays == [1, 2, 4, 8]
    policy.connected()
    clock.now += 60  # stayed up a while
    assert policy.next_delay() == 1


def test_connection_that_drops_at_once_keeps_backing_off() -> None:
    clock = FakeClock()
    config = ActorsConfig(backoff_initial=1, backoff_max=100, backoff_jitter=0, flap_attempts=100)
    policy = RestartPolicy(config, clock=clock, rng=lambda: 0.0)
    delays = []
    for _ in range(3):
        policy.connected()
        clock.now += 0.1
        delays.append(policy.next_delay())
    assert delays == [1, 2, 4]


def test_flapping_pauses_then_gives_up() -> None:
    clock = FakeClock()
    config = ActorsConfig(
        backoff_initial=1,
        backoff_jitter=0,
        flap_attempts=3,
        flap_window=10,
        flap_retry_in=50,
        flap_max_retry=2,
    )
    policy = RestartPolicy(config, clock=clock, rng=lambda: 0.0)
    results = []
    for _ in range(9):
        results.append(policy.next_delay())
        clock.now += 1
    # three attempts in the window -> pause; twice; the third time: give up
    assert results[:3] == [1, 2, 50]
    assert policy.flap_pauses == 3
    assert results[5] == 50
    assert results[8] is None


def test_attempts_outside_the_window_are_not_flapping() -> None:
    clock = FakeClock()
    config = ActorsConfig(
        backoff_initial=1,
        backoff_max=1,
        backoff_jitter=0,
        flap_attempts=3,
        flap_window=10,
        flap_max_retry=0,
    )
    policy = RestartPolicy(config, clock=clock, rng=lambda: 0.0)
    for _ in range(10):
        assert policy.next_delay() == 1
        clock.now += 6


def test_flap_max_retry_minus_one_never_gives_up() -> None:
    clock = FakeClock()
    config = ActorsConfig(flap_attempts=1, flap_retry_in=5, flap_max_retry=-1)
    policy = RestartPolicy(config, clock=clock)
    assert all(policy.next_delay() == 5 for _ in range(50))


def test_config_section_defaults_and_types() -> None:
    config = ActorsConfig.from_section({"workers": 2, "backoff_initial": 3, "queue_limit": 7.0})
    assert config.workers == 2
    assert config.backoff_initial == 3.0
    assert isinstance(config.backoff_initial, float)
    assert config.queue_limit == 7
    assert ActorsConfig.from_section(None) == ActorsConfig()


def test_config_section_collects_every_error() -> None:
    with pytest.raises(ConfigError) as info:
        ActorsConfig.from_section(
            {
                "workers": -1,
                "bogus": 1,
                "backoff_jitter": 2,
                "login_timeout": "x",
                "runtime": "gevent",
            }
        )
    text = str(info.value)
    for key in ("workers", "bogus", "backoff_jitter", "login_timeout", "runtime"):
        assert f"actors.{key}" in text


def test_shard_is_stable_and_spreads() -> None:
    assert shard_of("alice", 4) == shard_of("alice", 4)
    assert shard_of("alice", 0) == 0
    shards = {shard_of(f"user{n}", 4) for n in range(100)}
    assert shards == {0, 1, 2, 3}
    # crc32, not the per-process salted hash(): fixed across interpreters
    assert shard_of("alice", 7) == 5


def test_diff_rows_finds_added_removed_changed() -> None:
    current = {AccountKey.of(r): r for r in (row(1), row(2), row(3))}
    new = [row(1), row(2, password="new"), row(4)]
    wanted, summary = diff_rows(current, new)
    assert summary.added == [AccountKey("sip4", "dummy")]
    assert summary.removed == [AccountKey("sip3", "dummy")]
    assert summary.changed == [AccountKey("sip2", "dummy")]
    assert summary.unchanged == 1
    assert set(wanted) == {AccountKey(f"sip{n}", "dummy") for n in (1, 2, 4)}


def test_account_status_as_dict_is_a_detached_copy_of_every_field() -> None:
    import dataclasses

    from purplegw.actors.state import AccountStatus

    status = AccountStatus(
        account_id=7,
        sip_user="alice",
        protocol="xmpp",
        ext_user="a@x",
        state="connected",
        last_error="boom",
        next_retry_in=3.5,
        since=1.0,
    )
    snapshot = status.as_dict()
    assert snapshot == dataclasses.asdict(status)
    assert set(snapshot) == {f.name for f in dataclasses.fields(AccountStatus)}
    snapshot["state"] = "changed"
    status.messages_in += 1
    assert status.state == "connected"
    assert snapshot["messages_in"] == 0


def test_with_derived_keys_adds_kinds_to_the_rows_it_has_keys_for() -> None:
    from purplegw.protocols.base import AccountCredentials, with_derived_keys

    old = {"scram": "old", "k": "v"}
    rows = [
        AccountCredentials(1, "a", "a@x", "xmpp", "pw", derived_keys=old),
        AccountCredentials(2, "b", "b@x", "xmpp", "pw"),
    ]
    merged = with_derived_keys(rows, {1: {"scram": "new"}, 3: {"scram": "gone"}})
    assert merged[0].derived_keys == {"scram": "new", "k": "v"}
    assert merged[1] is rows[1]
    assert merged == rows  # derived keys are not part of a row's identity
    assert rows[0].derived_keys == {"scram": "old", "k": "v"}


def test_the_board_values_rebuild_each_accounts_tuple_and_show_changes() -> None:
    # What a worker keeps of each account between status pushes (workers.py).
    from purplegw.actors.state import AccountKey, AccountStatus
    from purplegw.actors.supervisor import StatusBoard
    from purplegw.actors.workers import STATUS_FIELDS

    board = StatusBoard()
    key = AccountKey("alice", "xmpp")
    status = AccountStatus(account_id=7, sip_user="alice", protocol="xmpp", ext_user="a@x")
    board.publish(key, status)
    status.queued = 3  # a field written after creation keeps its place
    before = board.values_of(key)
    assert before is not None
    assert dict(zip(STATUS_FIELDS, before, strict=True)) == status.as_dict()
    assert board.values_of(key) == before
    status.state = "connected"
    after = board.values_of(key)
    assert after is not None
    assert after != before
    assert dict(zip(STATUS_FIELDS, after, strict=True))["state"] == "connected"
    assert board.values_of(AccountKey("bob", "xmpp")) is None


def test_a_tracking_board_names_each_written_published_or_removed_key_once() -> None:
    # A worker's status pusher asks only for these (workers.py): an idle
    # worker's push looks at no account.
    from purplegw.actors.state import AccountKey, AccountStatus
    from purplegw.actors.supervisor import StatusBoard

    def status(user: str) -> AccountStatus:
        return AccountStatus(account_id=1, sip_user=user, protocol="xmpp", ext_user="a@x")

    board = StatusBoard()
    alice, bob, carol = (AccountKey(u, "xmpp") for u in ("alice", "bob", "carol"))
    first_alice = status("alice")
    board.publish(alice, first_alice)
    board.publish(bob, status("bob"))
    assert board.take_changed() == []  # not tracking: nothing is marked
    board.track_changes()
    assert sorted(board.take_changed()) == [alice, bob]  # what was there before
    assert board.take_changed() == []
    first_alice.messages_in += 1
    first_alice.queued = 2
    assert board.take_changed() == [alice]  # two writes, one mark
    board.publish(carol, status("carol"))
    assert board.take_changed() == [carol]
    second_alice = status("alice")  # a revived actor's status takes the key over
    board.publish(alice, second_alice)
    assert board.take_changed() == [alice]
    first_alice.state = "connected"  # the stopped actor's late write
    assert board.take_changed() == []
    second_alice.state = "connected"
    assert board.take_changed() == [alice]
    board.publish(bob, None)
    assert board.take_changed() == [bob]
    board.clear()
    assert sorted(board.take_changed()) == [alice, carol]
    second_alice.state = "logged_out"  # no longer on the board
    assert board.take_changed() == []
    # The watch is no field: what `purplegw status` shows and what is pushed
    # are the fields only.
    assert not {"_key", "_marks"} & set(second_alice.as_dict())
    assert len(second_alice.as_tuple()) == len(status("x").as_tuple())


def test_a_write_while_the_marks_are_taken_is_taken_now_or_next_time() -> None:
    import sys
    import threading

    from purplegw.actors.state import AccountKey, AccountStatus
    from purplegw.actors.supervisor import StatusBoard

    ROUNDS = 2000  # noqa: N806 - a constant of this test
    board = StatusBoard()
    board.track_changes()
    keys = [AccountKey(f"u{i}", "xmpp") for i in range(200)]
    statuses = [AccountStatus(i, k.sip_user, "xmpp", "x@y") for i, k in enumerate(keys)]
    for key, st in zip(keys, statuses, strict=True):
        board.publish(key, st)
    board.take_changed()
    from purplegw.actors.workers import STATUS_FIELDS

    messages_in = STATUS_FIELDS.index("messages_in")
    seen: dict[AccountKey, int] = {}
    done = threading.Event()

    def taker() -> None:
        while not done.is_set():
            for key in board.take_changed():
                value = board.values_of(key)
                assert value is not None
                seen[key] = value[messages_in]  # as the pusher reads it

    thread = threading.Thread(target=taker)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the two threads take turns between bytecodes
    try:
        thread.start()
        for _ in range(ROUNDS):
            for st in statuses:
                st.messages_in += 1
    finally:
        done.set()
        thread.join()
        sys.setswitchinterval(interval)
    for key in board.take_changed():  # the pusher's next round
        value = board.values_of(key)
        assert value is not None
        seen[key] = value[messages_in]
    assert seen == dict.fromkeys(keys, ROUNDS)
