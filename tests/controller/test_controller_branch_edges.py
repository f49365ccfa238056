"""Issue 17 #11 through a running `meshcd serve`: a deleted branch shows in status (API and
CLI); the branch pushed back at the very same commit is recorded, not dropped as a duplicate;
a second deletion is recorded again."""

from __future__ import annotations

from pathlib import Path

import pygit2
from controller_helpers import ConfigRepo, Processes, Serve, free_static_port, mesh_files, until


def test_deleted_recreated_at_the_same_commit_and_deleted_again(tmp_path: Path,
                                                                 procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(mesh_files(ports), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.3)
    serve.start()
    serve.wait_status(c1, {"deployed"})
    assert serve.get("/api/status")["branchState"]["state"] == "present"

    repo.repo.references.delete("refs/heads/main")
    until(lambda: serve.audit("source.branch_deleted"), 20, "the deletion recorded")
    state = serve.get("/api/status")["branchState"]
    assert state["state"] == "deleted" and state["commit"] == c1
    out = serve.cli("status")
    assert out.returncode == 0 and "branch:      deleted" in out.stdout, out.stdout

    repo.repo.references.create("refs/heads/main", pygit2.Oid(hex=c1))
    until(lambda: serve.audit("source.branch_recreated"), 20, "the return recorded")
    assert serve.audit("source.branch_recreated")[0]["data"]["commit"] == c1
    assert serve.get("/api/status")["branchState"]["state"] == "present"
    assert "branch:" not in serve.cli("status").stdout

    repo.repo.references.delete("refs/heads/main")
    until(lambda: len(serve.audit("source.branch_deleted")) == 2, 20, "the second deletion")
    assert serve.get("/api/status")["deployed"]["commit"] == c1  # the fleet keeps what it runs
    assert len(serve.revisions()) == 1  # nothing was redeployed along the way
