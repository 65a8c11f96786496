"""The gateway's rules, as plain objects: no threads, sockets or actors here.

``Gateway`` (core.py) dispatches each SIP request and each account event to
one controller per concern; the runtime (purplegw.actors) provides the
ports it needs (ports.py).  See docs/architecture.md.
"""

from purplegw.gateway.core import Gateway
from purplegw.gateway.settings import GatewaySettings, PresenceSettings

__all__ = ["Gateway", "GatewaySettings", "PresenceSettings"]
