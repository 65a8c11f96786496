"""etc/kamailio-cluster.cfg, as shipped, in front of the test's nodes (a real Kamailio).

The nodes are one dispatcher set probed with OPTIONS every second; Kamailio
listens on a loopback address of its own (``KAMAILIO_IP``), which the nodes
trust (``[sip] trusted``) and the phone does not share.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from tests.cluster.two_nodes import DOMAIN
from tests.kit.binaries import missing_peer
from tests.kit.kamailio import Kamailio, kamailio_binary, shipped_config
from tests.kit.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from tests.kit.gateway import GatewayProcess

KAMAILIO_IP = "127.0.0.2"  # its own loopback address: the nodes trust it, not the phone


def cluster_cfg(kamailio_port: int, dispatcher_list: Path, db_url: str) -> str:
    return shipped_config(
        "kamailio-cluster.cfg",
        {
            "KAMAILIO_ADDR": f"{KAMAILIO_IP}:{kamailio_port}",
            "SIP_DOMAIN": DOMAIN,
            "DISPATCHER_LIST": str(dispatcher_list),
            "PING_INTERVAL": "1",
            "CLUSTER_DB": db_url,
        },
    )


@contextlib.contextmanager
def kamailio_in_front(
    nodes: Mapping[str, GatewayProcess], base: Path, db_url: str, *, owner_lookup: bool = False
) -> Iterator[tuple[Kamailio, str]]:
    """The shipped config with the nodes as its dispatcher set; (kamailio, its SIP URI)."""
    if kamailio_binary() is None:
        missing_peer("Kamailio", "kamailio")
    listing = base / "purplegw-nodes.list"
    listing.write_text("".join(f"1 sip:127.0.0.1:{node.port}\n" for node in nodes.values()))
    port = free_port("both", KAMAILIO_IP)
    kamailio = Kamailio(
        cluster_cfg(port, listing, db_url),
        port=port,
        host=KAMAILIO_IP,
        extra_args=("-A", "WITH_OWNER_LOOKUP") if owner_lookup else (),
    )
    kamailio.start()
    try:
        yield kamailio, f"sip:{KAMAILIO_IP}:{port}"
    finally:
        kamailio.stop()
