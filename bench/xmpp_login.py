"""XMPP logins on one asyncio loop: purplegw's XmppSession vs bare slixmpp.

    .venv/bin/python bench/xmpp_login.py [--accounts 200] [--repeat 2]

Both log ``--accounts`` accounts into a throw-away Prosody (STARTTLS,
certificate verified against its self-signed CA, roster fetched, initial
presence sent) concurrently on one loop, then log them out.  The reference
is slixmpp as its documentation uses it: one ``ClientXMPP`` per account with
its default per-client SSL context (``ca_certs`` set).  purplegw shares one
context per process (``context.shared``) and adds its own handlers, XEP-0198
and receipts.  Prosody is restarted before every measured run (it slows down
as it ages).  Reported: logins per second (wall clock) and RSS growth per
logged-in account; best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purplegw.protocols.base import AccountCredentials, ConnectionState, SessionContext  # noqa: E402
from purplegw.protocols.xmpp import Adapter  # noqa: E402
from tests.kit.prosody import Prosody, XmppUser  # noqa: E402


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class NoEvents:
    def on_connection_state(self, state: ConnectionState, reason: str = "") -> None: ...
    def on_message(self, *a: object) -> None: ...
    def on_contact_presence(self, *a: object) -> None: ...
    def on_authorization_request(self, *a: object) -> None: ...
    def on_authorization_answer(self, *a: object) -> None: ...
    def on_typing(self, *a: object) -> None: ...
    def on_receipt(self, *a: object) -> None: ...
    def on_message_acked(self, *a: object) -> None: ...
    def on_key_derived(self, *a: object) -> None: ...


async def run_purplegw(prosody: Prosody, users: list) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    shared: dict = {}
    cfg = {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 0}
    adapter = Adapter()
    # Import cost is per process, not per account: build one client first.
    warm = adapter.create_session(
        AccountCredentials(-1, "sip:warm@127.0.0.1", "warm@localhost", "xmpp", "x"),
        SessionContext(loop=loop, events=NoEvents(), config=cfg, shared=shared),
    )
    warm.client = warm._build_client()
    gc.collect()
    before = rss_kib()
    started = time.perf_counter()
    sessions = [
        adapter.create_session(
            AccountCredentials(i, f"sip:u{i}@127.0.0.1", u.jid, "xmpp", u.password),
            SessionContext(loop=loop, events=NoEvents(), config=cfg, shared=shared),
        )
        for i, u in enumerate(users)
    ]
    await asyncio.gather(*(s.login() for s in sessions))
    elapsed = time.perf_counter() - started
    gc.collect()
    grown = rss_kib() - before
    await asyncio.gather(*(s.logout() for s in sessions))
    return len(users) / elapsed, grown / len(users)


async def run_reference(prosody: Prosody, users: list) -> tuple[float, float]:
    import slixmpp

    slixmpp.ClientXMPP("warm@localhost/bench", "x", loop=asyncio.get_running_loop())
    gc.collect()
    before = rss_kib()
    started = time.perf_counter()
    clients = []
    waiters = []
    for u in users:
        client = slixmpp.ClientXMPP(f"{u.jid}/bench", u.password, loop=asyncio.get_running_loop())
        client.ca_certs = Path(prosody.ca_file)
        client.enable_direct_tls = False
        client.use_aiodns = False
        done = asyncio.get_running_loop().create_future()

        async def on_start(
            _event: object, client: slixmpp.ClientXMPP = client, done: asyncio.Future = done
        ) -> None:
            await client.get_roster()
            client.send_presence()
            done.set_result(None)

        client.add_event_handler("session_start", on_start)
        client.connect(prosody.host, prosody.port)
        clients.append(client)
        waiters.append(done)
    await asyncio.gather(*waiters)
    elapsed = time.perf_counter() - started
    gc.collect()
    grown = rss_kib() - before
    await asyncio.gather(*(c.disconnect(wait=1.0) for c in clients), return_exceptions=True)
    for c in clients:
        task = getattr(c, "_run_out_filters", None)
        if task is not None:
            task.cancel()
    return len(users) / elapsed, grown / len(users)


def measure_one(name: str, address: str, ca_file: str, accounts: int) -> None:
    """Child process: one measured run, printed as "rate kib" on stdout."""
    host, port = address.rsplit(":", 1)
    prosody = Prosody.__new__(Prosody)  # only host/port/address/ca_file are read
    prosody.host, prosody.port = host, int(port)
    prosody.run_dir = Path(ca_file).parent.parent
    prosody.domain = "localhost"
    users = [XmppUser(f"bench{i}@localhost", f"pw{i}-bench") for i in range(accounts)]
    fn = run_purplegw if name == "purplegw" else run_reference
    rate, kib = asyncio.run(fn(prosody, users))
    print(f"{rate} {kib}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one", choices=["purplegw", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        measure_one(args.one, args.server, args.ca_file, args.accounts)
        return
    labels = {"reference": "slixmpp reference", "purplegw": "purplegw XmppSession"}
    results: dict[str, list[tuple[float, float]]] = {"reference": [], "purplegw": []}
    with Prosody(log_level="warn") as prosody:
        prosody.create_users(args.accounts, prefix="bench")
        for _ in range(args.repeat):
            for name, runs in results.items():
                prosody.restart()
                # A fresh process per run: RSS growth is not blurred by the
                # previous run's freed memory.
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        name,
                        "--accounts",
                        str(args.accounts),
                        "--server",
                        prosody.address,
                        "--ca-file",
                        prosody.ca_file,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                runs.append((float(out[-2]), float(out[-1])))
    ref_rate = max(r[0] for r in results["reference"])
    ref_mem = min(r[1] for r in results["reference"])
    print(
        f"{args.accounts} concurrent XMPP logins (STARTTLS, SCRAM, roster, presence), "
        f"one loop, best of {args.repeat}"
    )
    print(f"{'implementation':<24}{'logins/s':>10}{'ratio':>8}{'KiB/account':>14}{'ratio':>8}")
    for name, runs in results.items():
        rate = max(r[0] for r in runs)
        mem = min(r[1] for r in runs)
        print(
            f"{labels[name]:<24}{rate:>10.0f}{rate / ref_rate:>8.2f}"
            f"{mem:>14.0f}{mem / ref_mem if ref_mem else 0:>8.2f}"
        )


if __name__ == "__main__":
    main()
