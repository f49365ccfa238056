"""`meshcd serve` with canary rollouts, end to end with real proxies: a change goes out stage
by stage and is promoted; an operator pauses, resumes and aborts (the proxies go back to their
old config and the revision is rejected); `rollback --to` pins the fleet, a new commit is held
until `resume`; the API's roles. Traffic-driven judging (5xx, denials, latency, NACK) is in
tests/canary_e2e."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from controller_helpers import (
    NS,
    ConfigRepo,
    Processes,
    Serve,
    free_static_port,
    mesh_files,
    until,
)


def policy(on_inconclusive: str, bake: str = "1s") -> str:
    return f"""apiVersion: meshcd.dev/v1alpha1
kind: RolloutPolicy
metadata: {{name: quick, namespace: {NS}}}
spec:
  services: [web.{NS}, api.{NS}]
  stages:
    - {{count: 1, bake: {bake}}}
    - {{percent: 100, bake: {bake}}}
  analysis: {{minRequests: 50, onInconclusive: {on_inconclusive}}}
  onFailure: rollback
  onNewCommit: restart
"""


def files(ports: dict[str, list[int]], timeout: str, on_inconclusive: str = "pass",
          bake: str = "1s") -> dict[str, str]:
    return {**mesh_files(ports, timeout=timeout),
            "rollout/quick.yaml": policy(on_inconclusive, bake)}


def versions(serve: Serve, ids: set[str]) -> dict[str, Any]:
    ledger = serve.ledger()
    return {i: (ledger[i]["ackedVersion"], ledger[i]["desiredRevision"]) for i in ids}


def synced_on(serve: Serve, ids: set[str], revision: str) -> bool:
    ledger = serve.ledger()
    return all(i in ledger and ledger[i]["state"] == "SYNCED"
               and ledger[i]["desiredRevision"] == revision for i in ids)


def start(tmp_path: Path, procs: Processes, on_inconclusive: str = "pass",
          bake: str = "1s") -> tuple[ConfigRepo, Serve, dict[str, list[int]], set[str], str]:
    ports = {"web": [free_static_port(), free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(files(ports, "5s", on_inconclusive, bake), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.3,
                  extra={"deploy": {"timeout_s": 20, "strategy": "canary"}})
    serve.start()
    serve.wait_status(c1, {"deployed"})
    ids = {f"web.{NS}-0", f"web.{NS}-1", f"api.{NS}-0"}
    for i, proxy_id in enumerate(sorted(ids)):
        serve.join_proxy(proxy_id, proxy_id.split(".")[0], tmp_path / f"p{i}")
    until(lambda: synced_on(serve, ids, c1), 60, "every proxy on the first commit")
    return repo, serve, ports, ids, c1


def test_a_change_is_rolled_out_in_stages_and_promoted(tmp_path: Path,
                                                       procs: Processes) -> None:
    repo, serve, ports, _ids, _c1 = start(tmp_path, procs)
    c2 = repo.commit(files(ports, "7s"), "longer timeout")
    rev = serve.wait_status(c2, {"deployed", "rejected", "failed"}, 90)
    assert rev["status"] == "deployed" and rev["outcome"] == "promoted", rev
    until(lambda: synced_on(serve, {f"web.{NS}-0", f"web.{NS}-1"}, c2), 30, "callers on c2")
    kinds = [r["kind"] for r in reversed(serve.audit()) if r["subject"] == c2]
    assert kinds.index("rollout.started") < kinds.index("rollout.stage_started") \
        < kinds.index("rollout.finished")
    assert kinds.count("rollout.stage_started") == 2  # 1 proxy, then 100%
    finished = next(r for r in serve.audit("rollout.finished") if r["subject"] == c2)
    assert finished["data"]["outcome"] == "promoted"
    # only the callers of api changed: api's own proxy was not part of the rollout
    started = next(r for r in serve.audit("rollout.started") if r["subject"] == c2)
    assert started["data"]["proxies"] == 2
    done = serve.get(f"/api/revisions/{rev['id']}/rollout")
    assert done["phase"] == "done" and done["outcome"]["outcome"] == "promoted"
    assert serve.get("/api/rollout")["rollout"] is None


def test_operator_pause_resume_abort(tmp_path: Path, procs: Processes) -> None:
    repo, serve, ports, ids, _c1 = start(tmp_path, procs, on_inconclusive="pass", bake="20s")
    before = versions(serve, ids)
    c2 = repo.commit(files(ports, "7s", bake="20s"), "longer timeout")

    def running() -> dict[str, Any] | None:
        got = serve.get("/api/rollout")["rollout"]
        return got if got is not None and got["commit"] == c2 and got["phase"] == "baking" \
            else None

    until(running, 60, "the first stage baking")
    status, doc = serve.post("/api/rollout/pause", {"reason": "looking"})
    assert status == 200 and doc["accepted"], doc
    assert serve.get("/api/rollout")["rollout"]["phase"] == "paused"
    status, doc = serve.post("/api/rollout/pause", {})
    assert status == 409 and "paused" in doc["error"]
    status, doc = serve.post("/api/rollout/resume", {})
    assert status == 200, doc
    status, doc = serve.post("/api/rollout/abort", {"reason": "not today"})
    assert status == 200, doc
    rev = serve.wait_status(c2, {"rejected", "deployed"}, 60)
    assert rev["status"] == "rejected" and rev["outcome"] == "aborted", rev
    until(lambda: versions(serve, ids) == before, 30, "every proxy back on its old config")
    ops = [r for r in serve.audit("rollout.operator") if r["subject"] == c2]
    assert [r["data"]["action"] for r in reversed(ops)] == ["pause", "resume", "abort"]
    assert all(r["actor"].startswith("token:admin#") for r in ops)
    # the rejected revision is not retried: nothing is rolling out afterwards
    assert serve.get("/api/rollout")["rollout"] is None
    status, doc = serve.post("/api/rollout/abort", {})
    assert status == 409 and "no rollout" in doc["error"]


def test_rollback_pins_the_fleet_and_resume_unpins(tmp_path: Path, procs: Processes) -> None:
    repo, serve, ports, _ids, c1 = start(tmp_path, procs)
    c2 = repo.commit(files(ports, "7s"), "second")
    assert serve.wait_status(c2, {"deployed", "rejected"}, 90)["status"] == "deployed"
    first = serve.revision_of(c1)
    assert first is not None
    status, doc = serve.post("/api/rollback", {"to": 999999})
    assert status == 404
    status, doc = serve.post("/api/rollback", {"fast": True, "reason": "bad deploy"})
    assert status == 202 and doc["target"] == first["id"] and doc["commit"] == c1, doc
    until(lambda: synced_on(serve, {f"web.{NS}-0", f"web.{NS}-1"}, c1), 60, "back on c1")
    back = serve.get(f"/api/revisions/{doc['revision']}")
    until(lambda: serve.get(f"/api/revisions/{doc['revision']}")["status"] == "deployed", 30,
          "the rollback revision deployed")
    assert back["trigger"] == "rollback"
    pin = serve.get("/api/rollout")["pin"]
    assert pin["revision"] == first["id"] and pin["reason"] == "bad deploy"
    # a new commit is held while pinned
    c3 = repo.commit(files(ports, "9s"), "third")
    held = serve.wait_status(c3, {"planned"}, 60)
    until(lambda: (serve.revision_of(c3) or {}).get("reason", "").startswith("held"), 30,
          "the new commit held")
    assert synced_on(serve, {f"web.{NS}-0", f"web.{NS}-1"}, c1)
    status, doc = serve.post("/api/rollout/resume", {})
    assert status == 200 and "unpinned" in doc["message"], doc
    rev = serve.wait_status(c3, {"deployed", "rejected"}, 90)
    assert rev["status"] == "deployed" and held["id"] == rev["id"], rev
    assert serve.get("/api/rollout")["pin"] is None
    kinds = {r["kind"] for r in serve.audit()}
    assert {"rollback.requested", "fleet.pinned", "revision.held", "fleet.unpinned"} <= kinds


def test_api_roles(tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    repo.commit(files(ports, "5s"), "first")
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=0.5,
                  extra={"deploy": {"strategy": "canary"}})
    serve.start()
    out = serve.cli("token", "create", "--role", "viewer", "--name", "vera", "--json")
    assert out.returncode == 0, out.stderr
    viewer = json.loads(out.stdout)["token"]
    assert serve.get("/api/rollout", token=viewer) == {"rollout": None, "pin": None}
    status, doc = serve.post("/api/rollout/abort", {}, token=viewer)
    assert status == 403 and "operator" in doc["error"]
    status, doc = serve.post("/api/rollback", {}, token=viewer)
    assert status == 403
    status, doc = serve.post("/api/rollout/pause", {}, token="not-a-token-at-all-xxxxxxxx")
    assert status == 401
    try:
        urllib.request.urlopen(serve.api + "/api/status", timeout=10)
        raise AssertionError("a read without a token was answered")
    except urllib.error.HTTPError as e:
        assert e.code == 401


def test_rollback_revert_writes_a_commit_and_refuses_when_the_branch_moved(
        tmp_path: Path, procs: Processes) -> None:
    ports = {"web": [free_static_port()], "api": [free_static_port()]}
    repo = ConfigRepo(tmp_path / "mesh.git")
    c1 = repo.commit(files(ports, "5s"), "first")
    # polls rarely: the test says when the controller fetches
    serve = Serve(procs, tmp_path / "ctl", repo.url, poll_interval=3600,
                  extra={"deploy": {"timeout_s": 20, "strategy": "canary"}})
    serve.start()
    serve.wait_status(c1, {"deployed"})
    c2 = repo.commit(files(ports, "7s"), "second")
    assert serve.post("/api/refresh", {})[0] == 202
    assert serve.wait_status(c2, {"deployed", "rejected"}, 60)["status"] == "deployed"
    # someone pushes c3 and the controller has not fetched it: the revert must not clobber it
    c3 = repo.commit(files(ports, "8s"), "third, not fetched yet")
    status, doc = serve.post("/api/rollback", {"revert": True})
    assert status == 409 and "revert not pushed" in doc["error"], doc
    assert str(repo.repo.references["refs/heads/main"].target) == c3
    assert serve.get("/api/rollout")["pin"] is None  # refused: nothing changed
    assert serve.post("/api/refresh", {})[0] == 202
    assert serve.wait_status(c3, {"deployed", "rejected"}, 60)["status"] == "deployed"
    status, doc = serve.post("/api/rollback", {"to": serve.revision_of(c1)["id"],
                                               "revert": True, "reason": "c2 and c3 are bad"})
    assert status == 202 and doc["revertCommit"], doc
    head = repo.repo.references["refs/heads/main"].target
    assert str(head) == doc["revertCommit"]
    commit = repo.repo[head]
    assert commit.parents[0].id == repo.repo[c3].id
    assert commit.tree.id == repo.repo[c1].tree.id
    assert f"Meshcd-Rollback-To: {c1}" in commit.message
    # the fleet is pinned at c1; the revert commit, once fetched, is held behind the pin
    assert serve.post("/api/refresh", {})[0] == 202
    serve.wait_status(doc["revertCommit"], {"planned"}, 60)
    assert serve.get("/api/rollout")["pin"]["commit"] == c1
    pushed = serve.audit("rollback.revert_pushed")
    assert pushed and pushed[0]["subject"] == doc["revertCommit"]
