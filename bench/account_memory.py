"""Where an online XMPP account's memory goes: tracemalloc by allocation site and by group.

    .venv/bin/python bench/account_memory.py [--accounts 500] [--against main] [--repeat 3]
        [--no-trace] [--restart]

Logs ``--accounts`` accounts into a throw-away Prosody (restarted first;
``internal_hashed`` as in production, STARTTLS, certificate verified,
roster fetched, initial presence sent) through the production
``XmppSession`` on one loop in one fresh process, and reports per online
account:

* RSS growth (KiB) and what tracemalloc saw of it; the rest is memory
  Python does not trace (OpenSSL's per-connection state, allocator slack);
* gateway CPU per login against Prosody's in the same run (a second, untraced
  process: tracemalloc slows Python code down several times);
* the traced growth by group (the slixmpp plugin, module or buffer that made
  the allocation: the innermost frame of the traceback that names one) and by
  allocation site (file:line).

``--restart`` measures a restart instead of a first start: every account
logs in and out once first (the gateway derives its SCRAM key and, as the
daemon does, stores it), then logs in again on the stored key, and only
that second login is measured (no PBKDF2 on our side, as on Prosody's,
which stores its keys at account creation).  The RSS column is then blank:
the first pass's freed memory is reused.

``--against REV`` measures the same in a temporary git worktree of REV (the
reference, e.g. ``main``) right before, against the same restarted Prosody:
compare the ratio column, not the absolute numbers, on a loaded machine.
``--repeat N`` makes N untraced runs per tree, alternating the trees, and
reports the medians; ``--no-trace`` skips the (slow) tracemalloc run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WARM_ACCOUNTS = 20  # logged in before the first snapshot: imports, caches, pools
TRACE_FRAMES = 15
GC_THRESHOLD = 50_000  # as [actors] gc_threshold in every gateway process
CONCURRENT_LOGINS = 100  # as [actors] max_concurrent_logins: the daemon's login gate


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class NoEvents:
    """SessionEvents that drop everything (only logins are measured)."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_k: None


class KeyEvents(NoEvents):
    """Keeps the SCRAM key a login derived, as the daemon stores it on the account row."""

    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys

    def on_key_derived(self, kind: str, value: str) -> None:
        self.keys[kind] = value


_PLUGIN = re.compile(r"slixmpp/(plugins|features)/(\w+)")


def group_of(traceback: tracemalloc.Traceback) -> str:
    """The most telling name for one allocation: plugin, parser, buffer or module.

    Walks from the innermost frame outwards: a slixmpp plugin or stream
    feature on the way wins (its share of the client); otherwise the
    innermost frame in slixmpp, asyncio, ssl, ElementTree (the XML parser)
    or purplegw names it.
    """
    for frame in reversed(traceback):  # innermost first
        name = frame.filename
        if match := _PLUGIN.search(name):
            return f"slixmpp {match.group(1)}/{match.group(2)}"
        if "/purplegw/" in name:
            break
    for frame in reversed(traceback):
        name = frame.filename
        if "xml/etree/ElementTree.py" in name:
            return "expat + ElementTree (XML parser)"
        for key in ("slixmpp/", "asyncio/", "purplegw/", "ssl.py", "copy.py"):
            if key in name:
                return name[name.rfind(key) :]
    return traceback[-1].filename.rsplit("/", 1)[-1]


def site_of(traceback: tracemalloc.Traceback) -> str:
    frame = traceback[-1]  # innermost
    name = frame.filename
    for key in ("/slixmpp/", "/purplegw/", "/asyncio/", "/xml/", "/lib/python3"):
        if key in name:
            name = name[name.rfind(key) + 1 :]
            break
    return f"{name}:{frame.lineno}"


async def first_start(sessions: list[Any], login: Any) -> None:
    """Log ``sessions`` in and out: their keys are derived and stored (``--restart``)."""
    await asyncio.gather(*(login(s) for s in sessions))
    await asyncio.gather(*(s.logout() for s in sessions))
    # The restarted daemon's process has no cached derivations either: only
    # the stored keys spare the PBKDF2.
    from purplegw.protocols.xmpp import session as xmpp_session

    cached = getattr(xmpp_session, "salted_password", None)
    if cached is not None:
        cached.cache_clear()


