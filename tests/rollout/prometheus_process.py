"""A real Prometheus (Debian's /usr/bin/prometheus) for the tests: 1 s scrapes of static
targets, TSDB in a temporary directory, on 127.0.0.1 at a port picked by the caller. Missing
binary: the test skips, or fails when CI is set."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def require_prometheus() -> None:
    if not os.path.exists(PROMETHEUS):
        if os.environ.get("CI"):
            pytest.fail(f"{PROMETHEUS} is missing (CI must have Debian's prometheus package)")
        pytest.skip(f"{PROMETHEUS} is not installed (Debian package prometheus)")


class PrometheusProcess:
    def __init__(self, workdir: Path, port: int, targets: list[str]) -> None:
        self.workdir, self.port = workdir, port
        self.url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = workdir / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: proxies\n"
            "    scrape_interval: 1s\n"
            f"    static_configs: [{{targets: [{', '.join(repr(t) for t in targets)}]}}]\n")
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> PrometheusProcess:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not start: " + self.log()[-2000:])
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()
