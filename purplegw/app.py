"""Composition of the running gateway: store -> accounts -> SIP front.

Start order (reverse on stop): the actor runtime with the account actors
(purplegw.actors.process.run owns signals, pid file and control socket),
then, as a service of that runtime, the gateway's rules (purplegw.gateway)
on their worker thread (purplegw.actors.worker) and the SIP front
(purplegw.actors.front), so that no SIP request arrives before the
accounts it needs are known.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from purplegw.config import Config
    from purplegw.protocols.loader import AdapterRegistry
    from purplegw.store import Store

logger = logging.getLogger(__name__)


def run_gateway(config: Config, store: Store, registry: AdapterRegistry) -> int:
    """Run until SIGTERM; the process exit code."""
    from purplegw.actors import listener  # noqa: PLC0415
    from purplegw.actors.front.front import FrontConfig, SipFront  # noqa: PLC0415
    from purplegw.actors.process import run  # noqa: PLC0415
    from purplegw.actors.worker import Worker  # noqa: PLC0415
    from purplegw.gateway import Gateway, GatewaySettings, PresenceSettings  # noqa: PLC0415
    from purplegw.gateway.settings import (  # noqa: PLC0415
        ContactSettings,
        GroupChatSettings,
        MessagingSettings,
    )

    def account_source() -> list[Any]:
        rows, problems = store.accounts.credentials(registry.canonical)
        for problem in problems:
            logger.error("Account not started: %s", problem)
        return with_stored_keys(store, rows)

    def user_at_host(protocol: str) -> bool:
        info = registry.infos.get(protocol)
        return bool(info and info.adapter and info.adapter.addresses_user_at_host)

    def sip_service(runtime: Any) -> Any:
        # The gateway's rules run on one worker thread of their own; the SIP
        # front's loop and the account loops hand everything over to it.
        # Bindings and publications reach the database through a writer
        # thread with a connection of its own (purplegw.actors.state_writer).
        writer = shared_state_writer(config, store)
        gateway = Gateway(
            settings=GatewaySettings.from_section(config["sip"]),
            store=store,
            directory=runtime.directory,
            worker=Worker(),
            canonical=registry.canonical,
            user_at_host=user_at_host,
            presence=PresenceSettings.from_section(config.sections.get("presence")),
            messaging=MessagingSettings.from_section(config.sections.get("messaging")),
            unsendable=partial(unsendable, registry),
            shared=writer,
            node=config["cluster"]["node"],
            advertise=config["cluster"]["advertise"],
            contact=ContactSettings.from_section(config.sections.get("gateway")),
            statuses=partial(statuses_of, runtime),
            groupchat=GroupChatSettings.from_section(config.sections.get("groupchat")),
            has_rooms=partial(has_rooms, registry),
            has_accounts=AccountUsers(runtime),
        )
        # ``purplegw messages retry`` tells the running daemon over the control socket.
        runtime.commands["messages.requeued"] = gateway.requeued
        gateways.append(gateway)  # the cluster node tells it which users it takes or gives up
        front = SipFront(FrontConfig.from_section(config["sip"]), gateway)
        front.exempt = gateway.peer_host  # other nodes forward here: not a flood
        front.start()
        # The gateway is an EventSink by shape (on_event), not by class: it imports no actors.
        listener.add_sink(gateway)  # type: ignore[arg-type]

        def stop() -> None:
            front.stop()
            listener.remove_sink(gateway)  # type: ignore[arg-type]
            gateway.stop()
            writer.stop()

        return stop

    def key_service(runtime: Any) -> Any:  # noqa: ARG001 - the service signature
        from purplegw.actors.key_keeper import KeyKeeper  # noqa: PLC0415

        keeper = KeyKeeper(store.account_keys).start()
        listener.add_sink(keeper)

        def stop() -> None:
            listener.remove_sink(keeper)
            keeper.stop()

        return stop

    def metrics_service(runtime: Any) -> Any:
        from purplegw.actors.metrics import start_metrics  # noqa: PLC0415

        section = config.sections.get("metrics") or {}
        if not section.get("listen"):
            return None
        return start_metrics(
            section["listen"],
            runtime.directory,
            store,
            section.get("cache_seconds", 5.0),
            workers=config.sections.get("actors", {}).get("workers", 0),
        )

    gateways: list[Any] = []
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return run(
        config.sections,
        account_source,
        services=[
            metrics_service,
            key_service,
            sip_service,
            partial(cluster_service, config, gateways),
        ],
        pidfile=config.pid_file,
        control_socket=config.control_socket,
    )


def shared_state_writer(config: Config, store: Store) -> Any:
    """The writer thread of bindings and publications, on its own connection.

    An in-memory SQLite database exists once per connection: there the
    writer shares the store's.
    """
    from purplegw.actors.state_writer import StateWriter  # noqa: PLC0415
    from purplegw.store import Database  # noqa: PLC0415

    url = store.db.url
    if ":memory:" in url:
        return StateWriter(store.db, close_db=False)
    return StateWriter(Database.create(url, connect_timeout=config["store"]["connect_timeout"]))


def cluster_service(config: Config, gateways: list[Any], runtime: Any) -> Any:
    """Run this node's share of the accounts (docs/cluster.md); the service's stop.

    Without ``[cluster] node`` there is nothing to do: every account runs here.
    """
    if not config["cluster"]["node"]:
        return None
    from purplegw.actors.cluster import ClusterNode  # noqa: PLC0415
    from purplegw.gateway.cluster import Timing  # noqa: PLC0415
    from purplegw.store.cluster import ClusterRepository  # noqa: PLC0415
    from purplegw.store.database import Database  # noqa: PLC0415

    section = config["cluster"]
    timing = Timing.from_lease(section["lease_seconds"])
    # A connection of its own, whose reads time out: renewals never queue
    # behind the gateway's store traffic, and a silent database fails them.
    db = Database.create(
        config.db_url,
        connect_timeout=config["store"]["connect_timeout"],
        read_timeout=max(1.0, timing.renew_every),
    )

    def users() -> list[str] | None:
        rows = runtime.rows
        return None if rows is None else [row.sip_user for row in rows]

    def adopt(sip_users: list[str]) -> None:
        for gateway in gateways:
            gateway.adopt(sip_users)

    def disown(sip_users: list[str]) -> None:
        for gateway in gateways:
            gateway.disown(sip_users)

    node = ClusterNode(
        name=section["node"],
        advertise=section["advertise"],
        timing=timing,
        repo=ClusterRepository(db),
        users=users,
        refresh=runtime.refresh,
        adopt=adopt,
        disown=disown,
        warmup=0.9 * timing.renew_every,  # the next tick: every node started with it is live
    )
    runtime.select = node.select
    runtime.node = node.name
    runtime.before_stop.append(node.begin_drain)
    node.start()
    logger.info(
        "Cluster node %s (%s): lease %g s, renewal every %g s, fencing after %g s",
        node.name,
        node.advertise,
        timing.lease_seconds,
        timing.renew_every,
        timing.fence_after,
    )

    def stop() -> None:
        node.stop()
        db.close()

    return stop


def has_rooms(registry: AdapterRegistry, protocol: str) -> bool:
    """Whether ``protocol``'s network has rooms (``Adapter.has_rooms``)."""
    info = registry.infos.get(protocol)
    return bool(info and info.adapter and info.adapter.has_rooms)


