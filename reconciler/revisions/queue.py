"""The revision queue: which commit goes next, and what happens to the others. Sans-I/O, built
like the rollout engine: `handle(event)` returns the commands the shell
(`revisions/pipeline.py`) runs in order. No store, no clock, no threads: time comes in
with each event.

    Observed ─► Insert ─► Inserted ─► (refused: invalid) | queued, Validate
    queued ──turn──► current: Validated ─► Plan ─► Planned ─► Deploy ─► DeployFinished
                                   │                 ├─ a newer commit waits: superseded
                                   └─ Invalid        ├─ the fleet is pinned: held
                                                     └─ another trust domain: failed

One revision is current at a time; one newer commit waits (`pending`, a newer one supersedes
it) and one rollback (`urgent`, goes first, never superseded by a commit). The queue is the
single writer of "what is deployed" and of the pin: both are held here and persisted with
`SetState`. Superseding is one helper with one audit shape (`_supersede`).

A restart is `RevisionQueue.restore(persisted)`: the deployed revision, the pin, the last
branch head and the unfinished revisions, as the store holds them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from reconciler.revisions.decisions import (
    DeployTargets,
    DeployVerdict,
    recovery_plan,
    superseded_by,
)
from reconciler.revisions.model import Revision, RevisionStatus

ACTOR = "controller"
ROLLBACK = "rollback"


def trigger_of(reasons: Sequence[str]) -> str:
    """The trigger recorded with a revision, from the reasons a fetch served."""
    if any(r.startswith("webhook") for r in reasons):
        return "webhook"
    if any(r.startswith(("api", "manual")) for r in reasons):
        return "manual"
    if any(r.startswith("startup") for r in reasons):
        return "startup"
    return "poll"


@dataclass(frozen=True, slots=True)
class Pin:
    """`meshcd rollback` pinned the fleet to a revision until `meshcd rollout resume`."""

    revision: int
    commit: str
    actor: str
    at: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "commit": self.commit, "actor": self.actor,
                "at": self.at, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Pin:
        return cls(int(d["revision"]), str(d.get("commit", "")), str(d.get("actor", "?")),
                   str(d.get("at", "")), str(d.get("reason", "")))


class Step(enum.Enum):
    """Where the current revision is."""

    VALIDATING = "validating"  # waits for Validated / Invalid
    PLANNING = "planning"  # waits for Planned
    DEPLOYING = "deploying"  # waits for DeployFinished


@dataclass(frozen=True, slots=True)
class Validation:
    """A commit's validation result, kept until its turn (each commit is validated once)."""

    ok: bool
    warnings: tuple[Mapping[str, Any], ...] = ()
    findings: tuple[Mapping[str, Any], ...] = ()
    reason: str = ""
    trust_domain: str | None = None


# --- events -----------------------------------------------------------------------------------


class Change(enum.StrEnum):
    """What a fetch saw the branch do (reconciler.source.ChangeEvent.kind)."""

    UNCHANGED = "unchanged"
    NEW_COMMIT = "new_commit"
    FORCE_PUSH = "force_push"
    BRANCH_DELETED = "branch_deleted"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class SeenCommit:
    """The commit a fetch found at the head, with the signature policy's say."""

    id: str
    author: str
    message: str
    signature: Mapping[str, Any]
    refusal: str | None  # the signature policy's reason, when it refuses the commit


@dataclass(frozen=True, slots=True)
class Observed:
    """A fetch finished and looked at the branch (posted by the fetch thread)."""

    change: Change
    commit: SeenCommit | None
    reasons: tuple[str, ...]
    event: Mapping[str, Any]  # the change event's audit form
    observation: Mapping[str, Any]  # the whole observation's audit form
    now: datetime


@dataclass(frozen=True, slots=True)
class Inserted:
    """The reply to `Insert`: the row as stored, with its id."""

    revision: Revision
    context: Detected | Rollback
    now: datetime


@dataclass(frozen=True, slots=True)
class Validated:
    revision_id: int
    validation: Validation
    now: datetime


