"""The revision queue as playbooks: event sequences in, command sequences out.

The second half ports the scenarios of the SIGKILL suites in tests/canary_faults/ (and the
ordering fixes of commit 1b65468) to the queue: a restart is `Book.restart()`, which rebuilds
the queue from what the store holds after the commands that ran."""

from __future__ import annotations

from dataclasses import replace

import pytest
from revision_playbook import Book, Crash, S, kinds

from reconciler.revisions.queue import Audit

DEPLOY_C1 = ["save c1 planned", "audit plan.made c1", "save c1 deploying",
             "audit deploy.started c1", "deploy c1"]


def test_a_commit_goes_detected_validated_planned_deployed() -> None:
    pb = Book()
    assert pb.observe("c1") == ["insert c1", "audit revision.detected c1", "validate c1"]
    assert pb.validated("c1") == ["audit revision.validated c1", "plan c1"]
    assert pb.planned("c1") == DEPLOY_C1
    assert pb.finished("c1") == [
        "audit deploy.ack c1", "state deployed_revision=1", "save c1 deployed", "assign c1",
        "audit deploy.finished c1", "settled c1"]
    assert pb.queue.state.deployed is not None and pb.queue.state.deployed.commit == "c1"
    assert pb.queue.idle
    started = pb.audits("deploy.started")[0].data
    assert started["strategy"] == "canary" and started["waiting_for"] == 2


def test_all_at_once_does_not_hand_the_fleet_the_revision_again() -> None:
    pb = Book(strategy="all-at-once")
    pb.observe("c1")
    pb.deploy("c1")
    assert "assign c1" not in pb.finished("c1")
    assert pb.audits("deploy.started")[0].data["strategy"] == "all-at-once"


def test_newer_commits_supersede_the_queued_one_with_one_audit_shape() -> None:
    pb = Book()
    pb.observe("c1")
    pb.deploy("c1")
    pb.observe("c2")
    assert pb.observe("c3") == ["insert c3", "audit revision.detected c3", "save c2 superseded",
                                "audit revision.superseded c2", "validate c3"]
    sup = pb.audits("revision.superseded")[0]
    assert sup.data == {"revision": 2, "by": 3, "by_commit": "c3",
                        "reason": "superseded by revision 3 (c3)"}
    assert pb.validated("c2") == []  # its answer arrives late: nothing follows
    assert pb.validated("c3") == ["announce c3 during c1"]
    assert pb.finished("c1", S.SUPERSEDED, outcome="superseded")[-2:] == [
        "audit revision.validated c3", "plan c3"]
    assert pb.status("c1") is S.SUPERSEDED
    out = pb.planned("c3")
    assert out[-1] == "deploy c3"
    assert [d.revision.commit for d in pb.deploys()] == ["c1", "c3"]
    assert pb.status("c2") is S.SUPERSEDED


def test_a_planned_revision_is_superseded_when_a_newer_one_waits() -> None:
    pb = Book()
    pb.observe("c1")
    pb.validated("c1")
    pb.observe("c2")  # arrives while c1 is being planned
    out = pb.planned("c1")
    # c2 was sent to validation when it was queued: no second Validate
    assert out == ["save c1 planned", "audit plan.made c1", "save c1 superseded",
                   "audit revision.superseded c1", "settled c1"]
    assert pb.status("c1") is S.SUPERSEDED
    assert pb.queue.state.current is not None and pb.queue.state.current.commit == "c2"


def test_each_commit_is_validated_once_even_when_validated_ahead_of_its_turn() -> None:
    pb = Book()
    pb.observe("c1")
    pb.deploy("c1")
    pb.observe("c2")
    assert pb.validated("c2") == ["announce c2 during c1"]
    out = pb.finished("c1", S.SUPERSEDED, outcome="superseded")
    # c2's turn: its validation is already known, straight to the plan
    assert out[-2:] == ["audit revision.validated c2", "plan c2"]
    assert sum(1 for x in pb.commands if type(x).__name__ == "Validate") == 2


