"""The revision store and the pipeline in-process, on SQLite and PostgreSQL: real Git mirror,
real audit log, a deployer the test controls. Superseding, invalid commits, the signature
policy, and resuming a deploy that a restart interrupted."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from controller_helpers import ConfigRepo, free_static_port, mesh_files
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from reconciler.audit import AuditLog
from reconciler.revisions import (
    DeployRequest,
    DeployVerdict,
    KnownProxy,
    Pipeline,
    Revision,
    RevisionStatus,
    RevisionStore,
    deploy_verdict,
)
from reconciler.revisions.pipeline import observed
from reconciler.source import GitMirror, SignaturePolicy, observe_branch
from reconciler.store import open_engine

S = RevisionStatus


def now() -> datetime:
    return datetime.now(UTC)




def test_store_rows_paging_counts_and_epochs(db_url: str) -> None:
    store = RevisionStore(open_engine(db_url))
    try:
        t = now()
        revs = [store.add(Revision(0, f"{i:040x}", "main", "Ana <a@x>", f"msg {i}\n\nbody",
                                   "poll", S.DETECTED, t, t, signature={"verdict": "unsigned"}))
                for i in range(5)]
        assert [r.id for r in revs] == sorted(r.id for r in revs)
        moved = store.update(revs[0].moved(S.INVALID, t, reason="bad", findings=[{"code": "X"}]))
        again = store.get(moved.id)
        assert again == moved and again.findings == [{"code": "X"}]
        page = store.list(limit=2)
        assert [r.id for r in page] == [revs[4].id, revs[3].id]
        assert [r.id for r in store.list(limit=10, before_id=page[-1].id)] == [
            revs[2].id, revs[1].id, revs[0].id]
        assert [r.id for r in store.unfinished()] == [r.id for r in revs[1:]]
        counts = store.counts()
        assert counts["detected"] == 4 and counts["invalid"] == 1 and counts["deployed"] == 0
        assert store.get_state("nothing") is None
        store.set_state("deployed_revision", 3)
        store.set_state("deployed_revision", 4)
        assert store.get_state("deployed_revision") == 4
        with pytest.raises(KeyError):
            store.get(10_000)
        # epochs from several engines at once: every start gets its own
        got: list[int] = []
        lock = threading.Lock()

        def start() -> None:
            other = RevisionStore(open_engine(db_url), create_schema=False)
            e = other.next_epoch()
            other.close()
            with lock:
                got.append(e)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(got) == list(range(1, 7))
    finally:
        store.close()


class GatedDeployer:
    """Acks everything, but the first deploy waits until the test opens the gate."""

    hello_gets_new = True  # like the all-at-once deployer

    def __init__(self) -> None:
        self.requests: list[DeployRequest] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.told: list[str] = []  # newer commits the pipeline announced

    async def deploy(self, request: DeployRequest) -> DeployVerdict:
        self.requests.append(request)
        self.entered.set()
        await self.gate.wait()
        return deploy_verdict({p: ("acked", None) for p in request.targets.wait_for})

    def new_commit(self, commit: str) -> bool:
        self.told.append(commit)
        return False

    async def operator(self, action: str, actor: str, reason: str = "") -> tuple[bool, str]:
        return False, "no rollout"


class Rig:
    def __init__(self, tmp_path: Path, db_url: str, policy: SignaturePolicy | None = None) -> None:
        self.ports = {"web": [free_static_port()], "api": [free_static_port()]}
        self.repo = ConfigRepo(tmp_path / "mesh.git")
        self.mirror = GitMirror(tmp_path / "mirror.git", str(tmp_path / "mesh.git"))
        engine = open_engine(db_url)
        self.audit = AuditLog(engine)
        self.store = RevisionStore(engine)
        self.policy = policy or SignaturePolicy.from_file("off", None)
        self.deployer = GatedDeployer()
        self.known = [KnownProxy("web.shop-0", "web", "shop", {}, True),
                      KnownProxy("api.shop-0", "api", "shop", {}, False)]
        self.pipeline = self.pipeline_of()

    def pipeline_of(self) -> Pipeline:
        """A pipeline over this rig's store (a second one is a restarted controller)."""
        return Pipeline(store=self.store, audit=self.audit,
                        open_repo=self.mirror.open_repository,
                        known_proxies=lambda: self.known, deployer=self.deployer,
                        clock=now, branch="main", trust_domain="ctl.test")

    def push(self, timeout: str, message: str) -> str:
        """Commit, fetch, and hand the observation to the pipeline (on the loop)."""
        commit = self.repo.commit(mesh_files(self.ports, timeout=timeout), message)
        self.mirror.fetch()
        obs = observe_branch(self.mirror, "main", self.pipeline.last_recorded, self.policy,
                             now=int(now().timestamp()))
        self.pipeline.post(observed(obs, ("webhook:generic",), now()))
        return commit

    def revision(self, commit: str) -> Revision:
        return next(r for r in self.store.list(limit=100) if r.commit == commit)

    def status(self, commit: str) -> RevisionStatus:
        return next(r.status for r in self.store.list(limit=100) if r.commit == commit)

    def close(self) -> None:
        self.store.close()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_newer_commits_supersede_queued_ones_and_invalid_ones_never_deploy(
        tmp_path: Path, db_url: str) -> None:
    rig = Rig(tmp_path, db_url)

    async def main() -> None:
        p = rig.pipeline
        await p.restore()
        p.start()
        a = rig.push("5s", "a")
        await rig.deployer.entered.wait()  # A is deploying, held at the gate
        assert rig.revision(a).trigger == "webhook"
        b = rig.push("6s", "b")
        c = rig.push("7s", "c")  # B has not started: C supersedes it
        rig.deployer.gate.set()
        assert await p.wait_idle(30)
        assert (rig.status(a), rig.status(b), rig.status(c)) == (S.DEPLOYED, S.SUPERSEDED,
                                                                  S.DEPLOYED)
        assert len(rig.deployer.requests) == 2  # A and C; B never reached the deployer
        last = rig.deployer.requests[-1]
        assert last.commit == c and last.targets.wait_for == ("web.shop-0",)
        assert last.targets.absent == ("api.shop-0",)
        assert set(last.snapshots) == {"web.shop-0", "api.shop-0"}
        # an invalid commit: recorded with its findings, nothing deployed
        d = rig.push("whenever", "d")
        assert await p.wait_idle(30)
        bad = next(r for r in rig.store.list() if r.commit == d)
        assert bad.status is S.INVALID and bad.findings and "error" in bad.reason
        assert len(rig.deployer.requests) == 2
        assert p.deployed_revision is not None and p.deployed_revision.commit == c
        # a proxy saying hello later gets the deployed revision rendered for it
        snap = await asyncio.to_thread(p.snapshot_for, KnownProxy(
            "api-pod-7", "api", "shop", {"version": "v1"}, True))
        assert snap is not None and snap.revision == c
        assert await asyncio.to_thread(p.snapshot_for, KnownProxy(
            "x", "nosuch", "shop", {}, True)) is None
        await p.stop()

    try:
        run(main())
        kinds = [r.kind for r in rig.audit.list(limit=200)]
        assert kinds.count("revision.superseded") == 1 and kinds.count("deploy.finished") == 2
        assert "revision.validated" in kinds and "plan.made" in kinds
        assert rig.audit.verify().ok
    finally:
        rig.close()


