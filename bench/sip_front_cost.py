"""Instructions per request of the SIP front's UDP path, this tree against a reference.

    .venv/bin/python bench/sip_front_cost.py [--against REV] [--calls 1000]

Each tree's front (StaticRouter answering 200, no thread, no loop wake-ups)
gets sipp's MESSAGE queued on its real UDP socket and drains it with
``TransportLayer._udp_readable``: parse, transaction, router, response,
``sendto``. valgrind's callgrind counts the instructions of two runs (calls
and 3x calls) and the table shows their difference per request, so start-up
is left out. Instruction counts repeat exactly (``PYTHONHASHSEED=0``) on a
machine whose load moves wall-clock numbers by +-30 %; the kernel's share and
the event loop's wake-ups are not in them (bench/sip_front.py measures the
whole process against Kamailio). ``--against REV`` (default: ``main`` where
this branch left it) is checked out into a temporary git worktree, which is
never compiled: ``--against HEAD`` in a tree built with mypyc (setup.py)
compares the compiled SIP core with the same source interpreted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH = 400


def message(i: int, port: int) -> bytes:
    body = b"hello %d" % i
    return (
        b"MESSAGE sip:bench@127.0.0.1:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-%d-1-0\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:sipp@127.0.0.1:%d>;tag=1234SIPpTag00%d\r\n"
        b"To: <sip:bench@127.0.0.1:5060>\r\n"
        b"Call-ID: %d-1234@127.0.0.1\r\n"
        b"CSeq: 1 MESSAGE\r\n"
        b"Content-Type: text/plain\r\n"
        b"Content-Length: %d\r\n\r\n" % (port, i, port, i, i, len(body))
    ) + body


def drive(calls: int) -> None:
    """Child: a front of the tree on PYTHONPATH answers ``calls`` MESSAGEs; prints CPU us each."""
    # imported here: the package is the one of the tree on PYTHONPATH (the parent needs none)
    import asyncio
    import socket

    from purplegw.actors.front.front import SipFront, StaticRouter

    front = SipFront({"listen": ["udp:127.0.0.1:0"]}, StaticRouter(message_status=200, keep=False))
    asyncio.set_event_loop(front.loop)
    front.loop.run_until_complete(front._start_listeners())
    listener = front.transports.listeners[0]
    assert listener.sock is not None
    front.loop.remove_reader(listener.sock.fileno())
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    datagrams = [message(i, peer.getsockname()[1]) for i in range(calls)]
    readable = front.transports._udp_readable
    cpu = 0.0
    for start in range(0, calls, BATCH):
        for data in datagrams[start : start + BATCH]:
            peer.sendto(data, ("127.0.0.1", listener.port))
        began = time.process_time()
        for _ in range(BATCH // 64 + 2):
            readable(listener)
        cpu += time.process_time() - began
        try:
            while True:
                peer.recv(65535)
        except BlockingIOError:
            pass
    assert front.stats["requests"] == calls, front.stats
    print(f"{cpu / calls * 1e6:.1f}")


def run_child(tree: Path, calls: int, *, callgrind: bool) -> tuple[float, int | None]:
    """(CPU us per request, instructions of the whole child or None)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    command = [sys.executable, str(Path(__file__).resolve()), "--drive", str(calls)]
    with tempfile.TemporaryDirectory(prefix="purplegw-cost-") as tmp:
        if callgrind:
            out = Path(tmp) / "callgrind.out"
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the front of {tree} failed:\n{result.stderr[-2000:]}")
    instructions = None
    if callgrind:
        found = re.search(r"Collected : (\d+)", result.stderr)
        instructions = int(found.group(1)) if found else None
    return float(result.stdout.strip().splitlines()[-1]), instructions


def per_request(tree: Path, calls: int) -> tuple[float, float]:
    """(instructions per request, CPU us per request: median of 3 runs without valgrind)."""
    _, low = run_child(tree, calls, callgrind=True)
    _, high = run_child(tree, 3 * calls, callgrind=True)
    assert low is not None
    assert high is not None
    cpu = sorted(run_child(tree, 10 * calls, callgrind=False)[0] for _ in range(3))[1]
    return (high - low) / (2 * calls), cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="", metavar="REV", help="reference (default: main)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        drive(args.drive)
        return 0
    if shutil.which("valgrind") is None:
        print("needs valgrind", file=sys.stderr)
        return 2
    # Not at module level: the --drive child must import the package of its
    # PYTHONPATH tree, not this one's.
    sys.path.insert(0, str(ROOT))
    from tests.kit.compiled import core_kind

    rev = (
        args.against
        or subprocess.run(
            ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    with tempfile.TemporaryDirectory(prefix="purplegw-cost-tree-") as tmp:
        old_tree = Path(tmp) / "against"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(old_tree), rev],
            check=True,
        )
        try:
            short = subprocess.run(
                ["git", "-C", str(old_tree), "rev-parse", "--short", "HEAD"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            rows = [(f"purplegw ({core_kind(ROOT)})", *per_request(ROOT, args.calls))]
            rows.append(
                (f"purplegw@{short} ({core_kind(old_tree)})", *per_request(old_tree, args.calls))
            )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)],
                check=False,
            )
    print()
    print("SIP front, MESSAGE -> 200 over UDP, in-process (no loop wake-ups, kernel not counted)")
    print(f"{'tree':28} {'instructions/req':>17} {'cpu us/req':>11} {'instr vs ref':>13}")
    reference = rows[-1][1]
    for name, instructions, cpu in rows:
        print(f"{name:28} {instructions:17,.0f} {cpu:11.1f} {instructions / reference:13.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
