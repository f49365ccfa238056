"""A playbook for the revision queue: drive a `RevisionQueue` with a script of events, with an
in-memory store that applies its commands as the shell would, and read the commands back as
short lines, so a test reads like the story it checks.

    pb = Book()
    pb.observe("c1")            -> ["insert c1", "audit revision.detected c1", "validate c1"]
    pb.validated("c1")          -> ["audit revision.validated c1", "plan c1"]
    pb.planned("c1")            -> ["save c1 planned", "audit plan.made c1", "save c1 deploying",
                                    "audit deploy.started c1", "deploy c1"]
    pb.finished("c1")           -> [... "save c1 deployed", "state deployed_revision=1", ...]
    pb.restart()                -> the queue rebuilt from what the store holds

Commits are short names ("c1"); revisions are numbered by the store in insertion order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.revisions import DeployTargets, DeployVerdict, Revision, RevisionStatus
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
    StepFailed,
    Unpinned,
    Validate,
    Validated,
    Validation,
)

S = RevisionStatus
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TRUST_DOMAIN = "mesh.test"


@dataclass
class Store:
    """What the database would hold after the commands ran (revisions, controller state,
    which revisions have a rollout row, the audit trail)."""

    rows: dict[int, Revision] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    rollouts: set[int] = field(default_factory=set)
    audits: list[Audit] = field(default_factory=list)

    def persisted(self) -> Persisted:
        """What `Pipeline.restore` reads (`RevisionStore` semantics)."""
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


class Crash(Exception):
    """The controller died: the commands after this point never ran."""


class Book:
    def __init__(self, *, strategy: str = "canary", trust_domain: str = TRUST_DOMAIN) -> None:
        self.config = QueueConfig("main", trust_domain, strategy=strategy,
                                  assign_after_deploy=strategy == "canary")
        self.queue = RevisionQueue(self.config)
        self.store = Store()
        self.now = T0
        self.commands: list[Command] = []
        # Commands left before a crash (None: never): the next one raises Crash unapplied.
        self.budget: int | None = None

    # -- driving ---------------------------------------------------------------------------

    def send(self, event: Event) -> list[str]:
        return self._run(self.queue.handle(event))

    def _run(self, cmds: list[Command]) -> list[str]:
        out: list[str] = []
        for c in cmds:
            if self.budget is not None:
                if self.budget <= 0:
                    raise Crash(c)
                self.budget -= 1
            self.commands.append(c)
            out.append(self.line(c))
            self.apply(c)
            if isinstance(c, Insert):
                rev = self.store.rows[max(self.store.rows)]
                out += self._run(self.queue.handle(Inserted(rev, c.context, self.now)))
        return out

    def apply(self, c: Command) -> None:
        """Run one command against the in-memory store, as the shell would."""
        st = self.store
        match c:
            case Insert():
                new_id = max(st.rows, default=0) + 1
                st.rows[new_id] = Revision(**{**c.revision.__dict__, "id": new_id})
            case Save():
                assert c.revision.id in st.rows, c
                st.rows[c.revision.id] = c.revision
            case SetState():
                st.state[c.key] = c.value
                if c.value is None:
                    del st.state[c.key]
            case Audit():
                st.audits.append(c)
            case _:
                pass

    def tick(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)

    def restart(self) -> list[str]:
        """A controller restart: a new queue from what the store holds."""
        self.budget = None
        self.queue, cmds = RevisionQueue.restore(self.config, self.store.persisted(), self.now)
        return self._run(cmds)

    def observe(self, commit: str, *, refused: str | None = None, force: bool = False,
                reasons: tuple[str, ...] = ("webhook:github",)) -> list[str]:
        change = Change.FORCE_PUSH if force else Change.NEW_COMMIT
        seen = SeenCommit(commit, "Ana <ana@example.com>", f"change {commit}",
                          {"deployable": refused is None}, refused)
        return self.send(Observed(change, seen, reasons, {"kind": str(change), "new": commit},
                                  {"branch": "main"}, self.now))

    def branch_deleted(self) -> list[str]:
        return self.send(Observed(Change.BRANCH_DELETED, None, ("poll",), {}, {}, self.now))

    def validated(self, commit: str, *, ok: bool = True,
                  trust_domain: str | None = TRUST_DOMAIN) -> list[str]:
        rev = self.rev(commit)
        v = (Validation(True, warnings=(), trust_domain=trust_domain) if ok else
             Validation(False, findings=({"code": "E1", "severity": "error"},),
                        reason="1 validation error(s), first: E1"))
        return self.send(Validated(rev.id, v, self.now))

    def planned(self, commit: str, *, wait_for: Iterable[str] = ("p1", "p2"),
                absent: Iterable[str] = ()) -> list[str]:
        rev = self.rev(commit)
        w, a = tuple(wait_for), tuple(absent)
        targets = DeployTargets({p: f"v-{commit}" for p in (*w, *a)}, w, a)
        plan = {"from": None, "resources": {"added": 1}, "resourceNames": ["added Route a/b"],
                "proxies": {"total": len(w) + len(a)}, "access": {"granted": 0, "revoked": 0}}
        return self.send(Planned(rev.id, plan, targets, self.now))

    def finished(self, commit: str, status: RevisionStatus = S.DEPLOYED, *,
                 outcome: str | None = None, reason: str = "") -> list[str]:
        rev = self.rev(commit)
        acked = ("p1", "p2") if status is S.DEPLOYED else ()
        verdict = DeployVerdict(status, acked, {}, (), reason or str(status), outcome=outcome)
        return self.send(DeployFinished(rev.id, verdict, 1.5, self.now))

    def failed_step(self, commit: str, reason: str = "internal error: boom") -> list[str]:
        return self.send(StepFailed(self.rev(commit).id, reason, self.now))

    def rollback(self, to: str, *, fast: bool = False, abort: bool = False,
                 actor: str = "user:ana", reason: str = "") -> list[str]:
        target = next(r for r in self.store.rows.values()
                      if r.commit == to and r.status is S.DEPLOYED)
        return self.send(RollbackRequested(target, fast, actor, reason, None, abort, self.now))

    def unpin(self, actor: str = "user:ana") -> list[str]:
        return self.send(Unpinned(actor, self.now))

    def deploy(self, commit: str, **planned: Any) -> list[str]:
        """validated + planned: the commit reaches the deployer."""
        return self.validated(commit) + self.planned(commit, **planned)

    def ship(self, commit: str) -> list[str]:
        """A commit all the way to deployed."""
        return self.observe(commit) + self.deploy(commit) + self.finished(commit)

    # -- reading ---------------------------------------------------------------------------

    def rev(self, commit: str, *, trigger: str | None = None) -> Revision:
        """The newest revision of `commit` (of that trigger)."""
        found = [r for r in self.store.rows.values() if r.commit == commit
                 and (trigger is None or r.trigger == trigger)]
        assert found, f"no revision of {commit}"
        return max(found, key=lambda r: r.id)

    def status(self, commit: str, **kw: Any) -> RevisionStatus:
        return self.rev(commit, **kw).status

    def statuses(self) -> dict[int, str]:
        return {i: f"{r.commit} {r.status}" for i, r in sorted(self.store.rows.items())}

    def audits(self, kind: str | None = None) -> list[Audit]:
        return [a for a in self.store.audits if kind is None or a.kind == kind]

    def deploys(self) -> list[Deploy]:
        return [c for c in self.commands if isinstance(c, Deploy)]

    def name(self, rev_id: int | None) -> str:
        if rev_id is None:
            return "-"
        return self.store.rows[rev_id].commit

    def line(self, c: Command) -> str:
        match c:
            case Insert():
                return f"insert {c.revision.commit}" + (
                    " (rollback)" if c.revision.trigger == "rollback" else "")
            case Save():
                return f"save {c.revision.commit} {c.revision.status}"
            case Audit():
                return f"audit {c.kind} {c.subject}"
            case SetState():
                return f"state {c.key}={_value(c.value)}"
            case Validate():
                return f"validate {c.revision.commit}"
            case Plan():
                return f"plan {c.revision.commit}"
            case Deploy():
                how = f" {c.strategy}" if c.strategy else ""
                return f"deploy {c.revision.commit}{how}" + (" (resumed)" if c.resumed else "")
            case Announce():
                return f"announce {c.commit} during {self.name(c.during)}"
            case AbortRollout():
                return f"abort by {c.actor}"
            case AssignFleet():
                return f"assign {self.name(c.revision_id)}"
            case Settled():
                return f"settled {self.name(c.revision_id)}"
        raise AssertionError(c)


def _value(v: Any) -> str:
    if isinstance(v, Mapping):
        return f"pin:{v.get('revision')}"
    return str(v)


def kinds(lines: list[str], prefix: str) -> list[str]:
    return [x for x in lines if x.startswith(prefix)]