def test_an_invalid_commit_never_deploys_and_never_stops_a_good_rollout() -> None:
    pb = Book()
    pb.observe("c1")
    pb.deploy("c1")
    pb.observe("bad")
    assert pb.validated("bad", ok=False) == []  # no announce: c1's rollout goes on
    out = pb.finished("c1")
    assert out[-3:] == ["save bad invalid", "audit revision.validated bad", "settled bad"]
    assert pb.status("bad") is S.INVALID
    assert pb.rev("bad").reason.startswith("1 validation error")
    assert [d.revision.commit for d in pb.deploys()] == ["c1"]
    validated = pb.audits("revision.validated")[-1].data
    assert validated["valid"] is False and validated["errors"] == 1


def test_signature_refusal_is_invalid_at_detection_and_never_validated() -> None:
    pb = Book()
    assert pb.observe("c1", refused="unsigned") == [
        "insert c1", "audit revision.detected c1", "save c1 invalid",
        "audit revision.refused c1"]
    assert pb.rev("c1").reason == "signature policy: unsigned"
    assert pb.queue.idle


def test_the_same_head_seen_by_two_fetches_is_recorded_once() -> None:
    pb = Book()
    pb.observe("c1")
    assert pb.observe("c1") == []
    assert len(pb.store.rows) == 1


def test_a_deletion_the_branch_watch_lets_through_is_audited_and_changes_nothing() -> None:
    # recording a deletion once is the source's BranchWatch's (tests/source): the queue
    # records each deletion it is told about and keeps its revisions as they are
    pb = Book()
    pb.observe("c1")
    assert pb.branch_deleted() == ["audit source.branch_deleted main"]
    assert pb.branch_deleted() == ["audit source.branch_deleted main"]
    assert len(pb.store.rows) == 1


def test_a_force_push_is_audited_before_its_revision() -> None:
    pb = Book()
    assert pb.observe("c1", force=True)[:2] == ["audit source.force_push main", "insert c1"]


def test_another_trust_domain_fails_the_revision() -> None:
    pb = Book()
    pb.observe("c1")
    pb.validated("c1", trust_domain="other.test")
    out = pb.planned("c1")
    assert out[-3:] == ["save c1 failed", "audit revision.failed c1", "settled c1"]
    assert "trust domain 'other.test'" in pb.rev("c1").reason
    assert not pb.deploys()


def test_a_failing_shell_step_fails_the_current_revision_only() -> None:
    pb = Book()
    pb.observe("c1")
    pb.validated("c1")
    assert pb.failed_step("c1") == ["save c1 failed", "audit revision.failed c1", "settled c1"]
    pb.observe("c2")
    # c2's validation fails in the shell while queued: asked again when its turn comes
    pb.observe("c3")
    assert pb.failed_step("c3") == []
    assert pb.queue.state.current is not None  # c3 is current and still validating


def test_a_failed_validation_of_a_queued_commit_is_asked_again_at_its_turn() -> None:
    pb = Book()
    pb.observe("c1")
    pb.deploy("c1")
    pb.observe("c2")
    assert pb.failed_step("c2") == []
    out = pb.finished("c1")
    assert out[-1] == "validate c2"


# --- pins and rollbacks ------------------------------------------------------------------------


def _two_deployed(pb: Book) -> None:
    pb.ship("c1")
    pb.ship("c2")


def test_rollback_pins_and_deploys_the_target_again_and_a_new_commit_is_held() -> None:
    pb = Book()
    _two_deployed(pb)
    out = pb.rollback("c1", reason="bad")
    assert out == ["insert c1 (rollback)", "state pin=pin:1", "audit rollback.requested c1",
                   "audit fleet.pinned c1", "validate c1"]
    assert pb.queue.state.pin is not None and pb.store.state["pin"]["revision"] == 1
    pb.deploy("c1")
    pb.finished("c1")
    assert pb.rev("c1").trigger == "rollback" and pb.status("c1") is S.DEPLOYED
    pb.observe("c3")
    pb.validated("c3")
    out = pb.planned("c3")
    assert out == ["save c3 planned", "audit plan.made c3", "save c3 planned",
                   "audit revision.held c3", "settled c3"]
    assert pb.rev("c3").reason.startswith("held: the fleet is pinned to revision 1 by user:ana")
    # a newer commit while pinned supersedes the held one
    pb.observe("c4")
    pb.validated("c4")
    out = pb.planned("c4")
    assert "save c3 superseded" in out and pb.status("c3") is S.SUPERSEDED
    assert pb.audits("revision.superseded")[-1].data["reason"] == (
        "superseded by revision 5 (c4) while pinned")
    # resume: the held one deploys
    out = pb.unpin()
    assert out[:2] == ["state pin=None", "audit fleet.unpinned main"]
    assert "pin" not in pb.store.state
    assert out[2:] == ["plan c4"]  # held ones were validated: straight to a new plan
    assert pb.planned("c4")[-1] == "deploy c4"


