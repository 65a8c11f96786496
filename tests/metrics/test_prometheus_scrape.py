"""A real Prometheus scrapes a running gateway daemon and answers PromQL about it.

The daemon runs its accounts in two worker processes (dummy network): the
numbers Prometheus sees are counted in the main process from the workers'
events, so they must cover every worker, and survive one of them being
killed (docs/metrics.md).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.kit.binaries import missing_peer
from tests.kit.gateway import GatewayProcess
from tests.kit.ports import free_port
from tests.kit.prometheus import Prometheus, prometheus_binary
from tests.kit.raw_ua import RawUA

if TYPE_CHECKING:
    from collections.abc import Iterator

FINE = ("ann", "ben", "cid", "dan")
EXERCISED = (
    "_accounts",
    "_logins_",
    "_login_failures",
    "_login_duration",
    "_messages_",
    "_queue_",
    "process_",
    "_worker_restarts",
    "_store_errors",
)
DASHBOARD = Path(__file__).parents[2] / "etc" / "grafana-purplegw.json"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    listen = f"127.0.0.1:{free_port('tcp')}"
    gw = GatewayProcess(
        tmp_path,
        sip={"trusted": ["127.0.0.1/32"]},
        actors={"workers": 2, "worker_restart_delay": 0.2},
        extra_config=f'[protocols.dummy]\nenabled = true\n\n[metrics]\nlisten = "{listen}"\n'
        "cache_seconds = 0.5\n",
        log_level="INFO",
    )
    gw.metrics_listen = listen  # type: ignore[attr-defined]
    gw.cli("db", "init")
    for user in FINE:
        gw.cli(
            "accounts",
            "add",
            f"{user}@sip.test",
            f"{user}@dummy",
            "dummy",
            "--password-stdin",
            stdin="pw\n",
        )
    gw.cli(
        "accounts",
        "add",
        "eve@sip.test",
        "badpass@dummy",
        "dummy",
        "--password-stdin",
        stdin="pw\n",
    )
    gw.start()
    yield gw
    assert gw.stop() == 0, gw.log_text()


@pytest.fixture
def prometheus(gateway: GatewayProcess) -> Iterator[Prometheus]:
    if prometheus_binary() is None:
        missing_peer("prometheus", "prometheus")
    with Prometheus(targets=[gateway.metrics_listen]) as prom:  # type: ignore[attr-defined]
        yield prom


def one(result: list[tuple[dict[str, str], float]]) -> float | None:
    return result[0][1] if len(result) == 1 else None


def test_prometheus_sees_every_workers_accounts_queues_and_a_restart(
    gateway: GatewayProcess,
    prometheus: Prometheus,
) -> None:
    connected = 'sum(purplegw_accounts{protocol="dummy",state="connected"})'
    prometheus.wait_for(connected, lambda r: one(r) == len(FINE))
    prometheus.wait_for('purplegw_accounts{state="bad_credentials"}', lambda r: one(r) == 1)
    prometheus.wait_for(
        'purplegw_login_failures_total{reason="bad_credentials"}', lambda r: one(r) == 1
    )
    prometheus.wait_for("sum(purplegw_login_duration_seconds_count)", lambda r: one(r) == len(FINE))
    status = gateway.status()
    assert len({a["pid"] for a in status}) == 2, status  # both workers host accounts

    # A message to the dummy network's echo contact comes back to ann, who has
    # no registered phone: it waits in the outbox, and the gauge says so.
    ua = RawUA(gateway)
    assert ua.request("MESSAGE", "sip:echo@dummy", "ann@sip.test")[0] == 202
    prometheus.wait_for('purplegw_queue_messages{queue="outbox"}', lambda r: one(r) == 1)
    prometheus.wait_for(
        'purplegw_messages_total{direction="in",outcome="received"}', lambda r: one(r) == 1
    )
    prometheus.wait_for(
        'purplegw_queue_oldest_age_seconds{queue="outbox"}', lambda r: (one(r) or 0) > 0
    )

    # Kill the worker hosting ann: a restart is counted and every account
    # is connected again, as seen from outside.
    victim = next(a["pid"] for a in status if a["sip_user"] == "ann@sip.test")
    os.kill(victim, signal.SIGKILL)
    prometheus.wait_for("sum(purplegw_worker_restarts_total)", lambda r: one(r) == 1)
    prometheus.wait_for(connected, lambda r: one(r) == len(FINE))
    prometheus.wait_for("sum(purplegw_logins_total)", lambda r: (one(r) or 0) > len(FINE))
    assert prometheus.query('up{job="purplegw"}')[0][1] == 1

    # Every query of the shipped Grafana dashboard is valid PromQL (query()
    # raises otherwise), and those about what this run did find their series.
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$job", "purplegw")
                .replace("$__rate_interval", "10s")
                .replace("$__range", "1m")
            )
            result = prometheus.query(expr)
            if any(word in expr for word in EXERCISED):
                assert result, (panel["title"], expr)
