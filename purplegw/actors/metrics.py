"""The Prometheus exposition server of ``[metrics] listen``, in the main process.

It serves ``purplegw.metrics.REGISTRY`` from prometheus_client's own HTTP
server thread, and listens on the event bus (``listener.add_sink``) so that
account states, logins and the outcome of queued messages are counted in
the main process from the events every worker already forwards to it (why
not prometheus_client's multiprocess mode: docs/metrics.md).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import start_http_server

from purplegw import metrics
from purplegw.actors import listener
from purplegw.actors.listener import AccountInfo, EventSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.actors.state import Outcome
    from purplegw.protocols.base import ConnectionState
    from purplegw.store import Store

logger = logging.getLogger(__name__)


class MetricsSink(EventSink):
    """Turns account events into metrics (called inline: only dict updates and counters)."""

    def __init__(self, tracker: metrics.AccountTracker | None = None) -> None:
        self._tracker = tracker or metrics.accounts

    def on_connection_state(
        self, account: AccountInfo, state: ConnectionState, reason: str
    ) -> None:
        self._tracker.state_changed(account.account_id, account.protocol, state.value, reason)

    def on_message(  # noqa: PLR0913, PLR0917 - the event's fields
        self,
        account: AccountInfo,  # noqa: ARG002 - the event's signature
        contact: str,  # noqa: ARG002
        text: str,  # noqa: ARG002
        message_id: str | None,  # noqa: ARG002
        sent_at: float | None = None,  # noqa: ARG002 - XEP-0203 delay, when the network gave one
        receipts: str = "",  # noqa: ARG002 - what the sender asked to be told
    ) -> None:
        metrics.message_in("received")

    def on_send_result(
        self,
        account: AccountInfo,  # noqa: ARG002 - the event's signature
        message_id: str,  # noqa: ARG002
        outcome: Outcome,
    ) -> None:
        if outcome.status != 202:  # 202: written, the server's ack (and this event) follows
            metrics.message_out(outcome.status)


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` / ``"[::1]:9464"`` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def start_metrics(
    listen: str,
    directory: Any,
    store: Store | None,
    cache_seconds: float = 5.0,
    workers: int = 0,
) -> Callable[[], None]:
    """Serve the metrics on ``listen``; returns the function that stops serving."""
    host, port = split_listen(listen)
    sink = MetricsSink()
    listener.add_sink(sink)
    unregister = metrics.register_gateway(directory, store, ttl=cache_seconds, workers=workers)
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.REGISTRY)
    except OSError:
        listener.remove_sink(sink)
        unregister()
        raise
    logger.info("Metrics on http://%s/metrics", listen)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)
        listener.remove_sink(sink)
        unregister()

    return stop
