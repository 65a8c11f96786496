"""What an XMPP login costs in Python with no stanza layer at all, beside purplegw's.

    .venv/bin/python bench/login_floor.py [--accounts 1000] [--repeat 3]

Issue 17 asks for gateway CPU per login no higher than the XMPP server's.
This bench measures how far down a stream layer of our own could take it:
the same logins into a throw-away Prosody (STARTTLS verified against its CA,
SCRAM-SHA-1, resource binding, XEP-0198 ``<enable/>``, roster request and
initial presence in one write, online once the roster arrived; an ``<r/>``
answered) done by

* ``purplegw``: ``XmppSession``, as a worker runs it (slixmpp underneath);
* ``floor``: ``FloorLogin`` below, the login as bytes on asyncio's TLS
  transport: ``XMLPullParser`` events and string templates, nothing else.
  It is what any Python client on asyncio pays at the least, not a client:
  no error handling, no stanza routing, no reconnection.

Both on one loop, 100 logins at a time (``[actors] max_concurrent_logins``),
the same shared TLS context, after 20 warm-up logins; a "first" start
derives each SCRAM salted password (PBKDF2, 4,096 iterations as Prosody
stores them), a "restart" uses the keys a previous login derived, as the
daemon does.  Prosody's CPU is read from ``/proc`` over the same measured
logins only.  Each figure is the median of ``--repeat`` rounds; the
variants alternate within a round and Prosody is restarted before each run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, XMLPullParser
from xml.sax.saxutils import escape

# The same warm-up, login gate, GC threshold, Prosody CPU reading and
# sessions' event sink as bench/account_memory.py (a sibling script:
# bench/ is on sys.path).
from account_memory import (
    CONCURRENT_LOGINS,
    GC_THRESHOLD,
    WARM_ACCOUNTS,
    KeyEvents,
    cpu_seconds,
)

if TYPE_CHECKING:
    import ssl

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("purplegw", "floor")

STREAM_NS = "http://etherx.jabber.org/streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SM_NS = "urn:xmpp:sm:3"
CLIENT_NS = "jabber:client"


def _hmac(key: bytes, text: bytes) -> bytes:
    return hmac.new(key, text, "sha1").digest()


class FloorLogin(asyncio.Protocol):
    """One XMPP c2s login as RFC 6120/6121 and XEP-0198 order it, and a logout."""

    def __init__(
        self, jid: str, password: str, ctx: ssl.SSLContext, keys: dict[str, bytes]
    ) -> None:
        self.user, self.domain = jid.split("@", 1)
        self.password = password.encode()
        self.ctx = ctx
        self.keys = keys  # salt+iterations -> salted password: the stored key
        self.loop = asyncio.get_running_loop()
        self.online: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self.transport: Any = None
        self.stage = "plain"
        self.handled = 0  # XEP-0198: stanzas received since <enabled/>
        self.counting = False
        self._new_parser()

    def _new_parser(self) -> None:
        self.parser = XMLPullParser(events=("start", "end"))
        self.depth = 0

    def _header(self) -> None:
        self.transport.write(
            f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
            f"xml:lang='en' xmlns='jabber:client' xmlns:stream='{STREAM_NS}'>".encode()
        )

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._header()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.online.done():
            self.online.set_exception(ConnectionError(f"lost before online: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        for event, element in self.parser.read_events():
            if event == "start":
                self.depth += 1
                continue
            self.depth -= 1
            if self.depth == 1:
                self._top_level(element)
            elif self.depth == 0:  # the server closed its stream
                self.transport.close()

    def _top_level(self, el: Element) -> None:  # noqa: C901, PLR0912 - one login's steps
        tag = el.tag
        if self.counting and tag in (
            f"{{{CLIENT_NS}}}iq",
            f"{{{CLIENT_NS}}}message",
            f"{{{CLIENT_NS}}}presence",
        ):
            self.handled += 1
        if tag == f"{{{STREAM_NS}}}features":
            if self.stage == "plain":
                self.transport.write(f"<starttls xmlns='{TLS_NS}'/>".encode())
            elif self.stage == "tls":
                self._auth()
            elif self.stage == "authed":
                self.transport.write(
                    f"<iq type='set' id='b'><bind xmlns='{BIND_NS}'><resource>floor"
                    "</resource></bind></iq>".encode()
                )
        elif tag == f"{{{TLS_NS}}}proceed":
            self.loop.create_task(self._start_tls())
        elif tag == f"{{{SASL_NS}}}challenge":
            self._answer(base64.b64decode(el.text or ""))
        elif tag == f"{{{SASL_NS}}}success":
            signature = base64.b64decode(el.text or "").decode()
            if not hmac.compare_digest(signature, "v=" + self.server_signature):
                raise RuntimeError("server signature mismatch")
            self.stage = "authed"
            self._new_parser()
            self._header()
        elif tag == f"{{{CLIENT_NS}}}iq" and el.get("id") == "b":
            self.transport.write(
                f"<enable xmlns='{SM_NS}' resume='true'/>"
                f"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>"
                "<presence/>".encode()
            )
        elif tag == f"{{{SM_NS}}}enabled":
            self.counting = True
        elif tag == f"{{{SM_NS}}}r":
            self.transport.write(f"<a xmlns='{SM_NS}' h='{self.handled}'/>".encode())
        elif tag == f"{{{CLIENT_NS}}}iq" and el.get("id") == "r":
            if not self.online.done():
                self.online.set_result(None)
        elif tag == f"{{{SASL_NS}}}failure":
            self.online.set_exception(RuntimeError("SASL failure"))

    async def _start_tls(self) -> None:
        self.transport = await self.loop.start_tls(
            self.transport, self, self.ctx, server_hostname=self.domain
        )
        self.stage = "tls"
        self._new_parser()
        self._header()

    def _auth(self) -> None:
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={self.user},r={self.nonce}"
        initial = base64.b64encode(("n,," + self.first_bare).encode()).decode()
        self.transport.write(
            f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-1'>{initial}</auth>".encode()
        )

    def _answer(self, challenge: bytes) -> None:
        server_first = challenge.decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        if not fields["r"].startswith(self.nonce):
            raise RuntimeError("server nonce does not extend ours")
        salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
        key = f"{fields['s']}:{iterations}"
        salted = self.keys.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac("sha1", self.password, salt, iterations)
            self.keys[key] = salted
        without_proof = f"c=biws,r={fields['r']}"
        auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha1(client_key).digest()  # noqa: S324 - SCRAM-SHA-1, RFC 5802
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = _hmac(salted, b"Server Key")
        self.server_signature = base64.b64encode(_hmac(server_key, auth_message)).decode()
        final = f"{without_proof},p={base64.b64encode(proof).decode()}"
        self.transport.write(
            f"<response xmlns='{SASL_NS}'>{escape(base64.b64encode(final.encode()).decode())}"
            "</response>".encode()
        )

    async def logout(self) -> None:
        self.transport.write(b"<presence type='unavailable'/></stream:stream>")
        await self.closed


async def measure(args: argparse.Namespace) -> dict[str, float]:
    from purplegw.actors.gc_tuning import apply_gc_threshold
    from purplegw.protocols.base import AccountCredentials, SessionContext
    from purplegw.protocols.xmpp import Adapter
    from purplegw.protocols.xmpp.session import shared_ssl_context

    apply_gc_threshold(GC_THRESHOLD)
    loop = asyncio.get_running_loop()
    shared: dict[str, Any] = {}
    ctx = shared_ssl_context(shared, args.ca_file)
    host, port = args.server.rsplit(":", 1)
    users = [(f"floor{i}@localhost", f"pw{i}-floor") for i in range(args.accounts + WARM_ACCOUNTS)]
    adapter = Adapter()
    cfg = {"server": args.server, "ca_file": args.ca_file, "keepalive": 0, "login_timeout": 900}
    stored: dict[int, dict[str, Any]] = {}

    async def login_one(i: int, jid: str, password: str) -> Any:
        keys = stored.setdefault(i, {})
        if args.variant == "floor":
            client = FloorLogin(jid, password, ctx, keys)
            await loop.create_connection(lambda: client, host, int(port))
            await client.online
            return client
        session = adapter.create_session(
            AccountCredentials(
                i, f"sip:u{i}@127.0.0.1", jid, "xmpp", password, derived_keys=dict(keys)
            ),
            SessionContext(loop=loop, events=KeyEvents(keys), config=cfg, shared=shared),
        )
        await session.login()
        return session

    gate = asyncio.Semaphore(CONCURRENT_LOGINS)

    async def gated(i: int, jid: str, password: str) -> Any:
        async with gate:
            return await login_one(i, jid, password)

    async def login_all(start: int, stop: int) -> list[Any]:
        return await asyncio.gather(*(gated(i, *users[i]) for i in range(start, stop)))

    async def logout_all(clients: list[Any]) -> None:
        await asyncio.gather(*(c.logout() for c in clients))

    warm = await login_all(0, WARM_ACCOUNTS)
    total = len(users)
    if args.restart:  # the keys are derived and stored, the process keeps no cache
        await logout_all(await login_all(WARM_ACCOUNTS, total))
        from purplegw.protocols.xmpp import session as xmpp_session

        xmpp_session.salted_password.cache_clear()
    gc.collect()
    prosody_before = cpu_seconds(args.prosody_pid)
    before = time.process_time()
    started = time.perf_counter()
    clients = await login_all(WARM_ACCOUNTS, total)
    elapsed = time.perf_counter() - started
    ours = time.process_time() - before
    prosody = cpu_seconds(args.prosody_pid) - prosody_before
    await logout_all(clients + warm)
    n = args.accounts
    return {"ours_ms": 1000 * ours / n, "prosody_ms": 1000 * prosody / n, "logins_s": n / elapsed}


def run_child(prosody: Any, variant: str, accounts: int, *, restart: bool) -> dict[str, float]:
    prosody.restart()
    assert prosody.proc is not None
    cmd = [
        sys.executable,
        __file__,
        "--child",
        variant,
        "--accounts",
        str(accounts),
        "--server",
        prosody.address,
        "--ca-file",
        prosody.ca_file,
        "--prosody-pid",
        str(prosody.proc.pid),
    ]
    if restart:
        cmd.append("--restart")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each figure is a median")
    parser.add_argument("--iterations", type=int, default=4096, help="Prosody's SCRAM count")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--restart", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument("--prosody-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        args.variant = args.child
        print(json.dumps(asyncio.run(measure(args))))
        return
    from tests.kit.prosody import Prosody

    runs: dict[tuple[str, bool], list[dict[str, float]]] = {}
    with Prosody(log_level="warn", hashed=True, scram_iterations=args.iterations) as prosody:
        prosody.create_users(args.accounts + WARM_ACCOUNTS, prefix="floor")
        for _ in range(args.repeat):
            for restart in (False, True):
                for variant in VARIANTS:
                    result = run_child(prosody, variant, args.accounts, restart=restart)
                    runs.setdefault((variant, restart), []).append(result)
                    print(
                        variant,
                        "restart" if restart else "first",
                        json.dumps(result),
                        file=sys.stderr,
                        flush=True,
                    )
    print(f"{args.accounts} XMPP logins on one loop, CPU per login, median of {args.repeat} rounds")
    print(
        f"{'start':8} {'variant':9} {'ours ms':>8} {'Prosody ms':>10} {'ours/P':>7} "
        f"{'vs purplegw':>11} {'logins/s':>9}"
    )
    for restart in (False, True):
        reference = statistics.median(r["ours_ms"] for r in runs[("purplegw", restart)])
        for variant in VARIANTS:
            rs = runs[(variant, restart)]
            ours = statistics.median(r["ours_ms"] for r in rs)
            theirs = statistics.median(r["prosody_ms"] for r in rs)
            ratio = statistics.median(r["ours_ms"] / r["prosody_ms"] for r in rs)
            rate = statistics.median(r["logins_s"] for r in rs)
            print(
                f"{'restart' if restart else 'first':8} {variant:9} {ours:8.2f} {theirs:10.2f} "
                f"{ratio:7.2f} {ours / reference:11.2f} {rate:9.0f}"
            )
    print(
        f"PBKDF2-HMAC-SHA1 at {args.iterations} iterations alone (a first login's key): "
        f"{pbkdf2_ms(args.iterations):.2f} ms of CPU"
    )


def pbkdf2_ms(iterations: int, rounds: int = 300) -> float:
    """CPU of one SCRAM salted-password derivation in this process, as a login does it."""
    before = time.process_time()
    for i in range(rounds):
        hashlib.pbkdf2_hmac("sha1", b"pw%d-floor" % i, os.urandom(16), iterations)
    return 1000 * (time.process_time() - before) / rounds


if __name__ == "__main__":
    main()