@dataclass(frozen=True, slots=True)
class Planned:
    """Rendered for the fleet and planned against the deployed revision; `targets` from the
    same view of the fleet."""

    revision_id: int
    plan: Mapping[str, Any]
    targets: DeployTargets
    now: datetime


@dataclass(frozen=True, slots=True)
class DeployFinished:
    revision_id: int
    verdict: DeployVerdict
    seconds: float
    now: datetime


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A shell step of the current revision raised (a bug, the store away)."""

    revision_id: int
    reason: str
    now: datetime


@dataclass(frozen=True, slots=True)
class RollbackRequested:
    """`meshcd rollback` chose `target` (a deployed revision): pin the fleet there and deploy
    it again. `abort`: a canary rollout runs and is aborted first."""

    target: Revision
    fast: bool
    actor: str
    reason: str
    revert_commit: str | None
    abort: bool
    now: datetime


@dataclass(frozen=True, slots=True)
class Unpinned:
    actor: str
    now: datetime


Event = (Observed | Inserted | Validated | Planned | DeployFinished | StepFailed
         | RollbackRequested | Unpinned)


# --- the context an Insert carries back -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detected:
    reasons: tuple[str, ...]
    event: Mapping[str, Any]
    refusal: str | None


@dataclass(frozen=True, slots=True)
class Rollback:
    """A rollback's revision: the pin, the audit records and the abort follow its insert."""

    target: int
    pin: Pin
    fast: bool
    revert_commit: str | None
    abort: bool
    reason: str


# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Insert:
    """Add this new revision (id 0) to the store; answer `Inserted` at once."""

    revision: Revision
    context: Detected | Rollback


@dataclass(frozen=True, slots=True)
class Save:
    revision: Revision


@dataclass(frozen=True, slots=True)
class Audit:
    kind: str
    subject: str
    data: Mapping[str, Any]
    actor: str = ACTOR


@dataclass(frozen=True, slots=True)
class SetState:
    """Store a controller-state key (JSON value; None clears it)."""

    key: str
    value: Any


@dataclass(frozen=True, slots=True)
class Validate:
    """Load and validate the commit (a thread); answer Validated."""

    revision: Revision


@dataclass(frozen=True, slots=True)
class Plan:
    """Render the validated commit for the fleet and plan it against `deployed` (a thread);
    answer Planned."""

    revision: Revision
    deployed: int | None


@dataclass(frozen=True, slots=True)
class Deploy:
    """Hand the planned revision to the deployer; answer DeployFinished."""

    revision: Revision
    targets: DeployTargets
    deployed: int | None
    strategy: str | None  # "all-at-once" for `meshcd rollback --fast`, else the deployer's
    resumed: bool


@dataclass(frozen=True, slots=True)
class Announce:
    """Tell the deploy of `during` that a newer valid commit waits (onNewCommit)."""

    commit: str
    during: int


@dataclass(frozen=True, slots=True)
class AbortRollout:
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class AssignFleet:
    """Hand the deployed revision to every known proxy (after a canary promotion: proxies that
    joined mid-rollout got the old one)."""

    revision_id: int


@dataclass(frozen=True, slots=True)
class Settled:
    """The revision reached a final status (or was held): for the reconcile-time metric."""

    revision_id: int


Command = (Insert | Save | Audit | SetState | Validate | Plan | Deploy | Announce | AbortRollout
           | AssignFleet | Settled)


# --- persisted state ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Persisted:
    """What the store holds for the queue: read at start-up."""

    deployed: Revision | None = None
    unfinished: tuple[Revision, ...] = ()
    pin: Pin | None = None
    head: str | None = None  # the newest branch head recorded (rollback revisions excluded)
    rollouts: frozenset[int] = frozenset()  # revisions that have a canary rollout row


@dataclass(frozen=True, slots=True)
class QueueConfig:
    branch: str
    trust_domain: str
    strategy: str = "canary"  # the deployer's: canary | all-at-once
    assign_after_deploy: bool = True  # canary: hand the deployed revision to every proxy


