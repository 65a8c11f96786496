"""Write-behind of the gateway's shared state (bindings, publications), off the worker.

The gateway's worker (purplegw.actors.worker) answers a REGISTER or a
PUBLISH from memory and hands the write to this thread, so a slow or absent
database never holds up SIP answers; the rows reach the database a few
milliseconds later, all the writes that queued up meanwhile in one
transaction.  The thread has its own database connection: the worker's
store calls never wait behind its writes.

Rules:

Rule 1. ``put_*``/``delete_*`` only queue; they never block and never raise.
Rule 2. Writes of the same row coalesce: a newer write of a binding (AoR,
        contact) or a publication (entity tag) replaces a queued older one,
        and ``clear_bindings(aor)`` drops the AoR's queued writes before it.
        The rest keep their order.
Rule 3. A batch that fails (database down) is queued again, behind nothing
        newer of the same row, and retried every ``RETRY_DELAY`` seconds.
Rule 4. ``stop()`` writes what is queued (for at most its timeout) before the
        thread ends: a clean stop loses nothing that the database can take.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from purplegw.store.bindings import BindingRepository, contact_key
from purplegw.store.publications import PublicationRepository

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from purplegw.store.bindings import StoredBinding
    from purplegw.store.database import Database
    from purplegw.store.publications import StoredPublication

logger = logging.getLogger(__name__)

RETRY_DELAY = 2.0  # seconds between attempts while the database refuses the writes

Op = tuple[str, tuple[Any, ...]]  # repository method name and its arguments


class StateWriter:
    """One thread writing the queued rows (see the module rules)."""

    def __init__(
        self, db: Database, *, name: str = "purplegw-state-writer", close_db: bool = True
    ) -> None:
        self.db = db
        self.close_db = close_db  # False: the connection is the store's, it closes it
        self.bindings = BindingRepository(db)
        self.publications = PublicationRepository(db)
        self._cond = threading.Condition()
        self._queue: dict[Hashable, Op] = {}  # insertion order is write order
        self._busy = False
        self._stopping = False
        self.batches = 0  # committed, for tests and logs
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- the port (any thread) -------------------------------------------------------

    def put_binding(self, binding: StoredBinding, uri: str) -> None:
        self._add(("binding", binding.aor, contact_key(uri)), ("put_binding", (binding, uri)))

    def delete_binding(self, aor: str, uri: str) -> None:
        self._add(("binding", aor, contact_key(uri)), ("delete_binding", (aor, uri)))

    def clear_bindings(self, aor: str) -> None:
        with self._cond:
            for key in [k for k in self._queue if k[:2] == ("binding", aor)]:  # type: ignore[index]
                del self._queue[key]
        self._add(("clear", aor), ("clear_bindings", (aor,)))

    def put_publication(self, publication: StoredPublication, replaces: str | None) -> None:
        if replaces is not None:
            with self._cond:  # the row it replaces may never reach the database at all
                self._queue.pop(("publication", replaces), None)
        self._add(("publication", publication.etag), ("put_publication", (publication, replaces)))

    def delete_publication(self, etag: str) -> None:
        self._add(("publication", etag), ("delete_publication", (etag,)))

    def _add(self, key: Hashable, op: Op) -> None:
        with self._cond:
            self._queue.pop(key, None)  # Rule 2: the newer write goes last
            self._queue[key] = op
            self._cond.notify()

    # --- control ------------------------------------------------------------------

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Write what is queued (Rule 4), then end the thread and close its connection."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        left = self.pending()
        if left:
            logger.error("%d shared-state write(s) not written at stop (database down?)", left)
        if self.close_db:
            self.db.close()

    # --- the thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping, nothing left
                batch, self._queue = self._queue, {}
                self._busy = True
            ok = self._write(batch)
            with self._cond:
                self._busy = False
                if not ok:
                    # Rule 3: back in front of newer writes, unless one replaced it.
                    self._queue = {
                        **{k: v for k, v in batch.items() if k not in self._queue},
                        **self._queue,
                    }
                self._cond.notify_all()
                if not ok:
                    if self._stopping:
                        return
                    self._cond.wait(RETRY_DELAY)

    def _write(self, batch: dict[Hashable, Op]) -> bool:
        calls: dict[str, Callable[..., None]] = {
            "put_binding": self.bindings.put,
            "delete_binding": self.bindings.delete,
            "clear_bindings": self.bindings.clear,
            "put_publication": self.publications.put,
            "delete_publication": self.publications.delete,
        }
        try:
            with self.db.transaction():
                for name, args in batch.values():
                    calls[name](*args)
        except Exception as exc:  # noqa: BLE001 - any failure: keep the rows, retry (Rule 3)
            self.failures += 1
            if self.failures == 1 or self.failures % 30 == 0:
                logger.warning(
                    "%d shared-state write(s) not written, retrying every %.0f s: %s",
                    len(batch),
                    RETRY_DELAY,
                    exc,
                )
            return False
        if self.failures:
            logger.info("Shared-state writes reach the database again")
        self.failures = 0
        self.batches += 1
        return True
