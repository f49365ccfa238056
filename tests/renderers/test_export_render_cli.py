"""`meshcd render`: formats, --proxy, --out, stdout, warnings on stderr, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "repo_layout_example"
GOLDEN = ROOT / "tests" / "golden"


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["render", *args])
    return r.exit_code, r.stdout, r.stderr


def test_out_writes_the_golden_files(tmp_path: Path) -> None:
    for fmt in ("native", "envoy", "istio"):
        code, _, err = run(str(GOLDEN / "canary" / "input"), "--format", fmt, "--out", str(tmp_path / fmt))
        assert code == 0, err
        want = GOLDEN / "canary" / "expected" / fmt
        written = {p.relative_to(tmp_path / fmt).as_posix(): p.read_text()
                   for p in (tmp_path / fmt).rglob("*") if p.is_file()}
        expected = {p.relative_to(want).as_posix(): p.read_text()
                    for p in want.rglob("*") if p.is_file() and p.name != "WARNINGS.txt"}
        assert written == expected
        warnings = (want / "WARNINGS.txt").read_text().splitlines()
        assert [ln.removeprefix("meshcd: warning: ") for ln in err.splitlines()
                if ln.startswith("meshcd: warning: ")] == warnings


def test_one_proxy_to_stdout_is_the_snapshot_itself() -> None:
    code, out, _ = run(str(EXAMPLE), "--proxy", "cart.shop-0")
    assert code == 0
    snap = json.loads(out)
    assert snap["inbound"]["service"] == "cart" and len(snap["version"]) == 64


def test_several_yaml_files_to_stdout_are_one_yaml_stream() -> None:
    code, out, _ = run(str(EXAMPLE), "--format", "istio")
    assert code == 0
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert {d["kind"] for d in docs} >= {"VirtualService", "DestinationRule", "AuthorizationPolicy",
                                          "PeerAuthentication"}
    assert "# shop/virtualservice-cart.yaml\n" in out


def test_envoy_root_moves_the_paths_in_the_bootstrap() -> None:
    code, out, _ = run(str(EXAMPLE), "--format", "envoy", "--proxy", "cart.shop-0",
                       "--envoy-root", "/srv/envoy")
    assert code == 0
    boot = next(d for d in yaml.safe_load_all(out) if d and "node" in d)
    assert boot["dynamic_resources"]["lds_config"]["path_config_source"]["path"] == (
        "/srv/envoy/cart.shop-0/lds.yaml")


def test_invalid_config_exits_1_with_findings(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: meshcd.dev/v1alpha1\nkind: Route\nmetadata: {name: r}\nspec: {}\n")
    code, out, err = run(str(tmp_path), "--format", "istio")
    assert code == 1 and out == ""
    assert "bad.yaml:" in err and "error MCD" in err


@pytest.mark.parametrize("args, message", [
    (["--format", "istio", "--proxy", "cart.shop-0"], "--proxy applies to"),
    (["--proxy", "nobody"], "no proxy 'nobody'"),
    (["--format", "linkerd", "--envoy-root", "/x"], "--envoy-root"),
    (["--format", "envoy", "--envoy-root", "relative"], "absolute"),
    (["--rev", "HEAD"], "--rev needs --repo"),
])
def test_usage_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    code, _, err = run(str(EXAMPLE), *args)
    assert code == 2 and message in err and "Traceback" not in err


def test_io_errors_exit_2(tmp_path: Path) -> None:
    code, _, err = run(str(tmp_path / "missing"))
    assert code == 2 and "cannot read" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run(str(EXAMPLE), "--out", str(tmp_path / "file"))
    assert code == 2 and "not a directory" in err
    code, _, err = run(str(EXAMPLE), "--format", "consul")
    assert code == 2


def test_from_a_git_revision(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "config").mkdir()
    for p in (GOLDEN / "tcp" / "input").iterdir():
        (repo / "config" / p.name).write_text(p.read_text())
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    (repo / "config" / "all.yaml").write_text("garbage: [")  # the working tree is not read
    code, out, err = run("config", "--repo", str(repo), "--rev", "HEAD", "--format", "native",
                         "--proxy", "app.data-0")
    assert code == 0, err
    assert (GOLDEN / "tcp" / "expected" / "native" / "app.data-0.json").read_text() == out
