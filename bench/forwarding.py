"""What the forwarding hop costs: MESSAGE to the user's own node, and through another node.

    .venv/bin/python bench/forwarding.py [--users 50] [--messages 3000] [--window 20] [--repeat 3]

Two `purplegw run` daemons (gw1, gw2) share a throw-away MariaDB; every user
has a ``dummy`` account (the in-process fake network: the cost measured is
purplegw's, not an IM server's) and every lease is gw1's.  A UDP client
keeps ``--window`` MESSAGEs outstanding (trusted source, no digest) and
times each 202.  Reference: the same traffic sent to gw1, the owner.
Measured: the same traffic sent to gw2, which forwards each MESSAGE to gw1
and relays the 202.  Printed: messages/s, p50/p99 latency, and the ratio
forwarded/direct; ``--repeat N`` runs each N times, alternating, and prints
the medians.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.kit: the daemons and the throw-away MariaDB

from purplegw.store import Database  # noqa: E402
from purplegw.store.cluster import ClusterRepository  # noqa: E402
from tests.kit.gateway import GatewayProcess  # noqa: E402
from tests.kit.mariadb import MariaDB  # noqa: E402


def start_nodes(base: Path, db_url: str, users: int) -> dict[str, GatewayProcess]:
    nodes = {}
    for name in ("gw1", "gw2"):
        (base / name).mkdir()
        node = GatewayProcess(
            base / name,
            extra_config="[protocols.dummy]\nenabled = true\n",
            sip={"trusted": ["127.0.0.1/32"], "rate_per_source": 0.0},
            log_level="WARNING",
        )
        config = tomllib.loads(node.config.read_text())
        config["store"]["db_url"] = db_url
        config["cluster"] = {"node": name, "advertise": f"127.0.0.1:{node.port}"}
        node.config.write_text(tomli_w.dumps(config))
        nodes[name] = node
    gw1 = nodes["gw1"]
    gw1.cli("db", "init")
    lines = "sip_user,ext_user,ext_prot,ext_pass\n" + "".join(
        f"u{i}@sip.test,u{i}@dummy,dummy,pw\n" for i in range(users)
    )
    (base / "accounts.csv").write_text(lines)
    gw1.cli("accounts", "import", str(base / "accounts.csv"))
    key = (gw1.base / "data" / "purplegw.key").read_bytes()
    (nodes["gw2"].base / "data").mkdir(exist_ok=True)
    (nodes["gw2"].base / "data" / "purplegw.key").write_bytes(key)
    (nodes["gw2"].base / "data" / "purplegw.key").chmod(0o600)
    for node in nodes.values():
        node.start()
    for node in nodes.values():
        node.wait_accounts("connected", timeout=120)
    return nodes


def drive(port: int, users: int, messages: int, window: int) -> tuple[float, list[float]]:
    """(messages/s, latencies in s) of ``messages`` MESSAGEs, ``window`` outstanding."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    local = sock.getsockname()[1]
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    refused: dict[str, int] = {}
    lock = threading.Lock()
    room = threading.Semaphore(window)
    done = threading.Event()

    def receive() -> None:
        while len(latencies) + sum(refused.values()) < messages:
            try:
                data = sock.recv(65535)
            except TimeoutError:
                break
            status = data[8:11].decode(errors="replace")
            if status.startswith("1"):
                continue
            call_id = data.split(b"\r\nCall-ID: ", 1)[1].split(b"\r\n", 1)[0].decode()
            with lock:
                start = sent_at.pop(call_id, None)
            if start is None:
                continue
            room.release()
            if status.startswith("2"):
                latencies.append(time.perf_counter() - start)
            else:
                refused[status] = refused.get(status, 0) + 1
        done.set()

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    begin = time.perf_counter()
    for n in range(messages):
        if not room.acquire(timeout=10):
            break
        user = f"u{n % users}"
        call_id = uuid.uuid4().hex
        text = f"bench {n}"
        request = (
            f"MESSAGE sip:peer{n % users}@dummy;proto=dummy SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@sip.test>;tag={call_id[:8]}\r\n"
            f"To: <sip:peer{n % users}@dummy;proto=dummy>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(text)}\r\n\r\n{text}"
        ).encode()
        with lock:
            sent_at[call_id] = time.perf_counter()
        sock.sendto(request, ("127.0.0.1", port))
    done.wait(30)
    elapsed = time.perf_counter() - begin
    sock.close()
    if refused:
        print(f"  port {port}: refused {refused}", file=sys.stderr)
    return len(latencies) / elapsed, latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with MariaDB() as server, tempfile.TemporaryDirectory(prefix="purplegw-fwd-") as tmp:
        db_url = server.create_database("bench_forwarding")
        nodes = start_nodes(Path(tmp), db_url, args.users)
        db = Database.create(db_url)
        cluster = ClusterRepository(db)
        try:
            for name, node in nodes.items():
                cluster.heartbeat(name, f"127.0.0.1:{node.port}")
            for i in range(args.users):
                assert cluster.acquire(f"u{i}@sip.test", "gw1", 3600) is not None
            drive(nodes["gw1"].port, args.users, 200, args.window)  # warm-up
            drive(nodes["gw2"].port, args.users, 200, args.window)
            runs: dict[str, list[tuple[float, float, float, int]]] = {"direct": [], "forwarded": []}
            for _ in range(args.repeat):
                for label, name in (("direct", "gw1"), ("forwarded", "gw2")):
                    for node_name, node in nodes.items():  # as the runtime does
                        cluster.heartbeat(node_name, f"127.0.0.1:{node.port}")
                    rate, lat = drive(nodes[name].port, args.users, args.messages, args.window)
                    runs[label].append(
                        (rate, percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, len(lat))
                    )
        finally:
            db.close()
            for node in nodes.values():
                node.stop()

    def median(label: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[label])

    print(
        f"MESSAGE -> 202, {args.messages} messages, {args.window} outstanding, "
        f"{args.users} users, median of {args.repeat}"
    )
    print("| path | answered | msg/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for label, what in (("direct", "to the owner (reference)"), ("forwarded", "through gw2")):
        print(
            f"| {what} | {int(min(r[3] for r in runs[label]))}/{args.messages} "
            f"| {median(label, 0):.0f} | {median(label, 1):.1f} | {median(label, 2):.1f} |"
        )
    print(
        f"ratio forwarded/direct: {median('forwarded', 0) / median('direct', 0):.2f}x msg/s, "
        f"p50 +{median('forwarded', 1) - median('direct', 1):.1f} ms"
    )


if __name__ == "__main__":
    main()
