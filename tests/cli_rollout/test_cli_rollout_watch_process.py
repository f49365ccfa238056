"""`meshcd rollout watch` as a real process: Ctrl-C (SIGINT) exits 130 quietly; on a terminal
(a pty) it redraws the screen every interval and ends with the outcome."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from cli_rollout_api import C1, C2, ApiServer

MESHCD = str(Path(sys.executable).parent / "meshcd")
ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("MESHCD_")}
ENV["PYTHONPATH"] = str(ROOT)


def _args(api: ApiServer, *extra: str) -> list[str]:
    return [MESHCD, "rollout", "watch", *extra, "--api", api.url, "--token", "view-secret",
            "--data-dir", "/nonexistent/meshcd"]


def test_ctrl_c_exits_130_quietly(api: ApiServer) -> None:
    api.state.start(2, C2, C1)  # stays in stage 1: nothing advances it
    proc = subprocess.Popen(_args(api, "--interval", "0.1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        end = time.monotonic() + 60
        while api.state.rollout_gets < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "watch never polled"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert err == ""  # no traceback, no "Aborted!"
    assert "stage 1 of 3 (1 proxy, bake 3s): pushing" in out
    assert out.count("rollout of revision 2") == 1  # not a terminal: drawn once, unchanged


def test_on_a_terminal_it_redraws_until_promoted(api: ApiServer) -> None:
    api.state.start(2, C2, C1)
    api.state.advance_on_get = True
    master, slave = pty.openpty()
    proc = subprocess.Popen(_args(api, "--interval", "0.05"), stdout=slave,
                            stderr=subprocess.PIPE, env=ENV)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    out = b"".join(chunks).decode()
    assert code == 0, out
    clears = out.count("\x1b[H\x1b[2J")
    # every poll redraws while it runs (the bake clock moves), plus the final screen
    assert clears >= api.state.rollout_gets, (clears, api.state.rollout_gets)
    assert "Ctrl-C to stop watching (the rollout goes on)" in out
    final = out.rsplit("\x1b[H\x1b[2J", 1)[1]
    assert final.startswith(f"rollout of revision 2 ({C2[:12]}), replacing {C1[:12]}")
    assert "outcome: promoted (revision deployed): every stage passed" in final
    assert final.rstrip().endswith("revision 2: promoted")
