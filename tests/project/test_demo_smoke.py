"""`make demo`'s story, unattended (`run_demo.py --smoke`): controller, apps and proxies come
up under a steady load; a good route change is promoted stage by stage to every affected
proxy; a bad one (a fault that aborts most of catalog's reads) is caught by the canary,
rejected, and every proxy is back on the config it ran before, with traffic flowing again.
The demo exits 1 (and this test fails) if the canary lets the bad route through."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_smoke_canary_catches_a_bad_route(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run_demo.py"), "--smoke",
         "--dir", str(tmp_path / "demo"), "--api-port", "0"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    out = done.stdout
    assert done.returncode == 0, out[-6000:] + done.stderr[-4000:]
    assert re.search(r"revision #2 \(\w+\) deployed, outcome promoted", out), out[-6000:]
    assert re.search(r"revision #3 \(\w+\) rejected, outcome rolled_back", out), out[-6000:]
    assert re.search(r"rollout\.judged at [\d:.]+ UTC: stage 1, .*Failed -> roll back", out)
    assert "proxies on their old config" in out
    # `meshcd history` as printed by the demo: the bad revision rejected, the good deployed
    assert re.search(r"^\s+3\s+\w+\s+rejected\s+rolled_back", out, re.M), out[-6000:]
    assert re.search(r"^\s+2\s+\w+\s+deployed\s+promoted", out, re.M), out[-6000:]
    assert "smoke test passed" in out
