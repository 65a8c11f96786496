"""One contact's presence change fanned out to N SIP watcher dialogs: purplegw beside Kamailio.

    .venv/bin/python bench/presence_fanout.py [--subscribers 1000,10000] [--rate 500]

purplegw: a SIP user (alice, trusted source, no digest) with one XMPP account
on Prosody.  A primer dialog subscribes to the XMPP contact bob, bob approves
the roster subscription, the primer unsubscribes; then sipp opens N watcher
dialogs of alice to bob (bench/presence/subscriber.xml, one call per dialog,
all on one UDP socket) and answers each initial NOTIFY.  Once all N are
answered, bob sends one presence change from his XMPP client; measured: the
time from that send to sipp answering the last of the N NOTIFYs carrying the
change, and N / that time.

Reference, same run: Kamailio's presence server (presence + presence_xml on
db_text, bench/presence/kamailio-presence.cfg) with the same N sipp watcher
dialogs subscribed to a presentity that has one publication; the change is
one PUBLISH (SIP-If-Match) from a plain UDP socket; measured from sending it
to the last NOTIFY answered.

sipp logs the wall-clock time of each answer ([timestamp]); a watcher call
fails unless its initial NOTIFY is active and its second NOTIFY carries the
changed note, so every counted NOTIFY is the change's.  Prosody is restarted
and the gateway and Kamailio are fresh for each size.  Ratio: Kamailio time /
purplegw time (above 1: purplegw is faster).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kit.gateway import GatewayProcess  # noqa: E402
from tests.kit.kamailio import Kamailio, kamailio_binary  # noqa: E402
from tests.kit.ports import free_port  # noqa: E402
from tests.kit.prosody import Prosody  # noqa: E402
from tests.kit.sipp import sipp_binary  # noqa: E402
from tests.kit.xmpp_peer import XmppPeer  # noqa: E402

HERE = Path(__file__).resolve().parent / "presence"
SCENARIO = HERE / "subscriber.xml"
KAMAILIO_CFG = HERE / "kamailio-presence.cfg"
DBTEXT_SCHEMA = Path("/usr/share/kamailio/dbtext/kamailio")
WATCHER = "sip:alice@sip.test"
BEFORE, AFTER = "fanout-before", "fanout-after"  # the notes; subscriber.xml checks AFTER
SOCKET_BUFFER = 4 * 1024 * 1024  # the box's net.core.rmem_max: a burst of NOTIFYs fits


@dataclass
class Result:
    subscribers: int
    answered: int  # NOTIFYs of the change answered
    failed_calls: int
    seconds: float  # change sent -> last NOTIFY answered
    first: float  # change sent -> first NOTIFY answered (the fixed part: XMPP hop or PUBLISH)

    @property
    def per_s(self) -> float:
        return self.answered / self.seconds if self.seconds > 0 else float("nan")


class Watchers:
    """sipp holding N watcher dialogs; its <log> lines say when each NOTIFY was answered."""

    def __init__(self, base: Path, port: int, target: str, n: int, rate: int) -> None:
        self.n = n
        self.work = Path(tempfile.mkdtemp(prefix="watchers-", dir=base))
        self.log = self.work / "answers.log"
        self.stats = self.work / "stats.csv"
        self.proc = subprocess.Popen(
            [
                sipp_binary() or "sipp",
                f"127.0.0.1:{port}",
                "-sf",
                str(SCENARIO),
                "-m",
                str(n),
                "-l",
                str(n),
                "-r",
                str(rate),
                "-t",
                "u1",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port("udp")),
                "-nostdin",
                "-key",
                "target",
                target,
                "-key",
                "watcher",
                WATCHER,
                "-buff_size",
                str(SOCKET_BUFFER),
                "-max_recv_loops",
                "10000",
                "-trace_logs",
                "-log_file",
                str(self.log),
                "-trace_stat",
                "-stf",
                str(self.stats),
                "-fd",
                "1",
                "-trace_err",
                "-error_file",
                str(self.work / "errors.log"),
                "-timeout",
                "900s",
            ],
            cwd=self.work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def lines(self, kind: str, marker: str) -> list[float]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        # "<kind> <what the regexp matched> <date>\t<time>\t<epoch.usec>"
        return [
            float(line.split("\t")[-1])
            for line in text.splitlines()
            if line.split()[:2] == [kind, marker] and "\t" in line
        ]

    def wait_initial(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (got := len(self.lines("init", "active"))) < self.n:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sipp exited early ({got}/{self.n} subscribed): {self.errors()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {got}/{self.n} watchers got their initial NOTIFY")
            time.sleep(0.2)

    def finish(self, timeout: float) -> tuple[list[float], int]:
        """Answer times of the change NOTIFYs, and the number of failed calls."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(10)
        failed = 0
        try:
            rows = self.stats.read_text().splitlines()
            header, last = rows[0].split(";"), rows[-1].split(";")
            failed = int(dict(zip(header, last, strict=False)).get("FailedCall(C)", "0") or 0)
        except (OSError, IndexError, ValueError):
            pass
        if failed:
            print(
                f"  {failed} watcher calls failed; sipp's errors ({self.work}):\n{self.errors()}",
                file=sys.stderr,
                flush=True,
            )
        return self.lines("change", AFTER), failed

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def errors(self) -> str:
        path = self.work / "errors.log"
        return path.read_text(errors="replace")[:2000] if path.exists() else ""


