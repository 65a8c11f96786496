"""Account runtimes side by side: logins/s, RSS per account, message round trips/s.

    .venv/bin/python bench/accounts.py --accounts 1000,5000
    .venv/bin/python bench/accounts.py --accounts 1000 --runtimes shared_loop,gevent

Runtimes (``--runtimes``, default all three):

``shared_loop``         purplegw's default: pykka actors handled on ONE shared
                        asyncio loop thread per process (the reference).
``thread_per_account``  one pykka thread plus one private asyncio loop thread
                        per account.
``gevent``              the same account logic on one asyncio-gevent loop in a
                        monkey-patched process, without pykka (pykka 3+ has no
                        gevent runtime).  Needs ``pip install -e .[bench]``.

``--network dummy`` replaces Prosody by the in-process ``dummy`` adapter:
what the runtime itself costs, without TLS, XML and a server.

Every measurement runs in a fresh process (clean RSS, gevent patches
isolated) against a throw-away Prosody on loopback (STARTTLS with one shared
SSL context, XMPP adapter as in production), restarted before every run
because Prosody slows down as it ages.  Measured: wall time until every
account is CONNECTED (logins/s), RSS growth per connected account, OS
threads, then ``--pings`` ping-pong round trips per pair of accounts, all
pairs at once, through Prosody and back (round trips/s).  Ratios are to the
reference runtime of the same account count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = ("shared_loop", "thread_per_account", "gevent")
REFERENCE = "shared_loop"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def os_threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


# --- the measured child process --------------------------------------------------


def child(args: argparse.Namespace) -> None:  # noqa: C901, PLR0912, PLR0915 - one child process per runtime, a linear script
    if args.child == "gevent":
        from gevent import monkey

        monkey.patch_all()
    sys.path.insert(0, str(ROOT))
    import asyncio
    import threading

    from purplegw.actors import listener
    from purplegw.actors.state import AccountState, ActorsConfig
    from purplegw.protocols.base import AccountCredentials

    if args.network == "dummy":
        from purplegw.protocols.dummy import Adapter
    else:
        from purplegw.protocols.xmpp import Adapter
    protocol = "dummy" if args.network == "dummy" else "xmpp"
    domain = "dummy" if args.network == "dummy" else "localhost"

    n = args.accounts
    pings = args.pings
    if args.child == "thread_per_account":
        import resource

        # Measured: each private loop holds an epoll fd and a self-pipe on
        # top of the account's socket; past the fd limit logins fail (EMFILE).
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if n * 4 + 100 > limit:
            print(json.dumps({"error": f"needs ~{n * 4} fds (4 per account), limit {limit}"}))
            os._exit(1)
    xmpp = {
        "server": args.server,
        "ca_file": args.ca_file,
        "keepalive": 0,
        "connect_timeout": 300,
        "login_timeout": 300,
    }
    protocol_config = xmpp if protocol == "xmpp" else {}
    config = ActorsConfig.from_section(
        {
            "runtime": args.child if args.child != "gevent" else "shared_loop",
            "login_timeout": 600,
            "send_timeout": 120,
            "queue_limit": 1000,
            # A login refused under the storm is retried soon: the default
            # backoff_max (300 s) would measure the backoff, not the runtime.
            "backoff_initial": 1.0,
            "backoff_max": 5.0,
        }
    )
    rows = [
        AccountCredentials(
            i, f"b{i}", f"{args.prefix}{i}@{domain}", protocol, f"pw{i}-{args.prefix}", protocol
        )
        for i in range(n)
    ]
    lock = threading.Lock()
    connected: set[int] = set()
    handles: dict[str, object] = {}
    jid_of = {i: rows[i].ext_user for i in range(n)}
    index_of = {row.ext_user: i for i, row in enumerate(rows)}
    remaining = dict.fromkeys(range(0, n - 1, 2), pings)
    done = threading.Event()
    counts = {"pongs": 0, "errors": 0}
    all_online = threading.Event()

    class Sink(listener.EventSink):
        def on_event(self, event: str, **kwargs: object) -> None:
            account = kwargs["account"]
            if event == "on_connection_state":
                if kwargs["state"] is AccountState.CONNECTED:
                    with lock:
                        connected.add(account.account_id)
                        if len(connected) == n:
                            all_online.set()
            elif event == "on_message":
                me = account.account_id
                text = kwargs["text"]
                if text.startswith("ping"):
                    handles[me].send_message(kwargs["contact"], "pong" + text[4:], "p")
                elif text.startswith("pong"):
                    with lock:
                        counts["pongs"] += 1
                        remaining[me] -= 1
                        left = remaining[me]
                        if counts["pongs"] == len(remaining) * pings:
                            done.set()
                    if left > 0:
                        handles[me].send_message(jid_of[me + 1], f"ping {left}", f"m{left}")

    listener.add_sink(Sink())
    adapters = {protocol: Adapter()}

    class Registry:
        def get(self, protocol: str) -> Adapter:
            return adapters[protocol]

    if args.child == "gevent":
        import asyncio_gevent
        import gevent

        from purplegw.actors.account import AccountCore, OutcomeFuture, _Request

        asyncio.set_event_loop_policy(asyncio_gevent.EventLoopPolicy())
        loop = asyncio.new_event_loop()
        gevent.spawn(loop.run_forever)
        shared: dict = {}

        class GeventAccount(AccountCore):
            def __init__(self, row: AccountCredentials) -> None:
                self._loop = loop
                self._setup(
                    credentials=row,
                    adapter=adapters[protocol],
                    config=config,
                    protocol_config=protocol_config,
                    shared=shared,
                )

            def send_message(self, contact: str, text: str, message_id: str) -> OutcomeFuture:
                future = OutcomeFuture()
                loop.call_soon_threadsafe(
                    self._accept, _Request("send_message", (contact, text, message_id), future)
                )
                return future

        def sleep(seconds: float) -> None:
            gevent.sleep(seconds)

        gevent.sleep(0.1)
        base = rss_kib()
        started = time.perf_counter()
        for row in rows:
            account = GeventAccount(row)
            handles[row.account_id] = account
            loop.call_soon_threadsafe(account._begin)
    else:
        from purplegw.actors.loop import shared_loop
        from purplegw.actors.supervisor import LocalAccounts

        def sleep(seconds: float) -> None:
            time.sleep(seconds)

        shared_loop()
        accounts = LocalAccounts(config, Registry(), {protocol: protocol_config})
        base = rss_kib()
        started = time.perf_counter()
        accounts.apply(rows)
        for handle in accounts.directory.all():
            handles[handle.info.account_id] = handle

    deadline = time.monotonic() + args.timeout
    progress, last_change = -1, time.monotonic()
    while not all_online.is_set():
        if len(connected) != progress:
            progress, last_change = len(connected), time.monotonic()
        if time.monotonic() > deadline or time.monotonic() - last_change > 120:
            print(json.dumps({"error": f"only {len(connected)}/{n} online"}), flush=True)
            os._exit(1)
        sleep(0.05)
    login_time = time.perf_counter() - started
    sleep(1.0)  # let the initial presence storm settle before measuring
    rss = rss_kib() - base
    threads = os_threads()

    started = time.perf_counter()
    for i in remaining:
        handles[i].send_message(jid_of[i + 1], f"ping {pings}", f"m{pings}")
    while not done.is_set():
        if time.monotonic() > deadline + 600:
            print(json.dumps({"error": f"only {counts['pongs']} round trips"}), flush=True)
            os._exit(1)
        sleep(0.01)
    rt_time = time.perf_counter() - started
    del index_of
    print(
        json.dumps(
            {
                "runtime": args.child,
                "accounts": n,
                "logins_per_s": n / login_time,
                "kib_per_account": rss / n,
                "threads": threads,
                "round_trips_per_s": counts["pongs"] / rt_time,
            }
        ),
        flush=True,
    )
    os._exit(0)  # skip logging 5,000 accounts out: Prosody is restarted anyway


# --- the driver ---------------------------------------------------------------------


def measure(prosody: object, runtime: str, n: int, prefix: str, pings: int, timeout: float) -> dict:  # noqa: PLR0913, PLR0917 - the benchmark's knobs
    if prosody is None:
        server = ["--network", "dummy"]
    else:
        prosody.restart()
        server = ["--server", prosody.address, "--ca-file", prosody.ca_file]
    command = [
        sys.executable,
        __file__,
        "--child",
        runtime,
        "--accounts",
        str(n),
        *server,
        "--prefix",
        prefix,
        "--pings",
        str(pings),
        "--timeout",
        str(timeout),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout + 900, check=False
    )
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {
            "runtime": runtime,
            "accounts": n,
            "error": (result.stderr.strip().splitlines() or ["no output"])[-1],
        }
    result = json.loads(lines[-1])
    result.setdefault("runtime", runtime)
    result.setdefault("accounts", n)
    return result


def table(results: list[dict]) -> str:
    header = (
        f"{'accounts':>8}  {'runtime':<19} {'logins/s':>9} {'ratio':>6}  "
        f"{'KiB/acct':>8} {'ratio':>6}  {'rt/s':>8} {'ratio':>6}  {'threads':>7}"
    )
    lines = [header, "-" * len(header)]
    for n in sorted({r["accounts"] for r in results}):
        group = [r for r in results if r["accounts"] == n]
        ref = next((r for r in group if r["runtime"] == REFERENCE and "error" not in r), None)
        for r in group:
            if "error" in r:
                lines.append(f"{n:>8}  {r['runtime']:<19} failed: {r['error']}")
                continue

            def ratio(key: str, r: dict = r, ref: dict | None = ref) -> str:
                return f"{r[key] / ref[key]:.2f}" if ref else "-"

            lines.append(
                f"{n:>8}  {r['runtime']:<19} {r['logins_per_s']:>9.0f} {ratio('logins_per_s'):>6}  "
                f"{r['kib_per_account']:>8.1f} {ratio('kib_per_account'):>6}  "
                f"{r['round_trips_per_s']:>8.0f} {ratio('round_trips_per_s'):>6}  "
                f"{r['threads']:>7}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", default="1000,5000", help="comma-separated account counts")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--pings", type=int, default=5, help="round trips per pair of accounts")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for all logins")
    parser.add_argument(
        "--network",
        choices=("prosody", "dummy"),
        default="prosody",
        help="dummy: in-process fake network, measures the runtime alone",
    )
    parser.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.accounts = int(args.accounts)
        child(args)
        return

    sys.path.insert(0, str(ROOT))
    counts = [int(c) for c in args.accounts.split(",")]
    runtimes = [r for r in args.runtimes.split(",") if r]
    results = []

    def measure_all(prosody: object) -> None:
        for n in counts:
            for runtime in runtimes:
                result = measure(prosody, runtime, n, "bench", args.pings, args.timeout)
                print(json.dumps(result), file=sys.stderr, flush=True)
                results.append(result)

    if args.network == "dummy":
        measure_all(None)
        where = "the in-process dummy network (runtime cost alone)"
    else:
        from tests.kit.prosody import Prosody, prosody_binary

        if prosody_binary() is None:
            sys.exit("Prosody is not installed (Debian package: prosody)")
        with Prosody() as prosody:
            prosody.create_users(max(counts), prefix="bench")
            measure_all(prosody)
        where = "Prosody on loopback"
    print(
        f"Accounts online through {where}, {os.cpu_count()} CPUs; "
        f"ratios to {REFERENCE} (higher is better, except KiB/acct)"
    )
    print(table(results))


if __name__ == "__main__":
    main()
