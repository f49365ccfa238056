"""The canary end-to-end harness, shared by tests/canary_e2e and bench/canary.py.

A mesh of two services on 127.0.0.1: `caller` (N proxies; the load generator plays its app and
sends HTTP to each caller proxy's outbound port) and `backend` (M proxies, each in front of a
real HTTP app from canary_backend_app.py). Routes and faults apply on the caller's outbound,
authorization on the backend's inbound; caller -> backend is mTLS with the SVIDs the proxies
got by joining with real join tokens. `meshcd serve` watches a bare Git repo; changes are
commits. Everything is a real process on ports picked here.

The load generator is open-loop (a request every 1/rate s whatever the answers do), spread
round-robin over the caller proxies, with a mix of paths: mostly 200s, some 404s from the app,
some 403s from a standing DENY policy on /admin, and a /flaky path the app fails 10% of the
time (baseline noise both canaries and baseline see). Every request is recorded as
(sent at, caller proxy index, kind, status, latency, app-flaky marker) so failures can be put
on a timeline and on proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controller_helpers import (
    DATAPLANE,
    MESHCD,
    ConfigRepo,
    Proc,
    Processes,
    envoy_required,
    free_port,
    until,
)
from ports import free_port_group, free_port_range

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

TD = "canary.test"
NS = "shop"
CALLER, BACKEND = "caller", "backend"
HOST = f"{BACKEND}.{NS}"
CALLER_PRINCIPAL = f"{TD}/ns/{NS}/sa/{CALLER}"
SLOW_S = 0.3  # a request this slow counts as failed (the latency change adds 300 ms)
BAD_KINDS = ("5xx", "deny", "latency", "nack")





# --- ports ------------------------------------------------------------------------------------


@dataclass
class Topology:
    """Ports of one mesh. Caller proxy i listens on caller_ports[i] (its app, never called,
    would be 1000 above); backend proxy j on backend_ports[j], its app 1000 above, and
    backend_ports[j] + 1 is held by a squatter (the port a second Service port would need).

    Static proxies take outbound HTTP on the Mesh's `outboundPortBase` + their index in the
    static fleet (renderers.targets): `outbound` is a run of free ports picked here, so this mesh
    shares no port with the demo (20000 + i) or with another test."""

    callers: int
    backends: int
    caller_ports: list[int] = field(default_factory=list)
    backend_ports: list[int] = field(default_factory=list)
    outbound: int = 0

    @classmethod
    def pick(cls, callers: int, backends: int) -> Topology:
        """Free ports for everything (tests/support/ports.py: never the same port twice)."""
        return cls(callers, backends,
                   [free_port_group((0, 1000)) for _ in range(callers)],
                   [free_port_group((0, 1, 1000, 1001)) for _ in range(backends)],
                   free_port_range(callers + backends))

    # static fleet order: (namespace, name) then endpoint order -> backend, caller
    def backend_id(self, j: int) -> str:
        return f"{BACKEND}.{NS}-{j}"

    def caller_id(self, i: int) -> str:
        return f"{CALLER}.{NS}-{i}"

    def caller_outbound(self, i: int) -> int:
        return self.outbound + self.backends + i

    @property
    def proxy_ids(self) -> list[str]:
        return ([self.backend_id(j) for j in range(self.backends)]
                + [self.caller_id(i) for i in range(self.callers)])

    def service_of(self, proxy_id: str) -> str:
        return proxy_id.split(".", 1)[0]


# --- the config repo --------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """What a commit changes relative to the healthy config."""

    header: str = "v0"          # request header x-canary-run set on the route (healthy edits)
    timeout: str = "5s"
    fault: str = ""             # "" | "abort" | "delay"
    deny_caller: bool = False
    second_port: bool = False   # backend gets a second Service port (bound by a squatter)
    deny_internal: bool = False  # the standing DENY policy also covers /internal (no traffic)


def mesh_files(top: Topology, ch: Change = Change(), *, min_requests: int = 25) -> dict[str, str]:
    head = "apiVersion: meshcd.dev/v1alpha1\n"
    files = {"mesh.yaml": head + f"""kind: Mesh
