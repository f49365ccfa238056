"""`meshcd proxy run` as a real process: clear errors, SIGHUP reload, SIGTERM drain, restart
from the state dir."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from proxy_harness import Backend, cluster, get, outbound_snapshot, route, run

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MESHCD = [sys.executable, "-c", "import sys; from reconciler.cli.main import main; sys.argv[0] = 'meshcd'; main()"]


def _meshcd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MESHCD, *args], capture_output=True, text=True, env=ENV, timeout=60)


def test_missing_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    p = _meshcd("proxy", "run", "--config", str(tmp_path / "nope.json"))
    assert p.returncode == 2
    assert "cannot read" in p.stderr and "nope.json" in p.stderr
    assert "Traceback" not in p.stderr


def test_invalid_file_exits_2_with_the_path_of_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(outbound_snapshot([route("missing")], [cluster("A", "127.0.0.1:1")])))
    p = _meshcd("proxy", "run", "--config", str(bad))
    assert p.returncode == 2
    assert "unknown cluster 'missing'" in p.stderr and "outbound.virtualHosts[0].routes[0]" in p.stderr
    assert "Traceback" not in p.stderr
    bad.write_text("{")
    p = _meshcd("proxy", "run", "--config", str(bad))
    assert p.returncode == 2 and "not valid JSON" in p.stderr and "Traceback" not in p.stderr


class _Proc:
    def __init__(self, *args: str) -> None:
        # stderr (the access log) goes to a file: an unread pipe would fill up and block the proxy
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "proxy_runtime", "run", "--admin-port", "0", *args],
            stdout=subprocess.PIPE, stderr=self.err, text=True, env=ENV,
        )
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        m = re.search(r"admin on 127\.0\.0\.1:(\d+); listeners outbound=(\d+)", line)
        if not m:
            self.err.seek(0)
            raise AssertionError(f"proxy did not start: {line!r} {self.err.read()[-2000:]!r}")
        self.admin = int(m.group(1))
        self.port = int(m.group(2))

    def line(self) -> str:
        assert self.p.stdout is not None
        return self.p.stdout.readline()

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)
        self.err.close()


def test_run_reload_drain_and_restart_from_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "snap.json"

    async def body() -> None:
        a, b = await Backend("a").start(), await Backend("b").start()
        clusters = [cluster("A", a.address), cluster("B", b.address)]
        config.write_text(json.dumps(outbound_snapshot([route("A")], clusters)))
        proc = await asyncio.to_thread(_Proc, "--config", str(config), "--state-dir", str(state),
                                       "--drain-seconds", "5")
        try:
            assert (await get(proc.port, "/one")).headers["x-backend"] == "a"
            assert (await get(proc.admin, "/ready")).status == 200
            # SIGHUP with a broken file: NACK, old config keeps serving
            config.write_text(json.dumps(outbound_snapshot([route("nope")], clusters)))
            proc.p.send_signal(signal.SIGHUP)
            assert "reload NACK" in await asyncio.to_thread(proc.line)
            assert (await get(proc.port, "/two")).headers["x-backend"] == "a"
            # SIGHUP with a good file: applied
            config.write_text(json.dumps(outbound_snapshot([route("B")], clusters)))
            proc.p.send_signal(signal.SIGHUP)
            assert "reloaded config" in await asyncio.to_thread(proc.line)
            assert (await get(proc.port, "/three")).headers["x-backend"] == "b"
            # SIGTERM while a request is in flight: it completes, then the process exits 0
            slow = asyncio.ensure_future(get(proc.port, "/slow/700"))
            await asyncio.sleep(0.2)
            proc.p.send_signal(signal.SIGTERM)
            r = await slow
            assert r.status == 200 and r.body == b"slow"
            assert await asyncio.to_thread(proc.p.wait, 15) == 0
            out = proc.p.stdout.read() if proc.p.stdout else ""
            assert "drained (clean)" in out
        finally:
            proc.stop()
        # restart with only the state dir: the last good config (B) serves at once
        proc2 = await asyncio.to_thread(_Proc, "--state-dir", str(state))
        try:
            assert (await get(proc2.port, "/four")).headers["x-backend"] == "b"
        finally:
            proc2.p.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc2.p.wait, 15)
            proc2.stop()

    run(body)


@pytest.mark.skipif(not Path("/usr/bin/wrk").exists(), reason="wrk is not installed")
def test_config_swaps_under_wrk_load_lose_no_request(tmp_path: Path) -> None:
    config = tmp_path / "snap.json"

    async def body() -> None:
        a, b = await Backend("a").start(), await Backend("b").start()
        clusters = [cluster("A", a.address), cluster("B", b.address)]
        to_a = json.dumps(outbound_snapshot([route("A")], clusters))
        to_b = json.dumps(outbound_snapshot([route("B")], clusters))
        config.write_text(to_a)
        proc = await asyncio.to_thread(_Proc, "--config", str(config))
        try:
            wrk = await asyncio.create_subprocess_exec(
                "/usr/bin/wrk", "-t1", "-c8", "-d3s", "-H", "Host: svc", f"http://127.0.0.1:{proc.port}/load",
                stdout=asyncio.subprocess.PIPE)
            for i in range(8):
                await asyncio.sleep(0.3)
                config.write_text(to_b if i % 2 == 0 else to_a)
                proc.p.send_signal(signal.SIGHUP)
                assert "reloaded config" in await asyncio.to_thread(proc.line)
            out = (await wrk.communicate())[0].decode()
            total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
            assert total > 100, out
            assert "Non-2xx" not in out and "Socket errors" not in out, out
            assert len(a.seen) + len(b.seen) >= total
            assert len(a.seen) > 0 and len(b.seen) > 0
        finally:
            proc.stop()

    run(body)
