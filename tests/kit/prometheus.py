"""Launch a real Prometheus server on loopback for tests (Debian package ``prometheus``).

It runs in the foreground with a temp config (one scrape job, 1 s scrape
interval, targets on loopback only) and its TSDB in a temp directory, on a
free 127.0.0.1 port; ``query()`` asks its HTTP API (``/api/v1/query``) as
Grafana or an operator would.

Usage::

    with Prometheus(targets=["127.0.0.1:9464"]) as prom:
        prom.wait_for('purplegw_accounts{state="connected"}', lambda v: v == 2)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from tests.kit.launcher import launch, stop_process, wait_listening
from tests.kit.ports import free_port

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterable

PROMETHEUS_BINARY = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    """Path of the prometheus binary, or None when it is not installed."""
    if os.access(PROMETHEUS_BINARY, os.X_OK):
        return PROMETHEUS_BINARY
    return shutil.which("prometheus")


class PrometheusError(RuntimeError):
    pass


class Prometheus:
    """A running Prometheus scraping ``targets`` (``host:port``, loopback only)."""

    def __init__(
        self,
        *,
        targets: Iterable[str],
        job: str = "purplegw",
        scrape_interval: float = 1.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.targets = list(targets)
        for target in self.targets:
            if not (target.startswith(("127.", "[::1]", "localhost:"))):
                raise ValueError(f"tests scrape loopback only, not {target!r}")
        self.job = job
        self.scrape_interval = scrape_interval
        self.host = host
        self.port = free_port("tcp", host)
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._output: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _config(self) -> str:
        interval = f"{int(self.scrape_interval * 1000)}ms"
        targets = ", ".join(f"'{t}'" for t in self.targets)
        return (
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            "scrape_configs:\n"
            f"  - job_name: {self.job}\n"
            f"    scrape_interval: {interval}\n"
            f"    scrape_timeout: {interval}\n"
            "    static_configs:\n"
            f"      - targets: [{targets}]\n"
        )

    def start(self, timeout: float = 30.0) -> Prometheus:
        binary = prometheus_binary()
        if binary is None:
            raise PrometheusError("prometheus is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="purplegw-prometheus-")
        run_dir = Path(self._tmp.name)
        conf = run_dir / "prometheus.yml"
        conf.write_text(self._config())
        self._output = run_dir / "prometheus.log"
        self.proc = launch(
            [
                binary,
                f"--config.file={conf}",
                f"--storage.tsdb.path={run_dir / 'data'}",
                f"--web.listen-address={self.host}:{self.port}",
                # The package's default console paths point into /etc and /usr/share.
                f"--web.console.templates={run_dir}",
                f"--web.console.libraries={run_dir}",
            ],
            cwd=run_dir,
            output=self._output,
        )
        try:
            wait_listening(
                self.proc,
                self.host,
                [self.port],
                timeout,
                lambda why: PrometheusError(f"prometheus {why}:\n{self.log()}"),
            )
            self._wait_ready(timeout)
        except PrometheusError:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise PrometheusError(f"prometheus not ready within {timeout}s:\n{self.log()}")

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as answer:  # noqa: S310
            body = json.load(answer)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant PromQL query: (labels, value) per series of the vector."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: expected a vector, got {data['resultType']}")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait_for(
        self,
        expr: str,
        condition: Callable[[list[tuple[dict[str, str], float]]], bool],
        timeout: float = 30.0,
    ) -> list[tuple[dict[str, str], float]]:
        """Poll ``query(expr)`` until ``condition`` holds for its result."""
        deadline = time.monotonic() + timeout
        result: list[tuple[dict[str, str], float]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if condition(result):
                return result
            time.sleep(0.25)
        raise PrometheusError(
            f"{expr}: condition not met after {timeout}s, last {result}; "
            f"targets {self.api('targets')['activeTargets']}"
        )

    def log(self) -> str:
        if self._output is not None and self._output.exists():
            return self._output.read_text(errors="replace")[-6000:]
        return ""

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
