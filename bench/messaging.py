"""Messages end to end through purplegw, beside the same traffic straight to Prosody.

    .venv/bin/python bench/messaging.py [--rates 400,800,1200,2000,3000] [--seconds 3]
                                        [--drain 5] [--repeat 3] [--direction both]

SIP -> XMPP: sipp sends MESSAGE at each rate to the running `purplegw run`
daemon (trusted source, no digest), which sends through the user's XMPP
account; an XMPP client counts what arrives and when.  Reference: an XMPP
client sending the same messages at the same rate straight to the receiver.

XMPP -> SIP: an XMPP client sends at each rate to the user's XMPP account;
the gateway delivers SIP MESSAGEs to its outbound proxy, here a plain UDP
responder that timestamps each one and answers 200.  Reference: the same
XMPP traffic to another XMPP client.

Reported per direction and rate: delivered messages/s, behind (sent minus
delivered after the drain period), lost (never delivered, counted once every
run of the direction is over and a last drain of ``--final-drain`` seconds
has passed: a message that is late is behind, not lost), p50/p99 end-to-end
latency, the reference numbers, and the ratio purplegw/reference of delivered
msgs/s.  For SIP -> XMPP, ``202s`` is how many MESSAGEs sipp got answered 202
and ``retr`` how many it had to retransmit.  Prosody is restarted before each
measured direction (it slows down as it ages).

The responder runs in a process of its own, so that its answers (which
pace a conversation: one message in flight) do not wait for the bench's
XMPP clients' share of the bench's GIL.  ``--workers N`` runs the gateway
with ``[actors] workers = N`` (the accounts' XMPP sessions in N worker
processes); ``cpu us`` counts the workers too.

``--repeat N`` measures every rate N times and reports the median of each
column.  The rates go up to the knee: the last line per direction names the
highest rate delivered in full at >= 0.9x the reference with p99 < 250 ms
(the goal of issue 14), and the first rate where the gateway fell behind.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kit.gateway import GatewayProcess  # noqa: E402
from tests.kit.ports import free_port  # noqa: E402
from tests.kit.prosody import Prosody  # noqa: E402
from tests.kit.sipp import _last_stats_row, sipp_binary  # noqa: E402
from tests.kit.xmpp_peer import XmppPeer  # noqa: E402

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

# Bodies carry their send time; each kind of run has its own prefix so a
# watcher never counts another run's messages.
STAMP = re.compile(r"^sip n=(\d+) r=(\d+) t=[^\t]*\t[^\t]*\t([0-9.]+)")  # sipp's [timestamp]
REF_STAMP = re.compile(r"^ref n=(\d+) r=(\d+) t=([0-9]+\.[0-9]+)")
# sipp's error file: "Aborting call ... while expecting '202' ..., received 'SIP/2.0 480 ..."
UNEXPECTED = re.compile(r"Aborting call .*?received 'SIP/2\.0 ([^\r\n]*)")
GW_STAMP = re.compile(r"^gw n=(\d+) r=(\d+) t=([0-9]+\.[0-9]+)")

SCENARIO = """<?xml version="1.0" encoding="UTF-8" ?>
<scenario name="bench MESSAGE">
  <send retrans="500">
    <![CDATA[

      MESSAGE sip:{contact} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:alice@sip.test>;tag=[pid]T[call_number]
      To: <sip:{contact}>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Content-Type: text/plain
      Content-Length: [len]

      sip n=[call_number] r={rate} t=[timestamp]
    ]]>
  </send>
  <recv response="202"/>
</scenario>
"""


class Arrivals:
    """(n, latency) of messages of one run, keyed by the rate tag in the body."""

    def __init__(self) -> None:
        self.by_rate: dict[int, dict[int, float]] = {}
        self.lock = threading.Lock()

    def record(self, body: str, now: float, pattern: re.Pattern[str]) -> None:
        match = pattern.search(body)
        if match is None:
            return
        n, rate, sent = int(match[1]), int(match[2]), float(match[3])
        with self.lock:
            self.by_rate.setdefault(rate, {}).setdefault(n, now - sent)

    def of(self, rate: int) -> dict[int, float]:
        with self.lock:
            return dict(self.by_rate.get(rate, {}))


def watch_peer(
    peer: XmppPeer, arrivals: Arrivals, pattern: re.Pattern[str], stop: threading.Event
) -> threading.Thread:
    offset = time.time() - time.monotonic()

    def run() -> None:
        seen = 0
        while not stop.is_set():
            events = peer.since(seen)  # not a copy of all of them, 50 times a second
            for event in events:
                if event.kind == "message" and event.body:
                    arrivals.record(event.body, event.at + offset, pattern)
            seen += len(events)
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def respond_udp(port: int, conn: Connection) -> None:
    """The outbound proxy stand-in, in a process of its own: answers 200, timestamps.

    Its own process so that its answers are not paced by the bench's XMPP
    clients (they share one GIL): the gateway sends a conversation's next
    message only after this answer.  ``conn`` asks for the arrivals of one
    tag (``None`` ends it).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.setblocking(False)
    arrivals = Arrivals()
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(conn, selectors.EVENT_READ)
    conn.send("ready")
    while True:
        for key, _events in selector.select():
            if key.fileobj is conn:
                tag = conn.recv()
                if tag is None:
                    return
                conn.send(arrivals.of(tag))
                continue
            while True:
                try:
                    data, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                now = time.time()
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode(errors="replace").split("\r\n")
                if not lines[0].startswith("MESSAGE"):
                    continue
                keep = [
                    ln
                    for ln in lines[1:]
                    if ln.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")
                ]
                reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
                sock.sendto(reply.encode(), addr)
                arrivals.record(body.decode(errors="replace"), now, GW_STAMP)


