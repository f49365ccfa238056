"""`make demo`'s story, unattended (`run_demo.py --smoke`): controller, apps and proxies come
up under a steady load; a good route change is promoted stage by stage to every affected
proxy; a bad one (a fault that aborts most of catalog's reads) is caught by the canary,
rejected, and every proxy is back on the config it ran before, with traffic flowing again.
The demo exits 1 (and this test fails) if the canary lets the bad route through.

The demo uses the example's fixed ports (that is the point of it), so it runs in a network
namespace of its own (tests/support/netns.py), beside a `make demo` on this machine. Then a
second run on the same directory reuses it: the commits and the audit trail are kept."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pygit2
from netns import netns_prefix

ROOT = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, str(ROOT / "demo" / "run_demo.py")]


def _isolated(argv: list[str]) -> list[str]:
    # Without namespaces (not root, no user namespaces) the demo shares the host's ports:
    # it then waits up to 60 s for the example's ports and fails if another demo holds them.
    prefix = netns_prefix()
    return [*prefix, *argv] if prefix is not None else argv


def test_demo_smoke_canary_catches_a_bad_route(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    done = subprocess.run(
        _isolated([*DEMO, "--smoke", "--dir", str(demo_dir), "--api-port", "0"]),
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    out = done.stdout
    assert done.returncode == 0, out[-6000:] + done.stderr[-4000:]
    assert re.search(r"revision #2 \(\w+\) deployed, outcome promoted", out), out[-6000:]
    assert re.search(r"revision #3 \(\w+\) rejected, outcome rolled_back", out), out[-6000:]
    assert re.search(r"rollout\.judged at [\d:.]+ UTC: stage 1, .*Failed -> roll back", out)
    assert "proxies on their old config" in out
    # the proxies are Envoy sidecars, and Envoy's own counters saw the bad route's 503s
    assert "data plane: Envoy sidecars" in out, out[-6000:]
    m = re.search(r"Envoy's own counters .*?: (\d+) of (\d+) requests answered 5xx", out)
    assert m and int(m.group(1)) > 0, out[-6000:]
    # `meshcd history` as printed by the demo: the bad revision rejected, the good deployed
    assert re.search(r"^\s+3\s+\w+\s+rejected\s+rolled_back", out, re.M), out[-6000:]
    assert re.search(r"^\s+2\s+\w+\s+deployed\s+promoted", out, re.M), out[-6000:]
    assert "smoke test passed" in out

    first = _audit(demo_dir)
    assert any(kind == "rollout.judged" for _, kind, _ in first)

    # --smoke again on the same directory refuses and touches nothing
    bare = pygit2.Repository(str(demo_dir / "mesh-config.git"))
    head = str(bare.references["refs/heads/main"].target)
    again = subprocess.run([*DEMO, "--smoke", "--dir", str(demo_dir)], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)
    assert again.returncode == 1 and "--fresh" in again.stdout, again.stdout + again.stderr
    assert str(bare.references["refs/heads/main"].target) == head

    # `make demo` again: the directory (commits, store, audit) is reused, not deleted
    proc = subprocess.Popen(_isolated([*DEMO, "--dir", str(demo_dir), "--api-port", "0"]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    try:
        end = time.monotonic() + 150
        while not any("meshcd is running" in line for line in lines):
            assert proc.poll() is None, "".join(lines)[-6000:]
            assert time.monotonic() < end, "".join(lines)[-6000:]
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        reader.join(10)
    out = "".join(lines)
    assert rc == 0, out[-6000:]
    assert "reusing" in out and "STEP 1" not in out, out[-6000:]
    assert re.search(r"proxies SYNCED on revision #2 ", out), out[-6000:]
    assert str(bare.references["refs/heads/main"].target) == head
    # the first run's audit trail and revisions are still there, the chain intact
    assert _audit(demo_dir)[: len(first)] == first and len(_audit(demo_dir)) > len(first)
    verify = subprocess.run([str(Path(sys.executable).parent / "meshcd"), "audit", "verify",
                             "--store", f"sqlite:///{demo_dir / 'data' / 'meshcd.db'}"],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stdout + verify.stderr


def _audit(demo_dir: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(demo_dir / "data" / "meshcd.db") as db:
        return list(db.execute("SELECT seq, kind, hash FROM audit_records ORDER BY seq"))
