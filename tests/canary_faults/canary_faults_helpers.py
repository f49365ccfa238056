"""Helpers of issue #6's fault tests: the canary e2e mesh (tests/canary_e2e/canary_harness.py:
real `meshcd serve`, backend apps, caller/backend proxies joined with join tokens, outbound
ports moved off the fixed range other tests share) with a RolloutPolicy of our own (long
enough bakes that a fault lands mid-stage), plus the faults: SIGKILL/SIGSTOP of the
controller and of proxies, and reading what the controller says afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2
from canary_harness import CanaryMesh, Change, Topology, mesh_files
from controller_helpers import MESHCD, ROOT, Proc, _tree, until

from reconciler.rollout.stages import StageSpec, Target, stage_members

NS = "shop"
FINAL = {"deployed", "rejected", "failed", "superseded"}


def policy_yaml(stages: tuple[tuple[str, float], ...], *, on_inconclusive: str = "pass",
                min_requests: int = 25) -> str:
    """A RolloutPolicy over both services; stages as (size, bake seconds), size "1" (a proxy
    count) or "50%"."""
    lines = []
    for size, bake in stages:
        key = f"percent: {size[:-1]}" if size.endswith("%") else f"count: {size}"
        lines.append(f"    - {{{key}, bake: {bake:g}s}}")
    return f"""apiVersion: meshcd.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: faults, namespace: {NS}}}
spec:
  services: [caller.{NS}, backend.{NS}]
  stages:
{chr(10).join(lines)}
  analysis:
    minRequests: {min_requests}
    onInconclusive: {on_inconclusive}
  onFailure: rollback
  onNewCommit: restart
