"""The revision pipeline: each new commit of the watched branch, one at a time, through
detected -> (signature) -> validate -> render -> plan -> deploy, persisted and audited.

Threads and loops: `record_observation` runs on the fetch worker thread (it only inserts the
new revision and audits what the branch did); everything that changes a revision's status
afterwards runs on the controller's event loop (`enqueue`, the worker), so superseding never
races a deploy. The CPU work (validate/render/plan) runs in a thread; the deploy goes through
a `Deployer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from reconciler.audit import AuditLog
from reconciler.fleet import DesiredSnapshot
from reconciler.revisions.decisions import (
    DeployTargets,
    DeployVerdict,
    KnownProxy,
    deploy_targets,
    recovery_plan,
    render_fleet,
)
from reconciler.revisions.deployer import Deployer, DeployRequest
from reconciler.revisions.evaluate import Evaluated, Invalid, evaluate, load_and_validate
from reconciler.revisions.model import Revision, RevisionStatus
from reconciler.revisions.store import RevisionStore
from reconciler.source import BranchDeleted, BranchObservation, ForcePush, NewCommit
from reconciler.spec.model import ServiceRef
from reconciler.spec.sources import ConfigReadError as SpecSourceError
from reconciler.spec.validate import ValidationCache
from renderers import RenderedSnapshot, render

log = logging.getLogger("meshcd.pipeline")

ACTOR = "controller"


def trigger_of(reasons: tuple[str, ...]) -> str:
    """The trigger recorded with a revision, from the reasons a fetch served."""
    if any(r.startswith("webhook") for r in reasons):
        return "webhook"
    if any(r.startswith(("api", "manual")) for r in reasons):
        return "manual"
    if any(r.startswith("startup") for r in reasons):
        return "startup"
    return "poll"


class Pipeline:
    def __init__(
        self,
        *,
        store: RevisionStore,
        audit: AuditLog,
        open_repo: Callable[[], Any],
        known_proxies: Callable[[], list[KnownProxy]],
        deployer: Deployer,
        clock: Callable[[], datetime],
        branch: str,
        trust_domain: str,
        on_reconciled: Callable[[float], None] | None = None,
        current_desired: Callable[[str], DesiredSnapshot | None] | None = None,
        fleet_assign: Callable[[Mapping[str, DesiredSnapshot]], None] | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.open_repo = open_repo
        self.known_proxies = known_proxies
        self.deployer = deployer
        self.clock = clock
        self.branch = branch
        self.trust_domain = trust_domain
        self.on_reconciled = on_reconciled
        # What each proxy runs now (the fleet's desired snapshot): what a canary rolls back to.
        self.current_desired = current_desired
        # Hands the deployed revision to every known proxy after a canary promotion (proxies
        # that joined mid-rollout were given the old revision).
        self.fleet_assign = fleet_assign
        self.cache = ValidationCache()
        self.deployed: Evaluated | None = None
        self.deployed_revision: Revision | None = None
        # The revision being deployed: proxies that say hello meanwhile get it (all at once).
        self.deploying: Evaluated | None = None
        self.current: Revision | None = None  # being processed by the worker
        self._pending: Revision | None = None
        self._urgent: Revision | None = None  # a rollback: goes before the queued commit
        self._rolling_out = False  # the worker is in the deploy step
        self._validated: Revision | None = None  # the queued revision, once it validated
        self._wake = asyncio.Event()
        self._render_lock = threading.Lock()  # render states are not shared across threads
        self._repo_local = threading.local()
        self._worker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_recorded: str | None = None  # newest commit recorded (for observe_branch)

    # -- the fetch thread -------------------------------------------------------------------

    def record_observation(self, obs: BranchObservation, reasons: tuple[str, ...]) -> Revision | None:
        """Record what a fetch saw on the branch. Returns the new revision to enqueue (None
        when nothing is to be deployed). Runs on the fetch worker thread."""
        now = self.clock()
        trigger = trigger_of(reasons)
        event = obs.event
        if isinstance(event, BranchDeleted):
            self.audit.append(ACTOR, "source.branch_deleted", self.branch,
                              {**obs.to_dict(), "trigger": trigger}, now=now)
            return None
        if not isinstance(event, NewCommit | ForcePush) or obs.commit is None:
            return None
        if isinstance(event, ForcePush):
            self.audit.append(ACTOR, "source.force_push", self.branch,
                              {"old": event.old, "new": event.new, "trigger": trigger}, now=now)
        commit = obs.commit
        decision = obs.decision
        rev = self.store.add(Revision(
            id=0, commit=commit.id, branch=self.branch,
            author=f"{commit.author.name} <{commit.author.email}>", message=commit.message,
            trigger=trigger, status=RevisionStatus.DETECTED, detected_at=now, updated_at=now,
            signature=decision.to_dict() if decision is not None else {},
        ))
        self.last_recorded = commit.id
        self.audit.append(ACTOR, "revision.detected", commit.id, {
            "revision": rev.id, "commit": commit.id, "author": rev.author,
            "message": commit.message[:2000], "trigger": trigger, "reasons": list(reasons[:20]),
            "event": event.to_dict(), "signature": rev.signature,
        }, now=now)
        if decision is not None and not decision.deployable:
            rev = self.store.update(rev.moved(RevisionStatus.INVALID, now,
                                              reason=f"signature policy: {decision.reason}"))
            self.audit.append(ACTOR, "revision.refused", commit.id, {
                "revision": rev.id, "reason": rev.reason, "signature": rev.signature}, now=now)
            return None
        return rev

    # -- the event loop ---------------------------------------------------------------------

    def enqueue(self, rev: Revision) -> None:
        """Queue `rev` for the worker; a queued older revision is superseded by it. A
        rollback revision goes first and supersedes nothing (the queued commit is held
        behind the pin it sets)."""
        self._idle.clear()
        self._wake.set()
        if rev.trigger == "rollback":
            older_rollback = self._urgent
            self._urgent = rev
            if older_rollback is not None and older_rollback.id != rev.id:
                self._spawn_supersede(older_rollback, rev)
            return
        older = self._pending
        self._pending = rev
        if older is not None and older.id != rev.id:
            self._spawn_supersede(older, rev)
        if getattr(self.deployer, "new_commit", None) is not None:
            asyncio.get_running_loop().create_task(self._announce(rev))

    async def _announce(self, rev: Revision) -> None:
        """Validate a queued commit ahead of its turn and, once it validated (an invalid
        commit must not stop a good rollout), tell a running canary rollout that a newer
        commit waits. A rollout that starts later asks `newer_commit()` itself. Not while
        the fleet is pinned, nor to a rollback's rollout."""
        try:
            if await asyncio.to_thread(self.store.get_state, "pin"):
                return
            ok = await asyncio.to_thread(self._validates, rev.commit)
        except Exception:
            log.exception("pre-validating %s failed", rev.commit[:12])
            return
        if not ok or self._pending is not rev:
            return
        self._validated = rev
        commit = self.newer_commit()
        if commit is not None and self._rolling_out:
            self.deployer.new_commit(commit)  # type: ignore[attr-defined]

    def newer_commit(self) -> str | None:
        """The queued commit that validated while a (non-rollback) revision deploys: what a
        canary rollout hears as NewCommit (onNewCommit)."""
        pending, current = self._pending, self.current
        if (pending is None or self._validated is not pending or current is None
                or current.trigger == "rollback" or current.commit == pending.commit):
            return None
        return pending.commit

    def _validates(self, commit: str) -> bool:
        with self._render_lock:
            try:
                result, _errors = load_and_validate(self._repo(), commit, self.cache)
            except SpecSourceError:
                return False
        return bool(result.ok)

    def _spawn_supersede(self, older: Revision, newer: Revision) -> None:
        async def go() -> None:
            await self._supersede(older, newer)
        asyncio.get_running_loop().create_task(go())

    async def _supersede(self, older: Revision, newer: Revision) -> None:
        now = self.clock()
        fresh = await asyncio.to_thread(self.store.get, older.id)
        if fresh.status not in (RevisionStatus.DETECTED, RevisionStatus.PLANNED):
            return
        await asyncio.to_thread(self.store.update, fresh.moved(
            RevisionStatus.SUPERSEDED, now, reason=f"superseded by revision {newer.id} ({newer.commit[:12]})"))
        await self._audit("revision.superseded", older.commit,
                          {"revision": older.id, "by": newer.id, "by_commit": newer.commit})

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
            self._worker = None

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            rev: Revision | None
            if self._urgent is not None:
                rev, self._urgent = self._urgent, None
            else:
                rev, self._pending = self._pending, None
            if rev is None:
                self._idle.set()
                continue
            self.current = rev
            try:
                await self.process(rev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or the store away: the revision fails, loop lives
                log.exception("revision %s failed", rev.id)
                with contextlib.suppress(Exception):
                    await self._fail(rev, f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self.current = None
            if self._pending is None and self._urgent is None:
                self._idle.set()
            else:
                self._wake.set()

    async def _audit(self, kind: str, subject: str, data: dict[str, Any]) -> None:
        now = self.clock()
        await asyncio.to_thread(self.audit.append, ACTOR, kind, subject, data, now=now,
                                oversize="truncate")

    async def _save(self, rev: Revision) -> Revision:
        return await asyncio.to_thread(self.store.update, rev)

    async def _fail(self, rev: Revision, reason: str) -> None:
        fresh = await asyncio.to_thread(self.store.get, rev.id)
        if fresh.terminal:
            return
        await self._save(fresh.moved(RevisionStatus.FAILED, self.clock(), reason=reason))
        await self._audit("revision.failed", rev.commit, {"revision": rev.id, "reason": reason})

    def _repo(self) -> Any:
        repo = getattr(self._repo_local, "repo", None)
        if repo is None:
            repo = self._repo_local.repo = self.open_repo()
        return repo

    def _evaluate(self, commit: str, known: list[KnownProxy],
                  deployed: Evaluated | None) -> Evaluated | Invalid:
        with self._render_lock:
            return evaluate(self._repo(), commit, cache=self.cache, known=known, deployed=deployed)

    async def process(self, rev: Revision) -> None:
        """One revision from wherever it stands (detected, planned, or deploying after a
        restart) to a final status."""
        started = time.monotonic()
        known = self.known_proxies()
        try:
            result = await asyncio.to_thread(self._evaluate, rev.commit, known, self.deployed)
        except SpecSourceError as exc:
            result = Invalid(rev.commit, [], f"cannot read the commit: {exc}")
        if isinstance(result, Invalid):
            await self._save(rev.moved(RevisionStatus.INVALID, self.clock(),
                                       findings=result.findings, reason=result.reason))
            await self._audit("revision.validated", rev.commit, {
                "revision": rev.id, "valid": False, "reason": result.reason,
                "errors": sum(1 for f in result.findings if f["severity"] == "error"),
                "findings": result.findings[:50]})
            self._reconciled(started)
            return
        if rev.status is RevisionStatus.DETECTED:
            await self._audit("revision.validated", rev.commit, {
                "revision": rev.id, "valid": True, "warnings": len(result.warnings),
                "findings": result.warnings[:50]})
            plan = result.plan
            rev = await self._save(rev.moved(RevisionStatus.PLANNED, self.clock(),
                                             findings=result.warnings, plan=plan))
            await self._audit("plan.made", rev.commit, {
                "revision": rev.id, "from": plan.get("from"), "resources": plan["resources"],
                "resourceNames": plan["resourceNames"][:20], "proxies": plan["proxies"],
                "access": plan["access"]})
        if (self._pending is not None and rev.status is RevisionStatus.PLANNED
                and rev.trigger != "rollback"):
            newer = self._pending
            await self._save(rev.moved(RevisionStatus.SUPERSEDED, self.clock(),
                                       reason=f"superseded by revision {newer.id} ({newer.commit[:12]})"))
            await self._audit("revision.superseded", rev.commit,
                              {"revision": rev.id, "by": newer.id, "by_commit": newer.commit})
            self._reconciled(started)
            return
        pin = await asyncio.to_thread(self.store.get_state, "pin")
        if pin and rev.trigger != "rollback":
            await self._hold(rev, pin)
            self._reconciled(started)
            return
        if result.trust_domain and result.trust_domain != self.trust_domain:
            reason = (f"the Mesh's trust domain {result.trust_domain!r} differs from the CA's "
                      f"{self.trust_domain!r}; a trust-domain change needs a new CA and is not "
                      "deployed")
            await self._fail(rev, reason)
            self._reconciled(started)
            return
        resumed = rev.status is RevisionStatus.DEPLOYING
        if not resumed:
            rev = await self._save(rev.moved(RevisionStatus.DEPLOYING, self.clock()))
        if self.deployer.hello_gets_new:
            self.deploying = result
        self._rolling_out = True
        try:
            verdict, targets = await self._deploy(rev, result, known, resumed=resumed)
            if verdict.status is RevisionStatus.DEPLOYED:
                # Before `deploying` is cleared, with no await between: a hello rendered in
                # between must get this revision, not the one it replaces.
                self.deployed = result
        finally:
            self.deploying = None
            self._rolling_out = False
        fresh = await asyncio.to_thread(self.store.get, rev.id)
        deploy = {**fresh.deploy, **verdict.to_dict(), "absent": list(targets), "seconds":
                  round(time.monotonic() - started, 3)}
        rev = await self._save(fresh.moved(verdict.status, self.clock(), deploy=deploy,
                                           reason="" if verdict.status is RevisionStatus.DEPLOYED
                                           else verdict.reason))
        if verdict.status is RevisionStatus.DEPLOYED:
            self.deployed_revision = rev  # self.deployed was set above
            await asyncio.to_thread(self.store.set_state, "deployed_revision", rev.id)
            if self.fleet_assign is not None and not self.deployer.hello_gets_new:
                self.fleet_assign(self.deployed_assignments())
        await self._audit("deploy.finished", rev.commit, {
            "revision": rev.id, "status": str(verdict.status), "reason": verdict.reason,
            "acked": len(verdict.acked), "nacked": len(verdict.nacked),
            "timed_out": list(verdict.timed_out[:100]), "absent": len(targets)})
        self._reconciled(started)

    async def _hold(self, rev: Revision, pin: Mapping[str, Any]) -> None:
        """The fleet is pinned (`meshcd rollback`): a valid revision waits, visibly, as planned
        until `meshcd rollout resume`; older held ones are superseded by it."""
        reason = (f"held: the fleet is pinned to revision {pin.get('revision')} by "
                  f"{pin.get('actor', '?')}; `meshcd rollout resume` deploys the newest commit")
        if rev.reason != reason:
            rev = await self._save(rev.moved(RevisionStatus.PLANNED, self.clock(), reason=reason)
                                   if rev.status is not RevisionStatus.PLANNED
                                   else replace(rev, reason=reason, updated_at=self.clock()))
            await self._audit("revision.held", rev.commit, {"revision": rev.id, "pin": dict(pin)})
        older = await asyncio.to_thread(self.store.list, limit=100, before_id=rev.id,
                                        status=str(RevisionStatus.PLANNED))
        for old in older:
            await self._save(old.moved(RevisionStatus.SUPERSEDED, self.clock(),
                                       reason=f"superseded by revision {rev.id} while pinned"))
            await self._audit("revision.superseded", old.commit, {"revision": old.id,
                                                                  "by": rev.id})

    def _request(self, rev: Revision, result: Evaluated, targets: DeployTargets,
                 known: list[KnownProxy]) -> DeployRequest:
        """The deploy request: each target's new snapshot and, for the canary, what it runs
        now (the fleet's desired, else the deployed revision's render), its service and the
        RolloutPolicy covering that service."""
        snapshots = desired_snapshots(result.render.snapshots, targets.assign, rev.commit)
        previous: dict[str, DesiredSnapshot] = {}
        old_render = self.deployed.render.snapshots if self.deployed is not None else {}
        for proxy_id in targets.assign:
            current = self.current_desired(proxy_id) if self.current_desired else None
            if current is None and proxy_id in old_render and self.deployed is not None:
                snap = old_render[proxy_id]
                current = DesiredSnapshot(snap.version, self.deployed.commit, snap.canonical())
            if current is not None:
                previous[proxy_id] = current
        services = {k.proxy_id: f"{k.service}.{k.namespace}" for k in known
                    if k.proxy_id in targets.assign}
        policies = {svc: result.model.rollout_policy_for(ServiceRef(*svc.split(".", 1)))
                    for svc in set(services.values())}
        rollback = rev.deploy.get("rollback") or {}
        return DeployRequest(
            rev.id, rev.commit, targets, snapshots, previous=previous, services=services,
            policies=policies,
            previous_commit=self.deployed.commit if self.deployed is not None else None,
            strategy="all-at-once" if rollback.get("fast") else None)

    async def _deploy(self, rev: Revision, result: Evaluated, known: list[KnownProxy], *,
                      resumed: bool) -> tuple[DeployVerdict, tuple[str, ...]]:
        targets = deploy_targets(result.render.versions(), known)
        request = self._request(rev, result, targets, known)
        strategy = request.strategy or ("all-at-once" if self.deployer.hello_gets_new
                                        else "canary")
        await self._audit("deploy.resumed" if resumed else "deploy.started", rev.commit, {
            "revision": rev.id, "strategy": strategy, "proxies": list(targets.wait_for[:200]),
            "waiting_for": len(targets.wait_for), "absent": list(targets.absent[:200])})
        verdict = await self.deployer.deploy(request)
        if verdict.acked:
            await self._audit("deploy.ack", rev.commit, {"revision": rev.id,
                                                         "proxies": list(verdict.acked[:500]),
                                                         "count": len(verdict.acked)})
        if verdict.nacked:
            await self._audit("deploy.nack", rev.commit, {
                "revision": rev.id, "proxies": dict(list(verdict.nacked.items())[:100]),
                "count": len(verdict.nacked)})
        return verdict, targets.absent

    def _reconciled(self, started: float) -> None:
        if self.on_reconciled is not None:
            self.on_reconciled(time.monotonic() - started)

    # -- start-up ---------------------------------------------------------------------------

    async def restore(self) -> list[Revision]:
        """Rebuild the deployed revision's render (so hellos get it at once) and return the
        unfinished revision to resume (at most one; older ones are closed)."""
        deployed_id = await asyncio.to_thread(self.store.get_state, "deployed_revision")
        # The last branch head seen: the newest revision the branch produced (a rollback
        # revision's commit is an older one, not the head).
        latest = await asyncio.to_thread(self.store.latest, exclude_trigger="rollback")
        self.last_recorded = latest.commit if latest is not None else None
        if deployed_id is not None:
            rev = await asyncio.to_thread(self.store.get, int(deployed_id))
            known = self.known_proxies()
            try:
                result = await asyncio.to_thread(self._evaluate, rev.commit, known, None)
            except SpecSourceError as exc:
                result = Invalid(rev.commit, [], str(exc))
            if isinstance(result, Evaluated):
                self.deployed, self.deployed_revision = result, rev
            else:
                log.error("the deployed revision %s no longer loads: %s", rev.id, result.reason)
        unfinished = await asyncio.to_thread(self.store.unfinished)
        # A rollback asked for before the restart is resumed too, first (and pins the fleet,
        # so the commit resumed after it is held); older rollbacks are superseded by it.
        rollbacks = [r for r in unfinished if r.trigger == "rollback"]
        rollback_plan = recovery_plan(rollbacks)
        recovery = recovery_plan([r for r in unfinished if r.trigger != "rollback"])
        resume = recovery.resume
        if (resume is not None and resume.status is RevisionStatus.DEPLOYING
                and self.deployer.hello_gets_new):
            # Render it now, so proxies that reconnect get where the deploy was going rather
            # than a step back to the deployed revision.
            with contextlib.suppress(SpecSourceError):
                again = await asyncio.to_thread(self._evaluate, resume.commit,
                                                self.known_proxies(), self.deployed)
                if isinstance(again, Evaluated):
                    self.deploying = again
        if rollback_plan.resume is not None and resume is not None \
                and resume.status is RevisionStatus.DEPLOYING:
            # The rollback was asked for during this rollout (which it aborts): close it
            # the way the abort would have; the fleet was reset to the deployed revision.
            await self._close_interrupted(resume, aborted=True)
            resume = None
        for old in (*recovery.supersede, *rollback_plan.supersede):
            if old.status is RevisionStatus.DEPLOYING:
                await self._close_interrupted(old, aborted=False)
            else:
                await self._save(old.moved(RevisionStatus.SUPERSEDED, self.clock(),
                                           reason="superseded at restart by a newer revision"))
                await self._audit("revision.superseded", old.commit,
                                  {"revision": old.id, "reason": "restart"})
        return [r for r in (rollback_plan.resume, resume) if r is not None]

    async def _close_interrupted(self, rev: Revision, *, aborted: bool) -> None:
        """A revision caught mid-deploy by a restart that will not be resumed. A canary
        rollout of it (a row in `rollouts`) ends rejected (a rollback aborted it) or
        superseded (a newer commit follows); every proxy was reset to the deployed revision
        at start-up. An all-at-once deploy is failed, as before."""
        saved = await asyncio.to_thread(self.store.load_rollout, rev.id)
        if saved is None:
            await self._fail(rev, "interrupted by a controller restart; a newer revision follows")
            return
        status = RevisionStatus.REJECTED if aborted else RevisionStatus.SUPERSEDED
        outcome = "aborted" if aborted else "superseded"
        reason = ("aborted by a rollback asked for before the controller restarted"
                  if aborted else "superseded at restart by a newer revision")
        fresh = await asyncio.to_thread(self.store.get, rev.id)
        await self._save(fresh.moved(status, self.clock(), reason=reason,
                                     deploy={**fresh.deploy, "outcome": outcome}))
        await self._audit("rollout.finished", rev.commit, {
            "revision_id": rev.id, "outcome": outcome, "revisionStatus": str(status),
            "reason": reason, "note": "closed at restart"})

    def deployed_assignments(self) -> dict[str, DesiredSnapshot]:
        """What every known proxy should run after a restart: the revision a resumed deploy
        was deploying, else the deployed one."""
        source = self.deploying or self.deployed
        if source is None:
            return {}
        targets = deploy_targets(source.render.versions(), self.known_proxies())
        return desired_snapshots(source.render.snapshots, targets.assign, source.commit)

    def snapshot_for(self, proxy: KnownProxy) -> DesiredSnapshot | None:
        """What a proxy that just said hello should run: the deployed revision rendered for
        its (service, labels); during a deploy, the revision being deployed. Blocking (may
        render): call it in a thread."""
        deployed = self.deploying or self.deployed
        if deployed is None:
            return None
        # A one-proxy render from the deployed state: the snapshots it shares with proxies
        # of the same (service, mTLS mode, ports) are reused, not rebuilt.
        fleet = render_fleet(deployed.model, [proxy])
        target = fleet.get(proxy.proxy_id)
        if target is None:
            return None
        one = render(deployed.model, type(fleet).of([target]), previous=deployed.render.state)
        snap = one.snapshots.get(proxy.proxy_id)
        if snap is None:
            return None
        return DesiredSnapshot(snap.version, deployed.commit, snap.canonical())


def desired_snapshots(snapshots: Any, assign: dict[str, str] | Any,
                      revision: str) -> dict[str, DesiredSnapshot]:
    """One DesiredSnapshot per assigned proxy; identical snapshots share one object (and one
    copy of the bytes)."""
    by_version: dict[str, DesiredSnapshot] = {}
    out: dict[str, DesiredSnapshot] = {}
    for proxy_id in assign:
        snap: RenderedSnapshot = snapshots[proxy_id]
        d = by_version.get(snap.version)
        if d is None:
            d = by_version[snap.version] = DesiredSnapshot(snap.version, revision, snap.canonical())
        out[proxy_id] = d
    return out
