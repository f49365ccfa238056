"""The revision pipeline: the thin shell that runs the pure `RevisionQueue`'s commands.

Events reach the queue one at a time on the controller's event loop (`post`); the queue
decides, and the commands it returns run in order on one consumer task: store writes, audit
records and state (each in a thread), and the long steps (validate, render and plan, deploy),
which run as tasks that post their answer back as an event. The fetch thread writes no
revision and no state: it posts an `Observed` event to the loop (`observe`).

The shell keeps what is not data: the renders (`deployed`, `deploying`, what hellos get), the
validated models until their plan, the repository handle and the validation cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from reconciler.audit import AuditLog
from reconciler.fleet import DesiredSnapshot
from reconciler.language.model import ServiceRef
from reconciler.language.sources import ConfigReadError as SpecSourceError
from reconciler.language.validate import ValidationCache
from reconciler.revisions.decisions import (
    DeployTargets,
    KnownProxy,
    deploy_targets,
    render_fleet,
)
from reconciler.revisions.deployer import Deployer, DeployRequest
from reconciler.revisions.evaluate import (
    Checked,
    Evaluated,
    Invalid,
    check,
    render_and_plan,
)
from reconciler.revisions.model import Revision, RevisionStatus
from reconciler.revisions.queue import (
    ROLLBACK,
    AbortRollout,
    Announce,
    AssignFleet,
    Audit,
    Change,
    Command,
    Deploy,
    DeployFinished,
    Event,
    Insert,
    Inserted,
    Persisted,
    Pin,
    Plan,
    Planned,
    QueueConfig,
    RevisionQueue,
    Rollback,
    RollbackRequested,
    Save,
    SeenCommit,
    SetState,
    Settled,
    StepFailed,
    Unpinned,
    Validate,
    Validated,
    Validation,
)
from reconciler.revisions.queue import Observed as ObservedEvent
from reconciler.revisions.store import RevisionStore
from reconciler.source import BranchObservation
from renderers import RenderedSnapshot, render

log = logging.getLogger("meshcd.pipeline")

_CHANGES = {c.value: c for c in Change}


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
        self.on_reconciled = on_reconciled
        # What each proxy runs now (the fleet's desired snapshot): what a canary rolls back to.
        self.current_desired = current_desired
        # Hands the deployed revision to every known proxy after a canary promotion.
        self.fleet_assign = fleet_assign
        self.config = QueueConfig(
            branch, trust_domain,
            strategy="all-at-once" if deployer.hello_gets_new else "canary",
            assign_after_deploy=fleet_assign is not None and not deployer.hello_gets_new)
        self.queue = RevisionQueue(self.config)
        self.cache = ValidationCache()
        # Renders: the deployed revision's (hellos, plans, what a canary rolls back to) and,
        # all at once, the one being deployed (hellos during the deploy get it).
        self.deployed: Evaluated | None = None
        self.deploying: Evaluated | None = None
        self._checked: dict[int, Checked] = {}  # validated, waiting for their plan
        self._planned: dict[int, tuple[Evaluated, list[KnownProxy]]] = {}
        self._started: dict[int, float] = {}  # for the reconcile-time metric
        self._rollback_replies: list[asyncio.Future[Revision]] = []
        self._todo: asyncio.Queue[list[Command]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._deploy_task: tuple[int, asyncio.Task[None]] | None = None
        self._render_lock = threading.Lock()  # render states are not shared across threads
        self._repo_local = threading.local()
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False  # the consumer is running a batch
        self._idle = asyncio.Event()
        self._idle.set()

    # -- what the controller reads (on the loop; `head` also from the fetch thread) --------

    @property
    def deployed_revision(self) -> Revision | None:
        return self.queue.state.deployed

    @property
    def current(self) -> Revision | None:
        return self.queue.state.current

    @property
    def last_recorded(self) -> str | None:
        """The newest branch head recorded (what `observe_branch` compares with)."""
        return self.queue.state.head

    @property
    def pin(self) -> Pin | None:
        return self.queue.state.pin

    @property
    def held(self) -> Revision | None:
        return self.queue.state.held

    # -- inputs ------------------------------------------------------------------------------

    def observe(self, obs: BranchObservation, reasons: tuple[str, ...]) -> None:
        """From the fetch thread: hand what a fetch saw on the branch to the loop."""
        assert self._loop is not None, "restore() first"
        self._loop.call_soon_threadsafe(self.post, observed(obs, reasons, self.clock()))

    def post(self, event: Event) -> None:
        """On the loop: the queue decides at once; its commands run in order."""
        cmds = self.queue.handle(event)
        if cmds:
            self._idle.clear()
            self._todo.put_nowait(cmds)
        self._check_idle()

    async def rollback(self, target: Revision, *, fast: bool, actor: str, reason: str,
                       revert_commit: str | None, abort: bool) -> Revision:
        """Pin the fleet to `target` and queue its redeploy first; returns the new revision."""
        reply: asyncio.Future[Revision] = asyncio.get_running_loop().create_future()
        self._rollback_replies.append(reply)
        self.post(RollbackRequested(target, fast, actor, reason, revert_commit, abort,
                                    self.clock()))
        return await reply

    def unpin(self, actor: str) -> Revision | None:
        """Unpin the fleet; returns the held revision that deploys now, if any."""
        held = self.queue.state.held
        self.post(Unpinned(actor, self.clock()))
        return held

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        tasks = [t for t in (self._worker, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._worker = None

    async def wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def _check_idle(self) -> None:
        if self.queue.idle and self._todo.empty() and not self._tasks and not self._running:
            self._idle.set()

    async def _work(self) -> None:
        while True:
            cmds = await self._todo.get()
            self._running = True
            try:
                await self._run(cmds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or the store away: the revision fails, loop lives
                log.exception("revision commands failed")
                cur = self.queue.state.current
                if cur is not None:
                    self.post(StepFailed(cur.id, f"internal error: {type(exc).__name__}: {exc}",
                                         self.clock()))
            finally:
                self._running = False
                self._check_idle()

    async def _run(self, cmds: list[Command]) -> None:
        for c in cmds:
            match c:
                case Save():
                    await asyncio.to_thread(self.store.update, c.revision)
                case Audit():
                    await asyncio.to_thread(self.audit.append, c.actor, c.kind, c.subject,
                                            dict(c.data), now=self.clock(), oversize="truncate")
                case SetState():
                    await asyncio.to_thread(self.store.set_state, c.key, c.value)
                case Insert():
                    rev = await asyncio.to_thread(self.store.add, c.revision)
                    # The answer is handled now: what it asks runs before the next batch.
                    await self._run(self.queue.handle(Inserted(rev, c.context, self.clock())))
                    if isinstance(c.context, Rollback) and self._rollback_replies:
                        # Answered once its pin and records are stored and a running
                        # rollout answered the abort: an operator who saw it accepted keeps
                        # it whatever happens next.
                        reply = self._rollback_replies.pop(0)
                        if not reply.done():
                            reply.set_result(rev)
                case Validate():
                    self._started.setdefault(c.revision.id, time.monotonic())
                    self._spawn(self._validate(c.revision))
                case Plan():
                    self._spawn(self._plan(c.revision))
                case Deploy():
                    task = self._spawn(self._deploy(c))
                    self._deploy_task = (c.revision.id, task)
                case Announce():
                    running = self._deploy_task
                    if running is not None and running[0] == c.during and not running[1].done():
                        self.deployer.new_commit(c.commit)
                case AbortRollout():
                    await self.deployer.operator("abort", c.actor, c.reason)
                case AssignFleet():
                    if self.fleet_assign is not None:
                        self.fleet_assign(self.deployed_assignments())
                case Settled():
                    started = self._started.pop(c.revision_id, None)
                    if started is not None and self.on_reconciled is not None:
                        self.on_reconciled(time.monotonic() - started)
                    if not self.queue.tracks(c.revision_id):  # final: its models go
                        self._checked.pop(c.revision_id, None)
                        self._planned.pop(c.revision_id, None)

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._check_idle()

        task.add_done_callback(done)
        return task

    # -- the long steps (each posts its answer) -------------------------------------------

    async def _validate(self, rev: Revision) -> None:
        try:
            got = self._checked.get(rev.id)
            if got is None:
                result = await asyncio.to_thread(self._check, rev.commit)
            else:
                result = got
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("validating %s failed", rev.commit[:12])
            self.post(StepFailed(rev.id, f"internal error: {type(exc).__name__}: {exc}",
                                 self.clock()))
            return
        if isinstance(result, Invalid):
            v = Validation(False, findings=tuple(result.findings), reason=result.reason)
        else:
            self._checked[rev.id] = result
            v = Validation(True, warnings=tuple(result.warnings),
                           trust_domain=result.trust_domain)
        self.post(Validated(rev.id, v, self.clock()))

    def _check(self, commit: str) -> Checked | Invalid:
        with self._render_lock:
            try:
                return check(self._repo(), commit, self.cache)
            except SpecSourceError as exc:
                return Invalid(commit, [], f"cannot read the commit: {exc}")

    async def _plan(self, rev: Revision) -> None:
        checked = self._checked.get(rev.id)
        known = self.known_proxies()
        try:
            if checked is None:
                raise RuntimeError(f"revision {rev.id} was not validated")
            deployed = self.deployed
            result = await asyncio.to_thread(self._render_and_plan, checked, known, deployed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("planning %s failed", rev.commit[:12])
            self.post(StepFailed(rev.id, f"internal error: {type(exc).__name__}: {exc}",
                                 self.clock()))
            return
        self._planned[rev.id] = (result, known)
        targets = deploy_targets(result.render.versions(), known)
        self.post(Planned(rev.id, result.plan, targets, self.clock()))

    def _render_and_plan(self, checked: Checked, known: list[KnownProxy],
                         deployed: Evaluated | None) -> Evaluated:
        with self._render_lock:
            return render_and_plan(checked, known=known, deployed=deployed)

    async def _deploy(self, c: Deploy) -> None:
        rev = c.revision
        started = time.monotonic()
        try:
            result, known = self._planned[rev.id]
            request = self._request(rev, result, c.targets, known, c.strategy)
            if self.deployer.hello_gets_new:
                self.deploying = result
            try:
                verdict = await self.deployer.deploy(request)
                if verdict.status is RevisionStatus.DEPLOYED:
                    # Before `deploying` is cleared, with no await between: a hello rendered
                    # in between must get this revision, not the one it replaces.
                    self.deployed = result
            finally:
                self.deploying = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("deploying revision %s failed", rev.id)
            self.post(StepFailed(rev.id, f"internal error: {type(exc).__name__}: {exc}",
                                 self.clock()))
            return
        self.post(DeployFinished(rev.id, verdict, time.monotonic() - started, self.clock()))

    def _request(self, rev: Revision, result: Evaluated, targets: DeployTargets,
                 known: list[KnownProxy], strategy: str | None) -> DeployRequest:
        """The deploy request: each target's new snapshot and, for the canary, what it runs
        now (the fleet's desired, else the deployed revision's render), its service and the
        RolloutPolicy covering that service."""
        snapshots = desired_snapshots(result.render.snapshots, targets.assign, rev.commit)
        previous: dict[str, DesiredSnapshot] = {}
        deployed = self.deployed
        old_render = deployed.render.snapshots if deployed is not None else {}
        for proxy_id in targets.assign:
            current = self.current_desired(proxy_id) if self.current_desired else None
            if current is None and proxy_id in old_render and deployed is not None:
                snap = old_render[proxy_id]
                current = DesiredSnapshot(snap.version, deployed.commit, snap.canonical())
            if current is not None:
                previous[proxy_id] = current
        services = {k.proxy_id: f"{k.service}.{k.namespace}" for k in known
                    if k.proxy_id in targets.assign}
        policies = {svc: result.model.rollout_policy_for(ServiceRef(*svc.split(".", 1)))
                    for svc in set(services.values())}
        return DeployRequest(
            rev.id, rev.commit, targets, snapshots, previous=previous, services=services,
            policies=policies, previous_commit=deployed.commit if deployed is not None else None,
            strategy=strategy)

    def _repo(self) -> Any:
        repo = getattr(self._repo_local, "repo", None)
        if repo is None:
            repo = self._repo_local.repo = self.open_repo()
        return repo

    # -- start-up ---------------------------------------------------------------------------

    async def restore(self) -> None:
        """Read what the store holds, rebuild the deployed revision's render (so hellos get it
        at once) and hand the rest to the queue: it resumes at most one unfinished commit
        (and a rollback first) and closes the others. Their commands run once `start`ed."""
        self._loop = asyncio.get_running_loop()
        saved = await asyncio.to_thread(self._read_persisted)
        if saved.deployed is not None:
            result = await asyncio.to_thread(self._evaluate_now, saved.deployed, None)
            if isinstance(result, Evaluated):
                self.deployed = result
            else:
                log.error("the deployed revision %s no longer loads: %s", saved.deployed.id,
                          result.reason)
        self.queue, cmds = RevisionQueue.restore(self.config, saved, self.clock())
        resumed = self.queue.state.current
        if (resumed is not None and resumed.status is RevisionStatus.DEPLOYING
                and resumed.trigger != ROLLBACK and self.deployer.hello_gets_new):
            # Render it now, so proxies that reconnect get where the deploy was going rather
            # than a step back to the deployed revision.
            again = await asyncio.to_thread(self._evaluate_now, resumed, self.deployed)
            if isinstance(again, Evaluated):
                self.deploying = again
        if cmds:
            self._idle.clear()
            self._todo.put_nowait(cmds)

    def _read_persisted(self) -> Persisted:
        store = self.store
        deployed_id = store.get_state("deployed_revision")
        deployed = store.get(int(deployed_id)) if deployed_id is not None else None
        pin = store.get_state("pin")
        # The last branch head seen: the newest revision the branch produced (a rollback
        # revision's commit is an older one, not the head).
        latest = store.latest(exclude_trigger=ROLLBACK)
        unfinished = tuple(store.unfinished())
        rollouts = frozenset(r.id for r in unfinished if r.status is RevisionStatus.DEPLOYING
                             and store.load_rollout(r.id) is not None)
        return Persisted(deployed, unfinished,
                         Pin.from_dict(pin) if isinstance(pin, dict) else None,
                         latest.commit if latest is not None else None, rollouts)

    def _evaluate_now(self, rev: Revision, deployed: Evaluated | None) -> Evaluated | Invalid:
        """Validate and render a revision at start-up (its validation is kept for its turn)."""
        got = self._check(rev.commit)
        if isinstance(got, Invalid):
            return got
        self._checked[rev.id] = got
        return self._render_and_plan(got, self.known_proxies(), deployed)

    # -- what proxies get ---------------------------------------------------------------------

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


def observed(obs: BranchObservation, reasons: tuple[str, ...], now: datetime) -> ObservedEvent:
    """A fetch's observation as the queue's event (plain data)."""
    seen = None
    commit, decision = obs.commit, obs.decision
    if commit is not None:
        refusal = None
        if decision is not None and not decision.deployable:
            refusal = decision.reason
        seen = SeenCommit(commit.id, f"{commit.author.name} <{commit.author.email}>",
                          commit.message,
                          decision.to_dict() if decision is not None else {}, refusal)
    return ObservedEvent(_CHANGES.get(obs.event.kind, Change.OTHER), seen, tuple(reasons),
                         obs.event.to_dict(), obs.to_dict(), now)


def desired_snapshots(snapshots: Any, assign: Mapping[str, str] | Any,
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
