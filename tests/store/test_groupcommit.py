"""Group commit on both backends: one commit for N writes, and no lie when the database fails."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import pytest

from purplegw.exceptions import StoreError
from purplegw.store import Database, Store
from purplegw.store.groupcommit import GroupCommitWriter
from purplegw.store.outbox import NewIncoming, OutboxRepository
from purplegw.store.sendq import NewSend, SendQueueRepository

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ALICE = "alice@example.org"


@pytest.fixture
def commits(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the store connection's COMMITs."""
    counted: list[int] = []
    real = store.db._commit  # the one place every commit goes through

    def counting() -> None:
        counted.append(1)
        real()

    monkeypatch.setattr(store.db, "_commit", counting)
    return counted


@pytest.fixture
def fresh(db_url: str) -> Iterator[Database]:
    """A second connection: what is durable, as another process sees it."""
    db = Database.create(db_url)
    yield db
    db.close()


def _send(i: int) -> NewSend:
    return NewSend(ALICE, "xmpp", "bob@jabber.example", f"message {i}", f"m-{i}")


def test_put_many_and_done_many_are_one_commit_each(store: Store, commits: list[int]) -> None:
    assert store.sendq.put_many([_send(i) for i in range(20)]) == [True] * 20
    assert len(commits) == 1
    # A resend within the batch and of an already recorded id is recognised.
    assert store.sendq.put_many([_send(3), _send(20), _send(20)]) == [False, True, False]
    seqs = store.outbox.put_many(
        [NewIncoming(ALICE, 1, "xmpp", "bob", f"in {i}".encode()) for i in range(10)]
    )
    assert len(commits) == 3
    assert seqs == sorted(seqs)
    assert [m.body for m in store.outbox.pending(ALICE)] == [f"in {i}".encode() for i in range(10)]
    commits.clear()
    assert store.sendq.done_many([f"m-{i}" for i in range(21)] + ["unknown"]) == 21
    assert store.outbox.done_many(seqs[:5]) == 5
    assert len(commits) == 2
    assert store.sendq.pending() == []
    assert len(store.outbox.pending()) == 5


def test_n_writes_share_one_commit(store: Store, commits: list[int], fresh: Database) -> None:
    writer = GroupCommitWriter(store.db)
    sends = [writer.add(partial(store.sendq.put_many, [_send(i)])) for i in range(32)]
    incoming = [
        writer.add(
            partial(
                store.outbox.put,
                sip_user=ALICE,
                account_id=1,
                protocol="xmpp",
                contact="bob",
                body=f"in {i}".encode(),
            )
        )
        for i in range(32)
    ]
    assert len(writer) == 64
    assert not any(t.settled for t in sends)
    assert commits == []  # add() writes nothing
    assert SendQueueRepository(fresh).pending() == []

    result = writer.flush()
    assert len(commits) == 1
    assert result.commits == 1
    assert len(result.committed) == 64
    assert result.failed == []
    assert all(t.ok for t in sends + incoming)
    assert [t.result for t in sends] == [[True]] * 32
    assert [m.seq for m in OutboxRepository(fresh).pending()] == [t.result for t in incoming]
    assert len(SendQueueRepository(fresh).pending()) == 32
    assert len(writer) == 0
    assert writer.flush().committed == []  # nothing pending: no transaction at all
    assert len(commits) == 1


def test_a_failing_op_is_undone_alone(store: Store, fresh: Database) -> None:
    writer = GroupCommitWriter(store.db)

    def half_then_fail() -> None:
        store.sendq.put_many([_send(100)])
        store.db.execute("INSERT INTO no_such_table VALUES (1)")

    before = writer.add(partial(store.sendq.put_many, [_send(1)]))
    bad = writer.add(half_then_fail)
    after = writer.add(partial(store.sendq.put_many, [_send(2)]))
    result = writer.flush()
    assert result.committed == [before, after]
    assert result.failed == [bad]
    assert isinstance(bad.error, StoreError)
    assert bad.ok is False
    # The failed op's first write went with it; its neighbours are durable.
    assert [p.message_id for p in SendQueueRepository(fresh).pending()] == ["m-1", "m-2"]


def _break_commit(db: Database) -> Callable[[], None]:
    """An op after which the transaction cannot commit, as a real failure would do it."""
    if db.dialect == "sqlite":
        # A deferred foreign key is checked at COMMIT, which then fails.
        db.execute("CREATE TABLE gc_parent (id INTEGER PRIMARY KEY)")
        db.execute(
            "CREATE TABLE gc_child (parent INTEGER REFERENCES gc_parent(id) "
            "DEFERRABLE INITIALLY DEFERRED)"
        )
        return partial(db.execute, "INSERT INTO gc_child (parent) VALUES (42)")
    # The server drops the connection in the middle of the batch.
    row = db.fetchone("SELECT CONNECTION_ID()")
    assert row is not None

    def kill() -> None:
        killer = Database.create(db.url)
        try:
            killer.execute(f"KILL CONNECTION {int(row[0])}")
        finally:
            killer.close()

    return kill


def test_database_failure_mid_batch_reports_nothing_durable(store: Store, fresh: Database) -> None:
    writer = GroupCommitWriter(store.db)
    sabotage = _break_commit(store.db)
    first = [writer.add(partial(store.sendq.put_many, [_send(i)])) for i in range(5)]
    writer.add(sabotage)
    later = [
        writer.add(
            partial(
                store.outbox.put,
                sip_user=ALICE,
                account_id=1,
                protocol="xmpp",
                contact="bob",
                body=b"x",
            )
        )
        for _ in range(5)
    ]
    result = writer.flush()
    assert result.committed == []
    assert result.commits == 0
    assert len(result.failed) == 11
    assert all(t.ok is False and t.error is not None for t in first + later)
    assert SendQueueRepository(fresh).pending() == []
    assert OutboxRepository(fresh).pending() == []

    # The writer and the connection are usable again: the next batch commits.
    again = [writer.add(partial(store.sendq.put_many, [_send(i)])) for i in range(3)]
    assert writer.flush().commits == 1
    assert all(t.ok for t in again)
    assert [p.message_id for p in SendQueueRepository(fresh).pending()] == ["m-0", "m-1", "m-2"]
    assert writer.commits == 1
