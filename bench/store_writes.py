"""Durable message writes: one commit per row against group commits.

    .venv/bin/python bench/store_writes.py                 # SQLite and a throw-away MariaDB
    .venv/bin/python bench/store_writes.py --rows 2000 --backends sqlite

Each run writes ``--rows`` send-queue rows (the write a SIP MESSAGE costs
before its 202) into a fresh database:

``single``     ``sendq.put`` per row: one transaction and one fsync each, as
               the gateway does today;
``group N``    the same rows through ``GroupCommitWriter``, flushed every N
               rows (N = 1, 8, 64): one transaction and one fsync per flush.

SQLite runs in WAL mode with ``synchronous=FULL`` (the fsync on every
commit that makes a 202 truthful); MariaDB is the test kit's server on
loopback with InnoDB's default ``innodb_flush_log_at_trx_commit=1``.  The
table prints rows/s and the ratio to ``single`` of the same backend.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from purplegw.store import Database
from purplegw.store.groupcommit import GroupCommitWriter
from purplegw.store.sendq import NewSend, SendQueueRepository
from purplegw.store.upgrades import run_upgrades

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.kit: the throw-away MariaDB

GROUPS = (1, 8, 64)


def _rows(n: int, tag: str) -> list[NewSend]:
    return [
        NewSend(
            "alice@example.org",
            "xmpp",
            "bob@jabber.example",
            f"message {i} of a benchmark, about as long as a chat line",
            f"{tag}-{i}",
        )
        for i in range(n)
    ]


def single(db: Database, rows: list[NewSend]) -> None:
    sendq = SendQueueRepository(db)
    for row in rows:
        sendq.put(
            sip_user=row.sip_user,
            protocol=row.protocol,
            contact=row.contact,
            body=row.body,
            message_id=row.message_id,
        )


def grouped(size: int, db: Database, rows: list[NewSend]) -> None:
    sendq = SendQueueRepository(db)
    writer = GroupCommitWriter(db)
    for row in rows:
        writer.add(partial(sendq.put_many, [row]))
        if len(writer) >= size:
            writer.flush()
    writer.flush()
    if writer.ops != len(rows):
        raise SystemExit(f"group {size}: {writer.ops} of {len(rows)} writes committed")


def measure(db: Database, n: int) -> list[tuple[str, float]]:
    runs: list[tuple[str, Callable[[Database, list[NewSend]], None]]] = [("single", single)]
    runs += [(f"group {size}", partial(grouped, size)) for size in GROUPS]
    results = []
    for name, run in runs:
        rows = _rows(n, name.replace(" ", ""))
        start = time.perf_counter()
        run(db, rows)
        elapsed = time.perf_counter() - start
        stored = db.fetchone(
            "SELECT COUNT(*) FROM purplegw_sendq WHERE message_id LIKE ?",
            (name.replace(" ", "") + "-%",),
        )
        if stored is None or int(stored[0]) != n:
            raise SystemExit(f"{name}: {stored} rows stored, expected {n}")
        results.append((name, n / elapsed))
    return results


def sqlite_backend(tmp: Path) -> Database:
    db = Database.create(f"sqlite://{tmp / 'bench.db'}")
    run_upgrades(db, "purplemap")
    db.execute("PRAGMA synchronous=FULL")
    mode = db.fetchone("PRAGMA journal_mode")
    sync = db.fetchone("PRAGMA synchronous")
    if mode is None or mode[0] != "wal" or sync is None or int(sync[0]) != 2:
        raise SystemExit(f"SQLite not in WAL/FULL: {mode} {sync}")
    return db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite,mariadb")
    args = parser.parse_args()
    table: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="purplegw-bench-") as tmp:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                db = sqlite_backend(Path(tmp))
                label = "SQLite WAL, synchronous=FULL"
                results = measure(db, args.rows)
                db.close()
            elif backend == "mariadb":
                from tests.kit.mariadb import MariaDB  # only this backend needs it

                with MariaDB(Path(tmp) / "mariadb") as server:
                    db = Database.create(server.create_database("bench"))
                    run_upgrades(db, "purplemap")
                    flush = db.fetchone("SELECT @@innodb_flush_log_at_trx_commit")
                    label = f"MariaDB, flush_log_at_trx_commit={flush[0] if flush else '?'}"
                    results = measure(db, args.rows)
                    db.close()
            else:
                raise SystemExit(f"unknown backend {backend!r}")
            base = results[0][1]
            table += [(label, name, rate, rate / base) for name, rate in results]
    print(f"{args.rows} send-queue rows per run")
    print(f"{'backend':<36} {'writes':<10} {'rows/s':>10} {'x single':>9}")
    for label, name, rate, ratio in table:
        print(f"{label:<36} {name:<10} {rate:>10.0f} {ratio:>8.2f}x")


if __name__ == "__main__":
    main()
