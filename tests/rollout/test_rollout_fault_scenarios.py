"""The engine's half of the SIGKILL suites in tests/canary_faults/, as playbooks: operators
racing each other and the end of a bake, and kills right after an answer or mid-bake. (The
revision queue's half is in tests/revisions/test_revision_queue_playbooks.py.)"""

from __future__ import annotations

import itertools

import pytest
from rollout_playbook import ERRORS_5XX, Playbook

from reconciler.rollout import Finished, Persist, Reply

ACTIONS = ("pause", "resume", "promote", "abort")


def _replies(pb: Playbook, since: int) -> list[Reply]:
    return [c for c in pb.commands[since:] if isinstance(c, Reply)]


@pytest.mark.parametrize("order", list(itertools.permutations(ACTIONS)))
def test_concurrent_operator_commands_end_in_one_consistent_outcome(
        order: tuple[str, ...]) -> None:
    """canary_faults: test_concurrent_operator_commands. Four operators' commands in any
    order, on a baking stage: each gets one answer, an accepted one is audited before the
    state after it is persisted, and the rollout ends once (aborted iff an abort was
    accepted)."""
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    for i, action in enumerate(order):
        n = len(pb.commands)
        pb.op(action, f"user:op{i}")
        replies = _replies(pb, n)
        assert len(replies) == 1 and replies[0].action == action
        if replies[0].accepted:
            batch = pb.commands[n:]
            persist = [k for k, c in enumerate(batch) if isinstance(c, Persist)]
            reply = next(k for k, c in enumerate(batch) if isinstance(c, Reply))
            # the shell answers after the batch ran: Persist is in the same batch
            assert persist and persist[-1] > reply
        pb.ack_pushed()
    aborted = any(a.data["action"] == "abort" for a in pb.audits("rollout.operator"))
    if aborted:
        pb.ack_old("a1", "a2", "w1", "w2", "w3", "w4")
        fin = pb.finished()
        assert fin is not None and (fin.outcome, fin.revision_status) == ("aborted",
                                                                         "rejected")
        assert pb.op("resume") == ["reply resume refused"]
    assert sum(1 for c in pb.commands if isinstance(c, Finished)) <= 1


@pytest.mark.parametrize("abort_first", [True, False])
def test_abort_racing_the_end_of_the_last_bake(abort_first: bool) -> None:
    """canary_faults: test_abort_racing_the_end_of_the_last_bake. Whichever comes first
    wins; the other is refused or ignored, and the rollout finishes once."""
    pb = Playbook.fast({"web": 2}, stages=Playbook.fast().spec.settings.stages[-1:])
    pb.start()
    pb.ack_pushed()
    pb.traffic(3)
    if abort_first:
        assert pb.op("abort")[:2] == ["operator abort by user:alice", "reply abort ok"]
        token = pb.engine.state.timers.get("bake") if pb.engine else None
        assert token is None  # the bake timer is no longer waited for
        pb.ack_old("w1", "w2")
        fin = pb.finished()
        assert fin is not None and fin.outcome == "aborted"
    else:
        assert pb.fire("bake")[-1] == "finished promoted (deployed)"
        assert pb.op("abort") == ["reply abort refused"]
    assert sum(1 for c in pb.commands if isinstance(c, Finished)) == 1


def test_an_answered_pause_survives_a_kill_right_after_the_answer() -> None:
    """canary_faults: test_an_answered_pause_survives_a_kill_right_after_the_answer."""
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    assert pb.op("pause")[-1] == "reply pause ok"
    assert pb.persisted is not None and pb.persisted["phase"] == "paused"
    pb.restart()
    assert pb.phase == "paused"


def test_killed_while_baking_a_bad_change_rolls_back_after_the_restart() -> None:
    """canary_faults: test_killed_while_baking_a_bad_change_resumes_and_rolls_back."""
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.restart()  # no evidence yet: the stage is repeated
    pb.ack("a2")
    out = pb.traffic(3, canary=ERRORS_5XX)
    assert out[0] == "judged Failed: roll back"
    assert pb.ack_old("a2") == ["finished rolled_back (rejected)"]


def test_a_newer_commit_after_a_restart_supersedes_the_resumed_rollout() -> None:
    """canary_faults: test_a_commit_pushed_while_the_controller_is_down_supersedes_..."""
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    pb.restart()
    out = pb.commit("rev-3")
    assert out[0].startswith("push rollback")
    assert pb.ack_old("a2") == ["finished superseded (superseded) next=rev-3"]


def test_two_operators_abort_at_once_one_wins() -> None:
    """canary_faults: test_two_operators_roll_back_at_once_during_a_rollout (the engine's
    half: `meshcd rollback` during a rollout sends abort)."""
    pb = Playbook.fast()
    pb.start()
    pb.ack("a2")
    assert pb.op("abort", "user:ana")[1] == "reply abort ok"
    assert pb.op("abort", "user:bo") == ["reply abort refused"]
    assert len(pb.audits("rollout.rollback")) == 1
