"""Group commit: the writes of concurrent messages share one transaction and one fsync.

Each accepted message costs at least one durable write (send queue or
outbox) before it may be acknowledged, and a commit with fsync costs about
a millisecond (SQLite WAL, synchronous=FULL) or more (InnoDB,
flush_log_at_trx_commit=1).  Committing each message alone caps a gateway
at roughly a thousand writes a second whatever the CPU; committing the
writes that arrived meanwhile together costs one fsync for all of them.

The writer has no thread or timer of its own: the caller adds operations as
they arrive and calls ``flush`` when it decides (after draining its inbox,
every few milliseconds, or when ``len(writer)`` is large).  Only after
``flush`` returns may it acknowledge what the committed tickets stand for.

Rule 1: ``add(op)`` only records ``op`` (a callable taking no argument that
        writes through the store); nothing touches the database before
        ``flush``.
Rule 2: ``flush`` runs every pending op, in order, inside one transaction,
        each under its own savepoint: an op that raises is undone alone and
        its ticket fails with that error; the others go on.
Rule 3: then one COMMIT.  If it succeeds every surviving ticket is durable
        (``ok``); if it fails, or the connection is lost during the batch,
        the whole transaction is rolled back and every ticket fails: no
        ticket reports durable a write that is not.
Rule 4: tickets are settled exactly once, by the flush that took them.
Rule 5: ``take()`` detaches the pending tickets and ``commit(batch)`` runs
        them as ``flush`` does (``flush() == commit(take())``), so the owner
        can add on its thread and let another thread block in the commit
        (purplegw.actors.worker ``offload``).  One ``commit`` at a time per
        database connection; the tickets are read only after it returned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from purplegw.exceptions import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from purplegw.store.database import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Ticket(Generic[T]):
    """The outcome of one added op, settled by ``flush``."""

    __slots__ = ("error", "ok", "op", "result")

    def __init__(self, op: Callable[[], T]) -> None:
        self.op = op
        self.ok: bool | None = None  # None until a flush settled it
        self.result: T | None = None
        self.error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self.ok is not None

    def _settle(
        self, *, ok: bool, result: T | None = None, error: BaseException | None = None
    ) -> None:
        self.ok, self.result, self.error = ok, result, error

    def __repr__(self) -> str:
        state = "pending" if self.ok is None else ("ok" if self.ok else f"failed: {self.error}")
        return f"<Ticket {state}>"


@dataclass
class FlushResult:
    committed: list[Ticket[Any]] = field(default_factory=list)
    failed: list[Ticket[Any]] = field(default_factory=list)
    commits: int = 0  # transactions committed by this flush (0 or 1)


class GroupCommitWriter:
    """Collects store writes and commits them together (see the module rules)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[Ticket[Any]] = []
        self.commits = 0  # total, for metrics and tests
        self.ops = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, op: Callable[[], T]) -> Ticket[T]:
        ticket: Ticket[T] = Ticket(op)
        self._pending.append(ticket)
        return ticket

    def take(self) -> list[Ticket[Any]]:
        """The pending tickets, now the caller's to ``commit`` (Rule 5)."""
        batch, self._pending = self._pending, []
        return batch

    def flush(self) -> FlushResult:
        return self.commit(self.take())

    def commit(self, batch: list[Ticket[Any]]) -> FlushResult:
        """Run ``batch`` (from ``take``) in one transaction; see the module rules."""
        result = FlushResult()
        if not batch:
            return result
        survivors: list[Ticket[Any]] = []
        try:
            with self.db.transaction():
                for index, ticket in enumerate(batch):
                    self._run(ticket, f"purplegw_gc_{index}", survivors, result)
        except Exception as exc:  # noqa: BLE001 - every outcome goes to the tickets
            logger.warning("Group commit of %d write(s) rolled back: %s", len(batch), exc)
            for ticket in survivors:
                ticket._settle(ok=False, error=exc)  # noqa: SLF001
                result.failed.append(ticket)
            for ticket in batch:  # ops never reached (the batch broke off before them)
                if not ticket.settled:
                    ticket._settle(ok=False, error=exc)  # noqa: SLF001
                    result.failed.append(ticket)
            return result
        for ticket in survivors:
            ticket._settle(ok=True, result=ticket.result)  # noqa: SLF001
            result.committed.append(ticket)
        result.commits = 1
        self.commits += 1
        self.ops += len(batch)
        return result

    def _run(
        self, ticket: Ticket[Any], savepoint: str, survivors: list[Ticket[Any]], result: FlushResult
    ) -> None:
        self.db.execute(f"SAVEPOINT {savepoint}")
        try:
            value = ticket.op()
        except Exception as exc:
            if not isinstance(exc, StoreError):
                logger.exception("Group commit op %r failed; undone alone", ticket.op)
            ticket._settle(ok=False, error=exc)  # noqa: SLF001
            result.failed.append(ticket)
            # Undo this op alone.  If even that fails (connection lost, or the server
            # rolled the whole transaction back on a deadlock) the batch is lost: the
            # StoreError aborts it and ``flush`` fails every other ticket.
            self.db.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
            return
        ticket.result = value
        survivors.append(ticket)
