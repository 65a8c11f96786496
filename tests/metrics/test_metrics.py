"""The metric functions, the account tracker and the scrape-time collectors."""

from __future__ import annotations

import time
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from purplegw import metrics
from purplegw.actors import listener
from purplegw.actors.listener import AccountInfo
from purplegw.actors.metrics import MetricsSink, split_listen, start_metrics
from purplegw.actors.state import AccountKey, Outcome
from purplegw.actors.supervisor import Directory
from purplegw.config import load_config
from purplegw.exceptions import ConfigError, StoreError
from purplegw.protocols.base import ConnectionState
from purplegw.store.subscriptions import StoredSubscription
from tests.kit.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from purplegw.store import Store


def value(name: str, **labels: str) -> float:
    """The current value of one series (0 when it does not exist yet)."""
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the one-line functions -----------------------------------------------------------


def test_sip_request_counts_by_method_and_class_and_bounds_the_method() -> None:
    before = value("purplegw_sip_requests_total", method="MESSAGE", status_class="2xx")
    other = value("purplegw_sip_requests_total", method="other", status_class="4xx")
    metrics.sip_request("MESSAGE", 202)
    metrics.sip_request("MESSAGE", 200)
    metrics.sip_request("X-MADE-UP-1", 405)
    metrics.sip_request("X-MADE-UP-2", 405)
    assert value("purplegw_sip_requests_total", method="MESSAGE", status_class="2xx") == before + 2
    # Methods a peer invents share one series instead of minting one each.
    assert value("purplegw_sip_requests_total", method="other", status_class="4xx") == other + 2
    assert metrics.status_class(699) == "6xx"
    assert metrics.status_class(42) == "other"


def test_timeouts_notifies_store_errors_and_messages() -> None:
    timeouts = value("purplegw_sip_transaction_timeouts_total", method="NOTIFY")
    notify_ok = value("purplegw_presence_notifies_total", status_class="2xx")
    notify_lost = value("purplegw_presence_notifies_total", status_class="timeout")
    queued = value("purplegw_messages_total", direction="out", outcome="queued")
    failed = value("purplegw_messages_total", direction="out", outcome="failed")
    metrics.transaction_timeout("NOTIFY")
    metrics.notify_sent(200)
    metrics.notify_sent(None)
    metrics.message_out(202)
    metrics.message_out(480)
    assert value("purplegw_sip_transaction_timeouts_total", method="NOTIFY") == timeouts + 1
    assert value("purplegw_presence_notifies_total", status_class="2xx") == notify_ok + 1
    assert value("purplegw_presence_notifies_total", status_class="timeout") == notify_lost + 1
    assert value("purplegw_messages_total", direction="out", outcome="queued") == queued + 1
    assert value("purplegw_messages_total", direction="out", outcome="failed") == failed + 1


def test_a_database_error_counts_once_at_the_conversion_point(store: Store) -> None:
    dialect = store.db.dialect
    before = value("purplegw_store_errors_total", dialect=dialect)
    with pytest.raises(StoreError):
        store.db.fetchall("SELECT nothing FROM no_such_table")
    assert value("purplegw_store_errors_total", dialect=dialect) == before + 1


# --- accounts ----------------------------------------------------------------------------


def test_tracker_counts_logins_failures_and_durations() -> None:
    clock = FakeClock()
    tracker = metrics.AccountTracker(clock)
    proto = "trackertest"
    tracker.state_changed(1, proto, "connecting", "")
    clock.now += 0.3
    tracker.state_changed(1, proto, "connected", "")
    # A stream resumption (connecting with a reason) is neither a login nor a failure.
    tracker.state_changed(1, proto, "connecting", "stream lost, resuming")
    tracker.state_changed(1, proto, "connected", "")
    tracker.state_changed(2, proto, "connecting", "")
    tracker.state_changed(2, proto, "transient_disconnect", "login timed out after 30s")
    tracker.state_changed(2, proto, "connecting", "")
    tracker.state_changed(2, proto, "transient_disconnect", "Connection refused")
    tracker.state_changed(2, proto, "connecting", "")
    tracker.state_changed(2, proto, "bad_credentials", "not-authorized")
    tracker.state_changed(1, proto, "transient_disconnect", "connection reset")
    tracker.state_changed(3, proto, "connecting", "")
    tracker.state_changed(3, proto, "logged_out", "")

    assert value("purplegw_logins_total", protocol=proto) == 1
    assert value("purplegw_login_duration_seconds_count", protocol=proto) == 1
    assert value("purplegw_login_duration_seconds_sum", protocol=proto) == pytest.approx(0.3)
    assert value("purplegw_login_duration_seconds_bucket", protocol=proto, le="0.25") == 0
    assert value("purplegw_login_duration_seconds_bucket", protocol=proto, le="0.5") == 1
    for reason in ("timeout", "network", "bad_credentials"):
        assert value("purplegw_login_failures_total", protocol=proto, reason=reason) == 1
    assert value("purplegw_account_disconnects_total", protocol=proto) == 1
    assert tracker.state_of(2) == "bad_credentials"
    assert tracker.state_of(3) == "logged_out"


