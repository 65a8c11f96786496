"""``python -m tests.kit.fuzz``: the long fuzz run (``make fuzz``) and crash replay.

Examples::

    python -m tests.kit.fuzz --seconds 3600            # all targets, time split evenly
    python -m tests.kit.fuzz --engine random --seed 7 parser-stream
    python -m tests.kit.fuzz --replay var/fuzz/crashes/dialog-0123abcd.bin

The engine is atheris (coverage-guided libFuzzer, ``pip install -e '.[fuzz]'``)
when it is installed, else the seeded random engine the CI test uses.  A line
per target gives the inputs executed and the crashes; the exit status is 1 if
any target crashed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

from . import TARGETS
from .runner import RunResult, fuzz, replay

logger = logging.getLogger(__name__)

_DONE_RE = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")
_ARTIFACT_RE = re.compile(rb"Test unit written to (\S+)")
_COVERAGE_RE = re.compile(rb"#\d+\s+DONE\s+cov: (\d+)")


def _run_atheris(name: str, seconds: float, seed: int, work: Path) -> RunResult:
    crash_dir = work / "crashes"
    crash_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = subprocess.run(  # our own interpreter and module
        [
            sys.executable,
            "-m",
            "tests.kit.fuzz_atheris",
            name,
            str(work / "corpus" / name),
            f"-max_total_time={max(1, round(seconds))}",
            f"-seed={seed or 1}",
            f"-artifact_prefix={crash_dir}/{name}-",
            "-print_final_stats=1",
            "-timeout=5",
            "-rss_limit_mb=2048",
        ],
        capture_output=True,
        check=False,
    )
    result = RunResult(name, seed, seconds=time.monotonic() - start)
    done = _DONE_RE.search(proc.stderr)
    result.inputs = int(done.group(1)) if done else 0
    coverage = _COVERAGE_RE.search(proc.stderr)
    result.coverage = int(coverage.group(1)) if coverage else 0
    if proc.returncode != 0:
        from .runner import Crash

        artifact = _ARTIFACT_RE.search(proc.stderr)
        path = Path(artifact.group(1).decode()) if artifact else None
        data = path.read_bytes() if path and path.exists() else b""
        result.crashes.append(
            Crash(name, data, proc.stderr.decode(errors="replace")[-4000:], [], path)
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kit.fuzz")
    parser.add_argument("targets", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=float, default=60.0, help="total, split over targets")
    parser.add_argument("--seed", default="random", help="an integer, or 'random' (printed)")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("var/fuzz"),
        help="crashes/ and the atheris corpus/ live here",
    )
    parser.add_argument("--replay", type=Path, help="run one saved input and show what it does")
    args = parser.parse_args(argv)

    if args.replay is not None:
        name = next(
            (
                n
                for n in sorted(TARGETS, key=len, reverse=True)
                if args.replay.name.startswith(n + "-")
            ),
            None,
        )
        if name is None:
            parser.error(f"cannot tell the target from the file name {args.replay.name}")
        crash = replay(TARGETS[name], args.replay.read_bytes())
        if crash is None:
            print(f"{name}: no crash")  # a CLI
            return 0
        print("\n".join([*crash.trace, crash.error]))
        return 1

    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {list(TARGETS)}")
    seed = secrets.randbelow(2**31) if args.seed == "random" else int(args.seed)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if importlib.util.find_spec("atheris") else "random"
    share = args.seconds / len(names)
    print(
        f"fuzz: engine {engine}, seed {seed}, {share:.0f} s per target, work dir {args.work_dir}",
        flush=True,
    )
    crashed = False
    for name in names:
        if engine == "atheris":
            result = _run_atheris(name, share, seed, args.work_dir)
        else:
            result = fuzz(
                TARGETS[name], seconds=share, seed=seed, crash_dir=args.work_dir / "crashes"
            )
        print(result.line(), flush=True)
        for crash in result.crashes:
            crashed = True
            print(crash.message(), flush=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
