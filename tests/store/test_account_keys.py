"""Keys derived from passwords: encrypted at rest, replaced, pruned, written in batches."""

from __future__ import annotations

import threading
import time

from purplegw.actors.key_keeper import KeyKeeper
from purplegw.actors.listener import AccountInfo
from purplegw.exceptions import StoreError
from purplegw.store import Database, NewAccount, Store
from purplegw.store.account_keys import AccountKeyRepository

SECRET = '{"salted": "c2VjcmV0LXNhbHRlZC1wYXNzd29yZA=="}'  # a test value


def _accounts(store: Store, n: int) -> list[int]:
    return store.accounts.add_many(
        NewAccount(f"u{i}@sip.test", f"u{i}@xmpp.test", "xmpp", f"pw{i}") for i in range(n)
    )


def test_keys_are_encrypted_replaced_and_loaded_per_account(store: Store) -> None:
    first, second = _accounts(store, 2)
    store.account_keys.put(first, "scram", SECRET)
    store.account_keys.put(second, "scram", "old")
    store.account_keys.put(second, "scram", "new")
    assert store.account_keys.load() == {first: {"scram": SECRET}, second: {"scram": "new"}}
    stored = [row[0] for row in store.db.fetchall("SELECT value FROM purplegw_account_keys")]
    assert len(stored) == 2
    assert all(value.startswith("enc:v1:") for value in stored)
    assert not any("c2VjcmV0" in value or value == "new" for value in stored)


def test_keys_of_removed_accounts_are_pruned(store: Store) -> None:
    kept, removed = _accounts(store, 2)
    store.account_keys.put_many([(kept, "scram", "a"), (removed, "scram", "b")])
    store.accounts.remove(removed)
    assert store.account_keys.prune() == 1
    assert store.account_keys.load() == {kept: {"scram": "a"}}


def test_an_undecryptable_key_is_skipped_not_fatal(store: Store) -> None:
    account, other = _accounts(store, 2)
    store.account_keys.put(account, "scram", "good")
    store.db.execute(
        "INSERT INTO purplegw_account_keys (account_id, kind, value, updated) "
        "VALUES (?, 'scram', 'enc:v1:not-a-fernet-token', 0)",
        (other,),
    )
    assert store.account_keys.load() == {account: {"scram": "good"}}


def test_keeper_batches_writes_and_flushes_on_stop(store: Store) -> None:
    ids = _accounts(store, 3)
    keeper = KeyKeeper(store.account_keys, interval=0.2).start()
    try:
        for account_id in ids:
            info = AccountInfo(account_id, "u", "xmpp", "e")
            keeper.on_key_derived(info, "scram", f"k{account_id}")
        deadline = time.monotonic() + 10
        while len(store.account_keys.load()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.account_keys.load() == {i: {"scram": f"k{i}"} for i in ids}
        keeper.on_key_derived(AccountInfo(ids[0], "u", "xmpp", "e"), "scram", "latest")
    finally:
        keeper.stop()
    assert store.account_keys.load()[ids[0]] == {"scram": "latest"}


def test_keeper_drops_a_batch_it_cannot_write_and_goes_on() -> None:
    class Broken:
        def put_many(self, _keys: list) -> None:
            raise StoreError("database is down")

    keeper = KeyKeeper(Broken(), interval=60)
    keeper.on_key_derived(AccountInfo(1, "u", "xmpp", "e"), "scram", "k")
    assert keeper.flush() == 0
    assert keeper.flush() == 0  # dropped: a cache, derived again next start


def test_nodes_storing_their_accounts_keys_at_once_do_not_deadlock(
    store: Store, db_url: str
) -> None:
    """Cluster nodes share the table, each writing its own accounts' keys, interleaved ids."""
    cipher = store.accounts.cipher
    dbs = [Database.create(db_url) for _ in range(3)]
    repos = [AccountKeyRepository(db, cipher, store.tables.accounts) for db in dbs]
    errors: list[BaseException] = []
    for number in range(20):
        barrier = threading.Barrier(3)

        def run(index: int, number: int = number, barrier: threading.Barrier = barrier) -> None:
            keys = [(i, "scram", f"k{number}-{i}") for i in range(index, 300, 3)]
            try:
                barrier.wait(timeout=10)
                repos[index].put_many(keys)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    for db in dbs:
        db.close()
    assert errors == []
    stored = store.db.fetchall("SELECT COUNT(*) FROM purplegw_account_keys")
    assert stored[0][0] == 300