def test_rollback_during_a_rollout_aborts_it_first_and_goes_before_the_queued_commit() -> None:
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.observe("c3")
    pb.validated("c3")  # announced to c2's rollout
    out = pb.rollback("c1", abort=True)
    assert out[:5] == ["insert c1 (rollback)", "state pin=pin:1",
                       "audit rollback.requested c1", "audit fleet.pinned c1",
                       "abort by user:ana"]
    assert pb.audits("rollback.requested")[0].data["during_rollout"] == 2
    out = pb.finished("c2", S.REJECTED, outcome="aborted")
    # the rollback goes first (it is being validated); c3 waits behind it
    assert out == ["save c2 rejected", "audit deploy.finished c2", "settled c2"]
    assert pb.queue.state.current is not None and pb.queue.state.current.trigger == "rollback"
    pb.deploy("c1")
    pb.finished("c1")
    assert pb.status("c1", trigger="rollback") is S.DEPLOYED
    out = pb.planned("c3")
    assert "audit revision.held c3" in out
    assert pb.status("c3") is S.PLANNED


def test_a_newer_rollback_supersedes_a_queued_older_one() -> None:
    pb = Book()
    pb.ship("c1")
    pb.ship("c2")
    pb.observe("c3")
    pb.deploy("c3")
    pb.rollback("c2", abort=True, actor="user:ana")
    out = pb.rollback("c1", abort=True, actor="user:bo")
    assert "save c2 superseded" in out
    assert pb.store.state["pin"]["actor"] == "user:bo"
    rollbacks = [r for r in pb.store.rows.values() if r.trigger == "rollback"]
    assert [str(r.status) for r in rollbacks] == ["superseded", "detected"]


def test_unpin_when_a_newer_commit_already_waits_deploys_the_newer_one() -> None:
    pb = Book()
    pb.ship("c1")
    pb.ship("c2")
    pb.rollback("c1")
    pb.deploy("c1")
    pb.finished("c1")
    pb.observe("c3")
    pb.validated("c3")
    pb.planned("c3")  # held
    pb.observe("c4")  # current, being validated: the held one stays held meanwhile
    assert pb.status("c3") is S.PLANNED
    out = pb.unpin()
    assert out == ["state pin=None", "audit fleet.unpinned main", "save c3 superseded",
                   "audit revision.superseded c3"]
    pb.validated("c4")
    assert pb.planned("c4")[-1] == "deploy c4"


def test_an_invalid_commit_while_pinned_leaves_the_held_one_for_the_unpin() -> None:
    pb = Book()
    pb.ship("c1")
    pb.ship("c2")
    pb.rollback("c1")
    pb.deploy("c1")
    pb.finished("c1")
    pb.observe("c3")
    pb.validated("c3")
    pb.planned("c3")  # held
    pb.observe("bad")
    pb.validated("bad", ok=False)
    assert pb.status("c3") is S.PLANNED
    out = pb.unpin()
    assert out[-1] == "plan c3"


def test_announce_waits_for_the_deploy_and_never_goes_to_a_rollback() -> None:
    pb = Book()
    pb.ship("c1")
    pb.ship("c2")
    pb.rollback("c1")
    pb.deploy("c1")  # the rollback deploys
    pb.unpin()  # even unpinned, a rollback's rollout is not told of commits
    pb.observe("c3")
    assert pb.validated("c3") == []


# --- the SIGKILL scenarios, as playbooks ---------------------------------------------------


def test_restart_while_deploying_resumes_the_deploy() -> None:
    """canary_faults: killed while baking a healthy change resumes (the queue half)."""
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.store.rollouts.add(pb.rev("c2").id)
    out = pb.restart()
    assert out == ["validate c2"]
    pb.validated("c2")
    out = pb.planned("c2")
    assert out == ["audit deploy.resumed c2", "deploy c2 (resumed)"]
    pb.finished("c2")
    assert pb.status("c2") is S.DEPLOYED and pb.store.state["deployed_revision"] == 2


