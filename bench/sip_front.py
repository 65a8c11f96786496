"""SIP front throughput: purplegw vs a stock Kamailio, MESSAGE -> 2xx over UDP.

    .venv/bin/python bench/sip_front.py [--duration 3] [--rates 2000,4000,...]
    .venv/bin/python bench/sip_front.py --against [REV] --repeat 3

sipp (pinned to the second core) sends MESSAGE at rising rates to (a) the
purplegw SIP front with a StaticRouter answering 200 and (b) Kamailio
answering with sl_send_reply (bench/kamailio/sl_reply.cfg, one UDP child).
Both servers are pinned to the same single core (taskset -c 0, SCHED_FIFO
priority unless --no-realtime, so background load on a shared machine does
not decide the result) and run in the
same invocation, in lock-step (each rate step runs against both before the
next step), so both meet the same load on a shared machine. For each server the table shows the
highest rate that finished with zero failed calls and zero retransmissions,
the p50/p99 response times at that rate (sipp's -trace_rtt, 1 ms
resolution), and the ratio purplegw / Kamailio (bar 0.5, target 0.8).

``--against REV`` checks REV (default: ``main`` where this branch left it) out
into a temporary git worktree (never compiled: ``--against HEAD`` in a tree
built with mypyc compares the compiled SIP core with the same source
interpreted) and runs its front as a third server in the same
lock-step ramp, so a change is judged against its own baseline on the same
machine at the same time; ``--repeat N`` runs the ramp N times and reports the
median of each column.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kit.compiled import core_kind  # noqa: E402
from tests.kit.kamailio import Kamailio, kamailio_binary  # noqa: E402
from tests.kit.ports import free_port  # noqa: E402
from tests.kit.sipp import run_sipp, sipp_binary  # noqa: E402

SCENARIO = ROOT / "tests" / "e2e" / "scenarios" / "message.xml"
DEFAULT_RATES = (
    2000,
    4000,
    6000,
    8000,
    10000,
    12000,
    14000,
    16000,
    18000,
    20000,
    22000,
    25000,
    28000,
    32000,
)


def serve(port: int) -> None:
    """Child process: a purplegw front on udp:127.0.0.1:port until SIGTERM."""
    import logging

    from purplegw.actors.front.front import SipFront, StaticRouter

    logging.basicConfig(level=logging.WARNING)
    front = SipFront(
        {"listen": [f"udp:127.0.0.1:{port}"]}, StaticRouter(message_status=200, keep=False)
    ).start()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    print("ready", flush=True)
    while not stopping:
        time.sleep(0.2)
    front.stop()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def cpu_seconds(pgid: int) -> float:
    """User+system CPU time of every process in group ``pgid`` (Kamailio forks children)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: process group
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def step(name: str, server: tuple[int, int], rate: int, duration: float, sipp_cpu: int) -> dict:
    port, pgid = server
    calls = int(rate * duration)
    cpu_before = cpu_seconds(pgid)
    result = run_sipp(
        SCENARIO,
        "127.0.0.1",
        port,
        service="bench",
        calls=calls,
        rate=rate,
        rate_period_ms=1000,
        timeout=duration * 4 + 20,
        cpu=sipp_cpu,
        trace_rtt=True,
        # sipp's default 64 KiB socket buffers drop response bursts on a busy
        # machine, which then count as retransmissions of the server under test
        extra_args=("-max_recv_loops", "10000", "-buff_size", "4194304"),
    )
    cpu_us = (cpu_seconds(pgid) - cpu_before) / max(result.successful, 1) * 1e6
    achieved = float(result.stats.get("CallRate(C)", "0") or 0)
    ok = (
        result.returncode == 0
        and result.failed == 0
        and result.retransmissions == 0
        and result.successful == calls
    )
    row = {
        "name": name,
        "rate": rate,
        "achieved": achieved,
        "ok": ok,
        "cpu_us": cpu_us,
        "p50": percentile(result.response_times_ms, 50),
        "p99": percentile(result.response_times_ms, 99),
    }
    print(
        f"  {name:16} rate {rate:6}/s: ok={result.successful:7} failed={result.failed:6} "
        f"retrans={result.retransmissions:6} achieved={achieved:8.0f}/s p50={row['p50']:.0f}ms "
        f"p99={row['p99']:.0f}ms cpu={cpu_us:.0f}us/req {'PASS' if ok else 'FAIL'}",
        flush=True,
    )
    return row


def ramp(
    servers: dict[str, tuple[int, int]],
    rates: list[int],
    duration: float,
    sipp_cpu: int,
    attempts: int,
) -> dict:
    """Raise the rate for all servers in lock-step, so both meet the same machine load.

    A step counts as passed when one of ``attempts`` runs is clean (a loaded
    shared machine produces the odd stray retransmission); a server stops at its
    first failed step.
    """
    best = {
        name: {
            "name": name,
            "rate": 0,
            "achieved": 0.0,
            "p50": float("nan"),
            "p99": float("nan"),
            "cpu_us": float("nan"),
        }
        for name in servers
    }
    running = dict(servers)
    for rate in rates:
        for name, port in list(running.items()):
            for _ in range(attempts):
                row = step(name, port, rate, duration, sipp_cpu)
                time.sleep(1)  # let the server drain its transaction state
                if row["ok"]:
                    best[name] = row
                    break
            else:
                del running[name]
        if not running:
            break
    return best