class _Handle:
    def __init__(self, info: AccountInfo) -> None:
        self.info = info


def test_accounts_gauge_counts_the_directory_by_protocol_and_state() -> None:
    tracker = metrics.AccountTracker()
    directory = Directory()
    infos = [AccountInfo(n, f"u{n}", "xmpp" if n < 3 else "irc", f"e{n}") for n in range(5)]
    for info in infos:
        directory.publish(AccountKey(info.sip_user, info.protocol), _Handle(info))
    for n in (0, 1, 3):
        tracker.state_changed(n, infos[n].protocol, "connected", "")
    tracker.state_changed(2, "xmpp", "bad_credentials", "no")
    tracker.state_changed(99, "xmpp", "connected", "")  # a removed row: not in the directory
    tracker.mark([3], metrics.WORKER_RESTARTING)

    (family,) = metrics.AccountsCollector(directory, tracker).collect()
    got = {(s.labels["protocol"], s.labels["state"]): s.value for s in family.samples}
    assert got == {
        ("xmpp", "connected"): 2,
        ("xmpp", "bad_credentials"): 1,
        ("irc", "worker_restarting"): 1,
        ("irc", "logged_out"): 1,
    }


def test_sink_derives_messages_and_states_from_bus_events() -> None:
    tracker = metrics.AccountTracker()
    sink = MetricsSink(tracker)
    info = AccountInfo(7, "alice", "sinktest", "alice@example.org")
    received = value("purplegw_messages_total", direction="in", outcome="received")
    sent = value("purplegw_messages_total", direction="out", outcome="sent")
    failed = value("purplegw_messages_total", direction="out", outcome="failed")
    listener.add_sink(sink)
    try:
        listener.send(
            "on_connection_state", account=info, state=ConnectionState.CONNECTING, reason=""
        )
        listener.send(
            "on_connection_state", account=info, state=ConnectionState.CONNECTED, reason=""
        )
        listener.send("on_message", account=info, contact="bob", text="hi", message_id=None)
        listener.send("on_send_result", account=info, message_id="m1", outcome=Outcome(200))
        listener.send("on_send_result", account=info, message_id="m2", outcome=Outcome(202))
        listener.send("on_send_result", account=info, message_id="m3", outcome=Outcome(404))
    finally:
        listener.remove_sink(sink)
    assert tracker.state_of(7) == "connected"
    assert value("purplegw_logins_total", protocol="sinktest") == 1
    assert value("purplegw_messages_total", direction="in", outcome="received") == received + 1
    assert value("purplegw_messages_total", direction="out", outcome="sent") == sent + 1
    assert value("purplegw_messages_total", direction="out", outcome="failed") == failed + 1


# --- the store collector ---------------------------------------------------------------


def _subscription(key: str, state: str, expires_at: float) -> StoredSubscription:
    return StoredSubscription(
        dialog_key=key,
        sip_user="alice@sip.test",
        account_id=1,
        protocol="xmpp",
        contact="bob@example.org",
        event_id="",
        call_id=key,
        local_tag="l",
        remote_tag="r",
        local_uri="sip:bob@example.org",
        remote_uri="sip:alice@sip.test",
        remote_target="sip:alice@127.0.0.1",
        route_set="",
        local_contact="sip:gw@127.0.0.1",
        local_cseq=1,
        remote_cseq=1,
        state=state,
        expires_at=expires_at,
        transport="udp",
        host="127.0.0.1",
        port=5060,
    )


def _samples(collector: metrics.StoreCollector) -> dict[tuple[str, str], float]:
    return {
        (s.name, next(iter(s.labels.values()))): s.value
        for family in collector.collect()
        for s in family.samples
    }


