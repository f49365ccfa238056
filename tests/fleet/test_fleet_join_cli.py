"""`meshcd proxy join` as a real process: bootstrap, push, ACK; SIGKILL and restart without
a controller (the persisted config serves at once); the controller comes back and resyncs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path

from fleet_helpers import Controller, desired, now, run, until

from reconciler.fleet import ProxyState

ROOT = Path(__file__).resolve().parents[2]


async def _spawn(args: list[str]) -> tuple[asyncio.subprocess.Process, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy_runtime", "join", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    seen = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        seen.append(line)
        if not line:
            raise AssertionError("proxy exited early:\n" + "".join(seen))
        m = re.search(r"admin on 127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, int(m.group(1))


async def _get(port: int, path: str) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    return await asyncio.to_thread(get)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    await proc.wait()


def test_join_run_kill_restart(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        boot = await ctl.start_bootstrap()
        port = fleet.bound_port
        token = ctl.tokens.create("web", "shop", now=now()).token
        state = tmp_path / "proxy"
        args = ["--service", "web", "--namespace", "shop", "--state-dir", str(state),
                "--admin-port", "0", "--proxy-id", "web-1", "--labels", "track=canary"]
        proc, admin = await _spawn(["--controller", boot.url, "--token", token,
                                    "--ca-fingerprint", "sha256:" + ctl.ca.bundle_fingerprint(), *args])
        procs = [proc]
        try:
            await until(lambda: fleet.connected() == ["web-1"], 20, "join")
            assert fleet.entry("web-1").labels == {"track": "canary"}  # type: ignore[union-attr]
            status, _ = await _get(admin, "/ready")
            assert status == 503  # nothing applied yet
            d = desired(1)
            fleet.set_desired({"web-1": d})
            assert (await fleet.wait_for_acks({"web-1": d.version}, 15))["web-1"].status == "acked"
            status, body = await _get(admin, "/config_dump")
            dump = json.loads(body)
            assert dump["revision"] == "rev1"
            assert dump["snapshot"]["identity"]["privateKeyPem"] == "[redacted]"
            status, body = await _get(admin, "/agent")
            assert json.loads(body)["configVersion"] == d.version
            # SIGKILL the proxy, and take the controller away too
            await _kill(proc)
            await ctl.stop()
            # restart without a token: the certificate in the state dir is valid, the
            # persisted config is served before any controller is reached
            proc, admin = await _spawn(args)
            procs.append(proc)
            status, body = await _get(admin, "/ready")
            assert status == 200
            status, body = await _get(admin, "/config_dump")
            assert json.loads(body)["revision"] == "rev1"
            # the controller returns on the same port: the proxy reconnects and reports rev1
            ctl2 = Controller(tmp_path / "ctl", epoch=2)
            fleet2 = await ctl2.start(port=port)
            try:
                assert fleet2.entry("web-1").state is ProxyState.DISCONNECTED  # type: ignore[union-attr]
                await until(lambda: fleet2.connected() == ["web-1"], 40, "reconnect")
                assert ctl2.hellos[-1].running_version == d.version
                d2 = desired(2)
                fleet2.set_desired({"web-1": d2})
                assert (await fleet2.wait_for_acks({"web-1": d2.version}, 15))["web-1"].status == "acked"
                # SIGTERM drains and exits 0
                proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 20) == 0
                await until(lambda: fleet2.connected() == [], 10, "disconnect")
            finally:
                await ctl2.stop()
        finally:
            for p in procs:
                await _kill(p)
            await ctl.stop()

    run(main(), timeout=120)


def test_join_refused_token_exits_2(tmp_path: Path) -> None:
    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        await ctl.start()
        boot = await ctl.start_bootstrap()
        try:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy_runtime", "join", "--controller", boot.url,
                "--token", "mjt_bogus", "--service", "web", "--ca-fingerprint",
                "sha256:" + ctl.ca.bundle_fingerprint(), "--state-dir", str(tmp_path / "p"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            _out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 2
            assert b"join token refused: unknown" in err
            # without a certificate and without a token: a usage error
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy_runtime", "join", "--service", "web",
                "--state-dir", str(tmp_path / "p"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            _out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 2 and b"--token" in err
            # a reconnect cap of zero would spin on a dead controller: refused up front
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy_runtime", "join", "--service", "web",
                "--state-dir", str(tmp_path / "p"), "--reconnect-max", "0",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
            _out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 2 and b"--reconnect-max" in err, err
        finally:
            await ctl.stop()

    run(main(), timeout=90)
