"""The rollout's persisted state: typed values inside, JSON only at the edge.

`RolloutSpec` is what the rollout was started with (never changes); `RolloutState` is where
it is: a `Phase`, and frozen records for the pause, the pending end of a rollback, each
stage's result, the last verdict and the outcome. `to_json`/`from_json` are the only places
that know the stored shape (camelCase keys, format 1; a state stored by any earlier version
of format 1 restores). Evidence (stats gathered during the current bake) is deliberately not
part of the JSON form: after a restart the stage that was baking is repeated from its push,
deterministically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from reconciler.language.model import Analysis
from reconciler.rollout.stages import RolloutSettings, StageSpec, Target
from reconciler.rollout.values import (
    FinalStatus,
    Phase,
    RolloutOutcome,
    StageOutcome,
    StageVerdict,
)

STATE_FORMAT = 1


@dataclass(frozen=True)
class RolloutSpec:
    revision: str
    previous: str | None
    targets: tuple[Target, ...]
    settings: RolloutSettings = field(default_factory=RolloutSettings)
    ack_timeout: float = 30.0
    rollback_timeout: float = 30.0
    max_extensions: int = 3
    # Looks at the evidence every second while a stage bakes, with alpha divided by this
    # factor, so a bad canary fails early; 0 turns interim looks off.
    interim_alpha_divisor: float = 10.0
    actor: str = "controller"

    @cached_property
    def _by_id(self) -> dict[str, Target]:
        return {t.proxy_id: t for t in self.targets}

    def target(self, proxy_id: str) -> Target | None:
        return self._by_id.get(proxy_id)

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            "revision": self.revision, "previous": self.previous,
            "targets": [t.to_dict() for t in self.targets],
            "settings": {
                "stages": [x.to_dict() for x in s.stages],
                "analysis": {svc: dataclasses.asdict(a) for svc, a in s.analysis.items()},
                "onFailure": s.on_failure, "onNewCommit": s.on_new_commit,
                "onInconclusive": s.on_inconclusive, "policies": list(s.policies),
            },
            "ackTimeout": self.ack_timeout, "rollbackTimeout": self.rollback_timeout,
            "maxExtensions": self.max_extensions,
            "interimAlphaDivisor": self.interim_alpha_divisor, "actor": self.actor,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutSpec:
        s = d["settings"]
        settings = RolloutSettings(
            tuple(StageSpec.from_dict(x) for x in s["stages"]),
            {svc: Analysis(**a) for svc, a in s["analysis"].items()},
            s["onFailure"], s["onNewCommit"], s["onInconclusive"], tuple(s["policies"]),
        )
        return cls(d["revision"], d["previous"], tuple(Target.from_dict(t) for t in d["targets"]),
                   settings, float(d["ackTimeout"]), float(d["rollbackTimeout"]),
                   int(d["maxExtensions"]), float(d["interimAlphaDivisor"]), d["actor"])


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


@dataclass(frozen=True, slots=True)
class Paused:
    """Why the rollout waits for an operator, and the phase it was in."""

    from_phase: Phase
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"from": self.from_phase.value, "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Paused:
        return cls(Phase(d["from"]), str(d["reason"]))


@dataclass(frozen=True, slots=True)
class PendingFinish:
    """How the rollout ends once its rollback is confirmed (or timed out)."""

    outcome: RolloutOutcome
    status: FinalStatus
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"outcome": self.outcome.value, "status": self.status.value,
                "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> PendingFinish:
        return cls(RolloutOutcome(d["outcome"]), FinalStatus(d["status"]), str(d["reason"]))


@dataclass(frozen=True, slots=True)
class StageResult:
    """One finished stage: judged (Successful/Inconclusive passed, Failed) or promoted by an
    operator. `stage` counts from 1."""

    stage: int
    outcome: StageOutcome
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "outcome": self.outcome.value, "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> StageResult:
        return cls(int(d["stage"]), StageOutcome(d["outcome"]), str(d["reason"]))


@dataclass(frozen=True, slots=True)
class Ending:
    """How the rollout ended: its outcome and what the revision became."""

    outcome: RolloutOutcome
    revision_status: FinalStatus
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"outcome": self.outcome.value, "revisionStatus": self.revision_status.value,
                "reason": self.reason}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Ending:
        return cls(RolloutOutcome(d["outcome"]), FinalStatus(d["revisionStatus"]),
                   str(d["reason"]))


@dataclass
class RolloutState:
    spec: RolloutSpec
    phase: Phase = Phase.PUSHING
    stage: int = 0
    on_new: set[str] = field(default_factory=set)  # pushed the new version (acked or not)
    acked: set[str] = field(default_factory=set)  # acked the new version
    excluded: set[str] = field(default_factory=set)  # dropped canaries: never chosen again
    disconnected: set[str] = field(default_factory=set)
    bake_started: float | None = None
    bake_ends: float | None = None
    extensions: int = 0
    seq: int = 0  # timer token counter
    timers: dict[str, str] = field(default_factory=dict)  # kind -> token waited for
    paused: Paused | None = None
    finish_after_ack: bool = False  # promote-full: done once the last stage is acked
    pending_finish: PendingFinish | None = None  # how it ends once rolled back
    rollback_pending: set[str] = field(default_factory=set)
    next_revision: str | None = None
    history: list[StageResult] = field(default_factory=list)
    last_verdict: StageVerdict | None = None
    outcome: Ending | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form (JSON-able; `from_json` reads it back)."""
        return {
            "format": STATE_FORMAT, "spec": self.spec.to_dict(), "phase": self.phase.value,
            "stage": self.stage, "onNew": sorted(self.on_new), "acked": sorted(self.acked),
            "excluded": sorted(self.excluded), "disconnected": sorted(self.disconnected),
            "bakeStarted": self.bake_started, "bakeEnds": self.bake_ends,
            "extensions": self.extensions, "seq": self.seq, "timers": dict(self.timers),
            "paused": None if self.paused is None else self.paused.to_json(),
            "finishAfterAck": self.finish_after_ack,
            "pendingFinish": None if self.pending_finish is None
            else self.pending_finish.to_json(),
            "rollbackPending": sorted(self.rollback_pending),
            "nextRevision": self.next_revision,
            "history": [h.to_json() for h in self.history],
            "lastVerdict": None if self.last_verdict is None else self.last_verdict.to_json(),
            "outcome": None if self.outcome is None else self.outcome.to_json(),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RolloutState:
        """Read a stored state; anything it cannot read is a ValueError saying what."""
        if d.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown rollout state format {d.get('format')!r}")
        try:
            phase = Phase(d["phase"])
        except ValueError:
            raise ValueError(f"unknown rollout phase {d['phase']!r}") from None
        try:
            return cls(
                RolloutSpec.from_dict(d["spec"]), phase, int(d["stage"]), set(d["onNew"]),
                set(d["acked"]), set(d["excluded"]), set(d["disconnected"]),
                d["bakeStarted"], d["bakeEnds"], int(d["extensions"]), int(d["seq"]),
                {str(k): str(v) for k, v in d["timers"].items()},
                None if d["paused"] is None else Paused.from_json(d["paused"]),
                bool(d["finishAfterAck"]),
                None if d["pendingFinish"] is None else PendingFinish.from_json(d["pendingFinish"]),
                set(d["rollbackPending"]), _str_or_none(d["nextRevision"]),
                [StageResult.from_json(h) for h in d["history"]],
                None if d["lastVerdict"] is None else StageVerdict.from_json(d["lastVerdict"]),
                None if d["outcome"] is None else Ending.from_json(d["outcome"]),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a rollout state: {type(e).__name__} {e}") from None
