"""`meshcd plan`: output and exit codes (0 plan, 1 invalid target, 2 usage/IO)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from plan_git import commit, example_files, new_repo

from reconciler.cli.main import cli


def _repo(tmp_path: Path) -> tuple[Path, str, str, str]:
    path = tmp_path / "config.git"
    repo = new_repo(path)
    files = example_files()
    a = commit(repo, files, "base")
    files["routes/cart.yaml"] = files["routes/cart.yaml"].replace("weight: 90}", "weight: 80}").replace(
        "weight: 10}", "weight: 20}")
    files["policies/catalog.yaml"] = files["policies/catalog.yaml"].replace(
        'paths: ["/products/*"]', 'paths: ["/products/*", "/reviews/*"]')
    b = commit(repo, files, "weights and a path")
    files["routes/cart.yaml"] = files["routes/cart.yaml"].replace("weight: 80}", "weight: 85}")  # sums to 105
    c = commit(repo, files, "broken")
    return path, a, b, c


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["plan", *args])
    return result.exit_code, result.stdout, result.stderr


def test_plan_between_two_commits(tmp_path: Path) -> None:
    path, a, b, _ = _repo(tmp_path)
    code, out, err = run("--repo", str(path), "--from", a, "--to", b)
    assert code == 0, err
    assert f"Plan: {a} ({a[:12]}) -> {b} ({b[:12]})" in out
    assert "~ Route shop/cart" in out and "spec.rules[0].destinations[0].weight: 90 -> 80" in out
    assert "Proxies: 6 of 10 change" in out
    assert "+ ns/shop/sa/cart -> catalog.shop [8080 GET /reviews/*]" in out


def test_formats_json_and_markdown(tmp_path: Path) -> None:
    path, a, b, _ = _repo(tmp_path)
    code, out, _ = run("--repo", str(path), "--from", a, "--to", b, "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert len(doc["access"]["granted"]) == 1 and doc["proxies"]["changed"] == 6
    code, out, _ = run("--repo", str(path), "--from", a, "--to", b, "--format", "markdown")
    assert code == 0 and out.startswith("### meshcd plan") and "<details>" in out


def test_plan_against_nothing_by_default(tmp_path: Path) -> None:
    path, a, _, _ = _repo(tmp_path)
    code, out, _ = run("--repo", str(path), "--to", a)
    assert code == 0
    assert "Plan: (nothing) ->" in out and "Resources: 26 added" in out


def test_invalid_target_exits_1_with_its_findings(tmp_path: Path) -> None:
    path, _, b, c = _repo(tmp_path)
    code, out, err = run("--repo", str(path), "--from", b, "--to", c)
    assert code == 1
    assert "is invalid" in err and "routes/cart.yaml:" in err and "error MCD" in err
    assert out == ""


def test_usage_and_io_errors_exit_2_without_traceback(tmp_path: Path) -> None:
    path, a, _, _ = _repo(tmp_path)
    for args, message in (
        (("--repo", str(tmp_path / "nope"), "--to", "HEAD"), "not a git repository"),
        (("--repo", str(path), "--to", "no-such-branch"), "unknown revision 'no-such-branch'"),
        (("--repo", str(path), "--from", "v9", "--to", a), "unknown revision 'v9'"),
        (("--repo", str(path)), "Missing option '--to'"),
        (("--repo", str(path), "--to", a, "--format", "yaml"), "Invalid value for '--format'"),
    ):
        code, out, err = run(*args)
        assert code == 2, (args, out, err)
        assert message in err
        assert "Traceback" not in out + err


def test_invalid_from_revision_only_warns(tmp_path: Path) -> None:
    path, _, b, c = _repo(tmp_path)
    code, out, err = run("--repo", str(path), "--from", c, "--to", b)
    assert code == 0
    assert f"--from {c} has" in err and "warning" in err
    assert "Plan:" in out


def test_json_output_is_deterministic(tmp_path: Path) -> None:
    path, a, b, _ = _repo(tmp_path)
    first = run("--repo", str(path), "--from", a, "--to", b, "--format", "json")
    second = run("--repo", str(path), "--from", a, "--to", b, "--format", "json")
    assert first == second and first[0] == 0
