"""`meshcd proxy join --dataplane envoy` as real processes: the controller's fleet stream is
unchanged; snapshots reach a real Envoy over ADS, Envoy presents the agent's SVID over SDS,
a snapshot Envoy refuses is a NACK with Envoy's reason in the ledger, stats flow, SIGTERM
drains Envoy and the agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import ssl
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from envoy_harness import Backend, free_port, needs_envoy, wait_status
from fleet_helpers import TD, Controller, now, run, until

from proxy_runtime.config import model as pc
from proxy_runtime.config import snapshot_to_json
from proxy_runtime.protocol.canonical import compute_version
from reconciler.fleet import DesiredSnapshot

pytestmark = needs_envoy
ROOT = Path(__file__).resolve().parents[2]


def _desired(doc: dict[str, Any], revision: str) -> DesiredSnapshot:
    return DesiredSnapshot(compute_version(doc), revision,
                           json.dumps(doc, separators=(",", ":")).encode())


def _doc(plain: int, strict: int, app: int, *, bad_regex: bool = False) -> dict[str, Any]:
    li = (pc.InboundListener(port=plain, local_address=f"127.0.0.1:{app}", mtls_mode="DISABLE",
                             bind_address="127.0.0.1"),
          pc.InboundListener(port=strict, local_address=f"127.0.0.1:{app}", mtls_mode="STRICT",
                             bind_address="127.0.0.1"))
    outbound = None
    if bad_regex:
        outbound = pc.Outbound(port=free_port(), virtual_hosts=(pc.VirtualHost(
            name="x", domains=("x",), routes=(pc.Route(
                clusters=(pc.WeightedCluster(f"inbound|{plain}"),),
                match=pc.RouteMatch(path=pc.PathMatch(regex="/(a|b|c|d){40}x"))),)),))
    return snapshot_to_json(pc.Snapshot(
        inbound=pc.Inbound(service="web", namespace="shop", listeners=li), outbound=outbound))


async def _spawn(args: list[str]) -> tuple[asyncio.subprocess.Process, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy_runtime", "join", "--dataplane", "envoy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    seen: list[str] = []
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        seen.append(line)
        if not line:
            raise AssertionError("proxy exited early:\n" + "".join(seen))
        m = re.search(r"agent admin on 127\.0\.0\.1:(\d+)", line)
        if m:
            return proc, int(m.group(1))


def _server_spiffe_id(port: int, bundle: bytes) -> str:
    ctx = ssl.create_default_context(cadata=bundle.decode())
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw, \
            ctx.wrap_socket(raw) as tls:
        cert = tls.getpeercert()
    assert cert is not None
    return next(v for k, v in cert["subjectAltName"] if k == "URI")


def test_join_with_envoy_acks_serves_with_its_svid_nacks_with_envoys_reason_and_drains(
        tmp_path: Path) -> None:
    backend = Backend()

    async def main() -> None:
        ctl = Controller(tmp_path / "ctl")
        fleet = await ctl.start()
        boot = await ctl.start_bootstrap()
        token = ctl.tokens.create("web", "shop", now=now()).token
        proc, admin = await _spawn([
            "--controller", boot.url, "--token", token,
            "--ca-fingerprint", "sha256:" + ctl.ca.bundle_fingerprint(),
            "--service", "web", "--namespace", "shop", "--state-dir", str(tmp_path / "proxy"),
            "--admin-port", "0", "--proxy-id", "web-1"])
        try:
            await until(lambda: fleet.connected() == ["web-1"], 20, "join")
            plain, strict = free_port(), free_port()
            d1 = _desired(_doc(plain, strict, backend.port), "rev1")
            fleet.set_desired({"web-1": d1})
            out = (await fleet.wait_for_acks({"web-1": d1.version}, 20))["web-1"]
            assert out.status == "acked", out
            await wait_status(plain, 200, "/hi")
            # the STRICT listener presents the SVID the controller issued, delivered over SDS
            spiffe = await asyncio.to_thread(_server_spiffe_id, strict, ctl.ca.trust_bundle_pem())
            assert spiffe == f"spiffe://{TD}/ns/shop/sa/web"
            # Envoy refuses a regex: NACK with Envoy's own words; the old config serves on
            d2 = _desired(_doc(plain, strict, backend.port, bad_regex=True), "rev2")
            fleet.set_desired({"web-1": d2})
            out = (await fleet.wait_for_acks({"web-1": d2.version}, 20))["web-1"]
            assert out.status == "nacked" and out.error and "program size" in out.error, out
            await wait_status(plain, 200, "/still")
            # per-second stats from Envoy reach the controller over the fleet stream
            await until(lambda: any(w.requests[0] for _, w in ctl.stats), 15,
                        "stats with 2xx")  # requests by class: 2xx, 3xx, 4xx, 5xx
            # Envoy is killed: restarted on the last good config; the controller sees the proxy
            # leave and come back saying it runs d1 (DISCONNECTED, then SYNCED)
            hellos = len(ctl.hellos)
            envoy_pid = int((tmp_path / "proxy" / "envoy" / "envoy.pid").read_text())
            os.kill(envoy_pid, signal.SIGKILL)
            await until(lambda: len(ctl.hellos) > hellos, 15, "hello after Envoy's restart")
            assert ctl.hellos[-1].running_version == d1.version
            await until(lambda: fleet.connected() == ["web-1"], 15, "reconnect")
            await wait_status(plain, 200, "/back")
            assert int((tmp_path / "proxy" / "envoy" / "envoy.pid").read_text()) != envoy_pid
            dump = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{admin}/config_dump", timeout=5).read()))
            assert dump["version"] == d1.version and dump["revision"] == "rev1"
            assert dump["snapshot"]["identity"]["privateKeyPem"] == "[redacted]"
            assert "program size" in dump["last_nack"] and dump["envoy"]["synced"]
            # Prometheus mode: Envoy's own stats and the agent's mesh_config_info
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode())
            assert re.search(r'mesh_config_info\{[^}]*proxy_id="web-1"', text), text[-2000:]
            assert f'version="{d1.version}"' in text
            assert "envoy_http_downstream_rq_xx" in text, text[:2000]
            assert "envoy_server_live" in text
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            with pytest.raises(OSError):  # Envoy drained and stopped with the agent
                socket.create_connection(("127.0.0.1", plain), timeout=1).close()
            assert not (tmp_path / "proxy" / "envoy" / "envoy.pid").exists()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            pid_file = tmp_path / "proxy" / "envoy" / "envoy.pid"
            if pid_file.exists():  # the agent died first: its Envoy serves on, by design
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
            await ctl.stop()

    try:
        run(main(), timeout=150)
    finally:
        backend.close()