class UdpResponder:
    """Runs ``respond_udp`` in a child process; ``of(tag)`` as ``Arrivals.of``."""

    def __init__(self) -> None:
        self.port = free_port("udp")
        self._conn, child = multiprocessing.get_context("spawn").Pipe()
        self._lock = threading.Lock()
        self.process = multiprocessing.get_context("spawn").Process(
            target=respond_udp, args=(self.port, child), daemon=True
        )
        self.process.start()
        if not self._conn.poll(30) or self._conn.recv() != "ready":
            sys.exit("the UDP responder did not start")

    def of(self, tag: int) -> dict[int, float]:
        with self._lock:
            self._conn.send(tag)
            return self._conn.recv()

    def stop(self) -> None:
        with self._lock:
            self._conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()


def summarize(rate: int, sent: int, got: dict[int, float], seconds: float) -> dict[str, float]:
    latencies = sorted(got.values())

    def p(q):
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
            if latencies
            else float("nan")
        )

    return {
        "rate": rate,
        "sent": sent,
        "delivered": len(got),
        "behind": sent - len(got),
        "lost": sent - len(got),  # until the final count (``settle``)
        "per_s": len(got) / seconds,
        "p50": p(0.50),
        "p99": p(0.99),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live children (workers), all threads."""
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            pids += [int(child) for child in children.read_text().split()]
    for each in pids:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def outbox_write_window(port: int) -> str:
    """p50/p99/max bucket of ``purplegw_outbox_write_seconds`` over the whole run."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    buckets = [
        (float(m[1]), float(m[2]))
        for m in re.finditer(r'purplegw_outbox_write_seconds_bucket\{le="([^"]+)"\} (\S+)', text)
    ]
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return ""

    def upper(q: float) -> str:
        bound = next(le for le, count in buckets if count >= q * total)
        return f"<= {bound * 1000:g} ms" if bound != float("inf") else "> 5 s"

    largest = next(le for le, count in buckets if count >= total)
    return f"{total:g} messages, p50 {upper(0.5)}, p99 {upper(0.99)}, all " + (
        f"<= {largest * 1000:g} ms" if largest != float("inf") else "within > 5 s"
    )


def settle(summary: dict[str, float], got: dict[int, float]) -> None:
    """The final count: what never arrived at all, long after the drain."""
    summary["lost"] = summary["sent"] - len(got)