"""


@dataclass
class FaultMesh(CanaryMesh):
    """The harness's mesh with this module's RolloutPolicy (preset `default`, so the policy's
    stages apply) and the fault helpers."""

    preset: str = "default"
    stages: tuple[tuple[str, float], ...] = (("1", 6.0), ("100%", 1.0))
    on_inconclusive: str = "pass"
    changes: int = field(default=0)

    def files(self, ch: Change) -> dict[str, str]:
        files = mesh_files(self.top, ch, min_requests=self.min_requests)
        files["policies/rollout.yaml"] = policy_yaml(self.stages,
                                                     on_inconclusive=self.on_inconclusive,
                                                     min_requests=self.min_requests)
        return files

    # -- changes ---------------------------------------------------------------------------

    def healthy_change(self) -> Change:
        """A new request header on the route: every caller proxy's config changes, the
        backends' do not."""
        self.changes += 1
        return Change(header=f"f{self.changes}", timeout=self.healthy.timeout)

    def commit_healthy(self, message: str) -> str:
        ch = self.healthy_change()
        commit = self.commit(ch, message)
        self.healthy = ch
        return commit

    def commit_unpublished(self, ch: Change, message: str) -> str:
        """A commit object the branch does not point at yet (so a test can prepare for its
        canaries before the controller can see it); `publish` moves the branch to it."""
        repo = self.repo.repo
        sig = pygit2.Signature("Ana", "ana@example.com")
        head = repo.references["refs/heads/main"].target
        oid = repo.create_commit(None, sig, sig, message, _tree(repo, self.files(ch)), [head])
        return str(oid)

    def publish(self, commit: str) -> None:
        self.repo.repo.references["refs/heads/main"].set_target(commit)

    def canaries_of(self, commit: str, stage: int, targets: list[str]) -> list[str]:
        """Who the engine picks for `stage` (0-based) of `commit` over these target proxies
        (the choice is a pure function of the revision and the targets)."""
        specs = [StageSpec(b, None if s.endswith("%") else int(s),
                           float(s[:-1]) if s.endswith("%") else None) for s, b in self.stages]
        ts = [Target(p, f"{self.top.service_of(p)}.{NS}", "new", "old") for p in targets]
        return stage_members(commit, ts, specs, stage)

    @property
    def callers(self) -> list[str]:
        return [self.top.caller_id(i) for i in range(self.top.callers)]

    # -- the controller --------------------------------------------------------------------

    def rollout(self) -> dict[str, Any] | None:
        got: dict[str, Any] | None = self.api.get("/api/rollout")["rollout"]
        return got

    def rollout_of(self, rev_id: int) -> dict[str, Any]:
        """The last status of a revision's rollout (also once it is over)."""
        got: dict[str, Any] = self.api.get(f"/api/revisions/{rev_id}/rollout")
        return got

    def persisted_phase(self, rev_id: int) -> str | None:
        """The rollout phase the controller has written to its store (what a restart
        resumes from), read straight from the database."""
        from reconciler.revisions.store import RevisionStore
        from reconciler.store import open_engine, sqlite_url

        engine = open_engine(sqlite_url(self.data_dir))
        try:
            saved = RevisionStore(engine).load_rollout(rev_id)
        finally:
            engine.dispose()
        return None if saved is None else str(saved[0].get("phase"))

    def ledger_stored(self) -> bool:
        """The fleet ledger in the store says what the live one says (acked versions). The
        controller writes it about once a second; a proxy it has not written yet is unknown
        to a controller restarted from the store (see the #6 report), so the restart tests
        start once it is written."""
        from reconciler.fleet import LedgerStore
        from reconciler.store import open_engine, sqlite_url

        live = {p: e["ackedVersion"] for p, e in self.ledger().items()}
        engine = open_engine(sqlite_url(self.data_dir))
        try:
            stored = {e.proxy_id: e.acked_version for e in LedgerStore(engine).load()}
        finally:
            engine.dispose()
        return all(stored.get(p) == v for p, v in live.items())

    def pin(self) -> dict[str, Any] | None:
        got: dict[str, Any] | None = self.api.get("/api/rollout")["pin"]
        return got

    def wait_rollout(self, commit: str, phases: set[str], stage: int | None = None,
                     timeout: float = 60) -> dict[str, Any]:
        def hit() -> dict[str, Any] | None:
            with contextlib.suppress(OSError):
                r = self.rollout()
                if (r is not None and r["commit"] == commit and r["phase"] in phases
                        and (stage is None or r["stage"] == stage)):
                    return r
            return None

        try:
            got: dict[str, Any] = until(hit, timeout, f"{commit[:12]} {phases} stage {stage}",
                                        0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose(commit)}") from None
        return got

    def finish(self, commit: str, timeout: float = 120) -> dict[str, Any]:
        try:
            return self.wait_status(commit, FINAL, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnose(commit)}") from None

    def settle(self, timeout: float = 90) -> None:
        """Leave no rollout running, no pin, every proxy SYNCED (so that a failed test does not
        fail the next one): abort, unpin, wait."""
        import time

        if self.serve is None or self.serve.popen.poll() is not None:
            self.start_serve()
        for pid, proc in list(self.proxies.items()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            if proc.popen.poll() is not None:
                self.restart_proxy(pid)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with contextlib.suppress(OSError, AssertionError):
                got = self.api.get("/api/rollout")
                if got["rollout"] is not None:
                    self.post("/api/rollout/abort", {"reason": "test cleanup"})
                elif got["pin"] is not None:
                    self.post("/api/rollout/resume", {})
                elif (self.synced() and self.api.get("/api/status")["deployState"] == "idle"
                      and self.ledger_stored()):
                    return
            time.sleep(0.2)
        raise AssertionError("the mesh did not settle:\n" + self.diagnose(
            self.revisions()[0]["commit"]))

    def kill_serve(self) -> None:
        """SIGKILL: no shutdown code runs (no controller.stopped, no flush)."""
        assert self.serve is not None
        self.serve.kill()
        assert self.serve.popen.returncode == -signal.SIGKILL
        self.serve = None

    def post(self, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        if token is None:
            return self.api.call("POST", path, body if body is not None else {})
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.api.base + path, data=json.dumps(body or {}).encode(),
                                     method="POST", headers={
                                         "Authorization": f"Bearer {token}",
                                         "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([MESHCD, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    def token(self, role: str, name: str) -> tuple[str, str]:
        """A role token (secret, and the actor the audit names: token:<name>#<id>)."""
        out = self.cli("token", "create", "--role", role, "--name", name, "--json",
                       "--data-dir", str(self.data_dir))
        assert out.returncode == 0, out.stdout + out.stderr
        doc = json.loads(out.stdout)
        return doc["token"], f"token:{name}#{doc['id'][:8]}"

    def verify_audit(self) -> None:
        """The chain verifies: through the API and with `meshcd audit verify`."""
        got = self.api.get("/api/audit/verify")
        assert got["ok"] and got["brokenAt"] is None, got
        out = self.cli("audit", "verify", "--data-dir", str(self.data_dir))
        assert out.returncode == 0, out.stdout + out.stderr

    def ops(self, commit: str) -> list[dict[str, Any]]:
        return self.audit(subject=commit, kind="rollout.operator")

    def kinds(self, commit: str) -> list[str]:
        return [r["kind"] for r in self.audit(subject=commit)]

    # -- proxies ---------------------------------------------------------------------------

    def signal_proxy(self, proxy_id: str, sig: signal.Signals) -> None:
        os.kill(self.proxies[proxy_id].pid, sig)

    def kill_proxy(self, proxy_id: str) -> None:
        self.proxies[proxy_id].kill()  # SIGKILL; a SIGSTOPped process dies of it too

    def restart_proxy(self, proxy_id: str) -> Proc:
        """The proxy again, from its state dir (no join token: it has its SVID)."""
        service = self.top.service_of(proxy_id)
        proc = self.procs.start([
            MESHCD, "proxy", "join", "--service", service, "--namespace", NS,
            "--state-dir", str(self.workdir / "proxies" / proxy_id), "--admin-port", "0",
            "--proxy-id", proxy_id, "--drain-seconds", "1", "--reconnect-max", "2",
            "--dataplane", self.dataplane])
        self.proxies[proxy_id] = proc
        m = proc.wait_for(r"admin on 127\.0\.0\.1:(\d+)", 90)
        self.admin_ports[proxy_id] = int(m.group(1))
        return proc

    def on(self, commit: str, ids: list[str] | None = None) -> bool:
        """Every listed proxy (default: all) SYNCED, desired revision `commit`."""
        try:
            led = self.ledger()
        except OSError:
            return False
        return all(i in led and led[i]["state"] == "SYNCED" and led[i]["ackedVersion"]
                   and led[i]["desiredRevision"] == commit for i in (ids or self.top.proxy_ids))


@contextlib.contextmanager
def fault_mesh(prefix: str, callers: int, backends: int, **kw: Any) -> Iterator[FaultMesh]:
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        mesh = FaultMesh(Path(tmp), Topology.pick(callers, backends), **kw)
        try:
            mesh.start()
            yield mesh
        finally:
            mesh.close()
