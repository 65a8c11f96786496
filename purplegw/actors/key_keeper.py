"""Writes the keys sessions derive from passwords to the store, in batches.

``SessionEvents.on_key_derived`` fires once per login that had to derive a
key: 10,000 of them when a fresh gateway starts.  Writing each one on the
thread that delivers the event (a worker's reader, the shared loop) would
stall logins behind the database; this sink only appends to a list, and a
thread of its own writes what gathered every ``interval`` seconds in one
transaction.  The keys are a cache: a write that fails (database down,
schema not upgraded yet) is logged and dropped, and costs one derivation at
the next start.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from purplegw.actors.listener import AccountInfo, EventSink
from purplegw.exceptions import StoreError

logger = logging.getLogger(__name__)


class KeyKeeper(EventSink):
    """A plain event sink (``listener.add_sink``) with one writer thread."""

    def __init__(self, repository: Any, interval: float = 1.0) -> None:
        self._repository = repository
        self._interval = interval
        self._pending: dict[tuple[int, str], str] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="key-keeper", daemon=True)

    def start(self) -> KeyKeeper:
        self._thread.start()
        return self

    def on_key_derived(self, account: AccountInfo, kind: str, value: str) -> None:
        with self._lock:
            self._pending[(account.account_id, kind)] = value

    def stop(self) -> None:
        """Write what is pending, then stop the thread."""
        self._stopped.set()
        self._thread.join(timeout=10)
        self.flush()

    def flush(self) -> int:
        """Write every pending key now; how many were written."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        try:
            self._repository.put_many([(aid, kind, value) for (aid, kind), value in batch.items()])
        except StoreError as exc:
            logger.warning(
                "%d derived key(s) not stored (they will be derived again): %s", len(batch), exc
            )
            return 0
        logger.debug("Stored %d derived key(s)", len(batch))
        return len(batch)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.flush()
