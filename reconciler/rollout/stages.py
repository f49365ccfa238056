"""Stages of a rollout and who is canary in each. Pure and deterministic.

- Stages come from the RolloutPolicy covering the change (`settings_for`); when several
  affected services have different policies, the strictest wins (docs/rollout.md).
- Canaries: each service's proxies are ordered by SHA-256(revision, proxy id), and a stage's
  proxies are dealt round-robin over the services (themselves ordered by SHA-256(revision,
  service)), so the first canary of every revision lands on a different proxy and the stages
  spread over services. Each stage holds the previous one (the order is fixed per revision).
- Baseline: while a stage before the last bakes, every service with two or more proxies keeps
  at least one on the old config.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.language.model import Analysis, RolloutPolicy


@dataclass(frozen=True, slots=True)
class StageSpec:
    bake: float  # seconds
    count: int | None = None  # exactly one of count | percent
    percent: float | None = None

    def label(self) -> str:
        size = f"{self.count} proxy" if self.count is not None else f"{self.percent:g}%"
        return f"{size}, bake {self.bake:g}s"

    def to_dict(self) -> dict[str, Any]:
        return {"bake": self.bake, "count": self.count, "percent": self.percent}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StageSpec:
        return cls(float(d["bake"]), d.get("count"), d.get("percent"))


DEFAULT_STAGES: tuple[StageSpec, ...] = (
    StageSpec(30.0, count=1), StageSpec(30.0, percent=10.0),
    StageSpec(30.0, percent=50.0), StageSpec(30.0, percent=100.0),
)
FAST_STAGES: tuple[StageSpec, ...] = (
    StageSpec(3.0, count=1), StageSpec(3.0, percent=50.0), StageSpec(3.0, percent=100.0),
)
PRESETS: dict[str, tuple[StageSpec, ...]] = {"default": DEFAULT_STAGES, "fast": FAST_STAGES}

# Strictest first.
_INCONCLUSIVE_ORDER = ("pause", "extend", "pass")


@dataclass(frozen=True, slots=True)
class Target:
    """One affected proxy: the version it should get and the one it runs now (None: it has
    no config of this change yet, so rolling back clears its desired snapshot)."""

    proxy_id: str
    service: str  # "name.namespace"
    new_version: str
    old_version: str | None
    connected: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"proxyId": self.proxy_id, "service": self.service,
                "newVersion": self.new_version, "oldVersion": self.old_version,
                "connected": self.connected}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Target:
        return cls(d["proxyId"], d["service"], d["newVersion"], d["oldVersion"],
                   bool(d.get("connected", True)))


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    """What the policies say for one rollout, combined over the affected services."""

    stages: tuple[StageSpec, ...] = DEFAULT_STAGES
    analysis: Mapping[str, Analysis] = field(default_factory=dict)  # by service
    on_failure: str = "rollback"
    on_new_commit: str = "restart"
    on_inconclusive: str = "pause"
    policies: tuple[str, ...] = ()  # "namespace/name" of the policies used

    def analysis_for(self, service: str) -> Analysis:
        return self.analysis.get(service, Analysis())


def _policy_rank(p: RolloutPolicy) -> tuple[int, float, str]:
    return (len(p.stages), sum(s.bake for s in p.stages), f"{p.namespace}/{p.name}")


def settings_for(policies: Mapping[str, RolloutPolicy | None], preset: str = "default"
                 ) -> RolloutSettings:
    """Combine the policies covering the affected services (service -> policy or None).

    Stages: the policy with the most stages, then the longest total bake (the slowest,
    most careful rollout), else the preset's. With preset "fast" the fast stages replace
    any policy's (demos and tests). Analysis stays per service (each service is judged with
    its own thresholds). onFailure: rollback unless every policy says pause; onNewCommit:
    restart unless every policy says finish-then-next; onInconclusive: the strictest of the
    services' (pause, then extend, then pass)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown rollout preset {preset!r} (one of {', '.join(PRESETS)})")
    used = {f"{p.namespace}/{p.name}": p for p in policies.values() if p is not None}
    chosen = sorted(used.values(), key=_policy_rank)[-1] if used else None
    if preset == "fast" or chosen is None:
        stages = PRESETS[preset]
    else:
        stages = tuple(StageSpec(s.bake, s.count, s.percent) for s in chosen.stages)
    analysis = {svc: (p.analysis if p is not None else Analysis()) for svc, p in policies.items()}
    every = [p for p in policies.values()]
    on_failure = ("pause" if every and all(p is not None and p.on_failure == "pause"
                                          for p in every) else "rollback")
    on_new = ("finish-then-next" if every and all(
        p is not None and p.on_new_commit == "finish-then-next" for p in every) else "restart")
    inc = [a.on_inconclusive for a in analysis.values()] or ["pause"]
    on_inconclusive = min(inc, key=lambda v: _INCONCLUSIVE_ORDER.index(v)
                          if v in _INCONCLUSIVE_ORDER else 0)
    return RolloutSettings(stages, analysis, on_failure, on_new, on_inconclusive,
                           tuple(sorted(used)))


def _h(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def canary_order(revision: str, targets: Iterable[Target], exclude: Iterable[str] = ()
                 ) -> list[list[str]]:
    """Each service's connected proxies in canary order, services in dealing order."""
    skip = set(exclude)
    by_service: dict[str, list[str]] = {}
    for t in targets:
        if t.connected and t.proxy_id not in skip:
            by_service.setdefault(t.service, []).append(t.proxy_id)
    services = sorted(by_service, key=lambda s: (_h(revision, "service", s), s))
    return [sorted(by_service[s], key=lambda p: (_h(revision, "proxy", p), p)) for s in services]


def stage_sizes(stages: Sequence[StageSpec], eligible: int) -> list[int]:
    """How many proxies each stage asks for, out of `eligible` (non-decreasing)."""
    out: list[int] = []
    for s in stages:
        if s.count is not None:
            want = s.count
        else:
            want = math.ceil((s.percent or 0.0) / 100.0 * eligible - 1e-9)
        want = max(1, min(eligible, want), out[-1] if out else 0)
        out.append(want)
    return out


def is_last(stages: Sequence[StageSpec], index: int) -> bool:
    return index >= len(stages) - 1


def stage_members(revision: str, targets: Sequence[Target], stages: Sequence[StageSpec],
                  index: int, exclude: Iterable[str] = ()) -> list[str]:
    """The canaries of stage `index` (sorted). The last stage is every target (connected or
    not: the fleet server hands a desired snapshot to a proxy when it connects). Earlier
    stages deal round-robin and keep one baseline proxy per service of two or more."""
    if is_last(stages, index):
        return sorted(t.proxy_id for t in targets)
    order = canary_order(revision, targets, exclude)
    eligible = sum(len(ps) for ps in order)
    if eligible == 0:
        return []
    want = stage_sizes(stages, eligible)[index]
    caps = [len(ps) - 1 if len(ps) >= 2 else len(ps) for ps in order]
    taken = [0] * len(order)
    total = 0
    while total < want:
        progressed = False
        for i in range(len(order)):
            if total >= want:
                break
            if taken[i] < caps[i]:
                taken[i] += 1
                total += 1
                progressed = True
        if not progressed:
            break
    return sorted(p for ps, n in zip(order, taken, strict=True) for p in ps[:n])
