"""Instructions per XMPP login, this tree against a reference, counted by callgrind.

    .venv/bin/python bench/login_instructions.py [--accounts 60] [--against main] [--restart]

The logins of bench/account_memory.py (throw-away Prosody, ``internal_hashed``,
STARTTLS, the production ``XmppSession``, roster and initial presence), each
tree's child process run under valgrind's callgrind with instrumentation
switched on (``callgrind_control``) for the measured logins only: warm-up,
imports and logouts are left out.  ``--restart`` measures second logins on
stored SCRAM keys (bench/account_memory.py ``--restart``); without it a login
includes the PBKDF2 derivation of its key.

Instruction counts do not move with the machine's load, CPU seconds do (by
+-15 % between runs of the same tree here).  They are user space only: the
kernel's share (``send``/``recv`` syscalls, loop wake-ups) is not in them, and
neither is Prosody's side (bench/account_memory.py measures both in CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 4096


def load_account_memory() -> Any:
    spec = importlib.util.spec_from_file_location(
        "account_memory", Path(__file__).with_name("account_memory.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, args.root)
    bench = load_account_memory()
    switched = 0

    def process_time() -> float:
        # account_memory.login_all reads the CPU clock right before and right
        # after the measured logins: instrumentation on, then off.
        nonlocal switched
        switched += 1
        state = "on" if switched == 1 else "off"
        subprocess.run(
            ["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True
        )
        return time.process_time()

    bench.time = types.SimpleNamespace(
        process_time=process_time, perf_counter=time.perf_counter, sleep=time.sleep
    )
    users = [
        (f"mem{i}@localhost", f"pw{i}-mem") for i in range(args.accounts + bench.WARM_ACCOUNTS)
    ]
    result = asyncio.run(
        bench.login_all(args.server, args.ca_file, users, trace=False, restart=args.restart)
    )
    print(json.dumps(result))


def instructions(root: str, prosody: Any, args: argparse.Namespace, out: Path) -> int:
    prosody.restart()
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}",
        sys.executable,
        __file__,
        "--child",
        "--root",
        root,
        "--accounts",
        str(args.accounts),
        "--server",
        prosody.address,
        "--ca-file",
        prosody.ca_file,
    ]
    if args.restart:
        cmd.append("--restart")
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    # With instrumentation switched on late, "summary:" (the header's) stays
    # 0; "totals:" at the end has the count.
    for line in reversed(out.read_text().splitlines()):
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=60)
    parser.add_argument("--against", default="main", help="git revision measured as reference")
    parser.add_argument("--restart", action="store_true", help="second logins, on stored keys")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", default=str(ROOT), help=argparse.SUPPRESS)
    parser.add_argument("--server", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    sys.path.insert(0, str(ROOT))
    from tests.kit.prosody import Prosody

    with tempfile.TemporaryDirectory(prefix="purplegw-bench-login-") as tmp:
        other = Path(tmp) / "against"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), args.against],
            check=True,
            capture_output=True,
        )
        roots = {args.against: str(other), "this tree": str(ROOT)}
        counts: dict[str, int] = {}
        try:
            with Prosody(log_level="warn", hashed=True, scram_iterations=ITERATIONS) as prosody:
                prosody.create_users(
                    args.accounts + load_account_memory().WARM_ACCOUNTS, prefix="mem"
                )
                for n, (label, root) in enumerate(roots.items()):
                    total = instructions(root, prosody, args, Path(tmp) / f"callgrind.{n}")
                    counts[label] = total // args.accounts
                    print(label, counts[label], file=sys.stderr, flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False
            )
    kind = "restart: second logins, on stored SCRAM keys" if args.restart else "first logins"
    print(f"{args.accounts} XMPP logins under callgrind ({kind}); ratio against the first row")
    print(f"{'tree':<12} {'instructions/login':>18} {'ratio':>6}")
    reference = counts[args.against]
    for label, count in counts.items():
        print(f"{label:<12} {count:>18,} {count / reference:>6.3f}")


if __name__ == "__main__":
    main()
