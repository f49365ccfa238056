"""The pipeline (cache reuse, limits, sorted findings) and the `meshcd validate` / `meshcd show`
commands: exit codes, the text, json and sarif formats, --explain, --list-codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pygit2
import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from reconciler.language import DirectorySource, ValidationCache, validate
from reconciler.language.codes import CATALOGUE
from reconciler.language.loader import LoadLimits
from reconciler.source.tree import GitTreeSource

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "repo_layout_example"

MESH = b"""apiVersion: meshcd.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {trustDomain: t.example}
"""
SERVICE = """apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: http, number: 8080}}]
"""
BAD_ROUTE = b"""apiVersion: meshcd.dev/v1alpha1
kind: Route
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  rules:
    - destinations:
        - service: cart
          weight: -5
"""


def write(root: Path, files: dict[str, bytes]) -> Path:
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def clean_repo(root: Path, n: int = 3) -> Path:
    files = {"mesh.yaml": MESH}
    for i in range(n):
        files[f"services/s{i}.yaml"] = SERVICE.format(name=f"s{i}").encode()
    return write(root, files)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def git_commit(root: Path) -> pygit2.Repository:
    repo = pygit2.init_repository(str(root))
    index = repo.index
    index.add_all()
    index.write()
    sig = pygit2.Signature("t", "t@example.com", 0, 0)
    parents = [] if repo.head_is_unborn else [repo.head.target]
    repo.create_commit("HEAD", sig, sig, "c", index.write_tree(), parents)
    return repo


# --- the pipeline ---------------------------------------------------------------------------


def test_cache_reparses_only_the_changed_blob(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r", n=5)
    repo = git_commit(root)
    cache = ValidationCache()
    first = validate(GitTreeSource(repo, "HEAD"), cache)
    assert first.ok and cache.parsed == 6
    (root / "services/s3.yaml").write_bytes(SERVICE.format(name="renamed").encode())
    git_commit(root)
    second = validate(GitTreeSource(repo, "HEAD"), cache)
    assert cache.parsed == 7  # one more: only the changed blob
    assert {s.name for s in second.model.services} == {"s0", "s1", "s2", "renamed", "s4"}
    # unchanged files give the very same resource objects
    assert second.model.services[0] is first.model.services[0]
    # the old revision is still warm (plans compare two revisions)
    validate(GitTreeSource(repo, "HEAD~1"), cache)
    assert cache.parsed == 7


def test_cache_for_directories_is_keyed_by_content(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    cache = ValidationCache()
    validate(DirectorySource(root), cache)
    validate(DirectorySource(root), cache)
    assert cache.parsed == 4
    (root / "services/s1.yaml").write_bytes(BAD_ROUTE)
    result = validate(DirectorySource(root), cache)
    assert cache.parsed == 5
    assert [f.code for f in result.findings] == ["MCD020"]


def test_same_content_at_a_new_path_is_reprocessed_with_its_path(tmp_path: Path) -> None:
    root = write(tmp_path / "r", {"a.yaml": BAD_ROUTE})
    cache = ValidationCache()
    validate(DirectorySource(root), cache)
    (root / "a.yaml").rename(root / "b.yaml")
    result = validate(DirectorySource(root), cache)
    assert [f.location.file for f in result.findings if f.code < "MCD100"] == ["b.yaml"]


def test_limits_are_part_of_the_cache_key(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    cache = ValidationCache()
    assert validate(DirectorySource(root), cache).ok
    result = validate(DirectorySource(root), cache, LoadLimits(max_file_size=10))
    assert {f.code for f in result.findings} >= {"MCD006"}


def test_documents_per_repo_limit(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r", n=4)
    result = validate(DirectorySource(root), options=LoadLimits(max_documents_per_repo=3))
    over = [f for f in result.findings if f.code == "MCD008"]
    assert [f.location.file for f in over] == ["services/s2.yaml"]
    assert len(result.model.services) == 2


def test_findings_are_sorted_and_failed_documents_leave_the_model(tmp_path: Path) -> None:
    root = write(tmp_path / "r", {
        "mesh.yaml": MESH,
        "z.yaml": b"a: 1\na: 2\n",
        "routes/cart.yaml": BAD_ROUTE,
        "services.yaml": SERVICE.format(name="cart").encode() + b"---\n" + SERVICE.format(name="Bad").encode(),
    })
    result = validate(DirectorySource(root))
    keys = [f.sort_key() for f in result.findings]
    assert keys == sorted(keys)
    assert [(f.code, str(f.location)) for f in result.findings if f.code < "MCD100"] == [
        ("MCD020", "routes/cart.yaml:9:19"),
        ("MCD014", "services.yaml:9:18"),
        ("MCD002", "z.yaml:2:1"),
    ]
    assert [s.name for s in result.model.services] == ["cart"]
    assert result.model.routes == ()
    assert not result.ok and result.errors


def test_example_repo_validates_clean() -> None:
    result = validate(DirectorySource(EXAMPLE))
    assert result.errors == (), [str(f) for f in result.findings]


# --- meshcd validate ------------------------------------------------------------------------


def test_clean_repo_exits_0_with_summary(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    r = run("validate", str(root))
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith(": ok")
    assert r.output.endswith(": 4 files, 4 documents: no findings: ok\n")


def test_errors_exit_1_compiler_style(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    write(root, {"routes/cart.yaml": BAD_ROUTE})
    r = run("validate", str(root))
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert f"{root}/routes/cart.yaml:9:19: error MCD020: spec.rules[0].destinations[0].weight: " \
           "-5 is less than the minimum of 0" in lines
    assert lines[-1].endswith(": 1 error: FAILED")


def test_paths_print_repo_relative_when_run_inside_the_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = clean_repo(tmp_path / "r")
    write(root, {"routes/cart.yaml": BAD_ROUTE})
    monkeypatch.chdir(root)
    r = run("validate")
    assert r.exit_code == 1
    assert r.output.startswith("routes/cart.yaml:9:19: error MCD020: ")


def _warning_repo(tmp_path: Path) -> Path:
    """A repo whose only finding is a warning: a subset that selects no endpoint (MCD112)."""
    root = clean_repo(tmp_path / "r")
    write(root, {"services/w.yaml": b"""apiVersion: meshcd.dev/v1alpha1
