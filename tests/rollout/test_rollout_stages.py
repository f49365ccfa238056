"""Stages from policies, and the deterministic, spread-out canary choice."""

from __future__ import annotations

import pytest
from rollout_playbook import targets

from reconciler.language.model import Analysis, RolloutPolicy, ServiceRef
from reconciler.rollout import (
    DEFAULT_STAGES,
    FAST_STAGES,
    StageSpec,
    canary_order,
    settings_for,
    stage_members,
)


def policy(name: str, stages: list[tuple[float, int | None, float | None]], **kw: object) -> RolloutPolicy:
    from reconciler.language.model import Stage
    return RolloutPolicy(name=name, namespace="ops",  # type: ignore[call-arg]
                         stages=tuple(Stage(b, c, p) for b, c, p in stages), **kw)


def test_canary_choice_is_deterministic_and_depends_on_the_revision() -> None:
    ts = targets({"web": 10})
    a = stage_members("rev-a", ts, DEFAULT_STAGES, 0)
    assert a == stage_members("rev-a", ts, DEFAULT_STAGES, 0)
    firsts = {stage_members(f"rev-{i}", ts, DEFAULT_STAGES, 0)[0] for i in range(30)}
    assert len(firsts) > 5  # not always the same proxy


def test_stages_grow_and_keep_a_baseline_per_service() -> None:
    ts = targets({"web": 10, "api": 3, "db": 1})
    sizes = []
    prev: set[str] = set()
    for k in range(len(DEFAULT_STAGES)):
        m = set(stage_members("r", ts, DEFAULT_STAGES, k))
        assert prev <= m
        prev = m
        sizes.append(len(m))
        if k < len(DEFAULT_STAGES) - 1:
            for svc in ("web", "api"):
                assert any(t.proxy_id not in m for t in ts if t.service == f"{svc}.shop")
    assert sizes == [1, 2, 7, 14]


def test_round_robin_spreads_over_services() -> None:
    ts = targets({"web": 6, "api": 6, "db": 6})
    m = stage_members("r", ts, [StageSpec(1, count=3), StageSpec(1, percent=100)], 0)
    assert sorted(p[0] for p in m) == ["a", "d", "w"]


def test_excluded_and_disconnected_are_never_canaries() -> None:
    ts = targets({"web": 4}, disconnected=("w1",))
    order = canary_order("r", ts, exclude=["w2"])
    assert sorted(order[0]) == ["w3", "w4"]
    assert "w1" in stage_members("r", ts, FAST_STAGES, 2)  # the last stage is everyone


def test_settings_take_the_strictest_policy() -> None:
    quick = policy("quick", [(5, 1, None), (5, None, 100)], on_new_commit="finish-then-next")
    careful = policy("careful", [(60, 1, None), (60, None, 25), (60, None, 100)],
                     analysis=Analysis(on_inconclusive="extend", confidence=0.99))
    s = settings_for({"web.shop": quick, "api.shop": careful})
    assert [x.bake for x in s.stages] == [60, 60, 60]
    assert s.on_new_commit == "restart"  # not every policy says finish-then-next
    assert s.on_inconclusive == "pause"  # quick's default pause beats extend
    assert s.analysis_for("api.shop").confidence == 0.99
    assert s.analysis_for("web.shop").confidence == 0.95
    assert s.policies == ("ops/careful", "ops/quick")


def test_settings_defaults_and_presets() -> None:
    assert settings_for({"web.shop": None}).stages == DEFAULT_STAGES
    only = policy("p", [(5, 1, None), (5, None, 100)], on_failure="pause",
                  on_new_commit="finish-then-next")
    s = settings_for({"web.shop": only}, preset="fast")
    assert s.stages == FAST_STAGES
    assert s.on_failure == "pause" and s.on_new_commit == "finish-then-next"
    assert settings_for({"web.shop": only, "api.shop": None}).on_failure == "rollback"
    with pytest.raises(ValueError):
        settings_for({}, preset="reckless")


def test_policy_from_yaml_model() -> None:
    # The spec model's RolloutPolicy as the loader builds it feeds settings_for directly.
    p = policy("std", [(30, 1, None), (30, None, 10), (30, None, 100)],
               services=(ServiceRef("web", "shop"),))
    s = settings_for({"web.shop": p})
    assert [x.label() for x in s.stages] == ["1 proxy, bake 30s", "10%, bake 30s", "100%, bake 30s"]
