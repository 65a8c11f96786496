"""Registrar bindings written through to a real store, read back at start and in a cluster."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING

from purplegw.gateway.identity import Identity
from purplegw.gateway.registrar import PENDING_WINDOW, Registrar
from purplegw.gateway.settings import GatewaySettings
from tests.kit.sipmsg import make_request, udp_source

if TYPE_CHECKING:
    from purplegw.store import Store
    from purplegw.store.bindings import StoredBinding

USER = "alice@sip.test"


class Writes:
    """A SharedStatePort writing at once through the store (the writer thread's job)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[str] = []

    def put_binding(self, binding: StoredBinding, uri: str) -> None:
        self.calls.append(f"put {uri}")
        self.store.bindings.put(binding, uri)

    def delete_binding(self, aor: str, uri: str) -> None:
        self.calls.append(f"delete {uri}")
        self.store.bindings.delete(aor, uri)

    def clear_bindings(self, aor: str) -> None:
        self.calls.append(f"clear {aor}")
        self.store.bindings.clear(aor)

    def put_publication(self, *_args: object) -> None:
        raise AssertionError

    def delete_publication(self, *_args: object) -> None:
        raise AssertionError


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.mono = 100.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def registrar(store: Store, clock: Clock, node: str = "") -> Registrar:
    settings = GatewaySettings(domain="sip.test", trusted=["127.0.0.0/8"])
    identity = Identity(settings, SimpleNamespace(get=lambda *_: None), clock.wall)
    return Registrar(
        settings,
        identity,
        clock.wall,
        store=store,
        shared=Writes(store),
        node=node,
        monotonic=clock.monotonic,
    )


def register(reg: Registrar, port: int, expires: int = 600, cseq: int = 1) -> int:
    request = make_request(
        "REGISTER",
        "sip:sip.test",
        from_=f"<sip:{USER}>",
        to=f"<sip:{USER}>",
        call_id=f"reg-{port}",
        cseq=cseq,
        extra=[("Contact", f"<sip:alice@127.0.0.1:{port}>"), ("Expires", str(expires))],
    )
    source = udp_source(port=port)
    return reg.register(request, source).status


def test_bindings_are_written_and_restored(store: Store) -> None:
    clock = Clock()
    first = registrar(store, clock)
    assert register(first, 5062) == 200
    assert register(first, 5064, expires=60) == 200
    assert register(first, 5064, expires=0, cseq=2) == 200  # removed: deleted
    assert [r.port for r in store.bindings.of_aor(USER, clock.now)] == [5062]

    clock.now += 30
    second = registrar(store, clock)  # a restarted gateway
    second.restore()
    [(address, ruri)] = second.destinations(USER, "xmpp")
    assert (address.host, address.port) == ("127.0.0.1", 5062)
    assert ruri == "sip:alice@127.0.0.1:5062;proto=xmpp"
    # Expiry by the stored absolute time: 600 s after the REGISTER, not after the restart.
    clock.now += 571
    assert second.destinations(USER, "xmpp") == []


def test_in_a_cluster_any_node_sees_the_others_bindings(store: Store) -> None:
    clock = Clock()
    gw1, gw2 = registrar(store, clock, "gw1"), registrar(store, clock, "gw2")
    assert register(gw1, 5062) == 200
    assert [d.port for d, _ in gw2.destinations(USER, "xmpp")] == [5062]  # type: ignore[union-attr]
    assert register(gw2, 5064) == 200  # gw2 answers a REGISTER of the same user
    assert sorted(d.port for d, _ in gw1.destinations(USER, "xmpp")) == [5062, 5064]  # type: ignore[union-attr]
    # The phone unregisters through gw2: gw1 forgets the contact it had in memory.
    clock.mono += PENDING_WINDOW + 1
    assert register(gw2, 5062, expires=0, cseq=2) == 200
    assert [d.port for d, _ in gw1.destinations(USER, "xmpp")] == [5064]  # type: ignore[union-attr]
    # A write of this node's own still on its way wins over the database.
    assert register(gw2, 5066) == 200
    store.bindings.clear(USER)  # as if the write had not reached it yet
    assert [d.port for d, _ in gw2.destinations(USER, "xmpp")] == [5066]  # type: ignore[union-attr]
    clock.mono += PENDING_WINDOW + 1
    assert gw2.destinations(USER, "xmpp") == []


def test_the_other_nodes_registrations_are_polled(store: Store) -> None:
    clock = Clock()
    gw1, gw2 = registrar(store, clock, "gw1"), registrar(store, clock, "gw2")
    assert gw1.registered_elsewhere() == []
    assert register(gw2, 5062) == 200
    assert register(gw1, 5064) == 200  # its own: it knew at once
    assert gw1.registered_elsewhere() == [USER]
    assert gw1.registered_elsewhere() == []  # seen once
    clock.now += 1
    assert register(gw2, 5062, cseq=2) == 200  # a refresh: woken again
    assert gw1.registered_elsewhere() == [USER]
    assert gw2.registered_elsewhere() == [USER]  # gw1's own write, seen from gw2
    assert registrar(store, clock).registered_elsewhere() == []  # a single node never polls
