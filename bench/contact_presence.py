"""What an XMPP account keeps per contact whose presence it reads, and the CPU per presence.

    .venv/bin/python bench/contact_presence.py [--contacts 500] [--resources 2]
        [--against main] [--repeat 3]

An account's stream reads ``<presence/>`` from ``--contacts`` contacts, each
with ``--resources`` resources (``<show>away</show>`` and a status), through
the production path: the stream's XML parser, slixmpp's stanza handlers
and events, ``XmppSession``'s presence map and its callback to the gateway
(a sink here).  No server: the stanzas are fed to the client's
``data_received`` on one loop, so the numbers are the client's alone and
repeat closely.  Reported per contact: the memory still held afterwards
(tracemalloc, after ``gc.collect()``), and CPU per presence stanza (an
untraced pass: tracemalloc slows Python down several times).  Each
contact then sends ``unavailable`` from every resource; the memory held
after that is reported too (what an account keeps of contacts gone
offline).

``--against REV`` measures REV's code (a temporary git worktree) in the same
invocation, first; ``--repeat N`` runs each tree N times, alternating, and
reports medians.  Compare the ratio column on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='example.org' version='1.0'>"
)


class _Sink:
    """The gateway's side of the session's callbacks: accepts and drops every call."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *_args, **_kwargs: None


class _Transport:
    """Where the client's writes go (an answer to a subscription, say): nowhere."""

    def write(self, _data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, _name: str, default: Any = None) -> Any:
        return default


def stanzas(contacts: int, resources: int, kind: str) -> list[bytes]:
    out = []
    for n in range(contacts):
        for r in range(resources):
            sender = f"c{n}@example.org/r{r}"
            if kind == "available":
                out.append(
                    f"<presence from='{sender}' to='alice@example.org/gw'>"
                    f"<show>away</show><status>out until {n}:{r}0</status></presence>".encode()
                )
            else:
                out.append(f"<presence from='{sender}' type='unavailable'/>".encode())
    return out


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.root)
    from purplegw.protocols.base import AccountCredentials, SessionContext
    from purplegw.protocols.xmpp.session import XmppSession

    loop = asyncio.new_event_loop()
    session = XmppSession(
        AccountCredentials(1, "alice@sip.test", "alice@example.org/gw", "xmpp", "pw"),
        SessionContext(loop=loop, events=_Sink(), config={}),  # type: ignore[arg-type]
    )

    async def build() -> Any:
        return session._build_client()  # the bench drives the client directly

    client = loop.run_until_complete(build())
    session.client = client
    client.transport = _Transport()
    client.init_parser()
    client.data_received(HEADER)
    online = stanzas(args.contacts, args.resources, "available")
    offline = stanzas(args.contacts, args.resources, "unavailable")
    # Warm-up: a contact outside the measured ones, so caches and pools exist.
    for data in stanzas(1, 1, "available"):
        client.data_received(data.replace(b"c0@", b"warm@"))
    loop.run_until_complete(asyncio.sleep(0))
    result: dict[str, float] = {}
    if args.trace:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
    started = time.process_time()
    for data in online:
        client.data_received(data)
    loop.run_until_complete(asyncio.sleep(0))
    cpu = time.process_time() - started
    if args.trace:
        gc.collect()
        after = tracemalloc.take_snapshot()
        held = sum(s.size_diff for s in after.compare_to(before, "filename"))
        result["kib_per_contact"] = held / args.contacts / 1024
    for data in offline:
        client.data_received(data)
    loop.run_until_complete(asyncio.sleep(0))
    if args.trace:
        gc.collect()
        gone = tracemalloc.take_snapshot()
        held = sum(s.size_diff for s in gone.compare_to(before, "filename"))
        result["kib_per_contact_offline"] = held / args.contacts / 1024
        tracemalloc.stop()
    else:
        result["us_per_presence"] = 1e6 * cpu / len(online)
    print(json.dumps(result))
    loop.close()


def run_child(root: str, args: argparse.Namespace, *, trace: bool) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--root",
        root,
        "--contacts",
        str(args.contacts),
        "--resources",
        str(args.resources),
    ]
    if trace:
        cmd.append("--trace")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--resources", type=int, default=2)
    parser.add_argument("--against", default="", help="git revision measured as the reference")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tree (median)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(ROOT))
    from tests.kit.worktree import compared_trees

    with compared_trees(args.against, "purplegw-bench-presence-") as roots:
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in roots}
        for _ in range(args.repeat):  # alternating: a change of load hits both trees
            for label, root in roots.items():
                runs[label].append(run_child(root, args, trace=False))
                runs[label].append(run_child(root, args, trace=True))
    report(runs, args)


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    def median(label: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[label] if key in run)

    labels = list(runs)
    ref = labels[0]
    print(
        f"{args.contacts} contacts x {args.resources} resources sending presence to one account, "
        f"median of {args.repeat} runs per tree; ratio against the first row"
    )
    print(
        f"{'tree':>12} | {'KiB/contact online':>18} {'ratio':>6} | {'after offline':>13} | "
        f"{'CPU us/presence':>15} {'ratio':>6}"
    )
    for label in labels:
        kib, off, cpu = (
            median(label, "kib_per_contact"),
            median(label, "kib_per_contact_offline"),
            median(label, "us_per_presence"),
        )
        kib_ratio = kib / median(ref, "kib_per_contact")
        cpu_ratio = cpu / median(ref, "us_per_presence")
        print(
            f"{label:>12} | {kib:18.2f} {kib_ratio:6.2f} | {off:13.2f} | "
            f"{cpu:15.1f} {cpu_ratio:6.2f}"
        )


if __name__ == "__main__":
    main()
