"""The rollout's persisted state: a plain value with a JSON form.

`RolloutSpec` is what the rollout was started with (never changes); `RolloutState` is where
it is. Evidence (stats gathered during the current bake) is deliberately not part of the JSON
form: after a restart the stage that was baking is repeated from its push, deterministically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from reconciler.rollout.stages import RolloutSettings, StageSpec, Target
from reconciler.spec.model import Analysis

STATE_FORMAT = 1
PHASES = ("pushing", "baking", "paused", "rolling_back", "done")


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


@dataclass
class RolloutState:
    spec: RolloutSpec
    phase: str = "pushing"
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
    paused: dict[str, Any] | None = None  # {"from": phase, "reason": ...}
    finish_after_ack: bool = False  # promote-full: done once the last stage is acked
    pending_finish: dict[str, str] | None = None  # outcome/status/reason once rolled back
    rollback_pending: set[str] = field(default_factory=set)
    next_revision: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    last_verdict: dict[str, Any] | None = None
    outcome: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "spec": self.spec.to_dict(), "phase": self.phase,
            "stage": self.stage, "onNew": sorted(self.on_new), "acked": sorted(self.acked),
            "excluded": sorted(self.excluded), "disconnected": sorted(self.disconnected),
            "bakeStarted": self.bake_started, "bakeEnds": self.bake_ends,
            "extensions": self.extensions, "seq": self.seq, "timers": dict(self.timers),
            "paused": self.paused, "finishAfterAck": self.finish_after_ack,
            "pendingFinish": self.pending_finish,
            "rollbackPending": sorted(self.rollback_pending),
            "nextRevision": self.next_revision, "history": list(self.history),
            "lastVerdict": self.last_verdict, "outcome": self.outcome,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RolloutState:
        if d.get("format") != STATE_FORMAT:
            raise ValueError(f"unknown rollout state format {d.get('format')!r}")
        if d["phase"] not in PHASES:
            raise ValueError(f"unknown rollout phase {d['phase']!r}")
        return cls(
            RolloutSpec.from_dict(d["spec"]), d["phase"], int(d["stage"]), set(d["onNew"]),
            set(d["acked"]), set(d["excluded"]), set(d["disconnected"]), d["bakeStarted"],
            d["bakeEnds"], int(d["extensions"]), int(d["seq"]), dict(d["timers"]), d["paused"],
            bool(d["finishAfterAck"]), d["pendingFinish"], set(d["rollbackPending"]),
            d["nextRevision"], list(d["history"]), d["lastVerdict"], d["outcome"],
        )
