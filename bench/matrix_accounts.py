"""Memory and CPU per logged-in account: the Matrix adapter against the XMPP adapter.

    .venv/bin/python bench/matrix_accounts.py [--accounts 100] [--idle 10]

Starts a throw-away Synapse (tests/kit/synapse.py, .venv-synapse) and a
throw-away Prosody on loopback, registers ``--accounts`` users on each, and
for each protocol in a fresh child process logs every account in through
its purplegw session on one asyncio loop (at most 20 logins at a time, as
the account actors' login gate would), then stays logged in for ``--idle``
seconds (the Matrix sessions long-poll /sync meanwhile; the XMPP sessions
hold their stream).  Reported per account: RSS growth once logged in, CPU
of this process for the login, CPU per minute while idle; and the
Matrix/XMPP ratio.  Only the gateway process is measured, not the servers.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from purplegw.protocols.base import AccountCredentials, SessionContext  # noqa: E402

CONCURRENT_LOGINS = 20


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class NoEvents:
    def on_connection_state(self, *a: object) -> None: ...
    def on_message(self, *a: object) -> None: ...
    def on_contact_presence(self, *a: object) -> None: ...
    def on_authorization_request(self, *a: object) -> None: ...
    def on_authorization_answer(self, *a: object) -> None: ...
    def on_typing(self, *a: object) -> None: ...
    def on_receipt(self, *a: object) -> None: ...
    def on_message_acked(self, *a: object) -> None: ...
    def on_key_derived(self, *a: object) -> None: ...


async def measure(
    protocol: str, accounts: list[tuple[str, str]], config: dict[str, Any], idle: float
) -> dict[str, float]:
    if protocol == "matrix":
        from purplegw.protocols.matrix import Adapter
    else:
        from purplegw.protocols.xmpp import Adapter
    loop = asyncio.get_running_loop()
    adapter, shared = Adapter(), {}

    def session(i: int, user: str, secret: str) -> Any:
        return adapter.create_session(
            AccountCredentials(i, f"sip:u{i}@127.0.0.1", user, protocol, secret),
            SessionContext(loop=loop, events=NoEvents(), config=config, shared=shared),
        )

    # Import and first-client costs are per process: one warm-up login first.
    warm = session(-1, *accounts[0])
    await warm.login()
    await warm.logout()
    gc.collect()
    rss0, cpu0, wall0 = rss_kib(), time.process_time(), time.perf_counter()
    gate = asyncio.Semaphore(CONCURRENT_LOGINS)
    sessions = [session(i, user, secret) for i, (user, secret) in enumerate(accounts[1:])]

    async def login(s: Any) -> None:
        async with gate:
            await s.login()

    await asyncio.gather(*(login(s) for s in sessions))
    cpu1, wall1 = time.process_time(), time.perf_counter()
    gc.collect()
    rss1 = rss_kib()
    await asyncio.sleep(idle)
    cpu2 = time.process_time()
    await asyncio.gather(*(s.logout() for s in sessions))
    n = len(sessions)
    return {
        "rss_kib": (rss1 - rss0) / n,
        "login_cpu_ms": (cpu1 - cpu0) * 1000 / n,
        "logins_per_s": n / (wall1 - wall0),
        "idle_cpu_ms_per_min": (cpu2 - cpu1) * 1000 / n * 60 / idle,
    }


def child(args: argparse.Namespace) -> None:
    spec = json.loads(args.one)
    result = asyncio.run(measure(spec["protocol"], spec["accounts"], spec["config"], args.idle))
    print(json.dumps(result))


def run_child(spec: dict[str, Any], idle: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", json.dumps(spec), "--idle", str(idle)],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        child(args)
        return
    from tests.kit.prosody import Prosody
    from tests.kit.synapse import Synapse

    n = args.accounts + 1  # one more for the warm-up login
    results = {}
    with Synapse() as synapse:
        users = [synapse.create_user(f"bench{i}", f"pw{i}-bench") for i in range(n)]
        results["matrix"] = run_child(
            {
                "protocol": "matrix",
                "accounts": [(u.user_id, u.password) for u in users],
                "config": {"homeserver": synapse.base_url, "sync_timeout": 30},
            },
            args.idle,
        )
    with Prosody(log_level="warn") as prosody:
        prosody.create_users(n, prefix="bench")
        results["xmpp"] = run_child(
            {
                "protocol": "xmpp",
                "accounts": [(f"bench{i}@localhost", f"pw{i}-bench") for i in range(n)],
                "config": {"server": prosody.address, "ca_file": prosody.ca_file, "keepalive": 60},
            },
            args.idle,
        )
    rows = [
        ("RSS per logged-in account (KiB)", "rss_kib"),
        ("CPU per login (ms)", "login_cpu_ms"),
        ("logins per second (20 at a time)", "logins_per_s"),
        ("CPU while idle (ms/min/account)", "idle_cpu_ms_per_min"),
    ]
    print(f"{args.accounts} accounts per protocol, {args.idle:g} s idle")
    print(f"{'':36} {'matrix':>10} {'xmpp':>10} {'matrix/xmpp':>12}")
    for label, key in rows:
        m, x = results["matrix"][key], results["xmpp"][key]
        ratio = m / x if x else float("inf")
        print(f"{label:36} {m:10.1f} {x:10.1f} {ratio:12.2f}")


if __name__ == "__main__":
    main()