def test_restart_after_the_deploying_save_resumes_without_a_second_planned_save() -> None:
    pb = Book()
    pb.observe("c1")
    pb.validated("c1")
    pb.planned("c1")  # the store holds c1 as deploying; the controller dies
    assert pb.restart() == ["validate c1"]
    assert pb.validated("c1") == ["plan c1"]  # no second revision.validated record
    assert pb.planned("c1") == ["audit deploy.resumed c1", "deploy c1 (resumed)"]


def test_a_commit_pushed_while_down_supersedes_the_resumed_rollout() -> None:
    """canary_faults: test_a_commit_pushed_while_the_controller_is_down_supersedes_..."""
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.store.rollouts.add(2)
    pb.restart()
    pb.validated("c2")
    pb.planned("c2")  # resumed
    pb.observe("c3")  # fetched after the start
    assert pb.validated("c3") == ["announce c3 during c2"]
    out = pb.finished("c2", S.SUPERSEDED, outcome="superseded")
    assert "save c2 superseded" in out and out[-2:] == ["audit revision.validated c3", "plan c3"]


def test_restart_after_a_rollback_request_during_a_rollout() -> None:
    """canary_faults: killed right after a rollback request during a rollout. The aborted
    rollout ends rejected, the rollback deploys, the aborted commit is not recorded again,
    and one rollout.finished is written for it."""
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.store.rollouts.add(2)
    pb.rollback("c1", abort=True)  # killed before the abort was answered
    out = pb.restart()
    assert out[:3] == ["save c2 rejected", "audit rollout.finished c2", "validate c1"]
    assert pb.rev("c2").deploy["outcome"] == "aborted"
    assert pb.queue.state.pin is not None
    assert pb.observe("c2") == []  # the head is c2 (rollback revisions are not heads)
    pb.deploy("c1")
    pb.finished("c1")
    assert pb.status("c1", trigger="rollback") is S.DEPLOYED
    assert len(pb.audits("rollout.finished")) == 1


@pytest.mark.parametrize("crash_after", [1, 2])
def test_a_crash_inside_a_rollback_request_never_leaves_a_pin_without_its_rollback(
        crash_after: int) -> None:
    """Found by the stateful test: the pin was stored before the rollback's revision, and a
    crash between them left a pinned fleet whose interrupted rollout was resumed (and could
    not be held). The revision is stored first now."""
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.store.rollouts.add(2)
    pb.budget = crash_after
    with pytest.raises(Crash):
        pb.rollback("c1", abort=True)
    assert ("pin" in pb.store.state) == (crash_after == 2)
    out = pb.restart()
    # the rollback's revision is there either way: it aborts the interrupted rollout
    assert out[:2] == ["save c2 rejected", "audit rollout.finished c2"]
    pb.deploy("c1")
    pb.finished("c1")
    assert pb.status("c1", trigger="rollback") is S.DEPLOYED


def test_a_resumed_deploy_in_a_pinned_fleet_fails_rather_than_deploys() -> None:
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.store.state["pin"] = {"revision": 1, "commit": "c1", "actor": "user:ana", "at": "-"}
    pb.restart()
    pb.validated("c2")
    out = pb.planned("c2")
    assert out == ["save c2 failed", "audit revision.failed c2", "settled c2"]
    assert not [d for d in pb.deploys() if d.resumed]


def test_restart_with_an_older_interrupted_rollout_and_a_newer_commit() -> None:
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.store.rollouts.add(2)
    pb.observe("c3")  # queued behind c2
    pb.store.state["deployed_revision"] = 1
    out = pb.restart()
    # both unfinished: the newest (c3) resumes, c2 is closed as superseded
    assert out[:2] == ["save c2 superseded", "audit rollout.finished c2"]
    assert pb.rev("c2").deploy["outcome"] == "superseded"
    assert out[-1] == "validate c3"


def test_restart_closes_an_interrupted_all_at_once_deploy_as_failed() -> None:
    pb = Book(strategy="all-at-once")
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.observe("c3")
    out = pb.restart()
    assert out[:2] == ["save c2 failed", "audit revision.failed c2"]


