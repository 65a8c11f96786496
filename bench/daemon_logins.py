"""The whole daemon logging in thousands of XMPP accounts: in-process vs worker processes.

    .venv/bin/python bench/daemon_logins.py [--accounts 2000,10000] [--workers 2] [--against main]

For each size, Prosody (restarted) gets N accounts, the account table gets N
rows (`purplegw accounts import`), and `purplegw run` is started with
`[actors] workers = 0` (the reference: one process, one shared loop) and with
`workers = W`, then restarted on the same data ("restart": the SCRAM keys
derived by the first start are stored, so none is derived again).
Reported: seconds until `purplegw status` shows every account
connected (exact: the time the last account's status changed to connected;
"first" is when the first one did, the daemon's start-up),
logins/s, the RSS of the daemon and its workers per account, CPU per login
for the daemon (with its workers) and for Prosody, and how busy Prosody's one
thread was (near 100 %: Prosody sets the pace, not the gateway).

Prosody keeps SCRAM keys, not passwords (``internal_hashed``, its default), so
it derives no key per login; ``--iterations`` is the accounts' SCRAM
iteration count (4096: ejabberd's default and RFC 5802's minimum; Prosody
0.12 gives new accounts 10,000), which sets the client's share of the work.  Prosody runs Lua's
generational GC (``--prosody-gc incremental`` for Prosody's default, which
more than doubles its CPU per login).  ``--against REV`` first measures the
same rows with the code of REV (a temporary git worktree) against the same
Prosody, so a loaded machine compares like with like.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kit.gateway import GatewayProcess  # noqa: E402
from tests.kit.prosody import Prosody  # noqa: E402

POLL = 3.0  # seconds between status polls (the time resolution of the table)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of processes so far (/proc/<pid>/stat utime, stime)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def process_tree(root_pid: int) -> list[int]:
    """A process and all its descendants (the daemon and its workers)."""
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True
    ).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        pid, ppid = (int(x) for x in line.split())
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def rss_kib(pids: list[int]) -> int:
    """Resident memory of processes (/proc/<pid>/status VmRSS), KiB."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += sum(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
    return total


def smaps_kib(pid: int) -> dict[str, int]:
    """RSS, PSS and USS of a process, KiB (/proc/<pid>/smaps_rollup, as smem counts them).

    USS is what the process alone holds (private pages): what ending it would
    free.  PSS shares each shared page among the processes that map it, so
    the PSS of a tree adds up to what the tree costs the machine.
    """
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {"rss": 0, "pss": 0, "uss": 0}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    return {
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def process_role(pid: int, root_pid: int) -> str:
    """What a process of the daemon's tree is: main, worker, resource tracker..."""
    if pid == root_pid:
        return "main"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "forkserver" in cmdline:
        return "forkserver"
    if "spawn_main" in cmdline or "purplegw.actors.worker" in cmdline:
        return "worker"
    return cmdline.split(" ", 1)[0].rsplit("/", 1)[-1] or "other"


def process_memory(root_pid: int) -> list[dict]:
    """Each process of the daemon's tree: its role, RSS, PSS and USS (KiB) and CPU seconds."""
    return [
        {
            "pid": pid,
            "role": process_role(pid, root_pid),
            **smaps_kib(pid),
            "cpu_s": cpu_seconds([pid]),
        }
        for pid in process_tree(root_pid)
    ]


def idle_baseline(gateway: GatewayProcess, timeout: float = 60.0) -> list[dict]:
    """The daemon's processes before any account: started on an empty table, then stopped."""
    gateway.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                gateway.cli("status", "--json")
                break
            except RuntimeError:  # control socket not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        time.sleep(2.0)  # let start-up garbage settle; memory, not time, is measured
        assert gateway.process is not None
        return process_memory(gateway.process.pid)
    finally:
        gateway.stop(timeout=60)


def prepare(prosody: Prosody, users: list, workers: int, base: Path) -> GatewayProcess:
    """A daemon's data directory with the N accounts imported (not started)."""
    gateway = GatewayProcess(
        base,
        extra_config=prosody.gateway_section(keepalive=0),
        actors={"workers": workers},
        log_level="WARNING",
    )
    gateway.cli("db", "init")
    table = base / "accounts.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sip_user", "ext_user", "ext_prot", "ext_pass"])
        for i, user in enumerate(users):
            writer.writerow([f"u{i}@sip.test", user.jid, "xmpp", user.password])
    gateway.cli("accounts", "import", str(table))
    return gateway


