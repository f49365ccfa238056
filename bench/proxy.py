"""Proxy benchmark: wrk through no proxy, HAProxy, nginx proxy_pass and meshcd's proxy to a
fast nginx backend, then mTLS between two proxies (meshcd -> meshcd vs HAProxy -> HAProxy).

    .venv/bin/python bench/proxy.py [--duration 10] [--connections 32] [--json out.json]

Only 127.0.0.1 traffic. Every proxy runs one worker / one thread with upstream keep-alive.
Equivalent work for meshcd and HAProxy: one route, one path+method authorization check,
metrics on. Needs /usr/sbin/nginx, /usr/sbin/haproxy and /usr/bin/wrk.
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
    return Proc(name, ["/usr/sbin/nginx", "-p", str(prefix), "-c", str(conf)], port)


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
    return Proc(name, ["/usr/sbin/haproxy", "-f", str(cfg)], port)


def meshcd(tmp: Path, name: str, snapshot: dict[str, Any], port: int) -> Proc:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(snapshot))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return Proc(name, [sys.executable, "-m", "proxy_runtime", "run", "--config", str(path),
                       "--admin-port", str(free_port()), "--log-level", "warning"], port, env)


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


# --- wrk ----------------------------------------------------------------------------------

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(port: int, duration: float, connections: int, watch: list[Proc]) -> dict[str, float]:
    argv = ["/usr/bin/wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency",
            f"http://127.0.0.1:{port}{PATH}"]
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
    subprocess.run(["/usr/bin/wrk", "-t1", f"-c{connections}", "-d1s", f"http://127.0.0.1:{port}{PATH}"],
                   capture_output=True, check=False)


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--json", dest="json_path", help="write the results as JSON here")
    ap.add_argument("--only", help="comma-separated subset: none,haproxy,nginx,meshcd,meshcd_outbound,mtls")
    args = ap.parse_args()
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

    def start(p: Proc) -> Proc:
        procs.append(p)
        return p

    def run_case(name: str, port: int, proxies: list[Proc]) -> None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{PATH}", timeout=5) as r:
            r.read()
        time.sleep(0.3)
        for pr in proxies:  # idle: started, config applied, one request served
            idle[pr.name] = pr.rss_mb()
            idle_uss[pr.name] = pr.uss_mb()
        warm(port, args.connections)
        print(f"  {name}: wrk {args.duration:g}s x {args.connections} connections ...", flush=True)
        results[name] = wrk(port, args.duration, args.connections, proxies)
        results[name]["load_avg_1m"] = round(os.getloadavg()[0], 2)
        for pr in proxies:
            pr.stop()

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
        be.stop()
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    report = build_report(results, idle, idle_uss, args)
    print_table(report, results)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json_path}")
    return 0


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def build_report(results: dict[str, dict[str, Any]], idle: dict[str, float],
                 idle_uss: dict[str, float], args: Any) -> dict[str, Any]:
    plain = [k for k in ("none", "haproxy", "nginx", "meshcd", "meshcd_outbound") if k in results]
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
    }


def print_table(report: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    mach = report["machine"]
    print(f"\nmachine: {mach['cpu']}, {mach['cores']} cores, Python {mach['python']}")
    print(f"wrk: {report['settings']['connections']} connections, {report['settings']['duration_s']:g} s, GET {PATH}\n")
    print(f"{'case':<18}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'CPU us/req':>12}{'load 1m':>9}")
    for name, r in results.items():
        cpu = report["cpu_us_per_req"].get(name)
        cpu_text = f"{cpu:>12.1f}" if cpu is not None else f"{'-':>12}"
        print(f"{name:<18}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['non_2xx']:>9.0f}"
              f"{cpu_text}{r['load_avg_1m']:>9.2f}")
    print(f"\n{'process':<22}{'RSS idle MB':>12}{'RSS load MB':>12}{'USS idle MB':>12}")
    for proc, v in report["rss_mb"].items():
        print(f"{proc:<22}{v['idle']:>12.1f}{v['load']:>12.1f}{v['uss_idle']:>12.1f}")
    print(f"\nmeshcd/HAProxy plain: rps x{report['ratio_rps_vs_haproxy']}, p99 x{report['ratio_p99_vs_haproxy']}")
    if report["mtls"]:
        print(f"meshcd/HAProxy mTLS:  rps x{report['mtls']['ratio_rps_vs_haproxy']}, "
              f"p99 x{report['mtls']['ratio_p99_vs_haproxy']}")
    print("targets: rps >= 0.8x, p99 <= 1.5x, idle RSS <= 30 MB")


if __name__ == "__main__":
    sys.exit(main())