def test_restart_supersedes_older_queued_revisions_in_one_shape() -> None:
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    # c3 recorded, then a crash before the queue superseded c2 with it
    pb.store.rows[3] = replace(pb.rev("c2"), id=3, commit="c3")
    out = pb.restart()
    assert out == ["save c2 superseded", "audit revision.superseded c2", "validate c3"]
    assert pb.audits("revision.superseded")[-1].data == {
        "revision": 2, "by": None, "by_commit": None,
        "reason": "superseded at restart by a newer revision"}


def test_a_rollback_revision_is_resumed_first_and_never_superseded_by_a_commit() -> None:
    pb = Book()
    pb.ship("c1")
    pb.ship("c2")
    pb.rollback("c1")
    pb.observe("c3")  # recorded, then the controller dies
    out = pb.restart()
    assert kinds(out, "validate") == ["validate c1", "validate c3"]
    assert pb.queue.state.current is not None and pb.queue.state.current.trigger == "rollback"
    assert pb.status("c1", trigger="rollback") is S.DETECTED
    pb.observe("c4")
    assert pb.status("c1", trigger="rollback") is S.DETECTED
    assert pb.status("c3") is S.SUPERSEDED


def test_a_pin_survives_a_restart_and_holds_new_commits() -> None:
    pb = Book()
    _two_deployed(pb)
    pb.rollback("c1")
    pb.deploy("c1")
    pb.finished("c1")
    pb.restart()
    assert pb.queue.state.pin is not None and pb.queue.state.pin.revision == 1
    pb.observe("c3")
    pb.validated("c3")
    assert "audit revision.held c3" in pb.planned("c3")


def test_the_last_head_after_a_restart_ignores_rollback_revisions() -> None:
    pb = Book()
    _two_deployed(pb)
    pb.rollback("c1")
    pb.restart()
    assert pb.queue.state.head == "c2"


@pytest.mark.parametrize("crash_after", range(0, 18))
def test_a_crash_after_any_command_of_a_commit_loses_nothing(crash_after: int) -> None:
    """The controller dies after the first `crash_after` commands of one commit's path ran
    (before the next one): after the restart the commit still ends deployed, exactly once,
    and the audit says so once."""
    pb = Book()
    pb.ship("c1")
    pb.budget = crash_after
    try:
        pb.ship("c2")
    except Crash:
        pass
    else:
        assert crash_after >= 16  # the whole path is 16 commands
    pb.restart()
    if pb.queue.state.head != "c2":
        pb.observe("c2")  # the fetch after the restart sees it again
    cur = pb.queue.state.current
    if cur is not None:
        pb.validated(cur.commit)
        pb.planned(cur.commit)
        pb.finished(cur.commit)
    assert pb.queue.idle
    got = [r for r in pb.store.rows.values() if r.commit == "c2"]
    assert len(got) == 1 and got[0].status is S.DEPLOYED, pb.statuses()
    assert pb.store.state["deployed_revision"] == got[0].id
    assert len([a for a in pb.audits("deploy.finished") if a.subject == "c2"]) <= 1


def test_a_deploy_stored_as_deployed_but_not_its_row_is_completed_at_restart() -> None:
    """Found by the stateful test: a crash between the deployed_revision state and the row's
    save, then a newer commit, then a restart closed the deployed revision as superseded."""
    pb = Book()
    pb.ship("c1")
    pb.observe("c2")
    pb.deploy("c2")
    pb.store.rollouts.add(2)
    pb.budget = 2  # the deploy.ack audit and the state are written, the row is not
    with pytest.raises(Crash):
        pb.finished("c2")
    assert pb.store.state["deployed_revision"] == 2 and pb.status("c2") is S.DEPLOYING
    assert pb.restart() == ["save c2 deployed", "audit deploy.finished c2"]
    assert pb.status("c2") is S.DEPLOYED and pb.queue.state.deployed == pb.rev("c2")
    pb.observe("c3")
    pb.restart()
    assert pb.status("c2") is S.DEPLOYED and pb.store.state["deployed_revision"] == 2
    assert pb.queue.state.current is not None and pb.queue.state.current.commit == "c3"


def test_audit_records_are_plain_data() -> None:
    pb = Book()
    pb.ship("c1")
    for a in pb.audits():
        assert isinstance(a, Audit)
        assert isinstance(a.data, dict)
