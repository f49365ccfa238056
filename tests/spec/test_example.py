"""repo_layout_example/ is the reference repo: it validates clean (no errors, no warnings, no
infos) from the directory, through the CLI, and from a git commit of it; and it shows what
the issue asks of it (canary, retries, STRICT mTLS, default-deny with an ALLOW per call path,
a DENY, a RolloutPolicy, static endpoints on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pygit2
import pytest

from reconciler.language.model import ConfigModel
from reconciler.language.sources import DirectorySource
from reconciler.language.validate import validate
from reconciler.source.tree import GitTreeSource

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "repo_layout_example"


def meshcd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from reconciler.cli.main import main; main()", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )


@pytest.fixture(scope="module")
def model() -> ConfigModel:
    result = validate(DirectorySource(EXAMPLE))
    assert result.findings == (), [str(f) for f in result.findings]
    return result.model


def test_cli_validate_example_is_clean() -> None:
    proc = meshcd("validate", "--strict", "repo_layout_example")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stdout and "warning" not in proc.stdout


def test_cli_validate_example_json_has_no_findings() -> None:
    proc = meshcd("validate", "--format", "json", "repo_layout_example")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    findings = data["findings"] if isinstance(data, dict) else data
    assert findings == []


@pytest.fixture(scope="module")
def example_commit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A bare repo whose HEAD commit holds the example, built blob by blob (no checkout)."""
    path = tmp_path_factory.mktemp("example") / "example.git"
    repo = pygit2.init_repository(str(path), bare=True)

    def tree_of(d: Path) -> pygit2.Oid:
        tb = repo.TreeBuilder()
        for p in sorted(d.iterdir()):
            if p.is_dir():
                tb.insert(p.name, tree_of(p), pygit2.GIT_FILEMODE_TREE)
            else:
                tb.insert(p.name, repo.create_blob(p.read_bytes()), pygit2.GIT_FILEMODE_BLOB)
        return tb.write()

    sig = pygit2.Signature("example", "example@example.invalid", 1_700_000_000, 0)
    oid = repo.create_commit("refs/heads/main", sig, sig, "example", tree_of(EXAMPLE), [])
    repo.set_head("refs/heads/main")
    return path, str(oid)


def test_example_from_git_commit_is_clean(example_commit: tuple[Path, str], model: ConfigModel) -> None:
    path, oid = example_commit
    result = validate(GitTreeSource(str(path), oid))
    assert result.findings == ()
    assert result.model.services == model.services
    assert result.model.authorization_policies == model.authorization_policies


def test_cli_validate_example_from_git(example_commit: tuple[Path, str]) -> None:
    path, _ = example_commit
    proc = meshcd("validate", "--strict", "--repo", str(path), "--rev", "main")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_example_mesh_is_strict_and_default_deny(model: ConfigModel) -> None:
    mesh = model.mesh
    assert mesh is not None and len(model.meshes) == 1
    assert mesh.mtls.mode == "STRICT"
    assert mesh.default_deny
    assert mesh.root_namespace == "meshcd-system"
    assert mesh.default_rollout_policy in {rp.name for rp in model.rollout_policies}


def test_example_has_the_shop(model: ConfigModel) -> None:
    assert {s.name for s in model.services} == {"frontend", "catalog", "cart", "checkout", "payments"}
    assert {s.namespace for s in model.services} == {"shop"}
    for svc in model.services:
        assert svc.endpoints, svc.name
        for ep in svc.endpoints:
            assert ep.host == "127.0.0.1" and ep.port is not None and ep.port >= 9101
    ports = [ep.port for s in model.services for ep in s.endpoints]
    assert len(ports) == len(set(ports)), "static endpoints must not share a port"


def test_example_has_a_90_10_canary_and_safe_retries(model: ConfigModel) -> None:
    weights = [
        sorted(d.weight for d in rule.destinations)
        for r in model.routes for rule in r.rules
    ]
    assert [10, 90] in weights
    retried = [rule for r in model.routes for rule in r.rules if rule.retries]
    assert retried and all(rule.timeout for rule in retried)


def test_example_allows_exactly_the_egress_call_paths(model: ConfigModel) -> None:
    """Every egress edge has an ALLOW policy on the callee naming the caller's principal, and
    every principal-based ALLOW corresponds to an egress edge (no stray permissions)."""
    mesh = model.mesh
    assert mesh is not None
    edges = {
        (svc.name, ref.name)
        for svc in model.services for ref in (svc.egress or ())
    }
    by_sa = {mesh.principal(s.namespace, s.service_account): s.name for s in model.services}
    allowed = set()
    for pol in model.authorization_policies:
        if pol.action != "ALLOW" or pol.selector is None:
            continue
        for rule in pol.rules:
            for f in rule.from_:
                for pr in f.source.principals:
                    for target in pol.selector.services:
                        allowed.add((by_sa[pr], target.name))
    assert edges == allowed
    assert {("frontend", "catalog"), ("frontend", "cart"), ("frontend", "checkout"),
            ("checkout", "cart"), ("checkout", "payments")} <= edges


def test_example_has_deny_rollout_and_traffic_policies(model: ConfigModel) -> None:
    assert any(p.action == "DENY" for p in model.authorization_policies)
    assert model.rollout_policies and model.traffic_policies
    for rp in model.rollout_policies:
        assert rp.stages[-1].percent == 100


def test_example_readme_names_every_folder() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    for d in sorted(p.name for p in EXAMPLE.iterdir() if p.is_dir()):
        assert f"{d}/" in readme, d