def test_signature_policy_refuses_unsigned_and_restart_resumes_a_deploy(
        tmp_path: Path, db_url: str) -> None:
    key = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"ana@example.com {key}\n")
    rig = Rig(tmp_path, db_url, SignaturePolicy.from_file("require", signers))
    try:
        async def refused() -> str:
            await rig.pipeline.restore()
            rig.pipeline.start()
            commit = rig.push("5s", "unsigned")
            assert await rig.pipeline.wait_idle(30)
            await rig.pipeline.stop()
            return commit

        commit = run(refused())
        refused_rev = rig.store.list()[0]
        assert refused_rev.commit == commit and refused_rev.status is S.INVALID
        assert "signature policy" in refused_rev.reason
        assert rig.audit.list(kind="revision.refused")[0].subject == commit
        assert not rig.deployer.requests  # refused at detection: never queued
        # a deploy interrupted by a restart: the next pipeline resumes it
        t = now()
        stuck = rig.store.add(Revision(0, commit, "main", "Ana", "m", "poll", S.DETECTED, t, t))
        stuck = rig.store.update(stuck.moved(S.PLANNED, t).moved(S.DEPLOYING, t))
        rig.deployer.gate.set()

        async def main() -> None:
            again = Rig.pipeline_of(rig)
            await again.restore()
            assert again.current is not None and again.current.id == stuck.id
            again.start()
            assert await again.wait_idle(30)
            await again.stop()

        run(main())
        assert rig.store.get(stuck.id).status is S.DEPLOYED
        assert rig.audit.list(kind="deploy.resumed")[0].subject == commit
        assert rig.store.get_state("deployed_revision") == stuck.id
        assert rig.audit.verify().ok
    finally:
        rig.close()


def test_each_commit_is_validated_once_and_a_newer_valid_one_is_announced(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit queued while another deploys is validated then (and only then), announced
    to the running deploy (a canary hears it as NewCommit), and not validated again at its
    turn. The real validator runs; the test only counts its calls."""
    import reconciler.revisions.pipeline as pipeline_module

    calls: list[str] = []
    real_check = pipeline_module.check

    def counted(repo: Any, commit: str, cache: Any) -> Any:
        calls.append(commit)
        return real_check(repo, commit, cache)

    monkeypatch.setattr(pipeline_module, "check", counted)
    rig = Rig(tmp_path, db_url)

    async def main() -> None:
        p = rig.pipeline
        await p.restore()
        p.start()
        a = rig.push("5s", "a")
        await rig.deployer.entered.wait()  # A deploys, held at the gate
        b = rig.push("6s", "b")
        for _ in range(300):  # B is validated while A deploys, and announced to it
            if rig.deployer.told:
                break
            await asyncio.sleep(0.05)
        assert rig.deployer.told == [b]
        rig.deployer.gate.set()
        assert await p.wait_idle(30)
        assert (rig.status(a), rig.status(b)) == (S.DEPLOYED, S.DEPLOYED)
        assert sorted(calls) == sorted([a, b]), calls  # once each
        await p.stop()

    try:
        run(main())
    finally:
        rig.close()