async def login_all(  # noqa: PLR0913 - the bench's knobs
    address: str,
    ca_file: str,
    users: list[tuple[str, str]],
    *,
    trace: bool,
    restart: bool = False,
    settle: float = 1.0,
) -> dict[str, Any]:
    from purplegw.actors.gc_tuning import apply_gc_threshold
    from purplegw.protocols.base import AccountCredentials, SessionContext
    from purplegw.protocols.xmpp import Adapter

    apply_gc_threshold(GC_THRESHOLD)
    loop = asyncio.get_running_loop()
    shared: dict[str, Any] = {}
    # tracemalloc slows the loop down several times: no login may time out.
    cfg = {"server": address, "ca_file": ca_file, "keepalive": 0, "login_timeout": 900}
    adapter = Adapter()

    stored: dict[int, dict[str, str]] = {}  # account -> derived keys (--restart)

    def session(i: int, jid: str, password: str) -> Any:
        keys = stored.setdefault(i, {})
        return adapter.create_session(
            AccountCredentials(
                i, f"sip:u{i}@127.0.0.1", jid, "xmpp", password, derived_keys=dict(keys)
            ),
            SessionContext(loop=loop, events=KeyEvents(keys), config=cfg, shared=shared),
        )

    gate = asyncio.Semaphore(CONCURRENT_LOGINS)

    async def login(s: Any) -> None:
        async with gate:
            await s.login()

    warm = [session(-1 - i, jid, pw) for i, (jid, pw) in enumerate(users[:WARM_ACCOUNTS])]
    await asyncio.gather(*(login(s) for s in warm))
    measured = users[WARM_ACCOUNTS:]
    if restart:
        await first_start([session(i, jid, pw) for i, (jid, pw) in enumerate(measured)], login)
    gc.collect()
    if trace:
        tracemalloc.start(TRACE_FRAMES)
    before_snapshot = tracemalloc.take_snapshot() if trace else None
    before_rss = rss_kib()
    before_cpu = time.process_time()
    started = time.perf_counter()
    sessions = [session(i, jid, pw) for i, (jid, pw) in enumerate(measured)]
    await asyncio.gather(*(login(s) for s in sessions))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - before_cpu
    await asyncio.sleep(settle)  # late stanzas (acks, presence); idle streams park their parsers
    gc.collect()
    grown_rss = rss_kib() - before_rss
    n = len(sessions)
    result: dict[str, Any] = {
        "accounts": n,
        "seconds": elapsed,
        "cpu_ms": 1000 * cpu / n,
        "rss_kib": float("nan") if restart else grown_rss / n,
        "logins": len(users) + (n if restart else 0),
    }
    if trace:
        after = tracemalloc.take_snapshot()
        stats = after.compare_to(before_snapshot, "traceback")
        groups: dict[str, int] = {}
        sites: dict[str, int] = {}
        for stat in stats:
            group, site = group_of(stat.traceback), site_of(stat.traceback)
            groups[group] = groups.get(group, 0) + stat.size_diff
            sites[site] = sites.get(site, 0) + stat.size_diff
        tracemalloc.stop()
        result["traced_kib"] = sum(groups.values()) / 1024 / n
        result["groups"] = {k: v / 1024 / n for k, v in groups.items()}
        result["sites"] = {k: v / 1024 / n for k, v in sites.items()}
    await asyncio.gather(*(s.logout() for s in sessions + warm))
    return result


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.root)
    users = [(f"mem{i}@localhost", f"pw{i}-mem") for i in range(args.accounts + WARM_ACCOUNTS)]
    result = asyncio.run(
        login_all(
            args.server,
            args.ca_file,
            users,
            trace=args.trace,
            restart=args.restart,
            settle=args.settle,
        )
    )
    print(json.dumps(result))