def measure(  # noqa: PLR0913, PLR0917 - the benchmark's knobs
    prosody: Prosody,
    gateway: GatewayProcess,
    workers: int,
    start: str,
    accounts: int,
    timeout: float,
    settle: float = 0.0,
) -> dict:
    """Start the daemon, wait until every account is connected, stop it."""
    assert prosody.proc is not None
    prosody_cpu = cpu_seconds([prosody.proc.pid])
    started = time.monotonic()
    started_wall = time.time()
    gateway.start()
    connected = 0
    try:
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                status = json.loads(gateway.cli("status", "--json").stdout)
            except RuntimeError:  # control socket not up yet
                time.sleep(0.5)
                continue
            connected = sum(1 for a in status if a.get("state") == "connected")
            if connected == accounts:
                # Each account's status says when it connected: the time is
                # exact, not rounded up to the next poll.
                last_login = max(a["since"] for a in status)
                first_login = min(a["since"] for a in status)
                break
            # `purplegw status` asks every account actor: polling it often
            # would compete with the logins being measured.
            time.sleep(POLL)
        elapsed = time.monotonic() - started
        first = float("nan")
        idle_cpu = float("nan")
        assert gateway.process is not None
        if connected == accounts:
            elapsed = last_login - started_wall
            first = first_login - started_wall
            # Memory of idle accounts (parked XML parsers); the CPU they cost
            # (no keepalive configured: timers, status pushes, the loop).
            if settle > 0:
                time.sleep(1.0)  # the last logins' stragglers (acks, statuses)
                tree = process_tree(gateway.process.pid)
                before_idle = cpu_seconds(tree)
                time.sleep(settle)
                idle_cpu = (cpu_seconds(tree) - before_idle) / settle
        tree = process_tree(gateway.process.pid)
        rss = rss_kib(tree)
        rss_main = rss_kib([gateway.process.pid])
        per_process = process_memory(gateway.process.pid)
        gateway_cpu = cpu_seconds(tree)
        prosody_cpu = cpu_seconds([prosody.proc.pid]) - prosody_cpu
    finally:
        gateway.stop(timeout=120)
    return {
        "workers": workers,
        "start": start,
        "accounts": accounts,
        "connected": connected,
        "seconds": elapsed,
        "first_login_s": first,
        "logins_per_s": connected / elapsed,
        "kib_per_account": rss / max(1, connected),
        "rss_mib": rss / 1024,
        "rss_main_mib": rss_main / 1024,
        "processes": len(tree),
        "per_process": per_process,
        "gateway_cpu_ms": 1000 * gateway_cpu / max(1, connected),
        # Where the gateway's CPU went: the main process (start-up, account
        # table, events, status polls) and the workers (the sessions).
        "main_cpu_ms": 1000
        * sum(p["cpu_s"] for p in per_process if p["role"] == "main")
        / max(1, connected),
        "prosody_cpu_ms": 1000 * prosody_cpu / max(1, connected),
        # Prosody is one thread: near 100 % of a core, it is the limit.
        "prosody_busy": prosody_cpu / elapsed,
        # The daemon's tree with every account online and nothing to do,
        # share of one core (--settle seconds; NaN without).
        "idle_cpu": idle_cpu,
    }