def run_sipp(  # noqa: PLR0913, PLR0917 - one sipp run
    base: Path, scenario: Path, port: int, count: int, rate: int, seconds: float
) -> dict[str, int]:
    """Send ``count`` MESSAGEs at ``rate``; sipp's own tally of what it got answered."""
    stats = scenario.with_suffix(".csv")
    errors = scenario.with_suffix(".err")
    binary = sipp_binary()
    assert binary is not None
    subprocess.run(
        [
            binary,
            f"127.0.0.1:{port}",
            "-sf",
            str(scenario),
            "-m",
            str(count),
            "-r",
            str(rate),
            "-i",
            "127.0.0.1",
            "-p",
            str(free_port("both")),
            "-nostdin",
            "-timeout",
            f"{int(seconds * 4 + 30)}s",
            "-trace_stat",
            "-stf",
            str(stats),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(errors),
        ],
        cwd=base,
        capture_output=True,
        check=False,
    )
    row = _last_stats_row(stats)

    def count_of(column: str) -> int:
        return int(row.get(f"{column}(C)", "0") or 0)

    # Answers other than 202, by status line (sipp logs each unexpected message).
    others = collections.Counter(
        match[1]
        for match in UNEXPECTED.finditer(
            errors.read_text(errors="replace") if errors.exists() else ""
        )
    )
    if others:
        print(f"sipp at {rate}/s got besides 202: {dict(others)}", file=sys.stderr)
    return {
        "answered": count_of("SuccessfulCall"),
        "failed": count_of("FailedCall"),
        "retr": count_of("Retransmissions"),
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Column by column median of repeated runs of one rate."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def paced(rate: int, seconds: float, send: callable) -> int:  # type: ignore[valid-type]
    count = int(rate * seconds)
    start = time.monotonic()
    for i in range(1, count + 1):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(i)
    return count


def main() -> None:  # noqa: C901, PLR0915
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="400,800,1200,2000,3000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per rate; medians shown")
    parser.add_argument("--final-drain", type=float, default=10.0, help="before counting lost")
    parser.add_argument("--direction", choices=("both", "sip", "xmpp"), default="both")
    parser.add_argument(
        "--workers", type=int, default=0, help="[actors] workers: processes hosting the accounts"
    )
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if sipp_binary() is None:
        sys.exit("sipp (Debian sip-tester) is required")

    base = Path(tempfile.mkdtemp(prefix="purplegw-bench-msg-"))
    prosody = Prosody().start()
    account, bob, carol = (prosody.create_user(n) for n in ("gwalice", "benchbob", "benchcarol"))
    responder = UdpResponder()
    metrics_port = free_port("tcp")
    gateway = GatewayProcess(
        base,
        extra_config=prosody.gateway_section(keepalive=0)
        + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n',
        actors={"workers": args.workers},
        sip={
            "trusted": ["127.0.0.1/32"],
            "outbound_proxy": f"sip:127.0.0.1:{responder.port}",
            # one user at hundreds of messages/s is the measurement, not abuse
            "rate_per_user": 0,
        },
        log_level="WARNING",
    )
    gateway.cli("db", "init")
    gateway.cli(
        "accounts",
        "add",
        "alice@sip.test",
        account.jid,
        "xmpp",
        "--password-stdin",
        stdin=account.password + "\n",
    )
    gateway.start()
    runs: dict[tuple[str, int], list[tuple[dict[str, float], dict[str, float]]]] = {}
    stop = threading.Event()
    finals: list[tuple[dict[str, float], Arrivals, int]] = []
    window = ""
    try:
        if args.direction in ("both", "sip"):
            # --- SIP -> XMPP -------------------------------------------------------------
            prosody.restart()
            gateway.wait_accounts("connected", timeout=120)
            receiver = XmppPeer(
                bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file
            ).start()
            sender = XmppPeer(
                carol.jid, carol.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file
            ).start()
            arrivals = Arrivals()
            watcher = watch_peer(receiver, arrivals, STAMP, stop)
            for rate, run in ((r, k) for r in rates for k in range(args.repeat)):
                # The run number rides in the rate tag, so repeats never mix.
                tag = rate * 100 + run
                scenario = base / f"s{tag}.xml"
                scenario.write_text(SCENARIO.format(contact=bob.jid, rate=tag))
                count = int(rate * args.seconds)
                started, cpu = time.monotonic(), cpu_seconds(gateway.process.pid)
                sipp = run_sipp(base, scenario, gateway.port, count, rate, args.seconds)
                time.sleep(args.drain)
                elapsed = max(args.seconds, time.monotonic() - started - args.drain)
                ours = summarize(rate, count, arrivals.of(tag), elapsed)
                ours["cpu_us"] = (cpu_seconds(gateway.process.pid) - cpu) / count * 1e6
                ours.update(sipp)
                finals.append((ours, arrivals, tag))
                # Reference: the same messages from an XMPP client straight to the receiver.
                ref_peer_arrivals = Arrivals()
                ref_watch_stop = threading.Event()
                ref_watcher = watch_peer(receiver, ref_peer_arrivals, REF_STAMP, ref_watch_stop)
                started = time.monotonic()
                sent = paced(
                    rate,
                    args.seconds,
                    lambda i, r=tag: sender.send_message(
                        bob.jid, f"ref n={i} r={r} t={time.time():.6f}"
                    ),
                )
                time.sleep(args.drain)
                ref_watch_stop.set()
                ref_watcher.join()
                elapsed = max(args.seconds, time.monotonic() - started - args.drain)
                runs.setdefault(("SIP->XMPP", rate), []).append(
                    (ours, summarize(rate, sent, ref_peer_arrivals.of(tag), elapsed))
                )
            time.sleep(args.final_drain)
            for summary, got, tag in finals:
                settle(summary, got.of(tag))
            finals.clear()
            stop.set()
            watcher.join()
            receiver.stop()

        if args.direction in ("both", "xmpp"):
            # --- XMPP -> SIP -------------------------------------------------------------
            prosody.restart()
            gateway.wait_accounts("connected", timeout=120)
            sender = XmppPeer(
                bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file
            ).start()
            ref_receiver = XmppPeer(
                carol.jid,
                carol.password,
                "127.0.0.1",
                prosody.port,
                ca_file=prosody.ca_file,
                resource="ref",
            ).start()
            for rate, run in ((r, k) for r in rates for k in range(args.repeat)):
                tag = rate * 100 + run
                started, cpu = time.monotonic(), cpu_seconds(gateway.process.pid)
                sent = paced(
                    rate,
                    args.seconds,
                    lambda i, r=tag: sender.send_message(
                        account.jid, f"gw n={i} r={r} t={time.time():.6f}"
                    ),
                )
                time.sleep(args.drain)
                elapsed = max(args.seconds, time.monotonic() - started - args.drain)
                ours = summarize(rate, sent, responder.of(tag), elapsed)
                ours["cpu_us"] = (cpu_seconds(gateway.process.pid) - cpu) / sent * 1e6
                finals.append((ours, responder, tag))
                ref = Arrivals()
                ref_stop = threading.Event()
                ref_watcher = watch_peer(ref_receiver, ref, REF_STAMP, ref_stop)
                started = time.monotonic()
                sent = paced(
                    rate,
                    args.seconds,
                    lambda i, r=tag: sender.send_message(
                        carol.jid, f"ref n={i} r={r} t={time.time():.6f}"
                    ),
                )
                time.sleep(args.drain)
                ref_stop.set()
                ref_watcher.join()
                elapsed = max(args.seconds, time.monotonic() - started - args.drain)
                runs.setdefault(("XMPP->SIP", rate), []).append(
                    (ours, summarize(rate, sent, ref.of(tag), elapsed))
                )
            time.sleep(args.final_drain)
            for summary, got, tag in finals:
                settle(summary, got.of(tag))
            finals.clear()
            sender.stop()
            ref_receiver.stop()
            window = outbox_write_window(metrics_port)
    finally:
        stop.set()
        gateway.stop()
        responder.stop()
        prosody.cleanup()

    rows = [
        (direction, median_of([o for o, _r in measured]), median_of([r for _o, r in measured]))
        for (direction, _rate), measured in runs.items()
    ]
    print(
        f"median of {args.repeat} run(s) of {args.seconds:g}s per rate, "
        f"[actors] workers = {args.workers}"
    )
    header = (
        f"{'direction':<10} {'rate':>5} | {'purplegw/s':>10} {'behind':>6} {'lost':>5} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'cpu us':>6} {'202s':>6} {'retr':>5} | "
        f"{'reference/s':>11} {'lost':>5} "
        f"{'p50 ms':>8} {'p99 ms':>8} | {'ratio':>5}"
    )
    print(header)
    print("-" * len(header))
    for direction, ours, ref in rows:
        ratio = ours["per_s"] / ref["per_s"] if ref["per_s"] else float("nan")
        answered = f"{ours['answered']:>6g} {ours['retr']:>5g}" if "answered" in ours else " " * 12
        print(
            f"{direction:<10} {ours['rate']:>5g} | {ours['per_s']:>10.1f} {ours['behind']:>6g} "
            f"{ours['lost']:>5g} {ours['p50']:>8.1f} {ours['p99']:>8.1f} {ours['cpu_us']:>6.0f} "
            f"{answered} | "
            f"{ref['per_s']:>11.1f} {ref['lost']:>5g} {ref['p50']:>8.1f} {ref['p99']:>8.1f} | "
            f"{ratio:>5.2f}"
        )
    if window:
        print(f"XMPP->SIP: received message to outbox commit (XEP-0198 ack held): {window}")
    for direction in ("SIP->XMPP", "XMPP->SIP"):
        clean = [o for d, o, _ in rows if d == direction and o["lost"] == 0]
        best = max(clean, key=lambda o: o["rate"]) if clean else None
        good = [o["rate"] for d, o, r in rows if d == direction and _keeps_up(o, r)]
        behind = [o["rate"] for d, o, r in rows if d == direction and not _keeps_up(o, r)]

        def show(value: float | None) -> str:
            return "none" if value is None else f"{value:g}"

        print(
            f"{direction}: highest rate with zero loss: "
            f"{show(best['rate'] if best else None)} msg/s; knee: keeps up to "
            f"{show(max(good) if good else None)}, "
            f"behind from {show(min(behind) if behind else None)}"
        )


def _keeps_up(ours: dict[str, float], ref: dict[str, float]) -> bool:
    """All delivered within the drain, >= 0.9x the reference, p99 < 250 ms (issue 14's goal)."""
    ratio = ours["per_s"] / ref["per_s"] if ref["per_s"] else 0.0
    return ours["behind"] == 0 and ratio >= 0.9 and ours["p99"] < 250


if __name__ == "__main__":
    main()
