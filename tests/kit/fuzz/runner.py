"""The seeded random engine: run a target for a wall-clock budget.

Every input the engine tries is the target's seeds first, then mutations of
the pool (seeds plus inputs that produced a new outcome signature).  The
sequence of inputs depends on ``seed`` and the target name only, so a run is
reproduced by its seed; a crashing input is also written to ``crash_dir`` as
``<target>-<sha1>.bin`` with a ``.txt`` beside it (traceback and op trace).
Replay one with ``python -m tests.kit.fuzz --replay <file>``.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .mutate import mutate

if TYPE_CHECKING:
    from pathlib import Path

    from .target import Target

logger = logging.getLogger(__name__)

__all__ = ["Crash", "RunResult", "describe_crash", "fuzz", "replay"]

#: one input running longer than this counts as a crash (a hang, e.g. a regex blow-up)
SLOW_INPUT_SECONDS = 5.0
_MAX_POOL = 4096


@dataclass
class Crash:
    target: str
    data: bytes
    error: str
    trace: list[str]
    path: Path | None = None

    def message(self) -> str:
        ops = "\n".join(self.trace[-40:])
        return (
            f"fuzz target {self.target} crashed; input saved to {self.path}\n"
            f"reproduce: python -m tests.kit.fuzz --replay {self.path}\n"
            f"input ({len(self.data)} bytes): {self.data[:2000]!r}\n"
            f"operations (last 40):\n{ops}\n{self.error}"
        )


@dataclass
class RunResult:
    target: str
    seed: int
    inputs: int = 0
    seconds: float = 0.0
    pool: int = 0
    signatures: int = 0
    slowest: float = 0.0
    coverage: int | None = None  # libFuzzer's "cov:" (atheris engine only)
    crashes: list[Crash] = field(default_factory=list)

    def line(self) -> str:
        found = (
            f"outcomes {self.signatures:>5}" if self.coverage is None else f"cov {self.coverage:>8}"
        )
        return (
            f"fuzz {self.target:<22} inputs {self.inputs:>8}  crashes {len(self.crashes)}  "
            f"seconds {self.seconds:5.1f}  {found}  seed {self.seed}"
        )


def describe_crash(target: Target, data: bytes) -> Crash | None:
    """Run ``data`` once with tracing; a Crash if it fails, else None."""
    trace: list[str] = []
    try:
        target.run(data, trace)
    except Exception:  # noqa: BLE001 - any escape is the finding
        return Crash(target.name, data, traceback.format_exc(), trace)
    return None


def _save(crash: Crash, crash_dir: Path) -> None:
    crash_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{crash.target}-{hashlib.sha1(crash.data).hexdigest()[:16]}"  # noqa: S324 - a name
    path = crash_dir / f"{stem}.bin"
    path.write_bytes(crash.data)
    (crash_dir / f"{stem}.txt").write_text(
        "\n".join([*crash.trace, "", crash.error]), encoding="utf-8", errors="replace"
    )
    crash.path = path


def _where(exc: BaseException) -> str:
    """Crash identity: exception type and innermost frame, so one bug counts once."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"{type(exc).__name__}@{last.filename}:{last.lineno}" if last else type(exc).__name__


def fuzz(
    target: Target,
    *,
    seconds: float,
    seed: int,
    crash_dir: Path,
    max_crashes: int = 5,
) -> RunResult:
    """Run ``target`` for ``seconds`` of wall-clock time; stop early after ``max_crashes``."""
    rng = random.Random(f"{seed}:{target.name}")  # reproducible by design
    result = RunResult(target.name, seed)
    pool = [s[: target.max_len] for s in target.seeds()]
    seen: set[str] = set()
    known_crashes: set[str] = set()
    pending = list(pool)
    start = time.monotonic()
    deadline = start + seconds
    while True:
        now = time.monotonic()
        if now >= deadline and not pending:
            break
        data = (
            pending.pop(0)
            if pending
            else mutate(
                rng, rng.choice(pool), pool, dictionary=target.dictionary, max_len=target.max_len
            )
        )
        t0 = time.monotonic()
        try:
            signature = target.run(data, None)
        except Exception as exc:  # noqa: BLE001 - any escape is the finding
            where = _where(exc)
            result.inputs += 1
            if where in known_crashes:
                continue
            known_crashes.add(where)
            crash = describe_crash(target, data) or Crash(
                target.name, data, traceback.format_exc(), []
            )
            _save(crash, crash_dir)
            result.crashes.append(crash)
            logger.info("%s", crash.message())
            if len(result.crashes) >= max_crashes:
                break
            continue
        elapsed = time.monotonic() - t0
        result.slowest = max(result.slowest, elapsed)
        result.inputs += 1
        if elapsed > SLOW_INPUT_SECONDS:
            crash = Crash(target.name, data, f"slow input: {elapsed:.1f} s", [])
            _save(crash, crash_dir)
            result.crashes.append(crash)
        if signature not in seen:
            seen.add(signature)
            if len(pool) < _MAX_POOL:
                pool.append(data)
            else:
                pool[rng.randrange(len(pool))] = data
    result.seconds = time.monotonic() - start
    result.pool = len(pool)
    result.signatures = len(seen)
    return result


def replay(target: Target, data: bytes) -> Crash | None:
    return describe_crash(target, data)
