"""etc/kamailio-cluster.cfg, as shipped, in front of the test's nodes (a real Kamailio).

The nodes are one dispatcher set probed with OPTIONS every second; Kamailio
listens on a loopback address of its own (``KAMAILIO_IP``), which the nodes
trust (``[sip] trusted``) and the phone does not share.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

from tests.cluster.two_nodes import DOMAIN
from tests.kit.binaries import missing_peer
from tests.kit.kamailio import Kamailio, kamailio_binary
from tests.kit.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from tests.kit.gateway import GatewayProcess

REPO = Path(__file__).resolve().parents[2]
KAMAILIO_IP = "127.0.0.2"  # its own loopback address: the nodes trust it, not the phone


def cluster_cfg(kamailio_port: int, dispatcher_list: Path, db_url: str) -> str:
    text = (REPO / "etc" / "kamailio-cluster.cfg").read_text()
    values = {
        "KAMAILIO_ADDR": f"{KAMAILIO_IP}:{kamailio_port}",
        "SIP_DOMAIN": DOMAIN,
        "DISPATCHER_LIST": str(dispatcher_list),
        "PING_INTERVAL": "1",
        "CLUSTER_DB": db_url,
    }
    for name, value in values.items():
        text, count = re.subn(
            rf'#!substdef "!{name}![^!]*!g"', f'#!substdef "!{name}!{value}!g"', text
        )
        assert count == 1, name
    return text


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
