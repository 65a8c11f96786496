"""Outgoing TCP (+TLS) connections, optionally through an HTTP CONNECT proxy.

The successor of the original module's ``httpProxy_host``/``httpProxy_port``:
``open_connection`` gives an adapter an asyncio stream pair to the IM
server, tunnelled through the configured proxy when there is one, with TLS
negotiated end to end with the IM server *inside* the tunnel (the proxy sees
only ciphertext).

The CONNECT handshake itself is python-socks' (``ProxyType.HTTP``, with
``Proxy-Authorization: Basic`` when credentials are set): it is maintained,
asyncio-native, and returns the connected socket, which is exactly what
``asyncio.open_connection(sock=..., ssl=...)`` needs to start TLS over the
tunnel.  Errors are turned into ``ProxyRefusedError`` /
``ProxyUnreachableError`` (both ``TransientError``) whose message names the
proxy and, when it answered, its status line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from typing import TYPE_CHECKING

from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError, ProxyType
from python_socks.async_.asyncio import Proxy

from purplegw.protocols.base import ProxySettings, TransientError

if TYPE_CHECKING:
    import socket

logger = logging.getLogger(__name__)


class ProxyUnreachableError(TransientError):
    """The proxy itself could not be reached (refused, timed out)."""


class ProxyRefusedError(TransientError):
    """The proxy answered the CONNECT with a non-2xx status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachableError(TransientError):
    """The IM server could not be reached directly (no proxy configured)."""


async def open_connection(  # noqa: PLR0913 - asyncio.open_connection's arguments, keyword-only
    host: str,
    port: int,
    *,
    proxy: ProxySettings | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - bounds the proxy handshake only, as python-socks' connect(timeout=)
    limit: int = 2**16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``host:port``, through ``proxy`` if given; TLS when ``ssl`` is set.

    ``server_hostname`` is the name checked against the server certificate
    (default ``host``).  ``timeout`` covers proxy handshake, TCP connect and
    TLS handshake together.  Raises ``TransientError`` subclasses only.
    """
    label = f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            if proxy is None:
                try:
                    return await asyncio.open_connection(
                        host,
                        port,
                        ssl=ssl,
                        server_hostname=(server_hostname or host) if ssl else None,
                        limit=limit,
                    )
                except ssl_module.SSLError as exc:
                    raise ServerUnreachableError(f"TLS with {label} failed: {exc}") from exc
                except OSError as exc:
                    raise ServerUnreachableError(
                        f"cannot connect to {label}: {exc.strerror or exc}"
                    ) from exc
            sock = await open_tunnel(host, port, proxy)
            try:
                return await asyncio.open_connection(
                    sock=sock,
                    ssl=ssl,
                    server_hostname=(server_hostname or host) if ssl else None,
                    limit=limit,
                )
            except ssl_module.SSLError as exc:
                sock.close()
                raise ServerUnreachableError(
                    f"TLS with {label} through proxy {proxy.host}:{proxy.port} failed: {exc}"
                ) from exc
            except OSError as exc:
                sock.close()
                raise ServerUnreachableError(
                    f"connection to {label} through proxy {proxy.host}:{proxy.port} failed: {exc}"
                ) from exc
    except TimeoutError as exc:
        via = f" through proxy {proxy.host}:{proxy.port}" if proxy else ""
        raise ServerUnreachableError(
            f"connecting to {label}{via} timed out after {timeout}s"
        ) from exc


async def open_tunnel(
    host: str,
    port: int,
    proxy: ProxySettings,
    timeout: float | None = None,  # noqa: ASYNC109 - bounds the proxy handshake only
) -> socket.socket:
    """A socket connected to ``host:port`` through the HTTP CONNECT ``proxy``.

    For adapters whose library opens its own streams (slixmpp): they start
    TLS over this socket themselves.  ``timeout`` bounds the proxy handshake.
    """
    where = f"HTTP proxy {proxy.host}:{proxy.port}"
    tunnel = Proxy(
        ProxyType.HTTP,
        proxy.host,
        proxy.port,
        username=proxy.username,
        password=proxy.password,
        # The proxy resolves the IM server's name, as a browser's would: the
        # gateway host may have no outside DNS at all.
        rdns=True,
        loop=asyncio.get_running_loop(),
    )
    try:
        sock = await tunnel.connect(dest_host=host, dest_port=port, timeout=timeout)
    except ProxyConnectionError as exc:
        raise ProxyUnreachableError(f"{where} unreachable: {exc}") from exc
    except ProxyTimeoutError as exc:
        raise ProxyUnreachableError(f"{where} timed out: {exc}") from exc
    except ProxyError as exc:
        raise ProxyRefusedError(
            f"{where} refused CONNECT {host}:{port}: {exc}", status=exc.error_code
        ) from exc
    logger.debug("tunnel to %s:%s open through %s", host, port, where)
    return sock
