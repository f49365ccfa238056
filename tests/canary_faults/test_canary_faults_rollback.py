"""Issue #6: a rollback asked for while a rollout runs, and what a tired operator gets wrong,
against a real `meshcd serve` with real proxies.

- `POST /api/rollback` (no `to`) while stage 1 bakes: the rollout is aborted (revision
  rejected), the fleet is back on the last good revision and pinned there; the next commit is
  held (planned, "held: ..."); `resume` unpins and it is rolled out;
- `meshcd rollback --to <older revision> --watch` while a rollout runs: that rollout is
  aborted, then the older revision is rolled out in canary stages, and the fleet is pinned
  there;
- refusals: rollback to a rejected revision or to the one being rolled out (409), to an
  unknown one (404); abort/pause/promote with nothing running (409); resume with nothing
  running and no pin (409). None of them changes anything.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from canary_faults_helpers import FaultMesh, fault_mesh
from controller_helpers import until


@pytest.fixture(scope="module")
def mesh() -> Iterator[FaultMesh]:
    # stage 1 bakes 4 s: the rollback lands in it (the test acts as soon as it bakes)
    with fault_mesh("canary-faults-rollback-", 3, 1, stages=(("1", 4.0), ("100%", 1.0))) as m:
        yield m


@pytest.fixture(autouse=True)
def _settled(mesh: FaultMesh) -> None:
    mesh.settle()  # whatever the previous test left running


def _deployed(mesh: FaultMesh) -> dict[str, Any]:
    revs = [r for r in mesh.revisions() if r["status"] == "deployed"]
    return revs[0]  # newest first


def test_rollback_during_a_rollout_aborts_it_and_pins_the_last_good(mesh: FaultMesh) -> None:
    good = _deployed(mesh)
    good_versions = mesh.versions()
    serving = mesh.running()
    commit = mesh.commit_healthy("healthy, but an operator rolls back mid-stage")
    mesh.wait_rollout(commit, {"baking"}, stage=1)
    rolling = mesh.revision_of(commit)
    assert rolling is not None and rolling["status"] == "deploying"

    # the revision being rolled out was never deployed: not a rollback target
    status, doc = mesh.post("/api/rollback", {"to": rolling["id"]})
    assert status == 409 and "never deployed" in doc["error"], doc
    assert mesh.rollout()["phase"] == "baking" and mesh.pin() is None

    status, doc = mesh.post("/api/rollback", {"reason": "pager went off"})
    assert status == 202 and doc["accepted"], doc
    assert doc["target"] == good["id"] and doc["commit"] == good["commit"], doc
    actor = doc["actor"]

    rev = mesh.finish(commit)
    assert rev["status"] == "rejected" and rev["outcome"] == "aborted", mesh.diagnose(commit)
    ops = mesh.ops(commit)
    assert [(o["actor"], o["data"]["action"]) for o in ops] == [(actor, "abort")]
    assert f"rollback to revision {good['id']}" in ops[0]["data"]["reason"]
    finished = mesh.audit(subject=commit, kind="rollout.finished")
    assert len(finished) == 1 and finished[0]["data"]["outcome"] == "aborted"

    until(lambda: mesh.api.get(f"/api/revisions/{doc['revision']}")["status"] == "deployed",
          60, "the rollback revision deployed")
    back = mesh.api.get(f"/api/revisions/{doc['revision']}")
    assert back["trigger"] == "rollback" and back["commit"] == good["commit"], back
    assert back["deploy"]["rollback"]["target"] == good["id"]
    until(lambda: mesh.on(good["commit"]) and mesh.versions() == good_versions, 60,
          "every proxy back on the last good revision")
    assert mesh.running() == serving
    pin = mesh.pin()
    assert pin is not None and pin["revision"] == good["id"] and pin["actor"] == actor
    assert pin["reason"] == "pager went off"
    requested = mesh.audit(kind="rollback.requested")[0]
    assert requested["actor"] == actor and requested["data"]["during_rollout"] == rolling["id"]
    assert mesh.audit(kind="fleet.pinned")[0]["data"]["revision"] == good["id"]

    # the rejected revision is no rollback target either
    status, doc2 = mesh.post("/api/rollback", {"to": rolling["id"]})
    assert status == 409 and "never deployed" in doc2["error"], doc2
    status, doc2 = mesh.post("/api/rollback", {"to": 99999})
    assert status == 404, doc2
    assert mesh.pin() == pin

    # pinned: the next commit waits, visibly, and the fleet stays where it is
    held_commit = mesh.commit_healthy("a fix, pushed while pinned")
    held = mesh.wait_status(held_commit, {"planned"}, 60)
    until(lambda: (mesh.revision_of(held_commit) or {}).get("reason", "").startswith("held"),
          30, "the new commit held")
    assert mesh.rollout() is None
    assert mesh.on(good["commit"]) and mesh.versions() == good_versions
    assert any(r["subject"] == held_commit for r in mesh.audit(kind="revision.held"))

    status, doc3 = mesh.post("/api/rollout/resume", {})
    assert status == 200 and "unpinned" in doc3["message"], doc3
    rev = mesh.finish(held_commit)
    assert rev["id"] == held["id"] and rev["status"] == "deployed", mesh.diagnose(held_commit)
    assert rev["outcome"] == "promoted"
    assert mesh.pin() is None
    until(lambda: mesh.on(held_commit), 60, "every proxy on the commit that was held")
    mesh.verify_audit()


def test_rollback_to_an_older_revision_during_a_rollout(mesh: FaultMesh) -> None:
    until(lambda: mesh.synced(), 60, "a synced fleet")
    older = _deployed(mesh)
    older_versions = mesh.versions()
    middle = mesh.commit_healthy("a second good commit")
    assert mesh.finish(middle)["status"] == "deployed"
    until(lambda: mesh.on(middle), 60, "every proxy on the second good commit")
    commit = mesh.commit_healthy("a third, rolled back over mid-stage")
    mesh.wait_rollout(commit, {"baking"}, stage=1)

    secret, actor = mesh.token("operator", "otto")
    out = mesh.cli("rollback", "--to", str(older["id"]), "--reason", "back two",
                   "--watch", "--data-dir", str(mesh.data_dir), "--token", secret,
                   timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"rolling back to revision {older['id']}" in out.stdout, out.stdout

    rev = mesh.finish(commit)
    assert rev["status"] == "rejected" and rev["outcome"] == "aborted", mesh.diagnose(commit)
    assert [(o["actor"], o["data"]["action"]) for o in mesh.ops(commit)] == [(actor, "abort")]
    back = next(r for r in mesh.revisions() if r["trigger"] == "rollback"
                and r["commit"] == older["commit"])
    assert back["status"] == "deployed" and back["outcome"] == "promoted", back
    assert back["rollback"]["target"] == older["id"], back
    # the older revision was canaried again: the callers ran the middle commit's config
    started = mesh.audit(subject=older["commit"], kind="rollout.started")
    assert started and started[0]["data"]["proxies"] == len(mesh.callers), started
    until(lambda: mesh.on(older["commit"]) and mesh.versions() == older_versions, 60,
          "every proxy on the older revision")
    pin = mesh.pin()
    assert pin is not None and pin["revision"] == older["id"] and pin["actor"] == actor
    mesh.verify_audit()

    # unpin for whatever runs next in this module
    status, doc = mesh.post("/api/rollout/resume", {})
    assert status == 200 and "unpinned" in doc["message"], doc


def test_a_restart_after_a_rollback_does_not_bring_back_the_aborted_commit(
        mesh: FaultMesh) -> None:
    commit = mesh.commit_healthy("aborted by a rollback, then the controller restarts")
    mesh.wait_rollout(commit, {"baking"}, stage=1)
    status, doc = mesh.post("/api/rollback", {"fast": True, "reason": "no"})
    assert status == 202, doc
    rev = mesh.finish(commit)
    assert rev["status"] == "rejected" and rev["outcome"] == "aborted", mesh.diagnose(commit)
    until(lambda: mesh.api.get(f"/api/revisions/{doc['revision']}")["status"] == "deployed",
          60, "the rollback revision deployed")
    status, unpinned = mesh.post("/api/rollout/resume", {})
    assert status == 200 and "unpinned" in unpinned["message"], unpinned
    until(lambda: mesh.synced() and mesh.rollout() is None, 60, "an idle fleet")
    serving = mesh.versions()

    mesh.stop_serve()  # a plain restart (SIGTERM), nothing in flight
    mesh.start_serve()
    until(lambda: mesh.api.get("/api/status")["fetch"]["total_fetches"] >= 3, 30,
          "a few fetches after the restart")
    again = [r for r in mesh.revisions() if r["commit"] == commit]
    assert len(again) == 1, (
        f"the branch head {commit[:12]} was rejected (aborted) before the restart and was "
        f"recorded again after it: {[(r['id'], r['status'], r['trigger']) for r in again]}; "
        "the newest revision was the rollback's, whose commit is the rollback target, and "
        "the controller took it for the last branch head it had seen")
    until(lambda: mesh.synced() and mesh.rollout() is None, 60, "an idle fleet")
    assert mesh.versions() == serving


def test_two_operators_roll_back_at_once_during_a_rollout(mesh: FaultMesh) -> None:
    good = _deployed(mesh)
    good_versions = mesh.versions()
    (ana, ana_actor), (bo, bo_actor) = mesh.token("operator", "ana"), mesh.token("operator", "bo")
    commit = mesh.commit_healthy("two operators roll it back at the same time")
    st = mesh.wait_rollout(commit, {"baking"}, stage=1)
    canary = st["canaries"][0]
    gate = threading.Barrier(2)

    def rollback(token: str) -> tuple[int, Any]:
        gate.wait(5)
        return mesh.post("/api/rollback", {"reason": "me too"}, token=token)

    # The canary is stopped, so the aborted rollout's rollback waits for its ACK while both
    # requests land (as it would for a slow proxy); then it goes on.
    mesh.signal_proxy(canary, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(rollback, (ana, bo)))
        mesh.wait_rollout(commit, {"rolling_back"}, timeout=10)
    finally:
        mesh.signal_proxy(canary, signal.SIGCONT)
    assert all(s in (202, 409) for s, _ in answers), answers
    made = [doc for s, doc in answers if s == 202]
    assert made, answers
    rev = mesh.finish(commit)
    assert rev["status"] == "rejected" and rev["outcome"] == "aborted", mesh.diagnose(commit)
    aborts = mesh.ops(commit)
    assert len(aborts) == 1 and aborts[0]["actor"] in (ana_actor, bo_actor), aborts
    # every rollback revision the API answered with reaches a final status; the fleet ends on
    # the last good revision, pinned there
    for doc in made:
        try:
            until(lambda d=doc: mesh.api.get(f"/api/revisions/{d['revision']}")["status"]
                  in ("deployed", "superseded"), 15,
                  f"rollback revision {doc['revision']} deployed or superseded")
        except AssertionError:
            stuck = mesh.api.get(f"/api/revisions/{doc['revision']}")
            raise AssertionError(
                f"rollback revision {stuck['id']} (asked by {doc['actor']}) is still "
                f"{stuck['status']} 15 s later; the API answered {answers}; revisions "
                f"{[(r['id'], r['trigger'], r['status']) for r in mesh.revisions()[:5]]}; "
                f"pin {mesh.pin()}") from None
    statuses = [mesh.api.get(f"/api/revisions/{d['revision']}")["status"] for d in made]
    assert statuses.count("deployed") >= 1, statuses
    until(lambda: mesh.on(good["commit"]) and mesh.versions() == good_versions, 60,
          "every proxy on the last good revision")
    pin = mesh.pin()
    assert pin is not None and pin["revision"] == good["id"]
    assert pin["actor"] in {d["actor"] for d in made}
    mesh.verify_audit()


def test_refusals_when_nothing_runs(mesh: FaultMesh) -> None:
    until(lambda: mesh.rollout() is None and mesh.synced(), 60, "an idle, synced fleet")
    before = mesh.versions()
    seq = mesh.audit()[-1]["seq"]
    for action in ("abort", "pause", "promote", "promote-full", "resume"):
        status, doc = mesh.post(f"/api/rollout/{action}", {"reason": "tired"})
        assert status == 409, (action, status, doc)
        assert "no rollout" in doc["error"], (action, doc)
    status, doc = mesh.post("/api/rollout/rewind", {})
    assert status == 404, doc
    rejected = [r for r in mesh.revisions() if r["status"] == "rejected"]
    assert rejected
    status, doc = mesh.post("/api/rollback", {"to": rejected[0]["id"]})
    assert status == 409 and "never deployed" in doc["error"], doc
    # nothing changed: no rollout, rollback or pin record, no pin, the same configs
    later = [r["kind"] for r in mesh.audit() if r["seq"] > seq]
    assert not [k for k in later if k.startswith(("rollout.", "rollback.", "fleet."))], later
    assert mesh.pin() is None and mesh.versions() == before
