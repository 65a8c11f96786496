"""The shared-state writer: queued writes reach the database off the caller's thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from purplegw.actors.state_writer import StateWriter
from purplegw.exceptions import StoreError
from purplegw.store import Database
from purplegw.store.bindings import BindingRepository, StoredBinding
from purplegw.store.publications import PublicationRepository, StoredPublication
from purplegw.store.upgrades import run_upgrades

if TYPE_CHECKING:
    from pathlib import Path

NOW = 1_800_000_000.0
ALICE = "alice@example.org"


def binding(port: int, cseq: int = 1) -> tuple[StoredBinding, str]:
    uri = f"sip:alice@127.0.0.1:{port}"
    return StoredBinding(ALICE, f"<{uri}>", NOW + 600, "c", cseq, "udp", "127.0.0.1", port), uri


def database(tmp_path: Path) -> Database:
    db = Database.create(f"sqlite://{tmp_path / 'p.db'}")
    run_upgrades(db, "purplemap")
    return db


def test_writes_coalesce_keep_order_and_reach_the_database(tmp_path: Path) -> None:
    reader = database(tmp_path)
    writer = StateWriter(Database.create(reader.url))
    try:
        for cseq in range(1, 50):
            writer.put_binding(*binding(5062, cseq))
        writer.put_binding(*binding(5064))
        writer.delete_binding(ALICE, binding(5064)[1])
        pub = StoredPublication("e1", ALICE, "presence", b"<x/>", "application/pidf+xml", NOW + 60)
        writer.put_publication(pub, None)
        writer.put_publication(StoredPublication("e2", *list(vars(pub).values())[1:]), "e1")
        assert writer.sync()
        rows = BindingRepository(reader).of_aor(ALICE, NOW)
        assert [(r.port, r.cseq) for r in rows] == [(5062, 49)]
        assert [p.etag for p in PublicationRepository(reader).live(NOW)] == ["e2"]
        writer.clear_bindings(ALICE)
        writer.put_binding(*binding(5066))  # after the clear: kept
        assert writer.sync()
        assert [r.port for r in BindingRepository(reader).of_aor(ALICE, NOW)] == [5066]
    finally:
        writer.stop()
        reader.close()


class FailingDatabase(Database):
    """SQLite that refuses every statement while ``down`` is set."""

    dialect = "sqlite"

    def __init__(self, inner: Database) -> None:
        super().__init__(inner.url)
        self.inner = inner
        self.down = threading.Event()

    def execute(self, sql: str, params: object = ()) -> int:
        if self.down.is_set():
            raise StoreError("database down")
        return self.inner.execute(sql, params)  # type: ignore[arg-type]

    def transaction(self):  # type: ignore[no-untyped-def]
        return self.inner.transaction()

    def close(self) -> None:
        self.inner.close()


def test_a_failed_batch_is_written_when_the_database_is_back(tmp_path: Path) -> None:
    reader = database(tmp_path)
    failing = FailingDatabase(Database.create(reader.url))
    failing.down.set()
    writer = StateWriter(failing)
    try:
        writer.put_binding(*binding(5062))
        assert not writer.sync(timeout=0.5)  # not written while down
        assert writer.failures >= 1
        writer.put_binding(*binding(5062, cseq=2))  # replaces the queued one
        failing.down.clear()
        assert writer.sync(timeout=10)
        assert [r.cseq for r in BindingRepository(reader).of_aor(ALICE, NOW)] == [2]
    finally:
        writer.stop()
        reader.close()


def test_stop_writes_what_is_queued(tmp_path: Path) -> None:
    reader = database(tmp_path)
    writer = StateWriter(Database.create(reader.url))
    for port in range(6000, 6100):
        writer.put_binding(*binding(port))
    writer.stop()
    assert len(BindingRepository(reader).of_aor(ALICE, NOW)) == 100
    reader.close()