def run_child(  # noqa: PLR0913 - the bench's knobs
    root: str,
    prosody: Any,
    accounts: int,
    *,
    trace: bool,
    restart: bool = False,
    settle: float = 1.0,
) -> dict[str, Any]:
    prosody.restart()
    assert prosody.proc is not None
    prosody_cpu = cpu_seconds(prosody.proc.pid)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--root",
        root,
        "--accounts",
        str(accounts),
        "--server",
        prosody.address,
        "--ca-file",
        prosody.ca_file,
        "--settle",
        str(settle),
    ]
    if trace:
        cmd.append("--trace")
    if restart:
        cmd.append("--restart")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    # Prosody's CPU over the whole child (warm-up, logouts and a --restart's
    # first pass included) per login: an upper bound of its share, the
    # gateway's own figure is the measured logins only.
    logins = result.get("logins", accounts + WARM_ACCOUNTS)
    result["prosody_cpu_ms"] = 1000 * (cpu_seconds(prosody.proc.pid) - prosody_cpu) / logins
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--against", default="", help="git revision measured as the reference")
    parser.add_argument("--top", type=int, default=25, help="rows of the allocation site table")
    parser.add_argument("--iterations", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=1, help="untraced runs per tree (median)")
    parser.add_argument(
        "--no-trace",
        dest="trace_groups",
        action="store_false",
        help="skip the tracemalloc run (RSS and CPU only: much faster)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="measure second logins on stored SCRAM keys (a daemon restart), CPU only",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds the logged-in accounts sit idle before the memory is read "
        "(an idle stream drops its XML parser after 5 s: PARSER_IDLE)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT))
    from tests.kit.prosody import Prosody
    from tests.kit.worktree import compared_trees

    with compared_trees(args.against, "purplegw-bench-mem-") as roots:
        results = {}
        with Prosody(log_level="warn", hashed=True, scram_iterations=args.iterations) as prosody:
            prosody.create_users(args.accounts + WARM_ACCOUNTS, prefix="mem")
            runs: dict[str, list[dict]] = {label: [] for label in roots}
            # Rounds alternate the trees, so a change in the machine's
            # load hits both; each figure is the median of the rounds.
            for _ in range(args.repeat):
                for label, root in roots.items():
                    plain = run_child(
                        root,
                        prosody,
                        args.accounts,
                        trace=False,
                        restart=args.restart,
                        settle=args.settle,
                    )
                    runs[label].append(plain)
                    print(label, json.dumps(plain), file=sys.stderr, flush=True)
            for label, root in roots.items():
                traced = (
                    run_child(root, prosody, args.accounts, trace=True, settle=args.settle)
                    if args.trace_groups
                    else {"traced_kib": float("nan"), "groups": {}, "sites": {}}
                )
                results[label] = (median_run(runs[label]), traced)
    report(results, args.accounts, args.top, restart=args.restart)


def median_run(runs: list[dict]) -> dict:
    """Per-field median of several untraced runs (RSS, CPU, Prosody's CPU, seconds)."""
    out = dict(runs[0])
    for key in ("seconds", "cpu_ms", "rss_kib", "prosody_cpu_ms"):
        out[key] = statistics.median(run[key] for run in runs)
    out["runs"] = len(runs)
    return out


def report(
    results: dict[str, tuple[dict, dict]], accounts: int, top: int, *, restart: bool = False
) -> None:
    labels = list(results)
    ref_plain, _ = results[labels[0]]
    print(
        f"{accounts} XMPP accounts logged in on one loop (after {WARM_ACCOUNTS} warm-up"
        f"{'; restart: second logins, on stored SCRAM keys' if restart else ''}), "
        f"per account, median of {ref_plain.get('runs', 1)} runs; ratio against the first row"
    )
    print(
        f"{'tree':<12} {'RSS KiB':>8} {'ratio':>6} {'traced':>7} {'untraced':>8} | "
        f"{'CPU ms/login':>12} {'Prosody':>8} {'ours/Prosody':>12} | {'logins/s':>8}"
    )
    for label in labels:
        plain, traced = results[label]
        ratio = plain["rss_kib"] / ref_plain["rss_kib"]
        print(
            f"{label:<12} {plain['rss_kib']:>8.1f} {ratio:>6.2f} "
            f"{traced['traced_kib']:>7.1f} {plain['rss_kib'] - traced['traced_kib']:>8.1f} | "
            f"{plain['cpu_ms']:>12.2f} {plain['prosody_cpu_ms']:>8.2f} "
            f"{plain['cpu_ms'] / plain['prosody_cpu_ms']:>12.2f} | "
            f"{plain['accounts'] / plain['seconds']:>8.0f}"
        )
    for key, title in (("groups", "group"), ("sites", "allocation site")):
        names = sorted(
            set().union(*(results[lb][1][key] for lb in labels)),
            key=lambda k: -max(abs(results[lb][1][key].get(k, 0.0)) for lb in labels),
        )
        print(f"\ntraced KiB per account by {title}")
        print(f"{title:<58}" + "".join(f"{lb[:10]:>11}" for lb in labels))
        for name in names[:top]:
            print(
                f"{name[-58:]:<58}"
                + "".join(f"{results[lb][1][key].get(name, 0.0):>11.2f}" for lb in labels)
            )


if __name__ == "__main__":
    main()