def result_of(n: int, sent_at: float, answers: list[float], failed: int) -> Result:
    if not answers:
        return Result(n, 0, failed, float("nan"), float("nan"))
    return Result(n, len(answers), failed, max(answers) - sent_at, min(answers) - sent_at)


# --- a minimal UDP user agent for the primer dialog and the reference PUBLISH ---


def _parse(data: bytes) -> tuple[str, dict[str, list[str]], list[str]]:
    head = data.partition(b"\r\n\r\n")[0].decode(errors="replace")
    lines = head.split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return lines[0], headers, lines[1:]


def _answer_200(sock: socket.socket, raw_lines: list[str], addr: tuple[str, int]) -> None:
    keep = [
        ln
        for ln in raw_lines
        if ln.split(":", 1)[0].strip().lower()
        in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")
    ]
    sock.sendto(
        ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr
    )


def prime(gateway_port: int, target: str, peer: XmppPeer, account_jid: str) -> None:
    """Subscribe once so the account asks bob; bob approves; unsubscribe again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    port = sock.getsockname()[1]
    server = ("127.0.0.1", gateway_port)
    call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]

    def subscribe(cseq: int, expires: int, to_tag: str = "") -> None:
        to = f"<{target}>" + (f";tag={to_tag}" if to_tag else "")
        sock.sendto(
            "\r\n".join(
                [
                    f"SUBSCRIBE {target} SIP/2.0",
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}",
                    "Max-Forwards: 70",
                    f"From: <{WATCHER}>;tag={tag}",
                    f"To: {to}",
                    f"Call-ID: {call_id}",
                    f"CSeq: {cseq} SUBSCRIBE",
                    f"Contact: <sip:primer@127.0.0.1:{port}>",
                    "Event: presence",
                    "Accept: application/pidf+xml",
                    f"Expires: {expires}",
                    "Content-Length: 0",
                    "",
                    "",
                ]
            ).encode(),
            server,
        )

    subscribe(1, 3600)
    to_tag, answered, states = "", False, []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not answered and any(
                e.kind == "subscribe" and e.bare == account_jid for e in peer.snapshot()
            ):
                peer.answer_subscription(account_jid, allow=True)
                answered = True
            try:
                data, addr = sock.recvfrom(65535)
            except OSError:
                continue
            first, headers, raw = _parse(data)
            if first.startswith("SIP/2.0 200") and not to_tag:
                to_tag = headers.get("to", [""])[0].partition(";tag=")[2].split(";")[0]
            elif first.startswith("NOTIFY"):
                _answer_200(sock, raw, addr)
                states.append(headers.get("subscription-state", [""])[0])
                if states[-1].startswith("active") and to_tag and len(states) == 2:
                    subscribe(2, 0, to_tag)
                if states[-1].startswith("terminated"):
                    return
        raise TimeoutError(f"primer dialog never became active and ended: {states}")
    finally:
        sock.close()


def pidf(entity: str, note: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        '<tuple id="fanout"><status><basic>open</basic></status>'
        f"<note>{note}</note></tuple></presence>"
    )


def publish(
    sock: socket.socket, server: tuple[str, int], entity: str, note: str, etag: str = ""
) -> str:
    """One PUBLISH to Kamailio; returns the SIP-ETag of its 200."""
    body = pidf(entity, note)
    port = sock.getsockname()[1]
    sock.sendto(
        "\r\n".join(
            [
                f"PUBLISH {entity} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}",
                "Max-Forwards: 70",
                f"From: <{entity}>;tag={uuid.uuid4().hex[:8]}",
                f"To: <{entity}>",
                f"Call-ID: {uuid.uuid4().hex}",
                "CSeq: 1 PUBLISH",
                "Event: presence",
                "Expires: 3600",
                *([f"SIP-If-Match: {etag}"] if etag else []),
                "Content-Type: application/pidf+xml",
                f"Content-Length: {len(body.encode())}",
                "",
                body,
            ]
        ).encode(),
        server,
    )
    while True:
        first, headers, _ = _parse(sock.recv(65535))
        code = int(first.split(" ", 2)[1])
        if code >= 300:
            raise RuntimeError(f"PUBLISH answered {first}")
        if code >= 200:
            return headers.get("sip-etag", [""])[0]


# --- the two sides -----------------------------------------------------------------


def run_purplegw(prosody: Prosody, base: Path, n: int, rate: int) -> Result:
    prosody.restart()
    tag = uuid.uuid4().hex[:6]
    account, bob = prosody.create_user(f"fanalice{tag}"), prosody.create_user(f"fanbob{tag}")
    work = Path(tempfile.mkdtemp(prefix="gw-", dir=base))
    # One user holds all N dialogs, opened at `rate`/s: lift the per-user limits.
    limits = f"\n[presence]\nmax_subscriptions_per_user = {n + 1}\n"
    gateway = GatewayProcess(
        work,
        extra_config=prosody.gateway_section(keepalive=0) + limits,
        sip={"trusted": ["127.0.0.1/32"], "rate_per_user": 0},
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
    peer = XmppPeer(bob.jid, bob.password, "127.0.0.1", prosody.port, ca_file=prosody.ca_file)
    watchers: Watchers | None = None
    try:
        gateway.wait_accounts("connected", timeout=120)
        peer.start()
        peer.send_presence(show="dnd", status=BEFORE)
        target = f"sip:{bob.jid}"
        prime(gateway.port, target, peer, account.jid)
        watchers = Watchers(base, gateway.port, target, n, rate)
        watchers.wait_initial(timeout=n / rate * 4 + 120)
        time.sleep(1.0)  # let stragglers' retransmissions settle before the measured change
        sent_at = time.time()
        peer.send_presence(show="away", status=AFTER)
        answers, failed = watchers.finish(timeout=300)
        return result_of(n, sent_at, answers, failed)
    finally:
        if watchers is not None:
            watchers.stop()
        peer.stop()
        gateway.stop()


def run_kamailio(base: Path, n: int, rate: int) -> Result:
    db_dir = Path(tempfile.mkdtemp(prefix="kamdb-", dir=base)) / "db"
    shutil.copytree(DBTEXT_SCHEMA, db_dir)
    port = free_port("udp")
    cfg = KAMAILIO_CFG.read_text().replace("DBDIR", str(db_dir)).replace("PORT", str(port))
    entity = "sip:bob@localhost"
    server = Kamailio(cfg, port=port, shm_mb=512).start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    watchers: Watchers | None = None
    try:
        etag = publish(sock, ("127.0.0.1", port), entity, BEFORE)
        watchers = Watchers(base, port, entity, n, rate)
        watchers.wait_initial(timeout=n / rate * 4 + 120)
        time.sleep(1.0)
        sent_at = time.time()
        publish(sock, ("127.0.0.1", port), entity, AFTER, etag)
        answers, failed = watchers.finish(timeout=300)
        return result_of(n, sent_at, answers, failed)
    finally:
        if watchers is not None:
            watchers.stop()
        sock.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", default="1000,10000")
    parser.add_argument("--rate", type=int, default=500, help="SUBSCRIBEs/s while setting up")
    args = parser.parse_args()
    sizes = [int(s) for s in args.subscribers.split(",")]
    if sipp_binary() is None or kamailio_binary() is None:
        sys.exit("sipp (Debian sip-tester) and kamailio are required")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    base = Path(tempfile.mkdtemp(prefix="purplegw-bench-fanout-"))
    prosody = Prosody().start()
    rows: list[tuple[Result, Result]] = []
    try:
        for n in sizes:
            ours = run_purplegw(prosody, base, n, args.rate)
            ref = run_kamailio(base, n, args.rate)
            rows.append((ours, ref))
            print(f"  {n}: purplegw {ours}, kamailio {ref}", file=sys.stderr, flush=True)
    finally:
        prosody.cleanup()
        if all(r.failed_calls == 0 for pair in rows for r in pair):
            shutil.rmtree(base, ignore_errors=True)

    header = (
        f"{'subscribers':>11} | {'purplegw ms':>11} {'first ms':>8} {'NOTIFY/s':>9} "
        f"{'answered':>8} | {'Kamailio ms':>11} {'first ms':>8} {'NOTIFY/s':>9} "
        f"{'answered':>8} | {'time ratio':>10} {'rate ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    for ours, ref in rows:
        print(
            f"{ours.subscribers:>11} | {ours.seconds * 1000:>11.1f} {ours.first * 1000:>8.1f} "
            f"{ours.per_s:>9.0f} {ours.answered:>8} | {ref.seconds * 1000:>11.1f} "
            f"{ref.first * 1000:>8.1f} {ref.per_s:>9.0f} {ref.answered:>8} | "
            f"{ref.seconds / ours.seconds:>10.2f} "
            f"{ours.per_s / ref.per_s:>10.2f}"
        )
    print(
        "ms = change sent -> last NOTIFY answered; first ms = -> first one answered; "
        "NOTIFY/s = answered / ms;\ntime ratio = Kamailio ms / purplegw ms, rate ratio = "
        "purplegw NOTIFY/s / Kamailio NOTIFY/s (above 1: purplegw faster);\n"
        "answered = watchers that got and answered the change NOTIFY (of `subscribers`)"
    )


if __name__ == "__main__":
    main()