kind: Service
metadata: {name: w, namespace: shop}
spec:
  ports: [{name: http, number: 8080}]
  subsets: [{name: v9, labels: {version: v9}}]
  endpoints: [{address: "127.0.0.1:9000", labels: {version: v1}}]
"""})
    return root


def test_warnings_fail_only_with_strict(tmp_path: Path) -> None:
    root = _warning_repo(tmp_path)
    result = validate(DirectorySource(root))
    if result.errors or not result.warnings:  # pragma: no cover - depends on the checks
        pytest.skip("needs the semantic checks to report a warning and no error")
    assert run("validate", str(root)).exit_code == 0
    assert run("validate", "--strict", str(root)).exit_code == 1


def test_usage_and_io_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    cases = [
        ("validate", str(tmp_path / "missing")),
        ("validate", "--repo", str(tmp_path), "--rev", "main"),
        ("validate", "--rev", "main"),
        ("validate", "--format", "xml", str(tmp_path)),
        ("validate", "--explain", "MCD999"),
        ("validate", "--max-file-size", "0", str(tmp_path)),
        ("show", str(tmp_path / "missing")),
    ]
    for args in cases:
        r = CliRunner().invoke(cli, list(args))
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)
    root = clean_repo(tmp_path / "r")
    repo = git_commit(root)
    r = CliRunner().invoke(cli, ["validate", "--repo", repo.workdir, "--rev", "nope"])
    assert r.exit_code == 2 and "unknown revision 'nope'" in r.output
    r = CliRunner().invoke(cli, ["validate", "nowhere", "--repo", repo.workdir])
    assert r.exit_code == 2 and "no directory 'nowhere'" in r.output
    r = CliRunner().invoke(cli, ["validate", "../x", "--repo", repo.workdir])
    assert r.exit_code == 2 and "leaves the repository" in r.output


def test_git_subdirectory_as_config_root(tmp_path: Path) -> None:
    top = tmp_path / "r"
    clean_repo(top / "config")
    write(top, {"config/routes/cart.yaml": BAD_ROUTE, "ci/other.yaml": b"not: meshcd\n"})
    git_commit(top)
    r = run("validate", "--repo", str(top), "--rev", "HEAD", "config")
    assert r.exit_code == 1
    assert r.output.startswith("routes/cart.yaml:9:19: error MCD020")
    assert "5 files" in r.output  # ci/ is outside the config root
    assert "HEAD (" in r.output and "):config:" in r.output


def test_git_revision_and_staged_tree(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    repo = git_commit(root)
    assert run("validate", "--repo", str(root), "--rev", "HEAD").exit_code == 0
    # stage a broken file: the pre-commit recipe validates exactly the staged tree
    write(root, {"routes/cart.yaml": BAD_ROUTE})
    repo.index.add("routes/cart.yaml")
    repo.index.write()
    tree = str(repo.index.write_tree())
    r = run("validate", "--repo", str(root), "--rev", tree)
    assert r.exit_code == 1
    assert r.output.startswith("routes/cart.yaml:9:19: error MCD020")
    assert run("validate", "--repo", str(root)).exit_code == 0  # HEAD is still clean


def test_json_format(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    write(root, {"routes/cart.yaml": BAD_ROUTE})
    r = run("validate", "--format", "json", str(root))
    assert r.exit_code == 1
    data = json.loads(r.output)
    assert data["ok"] is False and data["files"] == 5 and data["documents"] == 5
    assert data["summary"] == {"errors": 1, "warnings": 0, "infos": 0}
    assert data["findings"] == [{
        "code": "MCD020", "severity": "error",
        "message": "spec.rules[0].destinations[0].weight: -5 is less than the minimum of 0",
        "file": "routes/cart.yaml", "line": 9, "column": 19,
    }]


def test_sarif_format(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    write(root, {"routes/cart.yaml": BAD_ROUTE, "big.yaml": b"a: " + b"x" * 400 + b"\n"})
    r = run("validate", "--format", "sarif", "--max-file-size", "300", str(root))
    assert r.exit_code == 1
    sarif = json.loads(r.output)
    assert sarif["version"] == "2.1.0" and "sarif-2.1.0" in sarif["$schema"]
    [run_] = sarif["runs"]
    rules = run_["tool"]["driver"]["rules"]
    assert run_["tool"]["driver"]["name"] == "meshcd"
    assert [x["id"] for x in rules] == sorted(CATALOGUE)
    assert all(x["shortDescription"]["text"] and x["defaultConfiguration"]["level"] in
               ("error", "warning", "note") for x in rules)
    results = run_["results"]
    by_rule = {x["ruleId"]: x for x in results}
    route = by_rule["MCD020"]
    assert rules[route["ruleIndex"]]["id"] == "MCD020"
    assert route["level"] == "error" and route["message"]["text"].startswith("spec.rules[0]")
    loc = route["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"] == "routes/cart.yaml"
    assert loc["region"] == {"startLine": 9, "startColumn": 19}
    big = by_rule["MCD006"]["locations"][0]["physicalLocation"]
    assert big["artifactLocation"]["uri"] == "big.yaml" and "region" not in big
    assert run_["originalUriBaseIds"]["SRCROOT"]["uri"] == root.resolve().as_uri() + "/"


def test_sarif_uris_follow_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = clean_repo(tmp_path / "config")
    write(root, {"routes/cart.yaml": BAD_ROUTE})
    monkeypatch.chdir(tmp_path)
    sarif = json.loads(run("validate", "--format", "sarif", "config").output)
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in sarif["runs"][0]["results"]}
    assert "config/routes/cart.yaml" in uris


def test_explain_and_list_codes() -> None:
    r = run("validate", "--explain", "mcd104")
    assert r.exit_code == 0
    assert r.output.startswith("MCD104 (error, semantic check)")
    assert CATALOGUE["MCD104"].summary in r.output
    r = run("validate", "--explain", "MCD002")
    assert "second key" in r.output  # the longer help of a loader code
    r = run("validate", "--list-codes")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert len(lines) == len(CATALOGUE)
    assert lines[0].startswith("MCD001  error")
    assert [line.split()[0] for line in lines] == sorted(CATALOGUE)


def test_help_documents_the_pre_commit_hook() -> None:
    r = run("validate", "--help")
    assert r.exit_code == 0
    assert "pre-commit" in r.output and "git write-tree" in r.output
    assert "pass_filenames: false" in r.output


# --- meshcd show ----------------------------------------------------------------------------


def test_show_prints_the_model(tmp_path: Path) -> None:
    r = run("show", str(EXAMPLE))
    assert r.exit_code == 0, r.output
    out = r.output
    for heading in ("Mesh", "Services (", "Routes (", "Traffic policies (",
                    "Authorization policies (", "Rollout policies ("):
        assert heading in out
    assert "trust domain" in out and "mTLS" in out
    assert "cart.shop" in out and "8080/http" in out
    assert "90%" in out and "10%" in out  # the canary weights
    assert out.strip().endswith(": ok")


def test_show_from_git_and_with_errors(tmp_path: Path) -> None:
    root = clean_repo(tmp_path / "r")
    write(root, {"routes/cart.yaml": BAD_ROUTE})
    git_commit(root)
    r = run("show", "--repo", str(root))
    assert r.exit_code == 0
    assert "Services (3)" in r.output and "Routes (0)" in r.output
    assert r.output.strip().endswith("FAILED")


def test_console_entry_point_runs(tmp_path: Path) -> None:
    """The real process, as make demo and a pre-commit hook run it."""
    exe = shutil.which("meshcd", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-c", "from reconciler.cli.main import main; main()"]
    root = clean_repo(tmp_path / "r")
    ok = subprocess.run([*cmd, "validate", str(root)], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    write(root, {"routes/cart.yaml": BAD_ROUTE})
    bad = subprocess.run([*cmd, "validate", str(root)], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 1 and "MCD020" in bad.stdout
    missing = subprocess.run([*cmd, "validate", str(tmp_path / "nope")], capture_output=True,
                             text=True, cwd=REPO)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "cannot read" in missing.stderr
