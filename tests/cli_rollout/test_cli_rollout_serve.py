"""The rollout commands against a real `meshcd serve` (canary strategy) with real proxies:
`rollout watch --wait` follows a pushed change to promoted (exit 0); `abort` while a
watcher runs makes it exit 3 with the outcome; `rollback --watch` deploys the earlier
revision and pins the fleet; `history` shows outcomes and the rollback row; a viewer token
reads but cannot act."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from controller_helpers import (  # conftest.py puts tests/controller on the path
    MESHCD,
    NS,
    ROOT,
    ConfigRepo,
    Processes,
    Serve,
    free_static_port,
    mesh_files,
    until,
)


def _files(ports: dict[str, list[int]], timeout: str, bake: str) -> dict[str, str]:
    policy = f"""apiVersion: meshcd.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: quick, namespace: {NS}}}
spec:
  services: [web.{NS}, api.{NS}]
  stages:
    - {{count: 1, bake: {bake}}}
    - {{percent: 100, bake: {bake}}}
  analysis: {{minRequests: 50, onInconclusive: pass}}
  onFailure: rollback
  onNewCommit: restart
"""
    return {**mesh_files(ports, timeout=timeout), "rollout/quick.yaml": policy}


def test_rollout_commands_against_meshcd_serve(tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port(), free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(_files(ports, "5s", "2s"), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.3,
                  extra={"deploy": {"timeout_s": 20, "strategy": "canary"}})
    serve.start()
    serve.wait_status(c1, {"deployed"})
    callers = {f"web.{NS}-0", f"web.{NS}-1"}
    for i, proxy_id in enumerate(sorted(callers)):
        serve.join_proxy(proxy_id, "web", tmp_path / f"p{i}")

    def on(commit: str) -> bool:
        ledger = serve.ledger()
        return all(p in ledger and ledger[p]["state"] == "SYNCED"
                   and ledger[p]["desiredRevision"] == commit for p in callers)

    try:
        until(lambda: on(c1), 60, "the proxies on the first commit")
    except AssertionError:
        raise AssertionError(f"{serve.ledger()}\n{serve.get('/api/status')}\n"
                             f"{serve.proc.output() if serve.proc else ''}") from None
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MESHCD_TOKEN", None)

    def watch(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([MESHCD, *args, "--data-dir", str(serve.data_dir)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)

    # a pushed change, followed from before it starts to promoted
    watcher = watch("rollout", "watch", "--wait", "60", "--interval", "0.3")
    c2 = repo.commit(_files(ports, "7s", "2s"), "longer timeout")
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, out + err
    rev2 = serve.revision_of(c2)
    assert rev2 is not None and rev2["status"] == "deployed"
    assert f"rollout of revision {rev2['id']} ({c2[:12]}), replacing {c1[:12]}" in out
    assert "  stage 1 of 2 (1 proxy, bake 2s): " in out
    assert out.rstrip().endswith(f"revision {rev2['id']}: promoted")

    # a slow one, aborted by hand while a watcher follows it
    c3 = repo.commit(_files(ports, "8s", "60s"), "slow bake")
    until(lambda: ((serve.get("/api/rollout")["rollout"] or {}).get("commit") == c3), 60,
          "the slow rollout running")
    watcher = watch("rollout", "watch", "--interval", "0.3")
    time.sleep(1.0)
    r = serve.cli("rollout", "pause", "--reason", "looking")
    assert r.returncode == 0 and r.stdout.startswith("pause accepted at stage "), r.stderr
    status = serve.cli("rollout", "status")
    assert status.returncode == 0 and ": paused: paused by token:admin#" in status.stdout
    r = serve.cli("rollout", "pause")
    assert r.returncode == 1 and "pause refused: cannot pause while paused" in r.stderr
    r = serve.cli("rollout", "abort", "--reason", "not today")
    assert r.returncode == 0, r.stderr
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 3, out + err
    rev3 = serve.revision_of(c3)
    assert rev3 is not None
    assert "  outcome: aborted (revision rejected): aborted by token:admin#" in out
    assert out.rstrip().endswith(f"revision {rev3['id']}: aborted")

    # a viewer reads, but may not act
    made = serve.cli("token", "create", "--role", "viewer", "--name", "vera", "--json")
    viewer = json.loads(made.stdout)["token"]
    r = serve.cli("rollout", "status", "--token", viewer)
    assert (r.returncode, r.stdout) == (0, "no rollout in progress\n")
    r = serve.cli("rollback", "--token", viewer)
    assert r.returncode == 2 and "403 this needs the operator role" in r.stderr
    r = serve.cli("rollout", "abort", "--reason", "x" * 600)  # FastAPI's own 422
    assert r.returncode == 1
    assert r.stderr == "meshcd: abort: 422 reason: String should have at most 500 characters\n"

    # back to the first revision, in canary stages, watched to the end
    rev1 = serve.revision_of(c1)
    assert rev1 is not None
    r = serve.cli("rollback", "--to", str(rev1["id"]), "--reason", "back to the first",
                  "--watch", "--interval", "0.3", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"rolling back to revision {rev1['id']}: deploying commit "
                               f"{c1[:12]} as revision ")
    assert lines[1] == (f"  pinned: the fleet stays on revision {rev1['id']}; new commits are "
                        "held until `meshcd rollout resume`")
    assert r.stdout.rstrip().endswith(": promoted")
    until(lambda: on(c1), 30, "the proxies back on the first commit")
    status = serve.cli("rollout", "status")
    assert status.stdout.startswith(f"PINNED to revision {rev1['id']} ({c1[:12]}) by "
                                    "token:admin#"), status.stdout
    history = serve.cli("history").stdout.splitlines()
    assert history[0].split() == ["ID", "COMMIT", "STATUS", "OUTCOME", "TRIGGER", "AUTHOR",
                                  "MESSAGE"]
    rows = {line.split()[0]: line.split() for line in history[1:]}
    assert rows[str(rev3["id"])][2:4] == ["rejected", "aborted"]
    assert rows[str(rev2["id"])][2:4] == ["deployed", "promoted"]
    newest = max(rows, key=int)
    assert rows[newest][2:7] == ["deployed", "promoted", "rollback", "to", f"#{rev1['id']}"]

    r = serve.cli("rollout", "resume", "--reason", "done")
    assert r.returncode == 0 and r.stdout.startswith("unpinned"), r.stderr
    assert serve.cli("rollout", "status").stdout == "no rollout in progress\n"