metadata: {{name: mesh}}
spec:
  trustDomain: {TD}
  mtls: {{mode: STRICT}}
  outboundPortBase: {top.outbound}
"""}
    backend_ports = "    - {name: http, number: 8080, protocol: http}\n"
    if ch.second_port:
        backend_ports += "    - {name: metrics, number: 9090, protocol: http}\n"
    eps = "\n".join(f"    - address: 127.0.0.1:{p}" for p in top.backend_ports)
    files["services/backend.yaml"] = head + f"""kind: Service
metadata: {{name: {BACKEND}, namespace: {NS}}}
spec:
  ports:
{backend_ports.rstrip()}
  endpoints:
{eps}
  egress: []
"""
    eps = "\n".join(f"    - address: 127.0.0.1:{p}" for p in top.caller_ports)
    files["services/caller.yaml"] = head + f"""kind: Service
metadata: {{name: {CALLER}, namespace: {NS}}}
spec:
  ports:
    - {{name: http, number: 8080, protocol: http}}
  endpoints:
{eps}
  egress: [{BACKEND}]
"""
    fault = ""
    if ch.fault == "abort":
        fault = "      fault:\n        abort: {httpStatus: 503, percent: 100}\n"
    elif ch.fault == "delay":
        fault = "      fault:\n        delay: {fixed: 300ms, percent: 100}\n"
    files["routes/backend.yaml"] = head + f"""kind: Route
metadata: {{name: {BACKEND}, namespace: {NS}}}
spec:
  host: {BACKEND}
  rules:
    - name: all
      destinations:
        - {{service: {BACKEND}, port: 8080}}
      timeout: {ch.timeout}
      headers:
        request: {{set: {{x-canary-run: "{ch.header}"}}}}
{fault}"""
    # legitimate 403s: nobody may call /admin on the backend
    files["policies/backend-admin.yaml"] = head + f"""kind: AuthorizationPolicy
metadata: {{name: backend-no-admin, namespace: {NS}}}
spec:
  selector: {{services: [{BACKEND}]}}
  action: DENY
  rules:
    - to:
        - operation: {{paths: [{'"/admin*", "/internal*"' if ch.deny_internal else '"/admin*"'}]}}
"""
    if ch.deny_caller:
        files["policies/backend-deny-caller.yaml"] = head + f"""kind: AuthorizationPolicy
metadata: {{name: backend-deny-caller, namespace: {NS}}}
spec:
  selector: {{services: [{BACKEND}]}}
  action: DENY
  rules:
    - from:
        - source: {{principals: ["{CALLER_PRINCIPAL}"]}}
"""
    # The `fast` preset replaces these stages (1 proxy, 50%, 100%, 3 s bakes); the analysis
    # stays: minRequests sized to ~10 req/s per proxy so a stage-1 canary reaches it within
    # its bake, and `extend` (not `pause`) when a bake saw too little traffic.
    files["policies/rollout.yaml"] = head + f"""kind: RolloutPolicy
metadata: {{name: canary-e2e, namespace: {NS}}}
spec:
  services: [{CALLER}.{NS}, {BACKEND}.{NS}]
  stages:
    - {{count: 1, bake: 3s}}
    - {{percent: 50, bake: 3s}}
    - {{percent: 100, bake: 3s}}
  analysis:
    minRequests: {min_requests}
    onInconclusive: extend