def start_front(script: Path, port: int, prefix: tuple[str, ...], cpu: int) -> subprocess.Popen:
    """A front of the tree holding ``script`` (its bench/sip_front.py --serve), on ``cpu``."""
    proc = subprocess.Popen(
        [*prefix, "taskset", "-c", str(cpu), sys.executable, str(script), "--serve", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # the tree's own package first, whatever is installed in the environment
        env={**os.environ, "PYTHONPATH": str(script.parents[1])},
    )
    if proc.stdout is None or proc.stdout.readline().strip() != "ready":
        stop_front(proc)
        raise RuntimeError(f"the front of {script.parents[1]} did not start")
    return proc


def stop_front(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def branch_point() -> str:
    """``main`` where the current branch left it (the commit before the branch's first)."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def checkout(rev: str, into: Path) -> str:
    """``rev`` into a detached worktree at ``into``; returns its short hash."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(into), rev],
        check=True,
    )
    return subprocess.run(
        ["git", "-C", str(into), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def median(values: list[float]) -> float:
    values = sorted(v for v in values if v == v)  # noqa: PLR0124 - drop NaN
    if not values:
        return float("nan")
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")  # noqa: PLR0124 - NaN checks


def print_table(rows: list[dict], title: str) -> None:
    print()
    print(title)
    print(
        f"{'server':28} {'rate/s':>8} {'achieved/s':>11} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'cpu us/req':>11} {'vs kamailio':>12} {'cpu vs kam':>11}"
    )
    ref = rows[-1]
    for row in rows:
        # achieved, not target: on a loaded machine sipp may not reach the rate it was asked for
        by_rate = ratio(row["achieved"], ref["achieved"])
        # the clean-rate ratio means something only while Kamailio, not sipp, is the limit;
        # the CPU cost per request says how far each server could go alone
        by_cpu = ratio(ref["cpu_us"], row["cpu_us"])
        print(
            f"{row['name']:28} {row['rate']:8.0f} {row['achieved']:11.0f} {row['p50']:7.0f}"
            f" {row['p99']:7.0f} {row['cpu_us']:11.1f} {by_rate:12.2f} {by_cpu:11.2f}"
        )


def main() -> int:  # noqa: PLR0915, C901 - a linear script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per rate step")
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    parser.add_argument(
        "--no-realtime",
        dest="realtime",
        action="store_false",
        help="run the servers without SCHED_FIFO priority",
    )
    parser.add_argument(
        "--attempts", type=int, default=2, help="runs per step before it counts as failed"
    )
    parser.add_argument(
        "--against",
        nargs="?",
        const="",
        metavar="REV",
        help="also measure the front of REV (default: main at this branch's start), side by side",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="ramps to run; the table shows each server's median"
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--sipp-cpu", type=int, default=1)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if sipp_binary() is None or kamailio_binary() is None:
        print("needs sipp (sip-tester) and kamailio installed", file=sys.stderr)
        return 2
    rates = [int(r) for r in args.rates.split(",")]
    signal.signal(
        signal.SIGTERM, lambda *_: sys.exit(143)
    )  # run the finally blocks: stop the servers

    print(
        f"servers pinned to cpu {args.server_cpu}{' (SCHED_FIFO)' if args.realtime else ''}, "
        f"sipp on cpu {args.sipp_cpu}; {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    # SCHED_FIFO for every server: on a shared machine other processes on the
    # server core would otherwise decide the result; sipp stays a normal process.
    prefix = ("chrt", "-f", "10") if args.realtime else ()
    cfg = (ROOT / "bench" / "kamailio" / "sl_reply.cfg").read_text()
    fronts: dict[str, Path] = {f"purplegw ({core_kind(ROOT)})": Path(__file__).resolve()}
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="purplegw-bench-") as tmp:
        old_tree = Path(tmp) / "against"
        if args.against is not None:
            short = checkout(args.against or branch_point(), old_tree)
            name = f"purplegw@{short} ({core_kind(old_tree)})"
            fronts[name] = old_tree / "bench" / "sip_front.py"
        try:
            servers: dict[str, tuple[int, int]] = {}
            for name, script in fronts.items():
                port = free_port("udp")
                proc = start_front(script, port, prefix, args.server_cpu)
                procs.append(proc)
                servers[name] = (port, proc.pid)
            with Kamailio(cfg, cpu=args.server_cpu, command_prefix=prefix) as kam:
                assert kam.proc is not None
                servers["kamailio"] = (kam.port, kam.proc.pid)
                runs = []
                for number in range(args.repeat):
                    if args.repeat > 1:
                        print(f"run {number + 1} of {args.repeat}", flush=True)
                    runs.append(ramp(servers, rates, args.duration, args.sipp_cpu, args.attempts))
        finally:
            for proc in procs:
                stop_front(proc)
            if args.against is not None and old_tree.exists():
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)],
                    check=False,
                )

    heading = (
        f"MESSAGE -> 2xx over UDP, one core each, {args.duration:.0f} s per step, "
        "highest rate with 0 failed calls and 0 retransmissions"
    )
    for number, best in enumerate(runs if args.repeat > 1 else []):
        print_table(list(best.values()), f"run {number + 1}")
    rows = [
        {
            "name": name,
            **{
                column: median([run[name][column] for run in runs])
                for column in ("rate", "achieved", "p50", "p99", "cpu_us")
            },
        }
        for name in servers
    ]
    print_table(rows, heading + (f", median of {args.repeat} runs" if args.repeat > 1 else ""))
    print("bar 0.50, target 0.80 (vs kamailio: achieved rate; cpu vs kam: kamailio us / ours)")
    if len(fronts) > 1:
        new, old = rows[0], rows[1]
        print(
            f"new/old: achieved rate {ratio(new['achieved'], old['achieved']):.2f}, "
            f"cpu per request {ratio(new['cpu_us'], old['cpu_us']):.2f}"
        )
    if rows[-1]["rate"] == rates[-1]:
        print("note: Kamailio passed the highest step; its limit (and sipp's) lies above it")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
