"""What the branch and the remote do, seen through a running `meshcd serve`: a deleted
branch is recorded once and the fleet keeps its config; a force-push is recorded and
deployed; an unreachable remote shows in status, the audit and /metrics, and a manual
refresh picks it up again without waiting for the backoff."""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from controller_helpers import ConfigRepo, Processes, Serve, free_static_port, mesh_files, until


def test_branch_deleted_force_push_and_unreachable_remote(tmp_path: Path,
                                                          procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.3)
    serve.start()
    serve.wait_status(c1, {"deployed"})

    repo.repo.references.delete("refs/heads/main")
    until(lambda: serve.audit("source.branch_deleted"), 20, "the deletion recorded")
    polls = serve.get("/api/status")["fetch"]["total_fetches"]
    until(lambda: serve.get("/api/status")["fetch"]["total_fetches"] >= polls + 5, 20,
          "more polls")
    assert len(serve.audit("source.branch_deleted")) == 1  # once, not at every poll
    assert serve.get("/api/status")["deployed"]["commit"] == c1

    c2 = repo.commit(mesh_files(ports, timeout="9s"), "rewritten", orphan=True)
    assert serve.wait_status(c2, {"deployed", "failed"})["status"] == "deployed"
    # the mirror saw the branch come back with a commit that does not contain c1
    detected = next(r for r in serve.audit("revision.detected") if r["subject"] == c2)
    assert detected["data"]["event"]["kind"] in ("force_push", "new_commit")

    c3 = repo.commit(mesh_files(ports, timeout="4s"), "force", orphan=True)
    serve.wait_status(c3, {"deployed"})
    pushes = serve.audit("source.force_push")
    assert pushes and pushes[0]["data"]["new"] == c3

    moved = tmp_path / "elsewhere.git"
    shutil.move(repo.path, moved)
    until(lambda: serve.audit("fetch.failed"), 20, "a failed fetch recorded")
    status = serve.get("/api/status")
    assert status["fetch"]["consecutive_failures"] >= 1 and status["fetch"]["last_error"]
    assert status["deployed"]["commit"] == c3  # the fleet keeps what it runs
    out = serve.cli("status")
    assert out.returncode == 0 and "failure(s) in a row" in out.stdout
    with urllib.request.urlopen(serve.api + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'meshcd_fetches_total{result="error"}' in metrics
    assert "meshcd_fetch_consecutive_failures 0.0" not in metrics

    shutil.move(moved, repo.path)
    out = serve.cli("refresh")
    assert out.returncode == 0 and "token:admin#" in out.stdout
    until(lambda: serve.get("/api/status")["fetch"]["consecutive_failures"] == 0, 20,
          "the fetch healthy again")
    manual = serve.audit("manual.refresh")
    assert manual and manual[0]["actor"].startswith("token:admin#")
