"""A whole controller's middle without I/O: the revision queue and the rollout engine driven
together, with the shell's work done in memory (a store, a fleet of desired versions, an
audit chain hashed with reconciler.audit's own functions), so that a test can crash it at
any command and restart it from what was persisted.

A version is the commit's name (every proxy gets the same snapshot of a commit); validity of
a commit is decided when it is made. The fleet's answers (ACK/NACK), stats, disconnects,
timers and the shell's long steps (validate, plan) are left waiting until the test picks
them, in any order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.analysis.sample import LATENCY_BUCKETS
from reconciler.audit.chain import verify_records
from reconciler.audit.record import GENESIS_HASH, AuditEntry, link_entries, prepare_entries
from reconciler.revisions import DeployTargets, DeployVerdict, Revision, RevisionStatus
from reconciler.revisions.model import TERMINAL
from reconciler.revisions.queue import (
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
    Observed,
    Persisted,
    Pin,
    Plan,
    Planned,
    QueueConfig,
    RevisionQueue,
    RollbackRequested,
    Save,
    SeenCommit,
    SetState,
    Settled,
    Unpinned,
    Validate,
    Validated,
    Validation,
)
from reconciler.rollout import (
    Acked,
    Disconnected,
    Finished,
    Nacked,
    NewCommit,
    Operator,
    Persist,
    Push,
    Reply,
    RolloutEngine,
    RolloutSettings,
    RolloutSpec,
    StageSpec,
    StartTimer,
    StatsReceived,
    Target,
    TimerFired,
)
from reconciler.rollout import Audit as RolloutAudit
from reconciler.rollout import Command as RolloutCommand
from reconciler.rollout import Event as RolloutEvent

S = RevisionStatus
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TD = "mesh.test"
PROXIES = {"a1": "api.shop", "a2": "api.shop", "w1": "web.shop", "w2": "web.shop",
           "w3": "web.shop"}
STAGES = (StageSpec(2.0, count=1), StageSpec(2.0, percent=100.0))
FINAL = TERMINAL  # invalid, deployed, failed, superseded, rejected: never change


class Crash(Exception):
    """The controller died before this command ran."""


class Broken(AssertionError):
    """An invariant does not hold."""


def window(second: int, error_share: float) -> dict[str, Any]:
    n = 50
    e5 = round(n * error_share)
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    buckets[3] = n
    return {"second": second, "requests": {"2xx": n - e5, "3xx": 0, "4xx": 0, "5xx": e5},
            "connection_failures": 0, "denials": 0, "latency_buckets": buckets,
            "latency_sum_seconds": n * 0.01}


@dataclass
class Rollout:
    revision_id: int
    commit: str
    engine: RolloutEngine


@dataclass
class World:
    """One controller (its process state is what `restart` drops) and what outlives it."""

    # -- what outlives a crash: the database and the fleet --------------------------------
    rows: dict[int, Revision] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    rollouts: dict[int, Mapping[str, Any]] = field(default_factory=dict)  # revision -> state
    audit: list[Audit | RolloutAudit] = field(default_factory=list)
    desired: dict[str, str | None] = field(default_factory=dict)
    valid: dict[str, bool] = field(default_factory=dict)  # commit -> validates?
    commits: int = 0
    # -- the process -------------------------------------------------------------------
    queue: RevisionQueue = field(default_factory=lambda: RevisionQueue(
        QueueConfig("main", TD, strategy="canary", assign_after_deploy=True)))
    rollout: Rollout | None = None
    todo: list[list[Command]] = field(default_factory=list)  # the pipeline's batches
    work: list[Validate | Plan] = field(default_factory=list)  # the shell's long steps
    answers: list[tuple[str, str]] = field(default_factory=list)  # (proxy, version) pushed
    timers: list[str] = field(default_factory=list)
    disconnected: set[str] = field(default_factory=set)
    planned_targets: dict[int, DeployTargets] = field(default_factory=dict)
    validated_here: set[int] = field(default_factory=set)  # validated in this process
    now: datetime = T0
    budget: int | None = None  # store writes left before a crash
    restarts: int = 0
    steps: int = 0
    deployed_order: list[int] = field(default_factory=list)  # ids, as saved deployed

    # -- time -------------------------------------------------------------------------------

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)

    @property
    def t(self) -> float:
        return self.now.timestamp()

    # -- the queue's side ------------------------------------------------------------------

    def post(self, event: Event) -> None:
        """As Pipeline.post: the queue decides now; the commands run after those before."""
        self.steps += 1
        cmds = self.queue.handle(event)
        if cmds:
            self.todo.append(cmds)

    def drain(self) -> None:
        """The pipeline's consumer: run the batches in order."""
        while self.todo:
            self.run(self.todo.pop(0))

    def run(self, cmds: list[Command]) -> None:
        for c in cmds:
            self._charge(c)
            match c:
                case Insert():
                    new_id = max(self.rows, default=0) + 1
                    rev = replace(c.revision, id=new_id)
                    self.rows[new_id] = rev
                    self.run(self.queue.handle(Inserted(rev, c.context, self.now)))
                case Save():
                    old = self.rows.get(c.revision.id)
                    if old is None:
                        raise Broken(f"save of an unknown revision {c.revision.id}")
                    if old.status in FINAL and c.revision.status != old.status:
                        raise Broken(f"revision {old.id} went from final {old.status} to "
                                     f"{c.revision.status}")
                    self.rows[c.revision.id] = c.revision
                    if c.revision.status is S.DEPLOYED and old.status is not S.DEPLOYED:
                        self.deployed_order.append(c.revision.id)
                case Audit():
                    self.audit.append(c)
                case SetState():
                    if c.value is None:
                        self.state.pop(c.key, None)
                    else:
                        self.state[c.key] = c.value
                case Validate():
                    if c.revision.id in self.validated_here:
                        raise Broken(f"revision {c.revision.id} validated twice")
                    self.validated_here.add(c.revision.id)
                    self.work.append(c)
                case Plan():
                    self.work.append(c)
                case Deploy():
                    self._deploy(c)
                case Announce():
                    r = self.rollout
                    if r is not None and r.revision_id == c.during:
                        self.feed(NewCommit(c.commit, self.t))
                case AbortRollout():
                    if self.rollout is not None:
                        self.feed(Operator("abort", c.actor, self.t, c.reason))
                case AssignFleet():
                    commit = self.rows[c.revision_id].commit
                    for p in PROXIES:
                        self.desired[p] = commit
                case Settled():
                    pass

    def _charge(self, c: object) -> None:
        """A failpoint before every persisted transition (a store write): with `budget`
        set, the controller dies before the write after `budget` more of them."""
        if self.budget is not None and isinstance(c, Insert | Save | SetState | Persist):
            if self.budget <= 0:
                raise Crash(c)
            self.budget -= 1

    def _deploy(self, c: Deploy) -> None:
        rev = c.revision
        if rev.trigger != "rollback":
            rejected = [r for r in self.rows.values() if r.commit == rev.commit
                        and r.status is S.REJECTED and r.trigger != "rollback"]
            if rejected:
                raise Broken(f"commit {rev.commit} deployed again after it was rejected")
        if self.state.get("pin") is not None and rev.trigger != "rollback":
            raise Broken(f"revision {rev.id} deploys while the fleet is pinned")
        if self.rollout is not None:
            raise Broken(f"a second rollout ({rev.id}) while {self.rollout.revision_id} runs")
        if c.strategy == "all-at-once":
            for p in c.targets.assign:
                self.desired[p] = rev.commit
            verdict = DeployVerdict(S.DEPLOYED, tuple(c.targets.wait_for), {}, (), "acked")
            self.post(DeployFinished(rev.id, verdict, 0.1, self.now))
            return
        saved = self.rollouts.get(rev.id)
        if saved is not None and saved.get("phase") == "done":
            out = saved["outcome"]
            self.post(DeployFinished(rev.id, _verdict(out["revisionStatus"], out["outcome"],
                                                      out["reason"]), 0.1, self.now))
            return
        if saved is not None:
            engine, cmds = RolloutEngine.restore(saved, self.t)
        else:
            previous = self.rows[c.deployed].commit if c.deployed is not None else None
            targets = tuple(Target(p, PROXIES[p], rev.commit, self.desired.get(p),
                                   p not in self.disconnected)
                            for p in sorted(c.targets.assign)
                            if self.desired.get(p) != rev.commit)
            settings = RolloutSettings(STAGES, {}, on_inconclusive="pass")
            engine, cmds = RolloutEngine.start(
                RolloutSpec(rev.commit, previous, targets, settings, ack_timeout=5.0,
                            rollback_timeout=5.0), self.t)
        self.rollout = Rollout(rev.id, rev.commit, engine)
        self.run_engine(cmds)

    # -- the engine's side -----------------------------------------------------------------

    def feed(self, event: RolloutEvent) -> None:
        r = self.rollout
        if r is None:
            return
        self.steps += 1
        self.run_engine(r.engine.handle(event))

    def run_engine(self, cmds: list[RolloutCommand]) -> None:
        r = self.rollout
        assert r is not None
        for c in cmds:
            self._charge(c)
            match c:
                case Push():
                    for p, v in c.assign.items():
                        self.desired[p] = v
                    waits = set(c.wait_for)
                    self.answers = [(p, v) for p, v in self.answers
                                    if p not in c.assign and p not in waits]
                    self.answers += [(p, self.desired.get(p) or "") for p in c.wait_for]
                case StartTimer():
                    self.timers.append(c.token)
                case RolloutAudit():
                    self.audit.append(RolloutAudit(c.actor, c.kind, c.subject,
                                                   {**c.data, "revision_id": r.revision_id}))
                case Persist():
                    self.rollouts[r.revision_id] = c.state
                case Reply():
                    pass
                case Finished():
                    self.rollouts[r.revision_id] = r.engine.to_dict()  # the shell's last save
                    self.rollout = None
                    self.answers.clear()
                    self.timers.clear()
                    self.post(DeployFinished(r.revision_id, _verdict(
                        c.revision_status, c.outcome, c.reason), 1.0, self.now))
                    return

    # -- the fleet's and the operator's moves ---------------------------------------------

    def new_commit(self, valid: bool, refused: bool = False) -> str:
        self.commits += 1
        commit = f"c{self.commits}"
        self.valid[commit] = valid
        self.observe(commit, refused)
        return commit

    def observe(self, commit: str, refused: bool = False) -> None:
        seen = SeenCommit(commit, "Ana <ana@example.com>", f"change {commit}",
                          {"deployable": not refused}, "unsigned" if refused else None)
        self.post(Observed(Change.NEW_COMMIT, seen, ("poll",), {"kind": "new_commit"}, {},
                           self.now))

    def answer_work(self, i: int) -> None:
        job = self.work.pop(i % len(self.work))
        rev = job.revision
        if isinstance(job, Validate):
            ok = self.valid.get(rev.commit, True)
            v = (Validation(True, trust_domain=TD) if ok else
                 Validation(False, findings=({"code": "E", "severity": "error"},),
                            reason="1 validation error(s)"))
            self.post(Validated(rev.id, v, self.now))
        else:
            targets = DeployTargets({p: rev.commit for p in PROXIES},
                                    tuple(p for p in sorted(PROXIES) if p not in
                                          self.disconnected),
                                    tuple(p for p in sorted(PROXIES) if p in self.disconnected))
            self.post(Planned(rev.id, {"from": None, "resources": {}}, targets, self.now))

    def answer_push(self, i: int, ack: bool) -> None:
        p, v = self.answers.pop(i % len(self.answers))
        if ack:
            self.feed(Acked(p, v, self.t))
        else:
            self.feed(Nacked(p, v, "refused", self.t))

    def stats(self, error_share: float) -> None:
        self.tick()
        second = int(self.t) - 1
        for p in sorted(PROXIES):
            if p not in self.disconnected:
                self.feed(StatsReceived(p, window(second, error_share), self.t))

    def disconnect(self, i: int) -> None:
        p = sorted(PROXIES)[i % len(PROXIES)]
        if p not in self.disconnected:
            self.disconnected.add(p)
            self.answers = [(q, v) for q, v in self.answers if q != p]
            self.feed(Disconnected(p, self.t))

    def reconnect_all(self) -> None:
        self.disconnected.clear()

    def fire(self, i: int) -> None:
        token = self.timers.pop(i % len(self.timers))
        self.tick(5.0)
        self.feed(TimerFired(token, self.t))

    def operator(self, action: str) -> None:
        self.feed(Operator(action, "user:op", self.t))

    def rollback(self, fast: bool) -> bool:
        """The controller's choice of target (controller.rollback), then the request."""
        deployed = self.queue.state.deployed
        running = self.rollout is not None
        if running and deployed is not None:
            target = deployed
        else:
            current = deployed.commit if deployed is not None else None
            found = [r for r in sorted(self.rows.values(), key=lambda r: -r.id)
                     if r.status is S.DEPLOYED and r.commit != current
                     and (deployed is None or r.id < deployed.id)]
            if not found:
                return False
            target = found[0]
        self.post(RollbackRequested(target, fast, "user:op", "", None, running, self.now))
        return True

    def unpin(self) -> None:
        self.post(Unpinned("user:op", self.now))

    # -- a crash and a restart --------------------------------------------------------------

    def persisted(self) -> Persisted:
        deployed_id = self.state.get("deployed_revision")
        pin = self.state.get("pin")
        heads = [r for r in sorted(self.rows.values(), key=lambda r: r.id)
                 if r.trigger != "rollback"]
        unfinished = tuple(r for _, r in sorted(self.rows.items()) if not r.terminal)
        return Persisted(
            self.rows[deployed_id] if deployed_id is not None else None, unfinished,
            Pin.from_dict(pin) if pin is not None else None,
            heads[-1].commit if heads else None,
            frozenset(r.id for r in unfinished if r.id in self.rollouts
                      and r.status is S.DEPLOYING))

    def restart(self) -> None:
        """SIGKILL and start again: the process state goes, the store and fleet stay; at
        start-up every proxy is handed the deployed revision (Controller.run), then the
        queue is restored."""
        self.budget = None
        self.restarts += 1
        self.rollout = None
        self.todo.clear()
        self.work.clear()
        self.answers.clear()
        self.timers.clear()
        self.planned_targets.clear()
        self.validated_here.clear()
        self.disconnected.clear()  # proxies reconnect to the new controller
        deployed_id = self.state.get("deployed_revision")
        if deployed_id is not None:
            commit = self.rows[deployed_id].commit
            for p in PROXIES:
                self.desired[p] = commit
        self.queue, cmds = RevisionQueue.restore(self.queue.config, self.persisted(), self.now)
        self.todo.append(cmds)
        self.drain()
        head = self.queue.state.head
        if head is not None and self.commits and head != f"c{self.commits}":
            self.observe(f"c{self.commits}")  # the first fetch sees the branch head
            self.drain()

    # -- invariants -------------------------------------------------------------------------

    def sent(self) -> dict[str, set[str | None]]:
        """What the audit trail records as sent to each proxy."""
        out: dict[str, set[str | None]] = {p: {None} for p in PROXIES}
        for a in self.audit:
            if a.kind == "rollout.stage_started":
                for p in a.data["canaries"]:
                    out[p].add(a.subject)
            elif a.kind == "deploy.finished" and a.data["status"] == "deployed":
                for p in PROXIES:
                    out[p].add(a.subject)
            elif a.kind in ("deploy.started", "deploy.resumed") and \
                    a.data["strategy"] == "all-at-once":
                for p in (*a.data["proxies"], *a.data["absent"]):
                    out[p].add(a.subject)
        return out

    def check(self) -> None:
        sent = self.sent()
        for p, v in self.desired.items():
            if v not in sent[p]:
                raise Broken(f"{p} is to run {v}, which the audit never records as sent to it")
        deploying = [r for r in self.rows.values() if r.status is S.DEPLOYING]
        if len(deploying) > 1 and self.restarts == 0:
            raise Broken(f"{len(deploying)} revisions deploying at once")
        stored = self.state.get("deployed_revision")
        last = self.deployed_order[-1] if self.deployed_order else None
        if stored != last and not (stored is not None and stored not in self.deployed_order
                                   and self.rows[stored].status is S.DEPLOYING):
            raise Broken(f"the stored deployed revision {stored} is not the last deployed "
                         f"{last} (nor one about to be)")
        q = self.queue.state
        if q.deployed is not None and self.state.get("deployed_revision") != q.deployed.id:
            raise Broken("the queue's deployed revision is not the stored one")

    def verify_audit(self) -> None:
        entries = [AuditEntry(a.actor, a.kind, a.subject, dict(a.data)) for a in self.audit]
        if not entries:
            return
        prepared = prepare_entries(entries, now=T0, oversize="truncate")
        records = link_entries(prepared, first_seq=1, prev_hash=GENESIS_HASH)
        result = verify_records(records)
        if not result.ok:
            raise Broken(f"audit chain: {result.reason}")


def _verdict(status: str, outcome: str, reason: str) -> DeployVerdict:
    s = {"deployed": S.DEPLOYED, "superseded": S.SUPERSEDED}.get(status, S.REJECTED)
    return DeployVerdict(s, (), {}, (), reason, outcome=outcome)