def test_store_collector_reads_depths_ages_and_subscriptions_with_a_cache(store: Store) -> None:
    clock, wall = FakeClock(), FakeClock()
    wall.now = time.time()
    collector = metrics.StoreCollector(store, ttl=5.0, clock=clock, wall=wall)
    empty = _samples(collector)
    assert empty[("purplegw_queue_messages", "sendq")] == 0
    assert empty[("purplegw_queue_oldest_age_seconds", "outbox")] == 0
    assert empty[("purplegw_presence_subscriptions", "active")] == 0

    store.sendq.put(
        sip_user="alice@sip.test",
        protocol="xmpp",
        contact="bob@example.org",
        body="one",
        message_id="m1",
    )
    store.sendq.put(
        sip_user="alice@sip.test",
        protocol="xmpp",
        contact="bob@example.org",
        body="two",
        message_id="m2",
    )
    store.sendq.put(
        sip_user="alice@sip.test",
        protocol="xmpp",
        contact="bob@example.org",
        body="sent, the phone waits for the contact's receipt",
        message_id="m3",
    )
    store.sendq.acked_many(["m3"])  # not queued any more: not counted
    store.outbox.put(
        sip_user="alice@sip.test",
        account_id=1,
        protocol="xmpp",
        contact="bob@example.org",
        body=b"hello",
    )
    store.subscriptions.save(_subscription("a", "active", wall.now + 600))
    store.subscriptions.save(_subscription("b", "pending", wall.now + 600))
    store.subscriptions.save(_subscription("c", "active", wall.now - 1))  # expired
    # Within the cache time a scrape does not touch the database.
    assert _samples(collector) == empty
    assert collector.reads == 1

    clock.now += 5.0
    wall.now += 42.0
    got = _samples(collector)
    assert collector.reads == 2
    assert got[("purplegw_queue_messages", "sendq")] == 2
    assert got[("purplegw_queue_messages", "outbox")] == 1
    assert got[("purplegw_queue_oldest_age_seconds", "sendq")] == pytest.approx(42.0, abs=2.0)
    assert got[("purplegw_queue_oldest_age_seconds", "outbox")] == pytest.approx(42.0, abs=2.0)
    assert got[("purplegw_presence_subscriptions", "active")] == 1
    assert got[("purplegw_presence_subscriptions", "pending")] == 1


def test_store_collector_yields_nothing_and_counts_an_error_when_the_store_fails(
    store: Store,
) -> None:
    collector = metrics.StoreCollector(store, ttl=0.0)
    store.db.execute("DROP TABLE purplegw_outbox")
    before = value("purplegw_store_errors_total", dialect=store.db.dialect)
    assert list(collector.collect()) == []
    assert value("purplegw_store_errors_total", dialect=store.db.dialect) == before + 1


# --- the HTTP server ----------------------------------------------------------------------


@pytest.fixture
def served(store: Store) -> Iterator[tuple[str, Directory]]:
    directory = Directory()
    listen = f"127.0.0.1:{free_port('tcp')}"
    stop = start_metrics(listen, directory, store, cache_seconds=0.0)
    yield listen, directory
    stop()


def _scrape(listen: str) -> str:
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as answer:
        return answer.read().decode()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_server_exposes_the_registry_and_stops_cleanly(served: tuple[str, Directory]) -> None:
    listen, directory = served
    info = AccountInfo(501, "carol", "servedtest", "carol@example.org")
    directory.publish(AccountKey("carol", "servedtest"), _Handle(info))
    metrics.accounts.state_changed(501, "servedtest", "connected", "")
    text = _scrape(listen)
    assert 'purplegw_accounts{protocol="servedtest",state="connected"} 1.0' in text
    assert 'purplegw_queue_messages{queue="outbox"} 0.0' in text
    assert "process_resident_memory_bytes" in text


def test_listen_addresses_split_for_ipv4_and_ipv6() -> None:
    assert split_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert split_listen("[::1]:9464") == ("::1", 9464)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_stop_releases_the_port_and_the_collectors(store: Store) -> None:
    port = free_port("tcp")
    for _ in range(2):  # a second start on the same port works only if the first let go
        stop = start_metrics(f"127.0.0.1:{port}", Directory(), store)
        assert "purplegw_accounts" in _scrape(f"127.0.0.1:{port}")
        stop()
    names = {m.name for m in metrics.REGISTRY.collect()}
    assert "purplegw_accounts" not in names


def test_config_accepts_host_port_and_refuses_anything_else(tmp_path: Any) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[metrics]\nlisten = "[::1]:9464"\n')
    assert load_config(good, environ={})["metrics"]["listen"] == "[::1]:9464"
    bad = tmp_path / "bad.toml"
    bad.write_text('[metrics]\nlisten = "9464"\n')
    with pytest.raises(ConfigError, match=r"\[metrics\] listen"):
        load_config(bad, environ={})
