"""A TCP relay on loopback that a test can pause: a network that stops forwarding.

    relay = TcpRelay("127.0.0.1", mariadb.port).start()
    ... connect to relay.port ...
    relay.pause()    # nothing goes through any more, both ways; sockets stay open
    relay.resume()
    relay.stop()

While paused, bytes already sent wait in the kernel's buffers and new
connections are accepted but not connected onward: to the client the peer
is silent, not refusing (a cable pulled, a firewall dropping packets), which
is what a read timeout, not a connection error, must detect.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self

from tests.kit.ports import free_port

_CHUNK = 65536
_POLL = 0.05


class TcpRelay:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = free_port("tcp", host)
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> Self:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen(64)
        server.settimeout(_POLL)
        self._server = server
        threading.Thread(target=self._accept, name="tcprelay-accept", daemon=True).start()
        return self

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        while not self._flowing.wait(_POLL):
            if self._stopped.is_set():
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            with contextlib.suppress(OSError):
                client.close()
            return
        self._track(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(_POLL)
        while not self._stopped.is_set():
            if not self._flowing.wait(_POLL):
                continue  # paused: read nothing, so nothing is forwarded
            try:
                data = src.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            self._flowing.wait()  # a pause that began during recv holds this chunk too
            try:
                dst.sendall(data)
            except OSError:
                break
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped.set()
        self._flowing.set()
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
