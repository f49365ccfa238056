"""`make demo`'s main path, unattended: controller, apps and proxies come up, a pushed route
change reaches every affected proxy, traffic flows before and after."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_smoke_push_reaches_every_proxy(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "run_demo.py"), "--smoke", "--dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=400, cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