def unsendable(registry: AdapterRegistry, protocol: str, text: str) -> tuple[int, str] | None:
    """What ``protocol``'s network cannot carry of ``text`` (``Adapter.unsendable``); None: fine."""
    info = registry.infos.get(protocol)
    check = getattr(info.adapter, "unsendable", None) if info and info.adapter else None
    return check(text) if check is not None else None


class AccountUsers:
    """Whether the account table has rows of a user (run here or not: the cluster's view).

    The set of users is built again only when the runtime read the table again.
    """

    def __init__(self, runtime: Any) -> None:
        self._runtime = runtime
        self._rows: Any = None
        self._users: frozenset[str] = frozenset()

    def __call__(self, sip_user: str) -> bool:
        rows = self._runtime.rows
        if rows is not self._rows:
            self._users = frozenset(row.sip_user for row in rows or ())
            self._rows = rows
        return sip_user in self._users


def statuses_of(runtime: Any, sip_user: str) -> list[dict[str, Any]]:
    """``sip_user``'s accounts as `purplegw status` shows them (the gateway contact's list)."""
    return [entry for entry in runtime.status() if entry["sip_user"] == sip_user]


def with_stored_keys(store: Store, rows: list[Any]) -> list[Any]:
    """``rows`` with the keys their sessions derived in earlier runs (see KeyKeeper).

    The keys are a cache: when they cannot be read (database not upgraded,
    key file rotated) the accounts log in without them.
    """
    from purplegw.exceptions import StoreError  # noqa: PLC0415
    from purplegw.protocols.base import with_derived_keys  # noqa: PLC0415

    try:
        store.account_keys.prune()
        keys = store.account_keys.load()
    except StoreError as exc:
        logger.warning("Derived keys not loaded (accounts derive them again): %s", exc)
        return rows
    return with_derived_keys(rows, keys)