def print_memory(memory: list[dict]) -> None:
    """Per process of the daemon: RSS, PSS, USS in MiB, idle (0 accounts) and after the logins."""
    print()
    header = (
        f"{'tree':>10} {'workers':>7} {'accounts':>8} {'process':>16} | "
        f"{'RSS MiB':>8} {'PSS MiB':>8} {'USS MiB':>8} | {'USS ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    reference: dict[tuple, float] = {}
    for entry in memory:
        key = (entry["workers"], entry["accounts"], entry["role"])
        ref = reference.setdefault(key, entry["uss"] or 1)
        print(
            f"{entry['tree'][:10]:>10} {entry['workers']:>7} {entry['accounts']:>8} "
            f"{entry['role'][:16]:>16} | {entry['rss'] / 1024:>8.1f} {entry['pss'] / 1024:>8.1f} "
            f"{entry['uss'] / 1024:>8.1f} | {entry['uss'] / ref:>9.2f}"
        )
    for tree in dict.fromkeys(e["tree"] for e in memory):
        for workers in sorted({e["workers"] for e in memory if e["tree"] == tree}):
            for accounts in sorted(
                {e["accounts"] for e in memory if e["tree"] == tree and e["workers"] == workers}
            ):
                group = [
                    e
                    for e in memory
                    if (e["tree"], e["workers"], e["accounts"]) == (tree, workers, accounts)
                ]
                rss = sum(e["rss"] for e in group) / 1024
                pss = sum(e["pss"] for e in group) / 1024
                print(
                    f"{tree[:10]:>10} {workers:>7} {accounts:>8} {f'all ({len(group)})':>16} | "
                    f"{rss:>8.1f} {pss:>8.1f} {'':>8} |"
                )
    print(
        "USS: pages the process alone holds; PSS: shared pages split among the processes "
        "that map them (the tree's PSS is its cost); accounts 0: started on an empty table; "
        "USS ratio against the first row of the same process, workers and accounts"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--accounts", default="2000,10000", help="sizes; 0 measures only the idle baselines"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--iterations", type=int, default=4096)
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="seconds all accounts sit online before the memory is read "
        "(an idle stream drops its XML parser after 5 s: PARSER_IDLE)",
    )
    parser.add_argument(
        "--against",
        default="",
        help="git revision also measured (first, as the reference) from a "
        "temporary worktree, e.g. main",
    )
    parser.add_argument(
        "--prosody-gc",
        choices=("generational", "incremental"),
        default="generational",
        help="Prosody's Lua GC mode (incremental: Prosody 0.12's default)",
    )
    args = parser.parse_args()
    rows = []
    memory: list[dict] = []  # one entry per process of the daemon's tree
    prosody = Prosody(hashed=True, scram_iterations=args.iterations, lua_gc=args.prosody_gc).start()
    trees = {"": str(ROOT)}
    home = Path.cwd()
    tmp_trees = tempfile.TemporaryDirectory(prefix="purplegw-bench-against-")
    if args.against:
        other = Path(tmp_trees.name) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), args.against],
            check=True,
            capture_output=True,
        )
        trees = {args.against: str(other), "this tree": str(ROOT)}
    try:
        # Each tree's processes on an empty account table: the baselines.
        for tree, root in trees.items():
            os.chdir(root)
            for workers in (0, args.workers):
                with tempfile.TemporaryDirectory(prefix="purplegw-bench-idle-") as tmp:
                    idle = prepare(prosody, [], workers, Path(tmp))
                    memory.extend(
                        {"tree": tree, "workers": workers, "accounts": 0, **proc}
                        for proc in idle_baseline(idle)
                    )
        for n in (int(x) for x in args.accounts.split(",") if int(x) > 0):
            users = prosody.create_users(n, prefix=f"d{n}x")
            for tree, root in trees.items():
                # `python -m purplegw` imports from its working directory first.
                os.chdir(root)
                for workers in (0, args.workers):
                    with tempfile.TemporaryDirectory(prefix="purplegw-bench-daemon-") as tmp:
                        gateway = prepare(prosody, users, workers, Path(tmp))
                        # A first start derives every SCRAM key; a restart (same
                        # data directory) finds them stored and derives none.
                        for start in ("first", "restart") if workers else ("first",):
                            prosody.restart()
                            row = measure(
                                prosody, gateway, workers, start, n, args.timeout, args.settle
                            )
                            rows.append({"tree": tree, **row})
                            memory.extend(
                                {"tree": tree, "workers": workers, "accounts": n, **proc}
                                for proc in row["per_process"]
                                if start == "first"
                            )
                            print(json.dumps(rows[-1]), flush=True)
    finally:
        os.chdir(home)
        prosody.cleanup()
        if args.against:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(ROOT),
                    "worktree",
                    "remove",
                    "--force",
                    str(Path(tmp_trees.name) / "tree"),
                ],
                check=False,
            )
        tmp_trees.cleanup()
    print()
    header = (
        f"{'tree':>10} {'accounts':>8} {'workers':>7} {'start':>7} | "
        f"{'online':>6} {'seconds':>8} {'logins/s':>9} "
        f"{'ratio':>5} {'first':>5} | {'RSS MiB':>8} {'KiB/acct':>8} {'ratio':>5} | "
        f"{'CPU ms/login: ours':>18} {'main':>5} {'Prosody':>7} {'ours/P':>6} | "
        f"{'Prosody busy':>12} | {'idle CPU':>8}"
    )
    print(header)
    print("-" * len(header))
    reference: dict[int, dict] = {}
    for row in rows:
        ref = reference.setdefault(row["accounts"], row)
        print(
            f"{row['tree'][:10]:>10} {row['accounts']:>8} {row['workers']:>7} "
            f"{row['start']:>7} | {row['connected']:>6} "
            f"{row['seconds']:>8.1f} {row['logins_per_s']:>9.1f} "
            f"{row['logins_per_s'] / ref['logins_per_s']:>5.2f} {row['first_login_s']:>5.1f} | "
            f"{row['rss_mib']:>8.0f} "
            f"{row['kib_per_account']:>8.1f} "
            f"{row['kib_per_account'] / ref['kib_per_account']:>5.2f} | "
            f"{row['gateway_cpu_ms']:>18.1f} {row['main_cpu_ms']:>5.1f} "
            f"{row['prosody_cpu_ms']:>7.1f} "
            f"{row['gateway_cpu_ms'] / max(row['prosody_cpu_ms'], 1e-9):>6.2f} | "
            f"{100 * row['prosody_busy']:>11.0f}% | {100 * row['idle_cpu']:>7.2f}%"
        )
    print_memory(memory)
    print(
        "reference: the first row of each size (workers = 0, one process, of --against "
        "if given); ratios > 1 for logins/s are better; CPU 'main': the main process's "
        "share of ours (all of it with workers = 0); idle CPU: the daemon's share of a core "
        "over --settle seconds with every account online; "
        f"SCRAM iterations {args.iterations}; Prosody Lua GC {args.prosody_gc}"
    )


if __name__ == "__main__":
    main()