"""
    return files


def bad_change(kind: str, healthy: Change) -> Change:
    """The bad change `kind` on top of the healthy config `healthy`."""
    from dataclasses import replace

    if kind == "5xx":
        return replace(healthy, fault="abort")
    if kind == "deny":
        return replace(healthy, deny_caller=True)
    if kind == "latency":
        return replace(healthy, fault="delay")
    if kind == "nack":
        return replace(healthy, second_port=True)
    raise ValueError(kind)


# --- the load generator -------------------------------------------------------------------------

# (method, path template, expected status, weight in 1/1000)
KINDS: tuple[tuple[str, str, int, int], ...] = (
    ("GET", "/api/items/{n}", 200, 800),
    ("POST", "/api/orders", 200, 90),
    ("GET", "/missing/{n}", 404, 50),   # the app's 404s: 5%
    # the standing DENY policy's 403s: 0.5%. Not more: the last stage has no baseline, and
    # there the judge holds denials to the absolute maxErrorRatePercent (1%)
    ("GET", "/admin/stats", 403, 5),
    ("GET", "/flaky/{n}", 200, 55),     # the app fails 10% of these (marked): 0.55% errors
)
FLAKY = 4


@dataclass(slots=True)
class Rec:
    t: float          # wall-clock time the request was due (open loop)
    proxy: int        # caller proxy index
    kind: int
    status: int       # 0: no answer (connection error or 5 s timeout)
    latency: float
    flaky: bool       # the app's own marked 503

    @property
    def failed(self) -> bool:
        """Failed through the mesh: an answer other than the kind's legitimate one, or slower
        than SLOW_S (the app's own flaky 503s are legitimate)."""
        if self.kind == FLAKY and self.status == 503 and self.flaky:
            return self.latency >= SLOW_S
        return self.status != KINDS[self.kind][2] or self.latency >= SLOW_S


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


async def _read_response(reader: asyncio.StreamReader, head_only: bool
                         ) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    if head_only or status in (204, 304):
        return status, headers
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()  # until close
        headers["connection"] = "close"
    return status, headers


class LoadGenerator:
    """Open-loop HTTP load at `rate` requests/s, round-robin over `ports` (the callers'
    outbound listeners), on its own event loop in a thread. Idle keep-alive connections are
    reused; one that turns out to be closed before any answer is retried once on a new
    connection (what any HTTP client does), so a proxy closing idle connections is not a
    failure."""

    def __init__(self, ports: list[int], rate: float, *, host: str = HOST, seed: int = 1,
                 timeout: float = 5.0) -> None:
        self.ports, self.rate, self.host, self.timeout = ports, rate, host, timeout
        self.rng = random.Random(seed)
        self.records: list[Rec] = []
        self._idle: list[list[_Conn]] = [[] for _ in ports]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._weights = [k[3] for k in KINDS]
        self.started_at = 0.0

    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True,
                                        name="canary-load")
        self._thread.start()
        until(lambda: self.records, 30, "the first answer of the load generator")
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10)

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _main(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.monotonic()
        self.started_at = wall0 = time.time()
        i = 0
        while not self._stop.is_set():
            due = t0 + i / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            kind = self.rng.choices(range(len(KINDS)), self._weights)[0]
            task = asyncio.create_task(self._one(i % len(self.ports), kind,
                                                 wall0 + (due - t0), self.rng.randrange(1000)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout + 2)
        for pool in self._idle:
            for c in pool:
                c.close()

    async def _one(self, idx: int, kind: int, due: float, n: int) -> None:
        method, path, _, _ = KINDS[kind]
        path = path.format(n=n)
        body = b'{"item": 1}' if method == "POST" else b""
        req = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
        start = time.monotonic()
        status, flaky = 0, False
        for attempt in range(2):
            reused = bool(self._idle[idx])
            conn: _Conn | None = self._idle[idx].pop() if reused else None
            got_bytes = False
            try:
                if conn is None:
                    r, w = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", self.ports[idx]), self.timeout)
                    conn = _Conn(r, w)
                conn.writer.write(req)
                left = self.timeout - (time.monotonic() - start)
                status, headers = await asyncio.wait_for(
                    _read_response(conn.reader, method == "HEAD"), max(left, 0.01))
                got_bytes = True
                flaky = headers.get("x-backend-flaky") == "1"
                if headers.get("connection", "").lower() == "close":
                    conn.close()
                else:
                    self._idle[idx].append(conn)
                break
            except asyncio.IncompleteReadError as exc:
                got_bytes = bool(exc.partial)
                if conn is not None:
                    conn.close()
            except (TimeoutError, OSError, ValueError, IndexError):
                if conn is not None:
                    conn.close()
                status = 0
                break
            if not (reused and not got_bytes and attempt == 0):
                status = 0
                break
        self.records.append(Rec(due, idx, kind, status, time.monotonic() - start, flaky))

    # -- reading the records ------------------------------------------------------------

    def between(self, t0: float, t1: float) -> list[Rec]:
        return [r for r in list(self.records) if t0 <= r.t < t1]

    def since(self, t0: float) -> list[Rec]:
        return [r for r in list(self.records) if r.t >= t0]


def failed_share(recs: list[Rec]) -> float:
    return sum(r.failed for r in recs) / len(recs) if recs else 0.0


def failures_by_second(recs: list[Rec], t0: float) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in recs:
        if r.failed:
            s = int(r.t - t0)
            out[s] = out.get(s, 0) + 1
    return dict(sorted(out.items()))


# --- the controller and the fleet ---------------------------------------------------------------


def iso_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Api:
    def __init__(self, base: str, token_file: Path) -> None:
        self.base, self.token_file = base, token_file

    @property
    def token(self) -> str:
        return self.token_file.read_text().strip()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body}")
        return body


@dataclass
class CanaryMesh:
    """Config repo, `meshcd serve`, backend apps, joined proxies. `start()` brings it all up
    on `healthy` and waits until every proxy is SYNCED; `close()` stops what it started.
    `dataplane`: what the proxies run (`meshcd proxy join --dataplane`): envoy (the default,
    MESHCD_TEST_DATAPLANE overrides it) or builtin."""

    workdir: Path
    top: Topology
    strategy: str = "canary"
    preset: str = "fast"
    min_requests: int = 25
    procs: Processes = field(default_factory=Processes)
    healthy: Change = Change()
    admin_ports: dict[str, int] = field(default_factory=dict)
    proxies: dict[str, Proc] = field(default_factory=dict)
    serve: Proc | None = None
    dataplane: str = DATAPLANE

    def __post_init__(self) -> None:
        self.repo = ConfigRepo(self.workdir / "mesh.git")
        self.data_dir = self.workdir / "ctl"
        self.api_port, self.fleet_port, self.boot_port = free_port(), free_port(), free_port()
        self.api = Api(f"http://127.0.0.1:{self.api_port}", self.data_dir / "admin.token")

    # -- lifecycle -----------------------------------------------------------------------

    def files(self, ch: Change) -> dict[str, str]:
        return mesh_files(self.top, ch, min_requests=self.min_requests)

    def commit(self, ch: Change, message: str) -> str:
        return self.repo.commit(self.files(ch), message)

    def start(self) -> CanaryMesh:
        envoy_required(self.dataplane)
        self._start_apps()  # first: their ports go into the config
        first = self.commit(self.healthy, "healthy config")
        self.start_serve()
        self.wait_status(first, {"deployed"}, 120)
        for pid in self.top.proxy_ids:  # start all, then wait: they boot in parallel
            self.proxies[pid] = self._join(pid)
        for pid, proc in self.proxies.items():
            m = proc.wait_for(r"admin on 127\.0\.0\.1:(\d+)", 180)
            self.admin_ports[pid] = int(m.group(1))
        until(lambda: self.synced(first), 180, "every proxy SYNCED on the first commit", 0.5)
        return self

    def _start_apps(self) -> None:
        """The backend apps and squatters. Ports picked free can be taken by another process
        before the apps bind them (an ephemeral port of any connection on the machine): then
        the topology is picked again, up to three times."""
        for attempt in range(3):
            apps = [a for j, p in enumerate(self.top.backend_ports)
                    for a in ("--app", f"{self.top.backend_id(j)}=127.0.0.1:{p + 1000}")]
            squat = [a for p in self.top.backend_ports for a in ("--squat", str(p + 1))]
            proc = self.procs.start([sys.executable, str(HERE / "canary_backend_app.py"),
                                     *apps, *squat])
            try:
                proc.wait_for("canary backend apps listening", 60)
                return
            except AssertionError:
                if attempt == 2 or "address already in use" not in proc.output():
                    raise
            self.top = Topology.pick(self.top.callers, self.top.backends)

    def start_serve(self, strategy: str | None = None) -> Proc:
        settings = {
            "data_dir": str(self.data_dir),
            "source": {"url": self.repo.url, "branch": "main", "poll_interval": 0.5,
                       "poll_jitter": 0},
            "api": {"host": "127.0.0.1", "port": self.api_port},
            "fleet": {"host": "127.0.0.1", "port": self.fleet_port},
            "bootstrap": {"host": "127.0.0.1", "port": self.boot_port},
            "deploy": {"strategy": strategy or self.strategy, "preset": self.preset,
                       "timeout_s": 20},
        }
        path = self.workdir / "meshcd.yaml"
        path.write_text(json.dumps(settings))
        env = {"MESHCD_DEPLOY_STRATEGY": strategy or self.strategy,
               "MESHCD_ROLLOUT_PRESET": self.preset}
        self.serve = self.procs.start([MESHCD, "serve", "--config", str(path)], env=env)
        self.serve.wait_for(r"meshcd serve: epoch \d+", 90)
        return self.serve

    def stop_serve(self) -> None:
        if self.serve is not None:
            self.serve.terminate(30)
            self.serve = None

    def _join(self, proxy_id: str) -> Proc:
        service = self.top.service_of(proxy_id)
        status, tok = self.api.call("POST", "/api/tokens/join",
                                    {"service": service, "namespace": NS})
        assert status == 201, tok
        return self.procs.start([
            MESHCD, "proxy", "join", "--controller", tok["bootstrapUrl"], "--token", tok["token"],
            "--service", service, "--namespace", NS, "--ca-fingerprint", tok["caFingerprint"],
            "--state-dir", str(self.workdir / "proxies" / proxy_id), "--admin-port", "0",
            "--proxy-id", proxy_id, "--drain-seconds", "1", "--reconnect-max", "2",
            "--dataplane", self.dataplane])

    def close(self) -> None:
        self.procs.stop_all()

    def __enter__(self) -> CanaryMesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading the controller ------------------------------------------------------------

    def load(self, rate: float, seed: int = 1) -> LoadGenerator:
        return LoadGenerator([self.top.caller_outbound(i) for i in range(self.top.callers)],
                             rate, seed=seed)

    def revisions(self) -> list[dict[str, Any]]:
        return list(self.api.get("/api/revisions?limit=200")["revisions"])

    def revision_of(self, commit: str) -> dict[str, Any] | None:
        return next((r for r in self.revisions() if r["commit"] == commit), None)

    def wait_status(self, commit: str, statuses: set[str], timeout: float = 120
                    ) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            with contextlib.suppress(OSError):
                r = self.revision_of(commit)
                if r is not None and r["status"] in statuses:
                    return r
            return None

        got: dict[str, Any] = until(done, timeout, f"{commit[:12]} in {sorted(statuses)}", 0.25)
        return got

    def ledger(self) -> dict[str, dict[str, Any]]:
        return {p["proxyId"]: p for p in self.api.get("/api/proxies")["proxies"]}

    def versions(self) -> dict[str, str | None]:
        """Each proxy's acked version, from the ledger."""
        return {pid: e["ackedVersion"] for pid, e in self.ledger().items()
                if pid in self.top.proxy_ids}

    def synced(self, revision: str | None = None) -> bool:
        try:
            led = self.ledger()
        except OSError:
            return False
        ids = self.top.proxy_ids
        return all(i in led and led[i]["state"] == "SYNCED" and led[i]["ackedVersion"]
                   and (revision is None or led[i]["desiredRevision"] == revision) for i in ids)

    def running(self) -> dict[str, str]:
        """What each proxy serves, by its own word (admin /config_dump): a hash of its snapshot
        without the identity (the agent merges its SVID in, and the proxy's own version covers
        it, so that version is not the controller's) and without the revision label."""
        out = {}
        for pid, port in self.admin_ports.items():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config_dump", timeout=10) as r:
                snap = json.loads(r.read())["snapshot"]
            for key in ("identity", "version", "revision"):  # the version hashes no revision
                snap.pop(key, None)
            out[pid] = hashlib.sha256(json.dumps(snap, sort_keys=True).encode()).hexdigest()
        return out

    def diagnose(self, commit: str) -> str:
        """What a failed wait should show: the revision, the rollout, the commit's audit."""
        out = [f"revision: {self.revision_of(commit)}",
               f"rollout: {json.dumps(self.api.get('/api/rollout'))[:4000]}"]
        out += [f"{r['time']} {r['kind']} {json.dumps(r['data'])[:600]}"
                for r in self.audit(subject=commit)]
        out.append(f"ledger: {json.dumps(self.ledger())[:3000]}")
        return "\n".join(out)

    def audit(self, subject: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """Audit records, oldest first."""
        q = "?limit=1000" + (f"&subject={subject}" if subject else "") + (
            f"&kind={kind}" if kind else "")
        return sorted(self.api.get("/api/audit" + q)["records"], key=lambda r: r["seq"])


# --- one bad change, measured -------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str
    commit: str
    status: str
    outcome: str | None
    fetched_at: float
    first_ack_at: float | None      # the first canary ACK (stage 1 acked) or, when no canary
    decision_at: float | None       # ever ACKed (a NACK), the first push
    finished_at: float | None
    judged: dict[str, Any] | None
    records: list[Rec]
    before: list[Rec]
    timeline: dict[int, int]
    back_on_old: bool

    @property
    def decision_s(self) -> float | None:
        if self.decision_at is None or self.first_ack_at is None:
            return None
        return self.decision_at - self.first_ack_at

    @property
    def rollback_s(self) -> float | None:
        if self.decision_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.decision_at

    @property
    def failed_share(self) -> float:
        return failed_share(self.records)

    def row(self) -> dict[str, Any]:
        return {"decision_s": _r(self.decision_s), "rollback_s": _r(self.rollback_s),
                "failed_share": round(self.failed_share, 5)}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def run_bad_change(mesh: CanaryMesh, load: LoadGenerator, kind: str, *, window: float = 60.0,
                   restore: bool = True,
                   log: Callable[[str], None] = lambda s: None) -> Outcome:
    """Commit the bad change `kind`, wait for its rollout to finish, measure, then (with
    `restore`) commit the healthy config again (what a person reverting it would push; every
    proxy already runs it) so the next scenario starts from a deployed head. `window`:
    seconds of traffic after the commit was fetched that failed_share covers (waited for in
    full when > 0; 0: up to now)."""
    before_versions = mesh.versions()
    ch = bad_change(kind, mesh.healthy)
    t_commit = time.time()
    commit = mesh.commit(ch, f"bad change: {kind}")
    log(f"{kind}: committed {commit[:12]}")
    final = {"deployed", "rejected", "failed", "superseded"}
    try:
        rev = mesh.wait_status(commit, final, 180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{mesh.diagnose(commit)}") from None
    fetched = iso_ts(rev["detectedAt"])
    audit = mesh.audit(subject=commit)
    kinds = [r["kind"] for r in audit]
    acked = [r for r in audit if r["kind"] == "rollout.stage_acked"]
    started = [r for r in audit if r["kind"] == "rollout.stage_started"]
    judged = [r for r in audit if r["kind"] == "rollout.judged"
              and str(r["data"].get("outcome", "")).lower() == "failed"]
    finished = [r for r in audit if r["kind"] == "rollout.finished"]
    first = acked[0] if acked and (not judged or acked[0]["seq"] < judged[0]["seq"]) else (
        started[0] if started else None)
    log(f"{kind}: revision {rev['id']} {rev['status']} ({rev.get('outcome')}); audit {kinds}")
    back = until(lambda: mesh.synced() and all(
        v == before_versions.get(p) for p, v in mesh.versions().items()), 60,
        "every proxy back on its old version in the ledger", 0.25) if judged else False
    if window > 0:
        left = fetched + window - time.time()
        if left > 0:
            time.sleep(left)
    recs = load.between(fetched, fetched + window) if window > 0 else load.since(fetched)
    out = Outcome(kind, commit, rev["status"], rev.get("outcome"), fetched,
                  iso_ts(first["time"]) if first else None,
                  iso_ts(judged[0]["time"]) if judged else None,
                  iso_ts(finished[0]["time"]) if finished else None,
                  judged[0]["data"] if judged else None, recs,
                  load.between(t_commit - 20, t_commit), failures_by_second(recs, fetched),
                  bool(back))
    if restore:
        fix = mesh.commit(mesh.healthy, f"restore after {kind}")
        got = mesh.wait_status(fix, final, 180)
        if got["status"] != "deployed":
            raise AssertionError(f"restoring after {kind}: {got}")
        until(lambda: mesh.synced(fix), 60, "every proxy on the restored config", 0.25)
    return out


def healthy_change(n: int, timeout: str = "5s") -> Change:
    """The n-th healthy change: a new request header on the route (every caller proxy), and
    on odd n also the standing DENY policy toggling a path nobody calls (every backend
    proxy), so both services' canaries get judged."""
    return Change(header=f"h{n}", timeout=timeout, deny_internal=n % 2 == 1)


@dataclass
class HealthyRun:
    n: int
    commit: str
    status: str
    outcome: str | None
    seconds: float
    decisions: list[str]
    reason: str
    failed_verdict: dict[str, Any] | None = None  # the judge's verdict when it was not promoted


def run_healthy_change(mesh: CanaryMesh, n: int, *, timeout: float = 180) -> HealthyRun:
    """Commit the n-th healthy change and wait until its rollout is over."""
    ch = healthy_change(n, mesh.healthy.timeout)
    t0 = time.monotonic()
    commit = mesh.commit(ch, f"healthy change {n}")
    final = {"deployed", "rejected", "failed", "superseded"}
    try:
        rev = mesh.wait_status(commit, final, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{mesh.diagnose(commit)}") from None
    took = time.monotonic() - t0
    judged = [r["data"] for r in mesh.audit(subject=commit, kind="rollout.judged")]
    if rev["status"] == "deployed":
        mesh.healthy = ch
        until(lambda: mesh.synced(commit), 120, f"every proxy on healthy change {n}", 0.25)
    else:  # rolled back: the proxies go back to the last good config
        until(lambda: mesh.synced(), 120, f"every proxy back after healthy change {n}", 0.25)
    failed = [j for j in judged if str(j.get("outcome")).lower() == "failed"]
    return HealthyRun(n, commit, rev["status"], rev.get("outcome"), took,
                      [f"stage {j.get('stage')}: {j.get('outcome')} -> {j.get('decision')}"
                       for j in judged], rev.get("reason") or "",
                      failed[0] if failed else None)


def machine() -> str:
    import platform

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (f"cpu: {cpu}, cores: {os.cpu_count()}, python {platform.python_version()}, "
            f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
