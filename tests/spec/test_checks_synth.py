"""The synthetic benchmark repo (bench/synth.py) stays valid as the language and the checks
evolve: a small one validates clean, has the promised shapes, and is deterministic by seed.
#4's render benchmark reuses the generator, so a break here breaks two benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.synth import generate
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate


def test_small_synthetic_repo_validates_clean(tmp_path: Path) -> None:
    counts = generate(tmp_path, services=60, routes=300, policies=150, seed=3)
    result = validate(DirectorySource(tmp_path))
    assert result.findings == (), [str(f) for f in result.findings[:10]]
    m = result.model
    assert len(m.services) == counts["services"] == 60
    assert len(m.routes) == counts["routes"] == 60
    assert sum(len(r.rules) for r in m.routes) == counts["route_rules"] == 300
    assert len(m.authorization_policies) == counts["policies"] == 150
    assert len(m.traffic_policies) == counts["traffic_policies"]
    assert m.mesh is not None and m.mesh.default_deny
    assert any(p.action == "DENY" for p in m.authorization_policies)
    assert any(any(s.principals for f in r.from_ for s in [f.source]) for p in m.authorization_policies for r in p.rules)
    assert any(p.protocol == "tcp" for s in m.services for p in s.ports)
    # Several files per folder, several documents per file.
    assert counts["files"] < result.documents
    assert max(len(list(d.glob("*.yaml"))) for d in (tmp_path / "routes").iterdir()) > 1


def test_generator_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a", services=20, routes=50, policies=40, seed=7)
    generate(tmp_path / "b", services=20, routes=50, policies=40, seed=7)
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*.yaml")}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*.yaml")}
    assert a == b


@pytest.mark.parametrize("services,routes,policies", [(1, 1, 0), (5, 3, 1), (7, 70, 3)])
def test_odd_sizes_still_validate(tmp_path: Path, services: int, routes: int, policies: int) -> None:
    generate(tmp_path, services=services, routes=routes, policies=policies)
    result = validate(DirectorySource(tmp_path))
    errors = [str(f) for f in result.errors]
    assert not errors