@dataclass
class QueueState:
    deployed: Revision | None = None
    pin: Pin | None = None
    head: str | None = None
    current: Revision | None = None
    step: Step | None = None
    pending: Revision | None = None  # the newest commit waiting
    urgent: Revision | None = None  # a rollback waiting: goes first
    held: Revision | None = None  # planned, waiting for the pin to go
    validations: dict[int, Validation] = field(default_factory=dict)
    validating: set[int] = field(default_factory=set)
    targets: DeployTargets | None = None  # the current revision's, once planned
    announced: str | None = None  # the newer commit told to the current deploy


class RevisionQueue:
    def __init__(self, config: QueueConfig, state: QueueState | None = None) -> None:
        self.config = config
        self.state = state or QueueState()
        self._out: list[Command] = []

    @classmethod
    def restore(cls, config: QueueConfig, saved: Persisted,
                now: datetime) -> tuple[RevisionQueue, list[Command]]:
        """After a start: rollbacks asked for before it first (one; older ones superseded),
        then the newest unfinished commit; the older ones are closed. A rollout caught by the
        restart that a rollback aborted ends rejected; one a newer revision follows ends
        superseded; an all-at-once deploy caught by it fails."""
        q = cls(config, QueueState(deployed=saved.deployed, pin=saved.pin, head=saved.head))
        unfinished = list(saved.unfinished)
        deployed = saved.deployed
        if deployed is not None and deployed.status is RevisionStatus.DEPLOYING:
            # Its deploy finished and was stored as the deployed revision; the crash came
            # before its row said so.
            unfinished = [r for r in unfinished if r.id != deployed.id]
            q.state.deployed = q._save(deployed.moved(
                RevisionStatus.DEPLOYED, now, deploy={**deployed.deploy,
                                                      "note": "completed at restart"}))
            q._audit("deploy.finished", deployed.commit, {
                "revision": deployed.id, "status": str(RevisionStatus.DEPLOYED),
                "reason": "its deploy finished before the controller restarted",
                "note": "completed at restart"})
        rollbacks = recovery_plan([r for r in unfinished if r.trigger == ROLLBACK])
        commits = recovery_plan([r for r in unfinished if r.trigger != ROLLBACK])
        resume = commits.resume
        if (rollbacks.resume is not None and resume is not None
                and resume.status is RevisionStatus.DEPLOYING):
            # The rollback was asked for during this rollout (which it aborts).
            q._close_interrupted(resume, saved.rollouts, now, aborted=True)
            resume = None
        for old in (*commits.supersede, *rollbacks.supersede):
            if old.status is RevisionStatus.DEPLOYING:
                q._close_interrupted(old, saved.rollouts, now, aborted=False)
            else:
                q._supersede(old, None, "superseded at restart by a newer revision", now)
        if rollbacks.resume is not None:
            q._enqueue(rollbacks.resume, now)
        if resume is not None:
            q._enqueue(resume, now)
        return q, q._flush()

    # -- reading ---------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        st = self.state
        return st.current is None and st.pending is None and st.urgent is None

    def tracks(self, rev_id: int) -> bool:
        """Whether the revision is still the queue's business (current, queued or held)."""
        return self._tracked(rev_id)

    def deploying(self) -> Revision | None:
        st = self.state
        return st.current if st.step is Step.DEPLOYING else None

    # -- events ----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        match event:
            case Observed():
                self._on_observed(event)
            case Inserted():
                self._on_inserted(event)
            case Validated():
                self._on_validated(event)
            case Planned():
                self._on_planned(event)
            case DeployFinished():
                self._on_deploy_finished(event)
            case StepFailed():
                self._on_step_failed(event)
            case RollbackRequested():
                self._on_rollback(event)
            case Unpinned():
                self._on_unpinned(event)
        return self._flush()

    def _on_observed(self, ev: Observed) -> None:
        st = self.state
        trigger = trigger_of(ev.reasons)
        if ev.change is Change.BRANCH_DELETED:
            # Once per deletion: the source's BranchWatch (the one owner of the branch's
            # state) lets each deletion through once, and again after the branch came back.
            self._audit("source.branch_deleted", self.config.branch,
                        {**ev.observation, "trigger": trigger})
            return
        c = ev.commit
        if ev.change not in (Change.NEW_COMMIT, Change.FORCE_PUSH) or c is None:
            return
        if c.id == st.head:
            return  # a second fetch that saw the same head before the first was recorded
        if ev.change is Change.FORCE_PUSH:
            self._audit("source.force_push", self.config.branch,
                        {"old": ev.event.get("old"), "new": ev.event.get("new"),
                         "trigger": trigger})
        st.head = c.id
        draft = Revision(id=0, commit=c.id, branch=self.config.branch, author=c.author,
                         message=c.message, trigger=trigger, status=RevisionStatus.DETECTED,
                         detected_at=ev.now, updated_at=ev.now, signature=dict(c.signature))
        self._out.append(Insert(draft, Detected(ev.reasons, ev.event, c.refusal)))

    def _on_inserted(self, ev: Inserted) -> None:
        rev, ctx = ev.revision, ev.context
        if isinstance(ctx, Rollback):
            self._rolled_back(rev, ctx, ev.now)
            return
        self._audit("revision.detected", rev.commit, {
            "revision": rev.id, "commit": rev.commit, "author": rev.author,
            "message": rev.message[:2000], "trigger": rev.trigger,
            "reasons": list(ctx.reasons[:20]), "event": dict(ctx.event),
            "signature": rev.signature})
        if ctx.refusal is not None:
            rev = self._save(rev.moved(RevisionStatus.INVALID, ev.now,
                                       reason=f"signature policy: {ctx.refusal}"))
            self._audit("revision.refused", rev.commit, {
                "revision": rev.id, "reason": rev.reason, "signature": rev.signature})
            return
        self._enqueue(rev, ev.now)

    def _on_validated(self, ev: Validated) -> None:
        st = self.state
        st.validating.discard(ev.revision_id)
        if not self._tracked(ev.revision_id):
            return  # superseded meanwhile
        st.validations[ev.revision_id] = ev.validation
        cur = st.current
        if cur is not None and cur.id == ev.revision_id and st.step is Step.VALIDATING:
            self._after_validation(cur, ev.now)
        else:
            self._announce()

    def _on_planned(self, ev: Planned) -> None:
        st = self.state
        rev = st.current
        if rev is None or rev.id != ev.revision_id or st.step is not Step.PLANNING:
            return
        v = st.validations.get(rev.id)
        assert v is not None
        if rev.status is RevisionStatus.DETECTED:
            plan = dict(ev.plan)
            rev = self._save(rev.moved(RevisionStatus.PLANNED, ev.now,
                                       findings=[dict(w) for w in v.warnings], plan=plan))
            self._audit("plan.made", rev.commit, {
                "revision": rev.id, "from": plan.get("from"), "resources": plan.get("resources"),
                "resourceNames": list(plan.get("resourceNames", []))[:20],
                "proxies": plan.get("proxies"), "access": plan.get("access")})
        rollback = rev.trigger == ROLLBACK
        newer = st.pending
        if newer is not None and rev.status is RevisionStatus.PLANNED and not rollback:
            self._supersede(rev, newer, None, ev.now)
            self._done(rev)
            self._next(ev.now)
            return
        if st.pin is not None and not rollback and rev.status is RevisionStatus.DEPLOYING:
            # Resumed after a restart into a pinned fleet (which it was reset away from).
            self._fail(rev, f"the fleet is pinned to revision {st.pin.revision}; this deploy "
                            "was interrupted and is not resumed", ev.now)
            self._next(ev.now)
            return
        if st.pin is not None and not rollback:
            self._hold(rev, st.pin, ev.now)
            self._next(ev.now)
            return
        if v.trust_domain and v.trust_domain != self.config.trust_domain:
            self._fail(rev, f"the Mesh's trust domain {v.trust_domain!r} differs from the CA's "
                            f"{self.config.trust_domain!r}; a trust-domain change needs a new CA "
                            "and is not deployed", ev.now)
            self._next(ev.now)
            return
        resumed = rev.status is RevisionStatus.DEPLOYING
        if not resumed:
            rev = self._save(rev.moved(RevisionStatus.DEPLOYING, ev.now))
        st.current, st.step, st.targets = rev, Step.DEPLOYING, ev.targets
        fast = bool((rev.deploy.get("rollback") or {}).get("fast"))
        strategy = "all-at-once" if fast else None
        t = ev.targets
        self._audit("deploy.resumed" if resumed else "deploy.started", rev.commit, {
            "revision": rev.id, "strategy": strategy or self.config.strategy,
            "proxies": list(t.wait_for[:200]), "waiting_for": len(t.wait_for),
            "absent": list(t.absent[:200])})
        deployed = st.deployed.id if st.deployed is not None else None
        self._out.append(Deploy(rev, t, deployed, strategy, resumed))
        self._announce()

    def _on_deploy_finished(self, ev: DeployFinished) -> None:
        st = self.state
        rev = st.current
        if rev is None or rev.id != ev.revision_id or st.step is not Step.DEPLOYING:
            return
        v = ev.verdict
        if v.acked:
            self._audit("deploy.ack", rev.commit, {"revision": rev.id,
                                                   "proxies": list(v.acked[:500]),
                                                   "count": len(v.acked)})
        if v.nacked:
            self._audit("deploy.nack", rev.commit, {
                "revision": rev.id, "proxies": dict(list(v.nacked.items())[:100]),
                "count": len(v.nacked)})
        absent = st.targets.absent if st.targets is not None else ()
        deploy = {**rev.deploy, **v.to_dict(), "absent": list(absent),
                  "seconds": round(ev.seconds, 3)}
        deployed = v.status is RevisionStatus.DEPLOYED
        if deployed:
            # The state first: a crash between the two resumes a revision the state already
            # calls deployed (its deploy ends at once), rather than leaving a deployed row
            # while restarts hand proxies the revision before it.
            self._out.append(SetState("deployed_revision", rev.id))
        rev = self._save(rev.moved(v.status, ev.now, deploy=deploy,
                                   reason="" if deployed else v.reason))
        if deployed:
            st.deployed = rev
            if self.config.assign_after_deploy:
                self._out.append(AssignFleet(rev.id))
        self._audit("deploy.finished", rev.commit, {
            "revision": rev.id, "status": str(v.status), "reason": v.reason,
            "acked": len(v.acked), "nacked": len(v.nacked),
            "timed_out": list(v.timed_out[:100]), "absent": len(absent)})
        self._done(rev)
        self._next(ev.now)

    def _on_step_failed(self, ev: StepFailed) -> None:
        st = self.state
        st.validating.discard(ev.revision_id)  # asked again when its turn comes
        rev = st.current
        if rev is None or rev.id != ev.revision_id:
            return
        self._fail(rev, ev.reason, ev.now)
        self._next(ev.now)

    def _on_rollback(self, ev: RollbackRequested) -> None:
        """The rollback's revision is stored first; the pin (held at once, stored after it),
        the audit records and the abort follow when it is (`_rolled_back`). A crash in
        between leaves a rollback revision that a restart resumes, never a stored pin
        without one."""
        st, target = self.state, ev.target
        at = ev.now.isoformat().replace("+00:00", "Z")
        st.pin = Pin(target.id, target.commit, ev.actor, at, ev.reason[:500])
        draft = Revision(
            id=0, commit=target.commit, branch=target.branch, author=target.author,
            message=f"rollback to revision {target.id} by {ev.actor}"
                    + (f": {ev.reason}" if ev.reason else ""),
            trigger=ROLLBACK, status=RevisionStatus.DETECTED, detected_at=ev.now,
            updated_at=ev.now, signature=target.signature,
            deploy={"rollback": {"target": target.id, "fast": ev.fast, "actor": ev.actor}})
        self._out.append(Insert(draft, Rollback(target.id, st.pin, ev.fast, ev.revert_commit,
                                                ev.abort, ev.reason)))

    def _rolled_back(self, rev: Revision, ctx: Rollback, now: datetime) -> None:
        pin = ctx.pin
        self._out.append(SetState("pin", pin.to_dict()))
        running = self.deploying()
        self._audit("rollback.requested", pin.commit, {
            "target": ctx.target, "fast": ctx.fast, "revert": ctx.revert_commit is not None,
            "revertCommit": ctx.revert_commit, "reason": ctx.reason[:500],
            "during_rollout": running.id if running is not None and ctx.abort else None},
            actor=pin.actor)
        self._audit("fleet.pinned", pin.commit, pin.to_dict(), actor=pin.actor)
        if ctx.abort:
            self._out.append(AbortRollout(pin.actor, f"rollback to revision {ctx.target}"
                                          + (f": {ctx.reason}" if ctx.reason else "")))
        self._enqueue(rev, now)

    def _on_unpinned(self, ev: Unpinned) -> None:
        st = self.state
        pin, st.pin = st.pin, None
        self._out.append(SetState("pin", None))
        self._audit("fleet.unpinned", self.config.branch,
                    {"pin": pin.to_dict() if pin is not None else None}, actor=ev.actor)
        held, st.held = st.held, None
        newer = [r for r in (st.current, st.pending) if r is not None and r.trigger != ROLLBACK
                 and held is not None and r.id > held.id]
        if held is not None and newer:
            self._supersede(held, newer[-1], None, ev.now)  # a newer commit is on its way
        elif held is not None:
            self._enqueue(held, ev.now)
        self._announce()

    # -- steps -----------------------------------------------------------------------------

    def _enqueue(self, rev: Revision, now: datetime) -> None:
        """Queue `rev`; a queued older one is superseded by it. A rollback goes first and
        supersedes only an older rollback (the queued commit is held behind its pin)."""
        st = self.state
        if rev.trigger == ROLLBACK:
            older = [r for r in (st.urgent,) if r is not None]
            st.urgent = rev
        else:
            # A held revision stays held until a newer one is held in its place (an invalid
            # newer commit must not take its place).
            older = [r for r in (st.pending,) if r is not None]
            st.pending = rev
        for old in superseded_by(older, rev):
            self._supersede(old, rev, None, now)
        for r in (st.urgent, st.pending):
            if r is not None:
                self._validate(r)
        if st.current is None:
            self._next(now)
        else:
            self._announce()

    def _validate(self, rev: Revision) -> None:
        st = self.state
        if rev.id in st.validations or rev.id in st.validating:
            return
        st.validating.add(rev.id)
        self._out.append(Validate(rev))

    def _next(self, now: datetime) -> None:
        """Take the next revision: a rollback first, then the newest commit."""
        st = self.state
        st.current, st.step, st.targets, st.announced = None, None, None, None
        rev: Revision | None
        if st.urgent is not None:
            rev, st.urgent = st.urgent, None
        else:
            rev, st.pending = st.pending, None
        if rev is None:
            return
        st.current, st.step = rev, Step.VALIDATING
        if rev.id in st.validations:
            self._after_validation(rev, now)
        else:
            self._validate(rev)

    def _after_validation(self, rev: Revision, now: datetime) -> None:
        st = self.state
        v = st.validations[rev.id]
        if not v.ok:
            self._save(rev.moved(RevisionStatus.INVALID, now, findings=[dict(f) for f in
                                                                         v.findings],
                                 reason=v.reason))
            self._audit("revision.validated", rev.commit, {
                "revision": rev.id, "valid": False, "reason": v.reason,
                "errors": sum(1 for f in v.findings if f.get("severity") == "error"),
                "findings": [dict(f) for f in v.findings[:50]]})
            self._done(rev)
            self._next(now)
            return
        if rev.status is RevisionStatus.DETECTED:
            self._audit("revision.validated", rev.commit, {
                "revision": rev.id, "valid": True, "warnings": len(v.warnings),
                "findings": [dict(w) for w in v.warnings[:50]]})
        st.step = Step.PLANNING
        self._out.append(Plan(rev, st.deployed.id if st.deployed is not None else None))

    def _announce(self) -> None:
        """A queued commit that validated while a (non-rollback) revision deploys is what
        the rollout hears as NewCommit; not while the fleet is pinned."""
        st = self.state
        cur, pending = st.current, st.pending
        if (cur is None or st.step is not Step.DEPLOYING or pending is None
                or cur.trigger == ROLLBACK or st.pin is not None
                or cur.commit == pending.commit or st.announced == pending.commit):
            return
        v = st.validations.get(pending.id)
        if v is None or not v.ok:
            return  # an invalid commit must not stop a good rollout
        st.announced = pending.commit
        self._out.append(Announce(pending.commit, cur.id))

    def _hold(self, rev: Revision, pin: Pin, now: datetime) -> None:
        """The fleet is pinned: a valid revision waits, visibly, as planned, until the pin
        goes; an older held one is superseded by it."""
        st = self.state
        reason = (f"held: the fleet is pinned to revision {pin.revision} by {pin.actor}; "
                  "`meshcd rollout resume` deploys the newest commit")
        if rev.reason != reason:
            rev = self._save(rev.moved(RevisionStatus.PLANNED, now, reason=reason)
                             if rev.status is not RevisionStatus.PLANNED
                             else replace(rev, reason=reason, updated_at=now))
            self._audit("revision.held", rev.commit, {"revision": rev.id, "pin": pin.to_dict()})
        older = [r for r in (st.held,) if r is not None]
        st.held = rev
        for old in superseded_by(older, rev):
            self._supersede(old, rev, "while pinned", now)
        self._done(rev)

    def _supersede(self, old: Revision, by: Revision | None, why: str | None,
                   now: datetime) -> None:
        """The one way a revision becomes superseded, with one audit shape."""
        st = self.state
        if by is not None:
            reason = f"superseded by revision {by.id} ({by.commit[:12]})" + (
                f" {why}" if why else "")
        else:
            reason = why or "superseded"
        self._save(old.moved(RevisionStatus.SUPERSEDED, now, reason=reason))
        self._audit("revision.superseded", old.commit, {
            "revision": old.id, "by": by.id if by is not None else None,
            "by_commit": by.commit if by is not None else None, "reason": reason})
        st.validations.pop(old.id, None)
        if st.held is not None and st.held.id == old.id:
            st.held = None

    def _close_interrupted(self, rev: Revision, rollouts: frozenset[int], now: datetime, *,
                           aborted: bool) -> None:
        """A revision caught mid-deploy by a restart that is not resumed. A canary rollout of
        it ends rejected (a rollback aborted it) or superseded (a newer commit follows); every
        proxy was reset to the deployed revision at start-up. An all-at-once deploy fails."""
        if rev.id not in rollouts:
            self._fail(rev, "interrupted by a controller restart; a newer revision follows", now)
            return
        status = RevisionStatus.REJECTED if aborted else RevisionStatus.SUPERSEDED
        outcome = "aborted" if aborted else "superseded"
        reason = ("aborted by a rollback asked for before the controller restarted"
                  if aborted else "superseded at restart by a newer revision")
        self._save(rev.moved(status, now, reason=reason, deploy={**rev.deploy,
                                                                  "outcome": outcome}))
        self._audit("rollout.finished", rev.commit, {
            "revision_id": rev.id, "outcome": outcome, "revisionStatus": str(status),
            "reason": reason, "note": "closed at restart"})

    def _fail(self, rev: Revision, reason: str, now: datetime) -> None:
        if rev.terminal:
            return
        self._save(rev.moved(RevisionStatus.FAILED, now, reason=reason))
        self._audit("revision.failed", rev.commit, {"revision": rev.id, "reason": reason})
        self._done(rev)

    # -- helpers ---------------------------------------------------------------------------

    def _tracked(self, rev_id: int) -> bool:
        st = self.state
        return any(r is not None and r.id == rev_id
                   for r in (st.current, st.pending, st.urgent, st.held))

    def _done(self, rev: Revision) -> None:
        if rev.terminal:
            self.state.validations.pop(rev.id, None)
        self._out.append(Settled(rev.id))

    def _save(self, rev: Revision) -> Revision:
        st = self.state
        if st.current is not None and st.current.id == rev.id:
            st.current = rev
        self._out.append(Save(rev))
        return rev

    def _audit(self, kind: str, subject: str, data: Mapping[str, Any],
               actor: str = ACTOR) -> None:
        self._out.append(Audit(kind, subject, dict(data), actor))

    def _flush(self) -> list[Command]:
        out, self._out = self._out, []
        return out
