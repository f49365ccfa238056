"""Issue #6: proxies that go away in the middle of a rollout, with real proxy processes.

- a canary SIGKILLed after it ACKed the new config, while its stage bakes: the stage fails
  (signal "disconnect": a crash the config caused cannot be told from one it did not), the
  other canary goes back to its old config, the revision is rejected; restarted from its
  state dir, the killed proxy ends on the OLD config;
- a canary that never ACKs (SIGSTOPped before the push, then SIGKILLed): it is dropped
  (`rollout.canary_dropped`), the stage is chosen again without it, and the rollout goes on
  to promotion; restarted, it ends on the new config like everyone else.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from canary_faults_helpers import FaultMesh, fault_mesh
from controller_helpers import until


@pytest.fixture(scope="module")
def mesh() -> Iterator[FaultMesh]:
    with fault_mesh("canary-faults-proxy-", 4, 1) as m:
        yield m


@pytest.fixture(autouse=True)
def _settled(mesh: FaultMesh) -> None:
    mesh.settle()  # whatever the previous test left running


def test_canary_killed_after_ack_fails_the_stage_and_comes_back_on_the_old_config(
        mesh: FaultMesh) -> None:
    mesh.stages = (("2", 8.0), ("100%", 1.0))  # two canaries of four callers in stage 1
    before = mesh.versions()
    serving = mesh.running()
    previous = mesh.ledger()[mesh.callers[0]]["desiredRevision"]
    commit = mesh.commit_healthy("healthy: a canary crashes mid-bake")
    st = mesh.wait_rollout(commit, {"baking"}, stage=1)
    canaries = st["canaries"]
    assert len(canaries) == 2 and not st["waitingForAck"], st
    victim, other = canaries
    ledger = mesh.ledger()
    assert ledger[victim]["ackedVersion"] != before[victim]  # it runs the new config
    mesh.kill_proxy(victim)

    rev = mesh.finish(commit)
    assert rev["status"] == "rejected" and rev["outcome"] == "rolled_back", mesh.diagnose(commit)
    audit = mesh.audit(subject=commit)
    failed = [r["data"] for r in audit if r["kind"] == "rollout.judged"
              and str(r["data"].get("outcome")).lower() == "failed"]
    assert len(failed) == 1, failed
    assert failed[0]["signal"] == "disconnect" and failed[0]["proxy"] == victim, failed[0]
    assert failed[0]["decision"] == "roll back"
    rollback = [r["data"] for r in audit if r["kind"] == "rollout.rollback"]
    assert len(rollback) == 1 and sorted(rollback[0]["proxies"]) == sorted(canaries), rollback
    finished = [r["data"] for r in audit if r["kind"] == "rollout.finished"]
    assert len(finished) == 1 and finished[0]["revisionStatus"] == "rejected"

    # everyone still up is back on the old config; the dead one is meant to be
    up = [p for p in mesh.top.proxy_ids if p != victim]
    until(lambda: mesh.on(previous, up), 60, "the proxies still up on the previous commit")
    versions = mesh.versions()
    assert {p: versions[p] for p in up} == {p: before[p] for p in up}
    assert versions[other] == before[other]  # the canary that stayed up went back
    dead = mesh.ledger()[victim]
    assert dead["state"] == "DISCONNECTED" and dead["desiredRevision"] == previous, dead

    # restarted from its state dir (it last applied the new config): it ends on the old one
    mesh.restart_proxy(victim)
    until(lambda: mesh.on(previous), 60, "the restarted canary on the previous commit")
    assert mesh.versions() == before
    assert mesh.running() == serving
    mesh.verify_audit()


def test_canary_gone_before_ack_is_dropped_and_the_rollout_goes_on(mesh: FaultMesh) -> None:
    mesh.stages = (("1", 2.0), ("100%", 1.0))
    until(lambda: mesh.synced(), 60, "a synced fleet")
    before = mesh.versions()
    ch = mesh.healthy_change()
    commit = mesh.commit_unpublished(ch, "healthy: the first canary never ACKs")
    victim = mesh.canaries_of(commit, 0, mesh.callers)
    assert len(victim) == 1
    victim_id = victim[0]
    # stopped before the controller can see the commit: the push reaches a proxy that cannot
    # apply or ACK it
    mesh.signal_proxy(victim_id, signal.SIGSTOP)
    try:
        mesh.publish(commit)
        st = mesh.wait_rollout(commit, {"pushing"}, stage=1)
        assert st["waitingForAck"] == [victim_id], st
    finally:
        mesh.kill_proxy(victim_id)
    mesh.healthy = ch

    rev = mesh.finish(commit)
    assert rev["status"] == "deployed" and rev["outcome"] == "promoted", mesh.diagnose(commit)
    audit = mesh.audit(subject=commit)
    dropped = [r["data"] for r in audit if r["kind"] == "rollout.canary_dropped"]
    assert len(dropped) == 1 and dropped[0]["proxy"] == victim_id and dropped[0]["stage"] == 1
    stage1 = [r["data"] for r in audit if r["kind"] == "rollout.stage_started"
              and r["data"]["stage"] == 1]
    # stage 1 had no canary left: chosen again without the dropped one
    assert len(stage1) == 2 and stage1[0]["canaries"] == [victim_id], stage1
    assert stage1[1]["repeated"] is True and victim_id not in stage1[1]["canaries"]
    assert len(stage1[1]["canaries"]) == 1
    assert not [r for r in audit if r["kind"] == "rollout.judged"
                and str(r["data"].get("outcome")).lower() == "failed"]

    up = [p for p in mesh.callers if p != victim_id]
    until(lambda: mesh.on(commit, up), 60, "the callers still up on the new commit")
    versions = mesh.versions()
    assert all(versions[p] != before[p] for p in up)
    # restarted, the dropped proxy gets what the fleet now runs: the promoted commit
    mesh.restart_proxy(victim_id)
    until(lambda: mesh.on(commit), 60, "every proxy on the promoted commit")
    assert mesh.versions()[victim_id] != before[victim_id]
    mesh.verify_audit()
