"""Run sipp (Debian ``sip-tester``) scenarios against a loopback SIP server.

sipp exits 0 only when every call of its scenario passed; :func:`run_sipp`
returns that exit code together with the final line of sipp's statistics file
(``-trace_stat``) and, on request, the individual response times
(``-trace_rtt``) so tests and benchmarks can assert on them.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.kit.ports import free_port

logger = logging.getLogger(__name__)

SIPP_BINARY = "/usr/bin/sipp"

TRANSPORT_FLAGS = {"udp": "u1", "tcp": "t1", "tls": "l1"}


def sipp_binary() -> str | None:
    """Path of sipp, or None when sip-tester is not installed."""
    if os.access(SIPP_BINARY, os.X_OK):
        return SIPP_BINARY
    return shutil.which("sipp")


@dataclass
class SippResult:
    returncode: int
    stats: dict[str, str]
    stdout: str
    stderr: str
    errors: str = ""
    response_times_ms: list[float] = field(default_factory=list)

    def count(self, column: str) -> int:
        """A cumulative counter from the stats file, e.g. ``count("SuccessfulCall")``."""
        return int(self.stats.get(f"{column}(C)", "0") or 0)

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.count("FailedCall")

    @property
    def retransmissions(self) -> int:
        return self.count("Retransmissions")

    def describe(self) -> str:
        return (
            f"sipp rc={self.returncode} ok={self.successful} failed={self.failed} "
            f"retrans={self.retransmissions}\nstderr: {self.stderr[-1500:]}\n"
            f"errors: {self.errors[-3000:]}"
        )


def run_sipp(
    scenario: str | Path,
    host: str,
    port: int,
    *,
    transport: str = "udp",
    service: str = "service",
    calls: int = 1,
    rate: float | None = None,
    rate_period_ms: int = 1000,
    max_concurrent: int | None = None,
    timeout: float = 30.0,
    cpu: int | None = None,
    trace_rtt: bool = False,
    extra_args: tuple[str, ...] = (),
) -> SippResult:
    """Run ``calls`` calls of ``scenario`` against ``host:port`` and wait for sipp to finish."""
    binary = sipp_binary()
    if binary is None:
        raise FileNotFoundError("sipp (sip-tester) is not installed")
    scenario = Path(scenario).resolve()
    with tempfile.TemporaryDirectory(prefix="purplegw-sipp-") as tmp:
        work = Path(tmp)
        stats_file = work / "stats.csv"
        error_file = work / "errors.log"
        local_host = "::1" if ":" in host else "127.0.0.1"
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        cmd = [
            binary,
            target,
            "-sf",
            str(scenario),
            "-m",
            str(calls),
            "-s",
            service,
            "-t",
            TRANSPORT_FLAGS[transport],
            "-i",
            local_host,
            "-p",
            str(free_port("both", local_host)),
            "-cp",
            str(free_port("udp")),
            "-nostdin",
            "-timeout",
            f"{int(timeout)}s",
            "-timeout_error",
            "-recv_timeout",
            "10000",
            "-trace_stat",
            "-stf",
            str(stats_file),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(error_file),
        ]
        if rate is not None:
            cmd += ["-r", str(rate), "-rp", str(rate_period_ms)]
        if max_concurrent is not None:
            cmd += ["-l", str(max_concurrent)]
        if trace_rtt:
            # sipp writes response times in batches of rtt_freq calls and drops a
            # last partial batch: use a batch size that divides the call count
            freq = max(d for d in range(1, min(calls, 1000) + 1) if calls % d == 0)
            cmd += ["-trace_rtt", "-rtt_freq", str(freq)]
        cmd += list(extra_args)
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        logger.debug("running %s", cmd)
        proc = subprocess.run(cmd, cwd=work, capture_output=True, timeout=timeout + 30, check=False)
        result = SippResult(
            returncode=proc.returncode,
            stats=_last_stats_row(stats_file),
            stdout=proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace"),
            errors=error_file.read_text(errors="replace") if error_file.exists() else "",
        )
        if trace_rtt:
            result.response_times_ms = _response_times(work)
        return result


def _last_stats_row(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    with path.open(newline="", errors="replace") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return dict(zip(header, last, strict=False))


def _response_times(work: Path) -> list[float]:
    times: list[float] = []
    for path in work.glob("*_rtt.csv"):
        with path.open(newline="", errors="replace") as f:
            for row in csv.reader(f, delimiter=";"):
                # rows are "date_ms;response_time_ms;rtd_name"; the first is a header
                try:
                    times.append(float(row[1]))
                except (IndexError, ValueError):
                    continue
    return times
